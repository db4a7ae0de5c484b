"""The reference interpreter, one row per semantic rule, plus its error paths and hooks."""
from __future__ import annotations

import pytest

from checks import interp
from checks.errors import CheckError
from jit.errors import BpfKasanError
from checks.memory_regions import INPUT_BASE, STACK_SIZE, Memory, Region, frame_top
from jit import isa
from jit.isa import Insn
from jit.program import Program
from jit.ubpf_asm import assemble_program

U64 = 0xFFFFFFFFFFFFFFFF
INT64_MIN = 1 << 63


def run_asm(text: str, **kw) -> interp.InterpResult:
    return interp.run(assemble_program(text, name="t", file="t.asm"), **kw)


def run_slots(*insns: Insn, **kw) -> interp.InterpResult:
    return interp.run(Program("t", tuple(insns)), **kw)


# (id, program, input memory, expected r0)
ROWS = [
    ("div64 by zero reg -> 0", "mov %r0, 7\nmov %r1, 0\ndiv %r0, %r1", b"", 0),
    ("div32 divisor is the low half", "mov %r0, 1\nlddw %r1, 0x100000000\ndiv32 %r0, %r1", b"", 0),
    ("mod64 by zero keeps dst", "lddw %r0, 0x1234567890\nmov %r1, 0\nmod %r0, %r1", b"", 0x1234567890),
    ("mod32 by zero zero-extends dst", "lddw %r0, 0x1234567890\nmov %r1, 0\nmod32 %r0, %r1", b"",
     0x34567890),
    ("sdiv INT_MIN / -1 = INT_MIN", "lddw %r0, 0x8000000000000000\nsdiv %r0, -1", b"", INT64_MIN),
    ("sdiv32 INT_MIN / -1", "mov32 %r0, 0x80000000\nsdiv32 %r0, -1", b"", 0x80000000),
    ("sdiv rounds toward zero", "mov %r0, -7\nsdiv %r0, 2", b"", (-3) & U64),
    ("smod x / -1 = 0", "mov %r0, -7\nsmod %r0, -1", b"", 0),
    ("smod sign follows dividend", "mov %r0, -7\nsmod %r0, 3", b"", (-1) & U64),
    ("smod32 by zero keeps dst", "mov %r0, -5\nmov %r1, 0\nsmod32 %r0, %r1", b"", 0xFFFFFFFB),
    ("udiv treats operands unsigned", "mov %r0, -1\ndiv %r0, 2", b"", U64 >> 1),
    ("neg32 INT_MIN", "mov32 %r0, 0x80000000\nneg32 %r0", b"", 0x80000000),
    ("neg64", "mov %r0, 5\nneg %r0", b"", (-5) & U64),
    ("lsh32 count masked to 31", "mov %r0, 0x11\nlsh32 %r0, 60", b"", 0x10000000),
    ("rsh64 count masked to 63", "mov %r0, -1\nmov %r1, 127\nrsh %r0, %r1", b"", 1),
    ("arsh32 sign and zero-extension", "mov32 %r0, 0x80000000\narsh32 %r0, 4", b"", 0xF8000000),
    ("arsh64", "lddw %r0, 0x8000000000000000\narsh %r0, 63", b"", U64),
    ("alu32 result zero-extends", "mov %r0, -1\nadd32 %r0, 1", b"", 0),
    ("mov64 imm sign-extends", "mov %r0, 0xffffffff", b"", U64),
    ("mov32 imm zero-extends", "mov32 %r0, 0xffffffff", b"", 0xFFFFFFFF),
    ("mul wraps", "lddw %r0, 0x100000001\nmul %r0, %r0", b"", 0x200000001),
    ("xor/or/and", "mov %r0, 0xf0\nor %r0, 0x0f\nand %r0, 0x3c\nxor %r0, 0x1", b"", 0x3D),
    ("movsx8 into 64", "mov %r1, 0x80\nmovsx864 %r0, %r1", b"", (-128) & U64),
    ("movsx16 into 32 zero-extends", "mov %r1, 0x8000\nmovsx1632 %r0, %r1", b"", 0xFFFF8000),
    ("movsx32 into 64", "mov32 %r1, 0xffffffff\nmovsx3264 %r0, %r1", b"", U64),
    ("le16 truncates", "lddw %r0, 0x1122334455667788\nle16 %r0", b"", 0x7788),
    ("be32 swaps and truncates", "lddw %r0, 0x1122334455667788\nbe32 %r0", b"", 0x88776655),
    ("be64", "lddw %r0, 0x1122334455667788\nbe64 %r0", b"", 0x8877665544332211),
    ("bswap16", "mov %r0, 0x1234\nbswap16 %r0", b"", 0x3412),
    ("ldxh little-endian", "ldxh %r0, [%r1+1]", b"\x01\x02\x03", 0x0302),
    ("ldxsb sign-extends", "ldxsb %r0, [%r1]", b"\xfe", (-2) & U64),
    ("ldxsw sign-extends", "ldxsw %r0, [%r1]", b"\x00\x00\x00\x80", 0xFFFFFFFF80000000),
    ("stack store/load", "stdw [%r10-8], -2\nldxdw %r0, [%r10-8]", b"", (-2) & U64),
    ("st imm sign-extends to size", "stw [%r10-4], -1\nldxw %r0, [%r10-4]", b"", 0xFFFFFFFF),
    ("jeq imm sign-extended to 64", "mov %r0, 0\nmov %r1, -1\njeq %r1, 0xffffffff, +1\nexit\nmov %r0, 1",
     b"", 1),
    ("jsgt signed", "mov %r0, 0\nmov %r1, -1\njsgt %r1, 0, +1\nmov %r0, 1", b"", 1),
    ("jgt unsigned", "mov %r0, 0\nmov %r1, -1\njgt %r1, 0, +1\nmov %r0, 1", b"", 0),
    ("jset", "mov %r0, 0\nmov %r1, 6\njset %r1, 1, +1\nmov %r0, 1", b"", 1),
    ("jlt32 compares low halves", "mov %r0, 0\nlddw %r1, 0x100000000\njlt32 %r1, 1, +1\nmov %r0, 1", b"", 0),
    ("jslt32 signed low half", "mov %r0, 0\nmov32 %r1, 0xffffffff\njslt32 %r1, 0, +1\nmov %r0, 1", b"", 0),
    ("jne reg", "mov %r0, 0\nmov %r1, 1\nmov %r2, 2\njne %r1, %r2, +1\nmov %r0, 1", b"", 0),
    ("ja32 uses imm", "mov %r0, 1\nja32 +1\nmov %r0, 2", b"", 1),
    ("r2 is the input length", "mov %r0, %r2", b"\0" * 8, 8),
    ("lock add64", "stdw [%r10-8], 5\nmov %r1, 3\nlock add [%r10-8], %r1\nldxdw %r0, [%r10-8]", b"", 8),
    ("lock fetch add32 returns old zero-extended",
     "stw [%r10-4], -1\nmov %r1, 1\nlock fetch add32 [%r10-4], %r1\nmov %r0, %r1", b"", 0xFFFFFFFF),
    ("lock fetch and", "stdw [%r10-8], 0xc\nmov %r1, 0xa\nlock fetch and [%r10-8], %r1\n"
                       "ldxdw %r0, [%r10-8]\nlsh %r0, 8\nor %r0, %r1", b"", 0x080C),
    ("lock or32 leaves upper word", "stdw [%r10-8], 0\nmov %r1, 1\nlock or32 [%r10-4], %r1\n"
                                    "ldxdw %r0, [%r10-8]", b"", 1 << 32),
    ("lock fetch xor", "stdw [%r10-8], 3\nmov %r1, 1\nlock fetch xor [%r10-8], %r1\n"
                       "ldxdw %r0, [%r10-8]\nlsh %r0, 4\nor %r0, %r1", b"", 0x23),
    ("lock xchg", "stdw [%r10-8], 7\nmov %r1, 9\nlock xchg [%r10-8], %r1\nldxdw %r0, [%r10-8]\n"
                  "lsh %r0, 4\nor %r0, %r1", b"", 0x97),
    ("cmpxchg64 equal stores", "stdw [%r10-8], 7\nmov %r0, 7\nmov %r1, 9\n"
                               "lock cmpxchg [%r10-8], %r1\nldxdw %r2, [%r10-8]\nlsh %r2, 4\nor %r0, %r2",
     b"", 0x97),
    ("cmpxchg64 differ keeps", "stdw [%r10-8], 7\nmov %r0, 6\nmov %r1, 9\n"
                               "lock cmpxchg [%r10-8], %r1\nldxdw %r2, [%r10-8]\nlsh %r2, 4\nor %r0, %r2",
     b"", 0x77),
    ("cmpxchg32 compares low half of r0", "stw [%r10-4], 7\nlddw %r0, 0x500000007\nmov %r1, 9\n"
                                          "lock cmpxchg32 [%r10-4], %r1\nldxw %r2, [%r10-4]\nlsh %r2, 4\n"
                                          "or %r0, %r2", b"", 0x97),
]


