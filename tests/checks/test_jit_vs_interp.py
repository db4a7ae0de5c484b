"""Differential tests: the JIT under Unicorn must agree with the reference interpreter.

Agreement means: both refuse the program at load time, or both stop with an error, or both
return the same r0 and leave the same bytes in the input buffer. Every exception to that is a
named entry in KNOWN_DIVERGENCES with its reason; nothing is normalised silently.

Inputs: every bpf_conformance and uBPF `.data` program, then hypothesis-generated programs
(ALU mixes, bounded loops, forward branches, stack and input-buffer loads/stores/atomics,
helper calls). CI runs a fixed, derandomized budget; `BPF_KASAN_LONG=1` runs a long random one.
A disagreement prints the program (disassembled) and both results.
"""
from __future__ import annotations

import os
import pathlib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from checks.conformance import (SKIPPED, UBPF_HELPERS, UBPF_UNWIND_HELPER, build_program,
                                input_memory, parse_file)
from checks.jit_engine import JitEngine
from checks.runner import InterpEngine
from jit import isa
from jit.errors import BpfKasanError
from jit.isa import Insn
from jit.program import Program
from jit.tag import prog_tag
from jit.ubpf_asm import disassemble

LONG = os.environ.get("BPF_KASAN_LONG") == "1"

# file name -> why the engines may legitimately differ on it.
KNOWN_DIVERGENCES = {
    "err-stack-oob.data": "the interpreter bounds each frame to exactly 512 bytes; the kernel JIT "
                          "has no stack bounds check (the verifier would refuse the program)",
}


@pytest.fixture(scope="module")
def engines():
    return InterpEngine(), JitEngine()


def outcome(engine, program: Program, mem: bytes, **kw):
    """('refused', message) | ('error', message) | ('ok', r0, mem)."""
    try:
        r = engine.run(program, mem, helpers=UBPF_HELPERS, unwind_helper=UBPF_UNWIND_HELPER, **kw)
    except BpfKasanError as e:
        return ("refused", str(e))
    if r.error is not None:
        return ("error", r.error)
    return ("ok", r.r0, r.mem)


def agree(a, b) -> bool:
    return a[0] == b[0] and (a[0] != "ok" or a[1:] == b[1:])


def show(result) -> str:
    if result[0] == "ok":
        return f"r0 = {result[1]:#x}\nmem = {result[2].hex()}"
    return f"{result[0]}: {result[1]}"


def explain(program: Program, mem: bytes, interp, jit) -> str:
    return (f"interpreter and JIT disagree on {program.name}\n--- program\n"
            f"{disassemble(program.insns)}--- input mem\n{mem.hex()}\n"
            f"--- interp\n{show(interp)}\n--- jit\n{show(jit)}")


def data_files(root: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in root.rglob("*.data"))


def check_suite(root: pathlib.Path, engines) -> int:
    interp, jit = engines
    compared, problems = 0, []
    for path in data_files(root):
        test = parse_file(str(path))
        if any(test.has(s) for s in SKIPPED) or path.name in KNOWN_DIVERGENCES:
            continue
        try:
            program = build_program(test)
        except BpfKasanError:
            continue                          # not a program: nothing to compare
        mem = input_memory(test)
        a, b = outcome(interp, program, mem), outcome(jit, program, mem)
        compared += 1
        if not agree(a, b):
            problems.append(explain(program, mem, a, b))
    assert not problems, "\n\n".join(problems)
    return compared


def test_conformance_suite_agrees(conformance_dir, engines):
    assert check_suite(conformance_dir / "tests", engines) > 250


def test_ubpf_suite_agrees(ubpf_dir, engines):
    assert check_suite(ubpf_dir / "tests", engines) > 30


