"""Input values worth trying on a program: the constants it compares against, and their neighbours.

A program that trusts an input (a random number, a map value) usually bounds it with a compare
first; an off-by-one in that bound is reached exactly at the boundary. So exploration tries, for
every constant the program compares a register with, the constant itself and its two
neighbours: `if r0 s> 24 goto out` lets 24 through, `if r2 > r1` with r2 = 12 lets 11 through.

Constants come from the immediates of conditional jumps and, for register-register compares,
from the last `mov reg, imm` into a compared register (straight-line tracking, reset by any
other write to it), and from `xor reg, imm` (x ^ c is zero exactly when x is c). Zero is left
out: nearly every zero compare is a NULL check, and zero and its neighbours are edge values
exploration tries anyway.

Map values are filled with byte patterns: an ascending run 00 01 02 ... (neighbouring bytes
differ, so a program subtracting or comparing two of them sees a sign), or one boundary value
as a repeated little-endian u64 (a u8/u16/u32/u64 load at offset 0 reads the value itself).

Owns: harvesting and the patterns. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

import struct

from jit import isa
from jit.program import Program

MAX_BOUNDARY = 6                      # most values a program contributes (each one is a run)
_NOT_COMPARES = (isa.JA, isa.CALL, isa.EXIT, isa.JCOND)
_CLOBBERED_BY_CALL = range(6)         # r0-r5
CTX_REG = 1                           # r1 holds the ctx at entry


def comparison_constants(program: Program) -> tuple[int, ...]:
    """The non-zero constants `program` compares registers with, in program order, once each."""
    known: dict[int, int] = {}         # register -> the immediate it was last set to
    found = []
    insns = program.insns
    pc = 0
    while pc < len(insns):
        insn = insns[pc]
        if insn.is_jump and insn.op not in _NOT_COMPARES:
            found += [insn.imm] if insn.source == isa.K else \
                [known[r] for r in (insn.dst, insn.src) if r in known]
        elif insn.is_call:
            for reg in _CLOBBERED_BY_CALL:
                known.pop(reg, None)
        elif insn.is_alu and insn.op == isa.MOV and insn.source == isa.K and insn.off == 0:
            known[insn.dst] = insn.imm
        elif insn.is_alu and insn.op == isa.XOR and insn.source == isa.K:
            found.append(insn.imm)
            known.pop(insn.dst, None)
        elif insn.is_alu or insn.cls in (isa.LDX, isa.LD):
            known.pop(insn.dst, None)
        pc += 2 if insn.is_ld_imm64 else 1
    return tuple(dict.fromkeys(c for c in found if c))


def reads_ctx(program: Program) -> bool:
    """Whether the program loads from its ctx (r1 at entry, or a copy of it made before r1 is
    overwritten): only then are the ctx's values inputs worth varying."""
    holders = {CTX_REG}
    for insn in program.insns:
        if insn.cls == isa.LDX and insn.src in holders:
            return True
        if insn.is_alu and insn.op == isa.MOV and insn.source == isa.X and insn.src in holders:
            holders.add(insn.dst)
        elif insn.is_call:
            holders -= set(_CLOBBERED_BY_CALL)
        elif insn.is_alu or insn.cls in (isa.LDX, isa.LD):
            holders.discard(insn.dst)
        if not holders:
            return False
    return False


def boundary_values(constants) -> tuple[int, ...]:
    """Each constant, then one below and one above it; at most MAX_BOUNDARY, no repeats."""
    values = dict.fromkeys(v for c in constants for v in (c, c - 1, c + 1))
    return tuple(values)[:MAX_BOUNDARY]


def ascending(size: int = 256) -> bytes:
    """00 01 02 ... ff 00 01 ...: neighbouring bytes differ by one."""
    return bytes(i & 0xFF for i in range(size))


def word(value: int) -> bytes:
    """`value` as one little-endian u64, the pattern a map value is filled with repeatedly."""
    return struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF)


def fill_bytes(fill: int | bytes, size: int) -> bytes:
    """`size` bytes of a map fill: one byte value repeated, or a pattern repeated and cut."""
    pattern = bytes([fill]) if isinstance(fill, int) else bytes(fill)
    return (pattern * (size // max(len(pattern), 1) + 1))[:size]
