"""Properties of the slot encoding and of the pseudo-C printer/parser pair, over every
instruction `jit.isa.check` accepts.

Valid instructions are built by taking an entry of a grid of every opcode with the field
values the decoder cares about (0, 1, movsx widths, swap widths, atomic codes...) and then
randomising each field as far as `check` still accepts it, so free fields get any value."""
from __future__ import annotations

import dataclasses
import itertools
from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jit import isa
from jit.errors import JitError
from jit.isa import Insn
from jit.llvm_asm import assemble
from jit.llvm_disasm import disassemble, format_insn

_GRID_OFFS = (0, 1, 8, 16, 32)
_GRID_IMMS = (0, 16, 32, 64, 1, 1 << 16, isa.LOAD_ACQ, isa.STORE_REL, *sorted(isa.ATOMIC_OPS))
_FIELDS = {"dst": st.integers(0, isa.MAX_REG), "src": st.integers(0, isa.MAX_REG),
           "off": st.integers(-(1 << 15), (1 << 15) - 1), "imm": st.integers(-(1 << 31), (1 << 31) - 1)}


def _accepted(insn: Insn) -> bool:
    try:
        isa.check([insn, Insn(0)] if insn.is_ld_imm64 else [insn])
    except JitError:
        return False
    return True


@cache
def valid_grid() -> tuple[Insn, ...]:
    """Every opcode with each combination of the interesting field values that is valid."""
    combos = itertools.product(range(256), (0, 1), (0, 1), _GRID_OFFS, _GRID_IMMS)
    return tuple(i for i in itertools.starmap(Insn, combos) if _accepted(i))


@st.composite
def valid_insn(draw) -> tuple[Insn, ...]:
    """One valid instruction as its slots (two for ld_imm64)."""
    insn = draw(st.sampled_from(valid_grid()))
    for name, values in _FIELDS.items():
        if draw(st.booleans()):
            candidate = dataclasses.replace(insn, **{name: draw(values)})
            insn = candidate if _accepted(candidate) else insn
    if insn.is_ld_imm64:
        return insn, Insn(0, imm=draw(_FIELDS["imm"]))
    return (insn,)


programs = st.lists(valid_insn(), min_size=1, max_size=12).map(lambda units: [s for u in units for s in u])
any_slot = st.binary(min_size=8, max_size=8).map(Insn.from_bytes)
# Generation dominates the cost; 200 programs of up to 12 instructions keep the file near 10 s.
_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_grid_covers_every_class_and_the_internal_modes():
    grid = valid_grid()
    assert {i.cls for i in grid} == set(range(8))
    assert {i.mode for i in grid if i.cls == isa.LDX} == {isa.MEM, isa.MEMSX, isa.PROBE_MEM,
                                                          isa.PROBE_MEMSX, isa.PROBE_MEM32}
    assert {i.imm for i in grid if i.cls == isa.STX and i.mode == isa.ATOMIC} == \
        set(isa.ATOMIC_OPS) | {isa.LOAD_ACQ, isa.STORE_REL}


def test_every_grid_instruction_has_a_real_spelling_that_reads_back():
    for insn in valid_grid():
        prog = [insn, Insn(0, imm=-7)] if insn.is_ld_imm64 else [insn]
        text = disassemble(prog)
        assert len(text) == 1 and not text[0].startswith(".8byte"), (insn, text)
        assert assemble(text[0]).insns == prog, (insn, text)


@_SETTINGS
@given(programs)
def test_decode_encode_round_trip(prog):
    data = isa.encode(prog)
    assert len(data) == 8 * len(prog)
    assert isa.decode(data) == prog
    assert [Insn.from_u64(i.to_u64()) for i in prog] == prog


@_SETTINGS
@given(programs, st.booleans())
def test_disassemble_assemble_round_trip(prog, labels):
    lines = disassemble(prog, labels=labels)
    assert not any(line.startswith(".8byte") for line in lines)
    out = assemble("\n".join(lines))
    assert out.insns == prog
    # one printed line per instruction, both ld_imm64 slots on the same line
    assert out.lines[-1] == len(lines)
    assert [out.lines[pc + 1] for pc, i in enumerate(prog) if i.is_ld_imm64] == \
        [out.lines[pc] for pc, i in enumerate(prog) if i.is_ld_imm64]


@_SETTINGS
@given(valid_insn())
def test_format_insn_matches_disassemble(unit):
    assert format_insn(*unit) == disassemble(list(unit))[0]


@_SETTINGS
@given(st.lists(any_slot, min_size=1, max_size=16), st.booleans())
def test_any_slots_survive_the_text_form(prog, labels):
    """Slots `check` refuses print as `.8byte`, so even garbage reads back unchanged."""
    assert assemble("\n".join(disassemble(prog, labels=labels))).insns == prog


@_SETTINGS
@given(any_slot)
def test_decode_refuses_exactly_what_check_refuses(insn):
    if insn.is_ld_imm64:
        insn = dataclasses.replace(insn, code=isa.LD | isa.ABS | isa.DW)   # keep it one slot
    try:
        isa.check([insn])
    except JitError as e:
        assert e.insn == 0
        assert format_insn(insn) == f".8byte 0x{insn.to_u64():016x}"
        return
    assert isa.decode(insn.to_bytes()) == [insn]


@given(st.integers(0, isa.MAX_REG), st.integers(-(1 << 63), (1 << 64) - 1))
def test_ld_imm64_keeps_64_bits(dst, value):
    first, second = isa.ld_imm64(dst, value)
    assert isa.imm64(first, second) == value % (1 << 64)
    assert assemble(f"r{dst} = {value} ll").insns == [first, second]


def test_truncated_programs_are_refused():
    for data in (b"\x95" * 7, isa.encode(isa.ld_imm64(1, 5))[:8]):
        try:
            isa.decode(data, file="t.o")
        except JitError as e:
            assert e.file == "t.o"
        else:
            raise AssertionError(f"{data!r} decoded")