def test_known_divergences_still_diverge(conformance_dir, ubpf_dir, engines):
    """An entry that no longer diverges must be removed, so the list stays honest."""
    found = {p.name: p for root in (conformance_dir, ubpf_dir) for p in data_files(root / "tests")}
    for name in KNOWN_DIVERGENCES:
        test = parse_file(str(found[name]))
        program, mem = build_program(test), input_memory(test)
        assert not agree(outcome(engines[0], program, mem), outcome(engines[1], program, mem)), name


# --- generated programs ------------------------------------------------------------------------

MEM_SIZE = 64
ALU_OPS = [isa.ADD, isa.SUB, isa.MUL, isa.DIV, isa.OR, isa.AND, isa.LSH, isa.RSH, isa.NEG,
           isa.MOD, isa.XOR, isa.MOV, isa.ARSH]
JMP_OPS = list(isa.JMP_CONDS)
WORK_REGS = [0, 2, 3, 4, 5, 6, 7, 8]          # r1 = input buffer, r9 = loop counter, r10 = fp
SIZES = [isa.B, isa.H, isa.W, isa.DW]
imm32 = st.one_of(st.integers(-4, 4), st.integers(-(1 << 31), (1 << 31) - 1),
                  st.sampled_from([0x7FFFFFFF, -0x80000000, 0xFF, 0xFFFF, -1]))


@st.composite
def alu(draw, regs=WORK_REGS):
    cls = draw(st.sampled_from([isa.ALU, isa.ALU64]))
    op = draw(st.sampled_from(ALU_OPS + [isa.END]))
    dst = draw(st.sampled_from(regs))
    if op == isa.END:
        if cls == isa.ALU64:
            return Insn(isa.ALU64 | isa.END, dst, imm=draw(st.sampled_from([16, 32, 64])))
        source = draw(st.sampled_from([isa.TO_LE, isa.TO_BE]))
        return Insn(isa.ALU | isa.END | source, dst, imm=draw(st.sampled_from([16, 32, 64])))
    if op == isa.NEG:
        return Insn(cls | op, dst)
    signed = op in (isa.DIV, isa.MOD) and draw(st.booleans())
    if draw(st.booleans()):                            # register source (r1 is fine: same address)
        src = draw(st.sampled_from(regs + [1]))
        off = 1 if signed else 0
        if op == isa.MOV and draw(st.integers(0, 3)) == 0:
            off = draw(st.sampled_from([8, 16, 32] if cls == isa.ALU64 else [8, 16]))
        return Insn(cls | op | isa.X, dst, src, off)
    if op in (isa.LSH, isa.RSH, isa.ARSH):             # the verifier refuses imm counts >= width
        imm = draw(st.integers(0, 63 if cls == isa.ALU64 else 31))
    else:
        imm = draw(imm32)
        if op in (isa.DIV, isa.MOD) and imm == 0:      # refused at load
            imm = 3
    return Insn(cls | op, dst, 0, 1 if signed else 0, imm)


@st.composite
def memory_op(draw):
    """A load, store or atomic on the stack (r10) or the input buffer (r1), always in bounds."""
    size = draw(st.sampled_from(SIZES))
    width = isa.SIZE_BYTES[size]
    on_stack = draw(st.booleans())
    base = isa.FP if on_stack else 1
    off = draw(st.integers(-512, -width) if on_stack else st.integers(0, MEM_SIZE - width))
    reg = draw(st.sampled_from(WORK_REGS))
    kind = draw(st.sampled_from(["ldx", "ldxsx", "stx", "st", "atomic"]))
    if kind == "ldx" or (kind == "ldxsx" and size == isa.DW):
        return Insn(isa.LDX | isa.MEM | size, reg, base, off)
    if kind == "ldxsx":
        return Insn(isa.LDX | isa.MEMSX | size, reg, base, off)
    if kind == "stx":
        return Insn(isa.STX | isa.MEM | size, base, reg, off)
    if kind == "st":
        return Insn(isa.ST | isa.MEM | size, base, 0, off, draw(imm32))
    size = draw(st.sampled_from([isa.W, isa.DW]))
    off = draw(st.integers(-512, -8) if on_stack else st.integers(0, MEM_SIZE - 8))
    op = draw(st.sampled_from(sorted(isa.ATOMIC_OPS)))
    if op == isa.ATOMIC_CMPXCHG and reg == 0:
        reg = 2                                        # r0 is the comparand and the result
    return Insn(isa.STX | isa.ATOMIC | size, base, reg, off, op)