@pytest.mark.parametrize("text,mem,expected", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_semantics(text, mem, expected):
    result = run_asm(text + "\nexit", mem=mem)
    assert result.error is None
    assert result.r0 == expected


def test_stores_reach_the_input_buffer_and_insns_are_counted():
    result = run_asm("mov %r2, 0x1234\nstxh [%r1+1], %r2\nlddw %r0, 1\nexit", mem=b"\0" * 4)
    assert result.mem == b"\x00\x34\x12\x00"
    assert result.insns == 4                 # the lddw pair counts once
    assert result.regs[10] == frame_top(0)


def test_empty_input_gives_null_r1():
    assert run_asm("mov %r0, %r1\nexit").r0 == 0
    assert run_asm("mov %r0, %r1\nexit", mem=b"x").r0 == INPUT_BASE


def test_out_of_region_access_names_insn_register_and_regions():
    result = run_asm("mov %r0, 0\nldxw %r0, [%r1+8]\nexit", mem=b"\0" * 8)
    assert result.error == (
        f"invalid read of size 4 at {INPUT_BASE + 8:#x} by insn #1 (r1 + 8): not in any region "
        f"(stack [{frame_top(0) - STACK_SIZE:#x}, {frame_top(0):#x}), "
        f"mem [{INPUT_BASE:#x}, {INPUT_BASE + 8:#x}))")
    assert result.error_insn == 1


def test_stack_bounds_are_exact():
    assert run_asm("stb [%r10-512], 1\nmov %r0, 0\nexit").error is None
    below = run_asm("stb [%r10-513], 1\nexit")
    above = run_asm("stb [%r10], 0\nexit")
    assert "invalid write of size 1" in below.error and "(r10 - 513)" in below.error
    assert "invalid write of size 1" in above.error and "(r10 + 0)" in above.error


def test_straddling_access_faults():
    assert "invalid read of size 8" in run_asm("ldxdw %r0, [%r1+4]\nexit", mem=b"\0" * 8).error


def test_read_only_region():
    ro = Region("ctx", 0x1000, bytearray(b"\x2a" * 8), writable=False)
    result = run_asm("ldxb %r0, [%r1]\nexit", regs={1: 0x1000}, regions=[ro])
    assert result.r0 == 0x2A
    bad = run_asm("stb [%r1], 1\nexit", regs={1: 0x1000}, regions=[ro])
    assert "ctx [0x1000, 0x1008) is read-only" in bad.error


def test_instruction_budget():
    result = run_asm("mov %r0, 0\nadd %r0, 1\nja -2\nexit", insn_limit=1000)
    assert result.error.startswith("instruction limit of 1000 reached")
    assert result.insns == 1000 and result.r0 == 500 and result.error_insn == 2   # 1 + 500 adds + 499 ja


def test_helpers_table_receives_memory_and_args():
    seen = []

    def helper(mem: Memory, r1, r2, r3, r4, r5):
        seen.append((mem.read(r1, 2), r2, r5))
        return -1

    result = run_asm("mov %r2, 7\nmov %r5, 9\ncall 42\nexit", mem=b"hi", helpers={42: helper})
    assert seen == [(b"hi", 7, 9)] and result.r0 == U64


def test_unknown_helper_is_a_run_error():
    result = run_asm("call 63\nexit")
    assert result.error == "call to unknown helper 63" and result.error_insn == 0


def test_helper_memory_fault_names_the_call():
    result = run_asm("mov %r1, 0\ncall 1\nexit", helpers={1: lambda m, a, *_: m.load(a, 4)})
    assert "invalid read of size 4 at 0x0" in result.error
    assert "in helper 1 called by insn #1" in result.error


def test_callx_takes_the_helper_from_dst():
    assert run_asm("mov %r3, 4\ncall %r3\nexit", helpers={4: lambda *a: 77}).r0 == 77


def test_unwind_helper_stops_on_zero():
    helpers = {5: lambda m, r1, *_: r1}
    text = "mov %r1, {}\ncall 5\nmov %r0, 2\nexit"
    assert run_asm(text.format(0), helpers=helpers, unwind_helper=5).r0 == 0
    assert run_asm(text.format(3), helpers=helpers, unwind_helper=5).r0 == 2
    assert run_asm(text.format(0), helpers=helpers).r0 == 2       # without the unwind hook


def test_bpf2bpf_call_gets_a_fresh_frame_and_restores_callee_saved():
    result = run_asm("""
        mov %r6, 6
        stdw [%r10-8], 11
        mov %r1, %r10
        call local f
        ldxdw %r2, [%r10-8]
        add %r0, %r2
        add %r0, %r6
        exit
    f:
        mov %r6, 100
        stdw [%r10-8], 1000       # its own frame: does not clobber the caller's slot
        ldxdw %r0, [%r1-8]        # the caller's frame is reachable through a pointer
        ldxdw %r3, [%r10-8]
        add %r0, %r3
        exit
    """)
    assert result.error is None
    assert result.r0 == 11 + 1000 + 11 + 6


def test_dead_frame_is_gone_after_return():
    result = run_asm("""
        call local f
        ldxdw %r0, [%r0-8]
        exit
    f:
        mov %r0, %r10
        exit
    """)
    assert "invalid read of size 8" in result.error and result.error_insn == 1


def test_call_depth_is_limited():
    result = run_asm("call local f\nexit\nf:\ncall local f\nexit")
    assert result.error == f"the call stack is too deep ({interp.MAX_CALL_FRAMES} frames)"


def test_ld_imm64_pseudo_sources_go_through_the_resolver():
    first, second = isa.ld_imm64(0, 0, src=isa.PSEUDO_MAP_VALUE)
    second = Insn(0, imm=16)
    prog = (first, second, Insn(isa.JMP | isa.EXIT))
    assert "needs a resolver" in run_slots(*prog).error
    got = run_slots(*prog, resolve_pseudo=lambda a, b, pc: 0x1000 + b.imm + pc)
    assert got.r0 == 0x1010


def test_ld_abs_and_ld_ind_use_the_packet_hook():
    packet = bytes(range(16))

    def load(offset, size):
        return packet[offset:offset + size] if 0 <= offset and offset + size <= len(packet) else None

    abs_h = Insn(isa.LD | isa.ABS | isa.H, imm=2)
    ind_w = Insn(isa.LD | isa.IND | isa.W, src=6, imm=1)
    prog = (Insn(0xB7, 6, imm=3), abs_h, Insn(0xBF, 7, 0), ind_w, Insn(0x0F, 0, 7),
            Insn(isa.JMP | isa.EXIT))
    assert run_slots(*prog, packet=load).r0 == 0x0203 + 0x04050607       # big-endian loads
    out_of_bounds = (Insn(isa.LD | isa.ABS | isa.W, imm=14), Insn(0xB7, 0, imm=5), Insn(0x95))
    assert run_slots(*out_of_bounds, packet=load).r0 == 0                 # ends the program
    assert "needs a packet" in run_slots(*prog).error


def test_load_acquire_and_store_release():
    acq = Insn(isa.STX | isa.ATOMIC | isa.W, 0, 10, -4, isa.LOAD_ACQ)
    rel = Insn(isa.STX | isa.ATOMIC | isa.H, 10, 1, -4, isa.STORE_REL)
    prog = (Insn(0x62, 10, 0, -4, -1), Insn(0xB7, 1, imm=0x1234), rel, acq, Insn(0x95))
    assert run_slots(*prog).r0 == 0xFFFF1234


def test_probe_mem_reads_zero_instead_of_faulting():
    probe = Insn(isa.LDX | isa.PROBE_MEM | isa.DW, 0, 1, 0)
    assert run_slots(Insn(0xB7, 0, imm=5), probe, Insn(0x95), regs={1: 8}).r0 == 0


LOAD_ERRORS = [
    ("mov %r10, 1\nexit", "frame pointer r10 is read only", 0),
    ("ldxdw %r10, [%r1]\nexit", "frame pointer r10 is read only", 0),
    ("ja +2\nexit", "jump out of range from insn 0 to 3", 0),
    ("ja +1\nlddw %r0, 1\nexit", "jump into the middle of ld_imm64 at insn 1", 0),
    ("mov %r0, 1\ncall local f\nf:\nexit", "function t: last insn is not an exit or jmp", 1),
    ("call local f\nexit\nf:\nja -3\nexit", "jump out of range from insn 2 to 0", 2),
    ("mov %r0, 1", "function t: last insn is not an exit or jmp", 0),
    ("call local +5\nexit", "call to invalid destination #6", 0),
]


@pytest.mark.parametrize("text,message,insn", LOAD_ERRORS, ids=[e[1] + str(i) for i, e in enumerate(LOAD_ERRORS)])
def test_programs_the_kernel_would_not_load_are_refused(text, message, insn):
    with pytest.raises(BpfKasanError) as info:
        run_asm(text)
    assert info.value.message == message and info.value.insn == insn
    assert info.value.file == "t.asm" and info.value.line is not None


def test_invalid_encoding_is_refused():
    with pytest.raises(Exception) as info:
        run_slots(Insn(0x07, 0, 1, 0, 1), Insn(0x95))
    assert "reserved field src=1" in str(info.value)


def test_preset_registers_cannot_include_r10():
    with pytest.raises(CheckError):
        run_asm("exit", regs={10: 0})


@pytest.mark.parametrize("op,a,b,bits,signed,expected", [
    (isa.DIV, 7, 0, 64, False, 0),
    (isa.MOD, 7, 0, 32, False, 7),
    (isa.DIV, 1 << 63, U64, 64, True, 1 << 63),
    (isa.MOD, (-7) & U64, 2, 64, True, (-1) & U64),
    (isa.LSH, 1, 33, 32, False, 2),
    (isa.ARSH, 0x80000000, 31, 32, False, 0xFFFFFFFF),
    (isa.SUB, 0, 1, 32, False, 0xFFFFFFFF),
])
def test_alu_result(op, a, b, bits, signed, expected):
    assert interp.alu_result(op, a, b, bits, signed) == expected


def test_jump_taken_table():
    assert interp.jump_taken(isa.JSLE, U64, 0, 64)
    assert not interp.jump_taken(isa.JLE, U64, 0, 64)
    assert interp.jump_taken(isa.JEQ, 0x1_0000_0005, 5, 32)
    assert not interp.jump_taken(isa.JEQ, 0x1_0000_0005, 5, 64)
