"""jit/tail_call.py: the inline bpf_tail_call, executed on bare Unicorn (no machine): targets,
misses, the 33-call limit, and the counter shared through a subprog, as the kernel does."""
from __future__ import annotations

import struct

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from unicorn import UC_ARCH_X86, UC_HOOK_MEM_INVALID, UC_MODE_64, Uc
from unicorn.x86_const import UC_X86_REG_RAX, UC_X86_REG_RDI, UC_X86_REG_RSP

from jit import isa
from jit.compile import compile_program
from jit.image import Target
from jit.isa import Insn
from jit.program import Program

# Low addresses: bare Unicorn maps virtual = physical, so kernel addresses would need a TLB hook.
BASE_A, BASE_B, ARRAY, COUNT, STACK, RETURN = 0x100000, 0x200000, 0x300000, 0x300800, 0x400000, 0x500000
EXIT = Insn(isa.JMP | isa.EXIT)
TAIL_CALL = Insn(isa.JMP | isa.CALL, 0, 0, 0, 12)


def mov(dst, imm):
    return Insn(isa.ALU64 | isa.MOV | isa.K, dst, 0, 0, imm)


def target(base: int, tail_calls: bool = True) -> Target:
    return Target(base, lambda src, imm: RETURN + 0x100 + 16 * imm, tail_call_address=1 if tail_calls else None)


COUNT_AND_TAIL_CALL = (*isa.ld_imm64(7, COUNT), mov(8, 1), Insn(isa.STX | isa.ATOMIC | isa.DW, 7, 8, 0, isa.ADD),
                       *isa.ld_imm64(2, ARRAY), mov(3, 0))
CALLER = Program("caller", COUNT_AND_TAIL_CALL + (Insn(isa.ST | isa.MEM | isa.DW, 10, 0, -16, 5), TAIL_CALL,
                                                  Insn(isa.LDX | isa.MEM | isa.DW, 0, 10, -16), EXIT))
CALLEE = Program("callee", (mov(0, 42), Insn(isa.ALU64 | isa.ADD | isa.X, 0, 1), EXIT))
VIA_SUBPROG = Program("via_subprog", (*isa.ld_imm64(7, COUNT), mov(8, 1),
                                      Insn(isa.STX | isa.ATOMIC | isa.DW, 7, 8, 0, isa.ADD),
                                      Insn(isa.JMP | isa.CALL, 0, isa.PSEUDO_CALL, 0, 2), mov(0, 9), EXIT,
                                      *isa.ld_imm64(2, ARRAY), mov(3, 0), TAIL_CALL, mov(0, 0), EXIT))


def run(main: Program, other: Program, ptrs: list[int], r1: int = 1000) -> tuple[int, int]:
    """Run `main` (at BASE_A; `other` at BASE_B) with prog array `ptrs`: (r0, executions counted)."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    for base, prog in ((BASE_A, main), (BASE_B, other)):
        uc.mem_map(base, 0x10000)
        uc.mem_write(base, compile_program(prog, target(base)).code)
    for region in (ARRAY, STACK, RETURN):
        uc.mem_map(region, 0x10000)
    uc.mem_write(ARRAY, struct.pack(f"<II{len(ptrs)}Q", len(ptrs), 0, *ptrs))
    rsp = STACK + 0x8000
    uc.mem_write(rsp, struct.pack("<Q", RETURN))
    uc.reg_write(UC_X86_REG_RSP, rsp)
    uc.reg_write(UC_X86_REG_RDI, r1)
    uc.hook_add(UC_HOOK_MEM_INVALID, lambda *a: False)
    uc.emu_start(BASE_A, RETURN)
    assert uc.reg_read(UC_X86_REG_RSP) == rsp + 8, "the stack is not balanced"
    return uc.reg_read(UC_X86_REG_RAX), struct.unpack("<Q", uc.mem_read(COUNT, 8))[0]


@pytest.mark.parametrize("ptrs,expected", [
    ([BASE_B], (1042, 1)),            # into the other program, which returns for us
    ([0], (5, 1)),                    # empty slot: fall through
    ([], (5, 1)),                     # index out of range: fall through
    ([BASE_A], (5, 34)),              # itself: 1 run + MAX_TAIL_CALL_CNT (33) tail calls
])
def test_tail_call(ptrs, expected):
    assert run(CALLER, CALLEE, ptrs) == expected


def test_counter_is_shared_through_a_subprog():
    assert run(VIA_SUBPROG, CALLEE, [BASE_A]) == (9, 34)


def test_without_machine_support_helper_12_is_an_ordinary_call():
    image = compile_program(CALLER, target(BASE_A, tail_calls=False))
    text = [i.mnemonic for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(image.code, BASE_A)]
    assert "call" in text and "jmp" not in text
    assert image.code[5:8] == b"\x0f\x1f\x00"      # nop3: no counter to zero