@st.composite
def straight(draw, max_len=12):
    """Straight-line code, sometimes with a forward branch over part of it."""
    body = draw(st.lists(st.one_of(alu(), alu(), memory_op(), st.just("call"), st.just("lddw")),
                         min_size=1, max_size=max_len))
    out: list[Insn] = []
    for item in body:
        if item == "call":                             # gather_bytes: pure, r0 only
            out.append(Insn(isa.JMP | isa.CALL, imm=0))
        elif item == "lddw":
            out.extend(isa.ld_imm64(draw(st.sampled_from(WORK_REGS)), draw(st.integers(0, (1 << 64) - 1))))
        else:
            out.append(item)
    if draw(st.booleans()):
        starts = [i for i in range(len(out)) if i == 0 or not out[i - 1].is_ld_imm64]
        at = draw(st.sampled_from(starts))             # never between the halves of an ld_imm64
        out.insert(at, branch(draw, draw(st.integers(1, len(out) - at))))
    return out


def branch(draw, skip: int) -> Insn:
    cls = draw(st.sampled_from([isa.JMP, isa.JMP32]))
    op = draw(st.sampled_from(JMP_OPS))
    dst = draw(st.sampled_from(WORK_REGS + [1]))
    if draw(st.booleans()):
        return Insn(cls | op | isa.X, dst, draw(st.sampled_from(WORK_REGS)), skip)
    return Insn(cls | op, dst, 0, skip, draw(imm32))


def fix_branches(code: list[Insn]) -> list[Insn]:
    """Clamp forward branches that would land inside an ld_imm64 pair onto the pair's start."""
    tails = {i + 1 for i, insn in enumerate(code) if insn.is_ld_imm64}
    out = []
    for pc, insn in enumerate(code):
        if insn.is_jump and insn.op not in (isa.CALL, isa.EXIT) and insn.off > 0:
            target = pc + 1 + insn.off
            if target in tails:
                insn = Insn(insn.code, insn.dst, insn.src, insn.off - 1, insn.imm)
        out.append(insn)
    return out


@st.composite
def programs(draw):
    """main: [straight] [loop: straight; r9 -= 1; if r9 != 0 goto loop] [call f] [straight] exit
    f (optional): straight; exit -- on its own frame, r6-r9 preserved for the caller."""
    code = draw(straight())
    if draw(st.booleans()):
        body = draw(straight())
        code += [Insn(isa.ALU64 | isa.MOV, 9, imm=draw(st.integers(1, 40)))]
        code += body + [Insn(isa.ALU64 | isa.SUB, 9, imm=1),
                        Insn(isa.JMP | isa.JNE, 9, 0, -(len(body) + 2), 0)]
    func = fix_branches(draw(straight())) + [Insn(isa.JMP | isa.EXIT)] if draw(st.booleans()) else []
    call_at = len(code)
    code += [Insn(isa.JMP | isa.CALL, src=isa.PSEUDO_CALL)] if func else []
    code = fix_branches(code + draw(straight())) + [Insn(isa.JMP | isa.EXIT)]
    if func:
        code[call_at] = Insn(isa.JMP | isa.CALL, src=isa.PSEUDO_CALL, imm=len(code) - call_at - 1)
    mem = draw(st.binary(min_size=MEM_SIZE, max_size=MEM_SIZE))
    return Program("generated", tuple(code + func)), mem


def run_both(engines, program: Program, mem: bytes) -> None:
    a, b = outcome(engines[0], program, mem), outcome(engines[1], program, mem)
    assert agree(a, b), explain(program, mem, a, b)


