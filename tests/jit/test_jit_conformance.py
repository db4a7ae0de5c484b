"""The JIT's semantics: every runnable conformance program (bpf_conformance and uBPF), compiled
in each KASAN mode, with and without the instruction budget, and run on bare Unicorn, returns
the result its `.data` file expects. No machine: `__asan_*` are plain `ret`s here (KASAN
findings are the machine's business; this checks that instrumentation leaves results alone).

Programs that call helpers are left out (they need the machine's helper dispatch); the test
counts them so the suites cannot silently shrink."""
from __future__ import annotations

import struct

import pytest
from unicorn import UC_ARCH_X86, UC_HOOK_TLB_FILL, UC_MODE_64, UC_PROT_ALL, UC_TLB_VIRTUAL, Uc, UcError
from unicorn.x86_const import UC_X86_REG_RAX, UC_X86_REG_RDI, UC_X86_REG_RSI, UC_X86_REG_RSP

from jit import isa
from jit.compile import compile_program
from jit.errors import JitError
from jit.image import KASAN_SHADOW_OFFSET, Target

IMAGE = 0xFFFFFFFFA0000000
TEXT = 0xFFFFFFFF81000000             # asan stubs (`ret`) and the return address (`hlt`)
DATA = 0xFFFFFFFF82000000             # budget counter
MEM = 0xFFFF888000010000              # the interpreter's input address (checks.memory_regions)
STACK = 0xFFFFC90000010000
STACK_SIZE = 0x8000
RETURN, EXHAUSTED, ASAN = TEXT, TEXT + 0x10, TEXT + 0x20
BUDGET = DATA + 0x40


def _target(kasan: str, budget: bool) -> Target:
    def no_helpers(src, imm):
        raise JitError(f"no helper {imm} in this test")
    return Target(IMAGE, no_helpers, lambda is_write, size: ASAN, kasan=kasan,
                  budget_address=BUDGET if budget else None,
                  budget_exhausted_address=EXHAUSTED if budget else None)


def _tlb_identity(uc, vaddr, access, entry, data):
    entry.paddr = vaddr
    entry.perms = UC_PROT_ALL
    return True


def _new_uc() -> Uc:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
    uc.hook_add(UC_HOOK_TLB_FILL, _tlb_identity)
    for base, size in ((IMAGE, 0x10000), (TEXT, 0x1000), (DATA, 0x1000), (MEM, 0x10000), (STACK, STACK_SIZE)):
        uc.mem_map(base, size)
    for base, size in ((MEM, 0x10000), (STACK, STACK_SIZE)):     # all-zero shadow: all addressable
        uc.mem_map(((base >> 3) + KASAN_SHADOW_OFFSET) & ~0xFFF, max(size >> 3, 0x1000))
    uc.mem_write(TEXT, b"\xf4" + b"\xcc" * 15 + b"\xf4" + b"\xcc" * 15 + b"\xc3")   # hlt, hlt, ret
    return uc


def run(uc: Uc, code: bytes, mem: bytes) -> int:
    uc.mem_write(IMAGE, code)
    uc.ctl_remove_cache(IMAGE, IMAGE + len(code))
    uc.mem_write(MEM, mem)
    uc.mem_write(BUDGET, struct.pack("<q", 1_000_000))
    rsp = STACK + STACK_SIZE - 0x100
    uc.mem_write(rsp, struct.pack("<Q", RETURN))
    uc.reg_write(UC_X86_REG_RSP, rsp)
    uc.reg_write(UC_X86_REG_RDI, MEM if mem else 0)
    uc.reg_write(UC_X86_REG_RSI, len(mem))
    uc.emu_start(IMAGE, RETURN, count=5_000_000)
    return uc.reg_read(UC_X86_REG_RAX)


def _calls_helpers(program) -> bool:
    return any(i.is_call and not i.is_pseudo_call for i in program.insns)


def runnable(suite_dir):
    from checks.conformance import build_program, expected_retval, input_memory, parse_file
    cases, with_helpers = [], 0
    for path in sorted((suite_dir / "tests").glob("*.data")):
        test = parse_file(str(path))
        if test.expects_failure or not test.has("result"):
            continue
        program = build_program(test)
        if _calls_helpers(program):
            with_helpers += 1
            continue
        cases.append((path.name, program, input_memory(test), expected_retval(test)))
    return cases, with_helpers


@pytest.mark.parametrize("kasan,budget", [("off", False), ("inline", True), ("outline", False)])
def test_conformance_results(conformance_dir, ubpf_dir, kasan, budget):
    (a, ha), (b, hb) = runnable(conformance_dir), runnable(ubpf_dir)
    cases = a + b
    assert len(cases) > 280 and ha + hb < 20
    uc, wrong = _new_uc(), []
    for name, program, mem, expected in cases:
        code = compile_program(program, _target(kasan, budget)).code
        try:
            r0 = run(uc, code, mem)
        except UcError as e:
            wrong.append(f"{name}: {e}")
            continue
        if expected is not None and r0 != expected & 0xFFFFFFFFFFFFFFFF:
            wrong.append(f"{name}: r0 = {r0:#x}, expected {expected:#x}")
    assert not wrong, "\n".join(wrong)


def test_budget_stops_a_runaway_loop():
    from jit.isa import Insn
    from jit.program import Program
    loop = Program("loop", (Insn(isa.ALU64 | isa.MOV | isa.K, 0, 0, 0, 1), Insn(isa.JMP | isa.JA, 0, 0, -1),
                            Insn(isa.JMP | isa.EXIT)))
    uc = _new_uc()
    code = compile_program(loop, _target("off", True)).code
    uc.mem_write(IMAGE, code)
    uc.mem_write(BUDGET, struct.pack("<q", 1000))
    rsp = STACK + STACK_SIZE - 0x100
    uc.mem_write(rsp, struct.pack("<Q", RETURN))
    uc.reg_write(UC_X86_REG_RSP, rsp)
    uc.emu_start(IMAGE, EXHAUSTED, count=100_000)      # stops at the stub's target, not by count
    assert struct.unpack("<q", uc.mem_read(BUDGET, 8))[0] < 0
