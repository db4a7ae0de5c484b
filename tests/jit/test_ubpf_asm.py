"""The uBPF/bpf_conformance assembly dialect: encodings, labels, errors, and the round trip."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jit import isa
from jit.errors import JitError
from jit.isa import Insn
from jit.ubpf_asm import assemble, assemble_program, disassemble, format_insn

# (source line, expected slot as (code, dst, src, off, imm)); opcodes from selftests.md §1.4.
ENCODINGS = [
    ("mov32 %r0, 1", (0xB4, 0, 0, 0, 1)),
    ("mov %r1, %r2", (0xBF, 1, 2, 0, 0)),
    ("add %r1, 0xfffffff8", (0x07, 1, 0, 0, -8)),
    ("sub32 %r3, -1", (0x14, 3, 0, 0, -1)),
    ("sdiv %r1, %r2", (0x3F, 1, 2, 1, 0)),
    ("smod32 %r1, 3", (0x94, 1, 0, 1, 3)),
    ("div32 %r1, %r2", (0x3C, 1, 2, 0, 0)),
    ("neg %r4", (0x87, 4, 0, 0, 0)),
    ("neg32 %r4", (0x84, 4, 0, 0, 0)),
    ("arsh32 %r1, 5", (0xC4, 1, 0, 0, 5)),
    ("movsx1632 %r1, %r2", (0xBC, 1, 2, 16, 0)),
    ("movsx3264 %r1, %r2", (0xBF, 1, 2, 32, 0)),
    ("be16 %r1", (0xDC, 1, 0, 0, 16)),
    ("le64 %r1", (0xD4, 1, 0, 0, 64)),
    ("bswap32 %r1", (0xD7, 1, 0, 0, 32)),
    ("swap64 %r1", (0xD7, 1, 0, 0, 64)),
    ("ja +3", (0x05, 0, 0, 3, 0)),
    ("ja32 -2", (0x06, 0, 0, 0, -2)),
    ("jeq %r1, 0x33, +1", (0x15, 1, 0, 1, 0x33)),
    ("jsle32 %r1, %r2, -4", (0xDE, 1, 2, -4, 0)),
    ("jset %r1, %r2, +0", (0x4D, 1, 2, 0, 0)),
    ("call 1", (0x85, 0, 0, 0, 1)),
    ("call %r2", (0x8D, 2, 0, 0, 0)),
    ("call local +2", (0x85, 0, 1, 0, 2)),
    ("call runtime 7", (0x85, 0, 2, 0, 7)),
    ("exit", (0x95, 0, 0, 0, 0)),
    ("ldxw %r0, [%r1+2]", (0x61, 0, 1, 2, 0)),
    ("ldxdw %r0, [%r10-8]", (0x79, 0, 10, -8, 0)),
    ("ldxsh %r0, [%r1]", (0x89, 0, 1, 0, 0)),
    ("stb [%r10-1], 7", (0x72, 10, 0, -1, 7)),
    ("stxdw [%r1+0x10], %r2", (0x7B, 1, 2, 16, 0)),
    ("lock add [%r1+4], %r2", (0xDB, 1, 2, 4, 0x00)),
    ("lock fetch or32 [%r1], %r2", (0xC3, 1, 2, 0, 0x41)),
    ("lock xchg [%r1], %r2", (0xDB, 1, 2, 0, 0xE1)),
    ("lock cmpxchg32 [%r1], %r2", (0xC3, 1, 2, 0, 0xF1)),
    ("ldabsh 12", (0x28, 0, 0, 0, 12)),
    ("ldindb %r3, 2", (0x50, 0, 3, 0, 2)),
    ("mov %r0, %r11", (0xBF, 0, 11, 0, 0)),          # r11..r15 encode, for negative tests
]


@pytest.mark.parametrize("line,slot", ENCODINGS, ids=[e[0] for e in ENCODINGS])
def test_encoding(line, slot):
    assert assemble(line) == [Insn(*slot)]


def test_lddw_takes_two_slots_and_any_64_bit_value():
    assert assemble("lddw %r0, 0x1122334455667788") == list(isa.ld_imm64(0, 0x1122334455667788))
    assert assemble("lddw %r2, -1") == list(isa.ld_imm64(2, -1))


def test_labels_count_slots_including_lddw_and_exit_is_implicit():
    insns = assemble("""
        ja over            # forward, over a two-slot lddw
        lddw %r0, 5
    over:
        jeq %r0, 0, exit
        ja32 over          # ja32 takes its displacement in imm
        call local func
        exit
    func:
        exit
    """)
    assert insns[0].off == 2
    assert insns[3].off == 2             # jeq at slot 3 -> first exit at slot 6
    assert insns[4].imm == -2
    assert insns[5].imm == 1 and insns[5].src == isa.PSEUDO_CALL


def test_instruction_after_label_on_the_same_line():
    assert assemble("top: mov %r0, 1\nja top") == [Insn(0xB7, 0, 0, 0, 1), Insn(0x05, off=-2)]


ERRORS = [
    ("mov32 %r0, 2147483648", "Immediate out of 32-bit range: 2147483648"),
    ("mov32 %r0, 0x100000000", "Immediate out of 32-bit range: 0x100000000"),
    ("ja NOT_A_LABEL", "Invalid label: NOT_A_LABEL"),
    ("ldxq %r0, %r1", "Invalid mnemonic: ldxq"),
    ("add64 %r0, 1", "Invalid mnemonic: add64"),
    ("ldxb %r0, %r1", "Failed to decode register and offset: %r1"),
    ("ldxb %r0, [%r1+0x10000]", "Offset out of 16-bit range"),
    ("stw [%r1-40000], 1", "Offset out of 16-bit range"),
    ("lddw %r0", "Invalid number of operands for mnemonic: lddw"),
    ("or %r0, %r50", "Invalid register: %r50"),
    ("lock or [%r10-8]", "Invalid number of operands for lock"),
    ("lock", "Invalid number of operands for lock"),
    ("lock nand [%r1], %r2", "Invalid atomic operation: nand"),
    ("mov %r0,1", "Invalid number of operands"),
    ("mov %r0, ten", "Immediate is not a number: ten"),
    ("call far 3", "Invalid call"),
    ("a:\na:", "Duplicate label (a)"),
]


@pytest.mark.parametrize("text,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_input_is_one_located_error(text, message):
    with pytest.raises(JitError) as info:
        assemble("exit\n" + text, file="t.asm")
    assert message in info.value.message
    assert info.value.file == "t.asm" and info.value.line == text.count("\n") + 2
    assert str(info.value).startswith(f"t.asm:{info.value.line}: ")


def test_program_keeps_source_lines_per_slot():
    prog = assemble_program("mov %r0, 1\n\nlddw %r1, 2\nexit", name="p", file="p.asm")
    assert [prog.lines[i].line for i in range(4)] == [1, 3, 3, 4]   # both lddw slots: line 3


def test_every_valid_listed_form_prints_as_a_mnemonic():
    for line, slot in ENCODINGS:
        text = format_insn(Insn(*slot))
        assert text.startswith(".raw") == (max(slot[1], slot[2]) > isa.MAX_REG), line
        assert assemble(text) == [Insn(*slot)]


def test_unprintable_slot_falls_back_to_raw():
    weird = Insn(0xE5, 0, 0, 3, 0)                     # may_goto has no uBPF spelling
    assert format_insn(weird) == ".raw 0x00000000000300e5"
    assert assemble(format_insn(weird)) == [weird]


_reg, _imm = st.integers(0, 10), st.integers(-(1 << 31), (1 << 31) - 1)
_off = st.integers(-(1 << 15), (1 << 15) - 1)
_ARITH = [isa.ADD, isa.SUB, isa.MUL, isa.DIV, isa.OR, isa.AND, isa.LSH, isa.RSH, isa.MOD,
          isa.XOR, isa.MOV, isa.ARSH]
_ATOMIC_IMMS = [0x00, 0x01, 0x40, 0x41, 0x50, 0x51, 0xA0, 0xA1, 0xE1, 0xF1]


@st.composite
def _alu(draw):
    cls, op = draw(st.sampled_from([isa.ALU, isa.ALU64])), draw(st.sampled_from(_ARITH))
    off = 1 if op in (isa.DIV, isa.MOD) and draw(st.booleans()) else 0
    if draw(st.booleans()):
        return [Insn(cls | op | isa.X, draw(_reg), draw(_reg), off, 0)]
    return [Insn(cls | op | isa.K, draw(_reg), 0, off, draw(_imm))]


@st.composite
def _jump(draw):
    cls, op = draw(st.sampled_from([isa.JMP, isa.JMP32])), draw(st.sampled_from(list(isa.JMP_CONDS)))
    if draw(st.booleans()):
        return [Insn(cls | op | isa.X, draw(_reg), draw(_reg), draw(_off), 0)]
    return [Insn(cls | op | isa.K, draw(_reg), 0, draw(_off), draw(_imm))]


@st.composite
def _memory(draw):
    size = draw(st.sampled_from([isa.B, isa.H, isa.W, isa.DW]))
    narrow = draw(st.sampled_from([isa.B, isa.H, isa.W]))
    return [draw(st.sampled_from([
        Insn(isa.LDX | isa.MEM | size, draw(_reg), draw(_reg), draw(_off)),
        Insn(isa.LDX | isa.MEMSX | narrow, draw(_reg), draw(_reg), draw(_off)),
        Insn(isa.ST | isa.MEM | size, draw(_reg), 0, draw(_off), draw(_imm)),
        Insn(isa.STX | isa.MEM | size, draw(_reg), draw(_reg), draw(_off)),
        Insn(isa.STX | isa.ATOMIC | draw(st.sampled_from([isa.W, isa.DW])), draw(_reg), draw(_reg),
             draw(_off), draw(st.sampled_from(_ATOMIC_IMMS))),
        Insn(isa.LD | isa.ABS | narrow, imm=draw(_imm)),
        Insn(isa.LD | isa.IND | narrow, src=draw(_reg), imm=draw(_imm)),
    ]))]


@st.composite
def _other(draw):
    width = draw(st.sampled_from([16, 32, 64]))
    movsx = draw(st.sampled_from([(isa.ALU64, 8), (isa.ALU64, 16), (isa.ALU64, 32), (isa.ALU, 8),
                                  (isa.ALU, 16)]))
    return draw(st.sampled_from([
        [Insn(draw(st.sampled_from([isa.ALU, isa.ALU64])) | isa.NEG, draw(_reg))],
        [Insn(movsx[0] | isa.MOV | isa.X, draw(_reg), draw(_reg), movsx[1])],
        [Insn(draw(st.sampled_from([0xD4, 0xDC, 0xD7])), draw(_reg), imm=width)],
        [Insn(isa.JMP | isa.JA, off=draw(_off))], [Insn(isa.JMP32 | isa.JA, imm=draw(_imm))],
        [Insn(isa.JMP | isa.CALL, src=draw(st.sampled_from([0, 1, 2])), imm=draw(_imm))],
        [Insn(isa.JMP | isa.CALL | isa.X, draw(_reg))], [Insn(isa.JMP | isa.EXIT)],
        list(isa.ld_imm64(draw(_reg), draw(st.integers(0, (1 << 64) - 1)))),
    ]))


_dialect_program = st.lists(st.one_of(_alu(), _jump(), _memory(), _other()), min_size=1,
                            max_size=12).map(lambda parts: [i for part in parts for i in part])


@settings(max_examples=400, deadline=None)
@given(_dialect_program)
def test_dialect_instructions_print_as_mnemonics_and_read_back(slots):
    text = disassemble(slots)
    assert ".raw" not in text
    assert assemble(text) == slots


_any_slot = st.builds(Insn, code=st.integers(0, 255), dst=st.integers(0, 15), src=st.integers(0, 15),
                      off=_off, imm=_imm)


@settings(max_examples=200, deadline=None)
@given(st.lists(_any_slot, min_size=1, max_size=12))
def test_any_slots_survive_the_round_trip(slots):
    assert assemble(disassemble(slots)) == slots