GENERATED = settings(max_examples=3000 if LONG else 150, derandomize=not LONG, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                     print_blob=True)


@GENERATED
@given(case=programs())
@example(case=(Program("div-by-zero-reg", (Insn(isa.ALU64 | isa.MOV, 0, imm=7),
                                           Insn(isa.ALU64 | isa.DIV | isa.X, 0, 2),
                                           Insn(isa.ALU | isa.MOD | isa.X, 3, 2, 1),
                                           Insn(isa.JMP | isa.EXIT))), bytes(MEM_SIZE)))
def test_generated_programs_agree(engines, case):
    program, mem = case
    run_both(engines, program, mem)


def test_both_engines_stop_a_runaway_loop(engines):
    loop = Program("runaway", (Insn(isa.JMP | isa.JA, off=-1), Insn(isa.JMP | isa.EXIT)))
    a, b = outcome(engines[0], loop, b"", insn_limit=10_000), outcome(engines[1], loop, b"",
                                                                       insn_limit=10_000)
    assert a[0] == b[0] == "error" and b[1] == "instruction limit exceeded (10000)"


# --- engine glue -------------------------------------------------------------------------------

def asm(text: str, name: str = "t") -> Program:
    from jit.ubpf_asm import assemble_program
    return assemble_program(text, name=name, file=f"{name}.asm")


def test_a_bad_access_is_an_oops_naming_the_slot(engines):
    program = asm("mov %r0, 1\nmov %r3, 0\nldxdw %r0, [%r3+16]\nexit\n", name="nullread")
    interp, jit = (e.run(program, b"") for e in engines)
    assert interp.error_insn == jit.error_insn == 2
    lines = jit.error.splitlines()
    assert lines[0] == "BUG: kernel NULL pointer dereference, address: 0000000000000010"
    tag = prog_tag(program)
    assert lines[-1].startswith(f"RIP: 0010:bpf_prog_{tag}_nullread+0x")


def test_helper_errors_read_alike(engines):
    unknown = asm("mov %r0, 1\ncall 77\nexit\n")
    bad_pointer = asm("mov %r1, 8\nmov %r2, 4\ncall 1\nexit\n")       # memfrob(8, 4)
    interp, jit = (outcome_result(e, unknown) for e in engines)
    assert interp.error == jit.error == "call to unknown helper 77"
    assert interp.error_insn == jit.error_insn == 1
    interp, jit = (outcome_result(e, bad_pointer) for e in engines)
    assert jit.error.startswith("invalid read of size 4 at 0x8: not in any region")
    assert jit.error.endswith("(in helper 1 called by insn #2)") and jit.error_insn == 2
    assert interp.error_insn == 2


def outcome_result(engine, program: Program):
    return engine.run(program, b"", helpers=UBPF_HELPERS, unwind_helper=UBPF_UNWIND_HELPER)


def test_pseudo_map_loads_need_and_use_a_resolver(engines):
    first, second = isa.ld_imm64(0, 0, src=isa.PSEUDO_MAP_VALUE)
    program = Program("mapref", (first, second, Insn(isa.JMP | isa.EXIT)))
    with pytest.raises(BpfKasanError, match="needs a resolver"):
        engines[1].run(program, b"")
    seen = []
    result = engines[1].run(program, b"", resolve_pseudo=lambda a, b, pc: seen.append(pc) or 0x1234)
    assert result.r0 == 0x1234 and seen == [0]


def test_prog_tag_ignores_map_references():
    def program(fd: int) -> Program:
        first, second = isa.ld_imm64(1, fd, src=isa.PSEUDO_MAP_FD)
        return Program("p", (first, second, Insn(isa.ALU64 | isa.MOV, 0), Insn(isa.JMP | isa.EXIT)))
    assert prog_tag(program(3)) == prog_tag(program(9))
    assert len(prog_tag(program(3))) == 16
    assert prog_tag(program(3)) != prog_tag(asm("mov %r0, 0\nexit\n"))
