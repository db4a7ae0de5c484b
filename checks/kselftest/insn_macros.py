"""The kernel's instruction-building macros (include/linux/filter.h, tools/include/linux/filter.h)
as used in `__imm_insn(name, BPF_...(...))` operands, evaluated into one `jit.isa.Insn`.

Owns: the macro table. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

from checks.errors import CheckError
from checks.kselftest.tokens import Tok, spell, split_top
from jit import isa
from jit.isa import Insn

# name -> (parameter names, builder). Each builder mirrors the macro's compound literal.
INSN_MACROS: dict[str, tuple[tuple[str, ...], Callable[[SimpleNamespace], Insn]]] = {
    "BPF_ALU64_REG": (("OP", "DST", "SRC"), lambda p: Insn(isa.ALU64 | p.OP | isa.X, p.DST, p.SRC)),
    "BPF_ALU32_REG": (("OP", "DST", "SRC"), lambda p: Insn(isa.ALU | p.OP | isa.X, p.DST, p.SRC)),
    "BPF_ALU64_IMM": (("OP", "DST", "IMM"), lambda p: Insn(isa.ALU64 | p.OP | isa.K, p.DST, 0, 0, p.IMM)),
    "BPF_ALU32_IMM": (("OP", "DST", "IMM"), lambda p: Insn(isa.ALU | p.OP | isa.K, p.DST, 0, 0, p.IMM)),
    "BPF_MOV64_REG": (("DST", "SRC"), lambda p: Insn(isa.ALU64 | isa.MOV | isa.X, p.DST, p.SRC)),
    "BPF_MOV32_REG": (("DST", "SRC"), lambda p: Insn(isa.ALU | isa.MOV | isa.X, p.DST, p.SRC)),
    "BPF_MOV64_IMM": (("DST", "IMM"), lambda p: Insn(isa.ALU64 | isa.MOV | isa.K, p.DST, 0, 0, p.IMM)),
    "BPF_MOV32_IMM": (("DST", "IMM"), lambda p: Insn(isa.ALU | isa.MOV | isa.K, p.DST, 0, 0, p.IMM)),
    "BPF_MOVSX64_REG": (("DST", "SRC", "OFF"),
                        lambda p: Insn(isa.ALU64 | isa.MOV | isa.X, p.DST, p.SRC, p.OFF)),
    "BPF_MOVSX32_REG": (("DST", "SRC", "OFF"),
                        lambda p: Insn(isa.ALU | isa.MOV | isa.X, p.DST, p.SRC, p.OFF)),
    "BPF_ENDIAN": (("TYPE", "DST", "LEN"), lambda p: Insn(isa.ALU | isa.END | p.TYPE, p.DST, 0, 0, p.LEN)),
    "BPF_BSWAP": (("DST", "LEN"), lambda p: Insn(isa.ALU64 | isa.END | isa.TO_LE, p.DST, 0, 0, p.LEN)),
    "BPF_LD_ABS": (("SIZE", "IMM"), lambda p: Insn(isa.LD | p.SIZE | isa.ABS, 0, 0, 0, p.IMM)),
    "BPF_LD_IND": (("SIZE", "SRC", "IMM"), lambda p: Insn(isa.LD | p.SIZE | isa.IND, 0, p.SRC, 0, p.IMM)),
    "BPF_LDX_MEM": (("SIZE", "DST", "SRC", "OFF"),
                    lambda p: Insn(isa.LDX | p.SIZE | isa.MEM, p.DST, p.SRC, p.OFF)),
    "BPF_LDX_MEMSX": (("SIZE", "DST", "SRC", "OFF"),
                      lambda p: Insn(isa.LDX | p.SIZE | isa.MEMSX, p.DST, p.SRC, p.OFF)),
    "BPF_STX_MEM": (("SIZE", "DST", "SRC", "OFF"),
                    lambda p: Insn(isa.STX | p.SIZE | isa.MEM, p.DST, p.SRC, p.OFF)),
    "BPF_ST_MEM": (("SIZE", "DST", "OFF", "IMM"),
                   lambda p: Insn(isa.ST | p.SIZE | isa.MEM, p.DST, 0, p.OFF, p.IMM)),
    "BPF_ATOMIC_OP": (("SIZE", "OP", "DST", "SRC", "OFF"),
                      lambda p: Insn(isa.STX | p.SIZE | isa.ATOMIC, p.DST, p.SRC, p.OFF, p.OP)),
    "BPF_JMP_REG": (("OP", "DST", "SRC", "OFF"), lambda p: Insn(isa.JMP | p.OP | isa.X, p.DST, p.SRC, p.OFF)),
    "BPF_JMP_IMM": (("OP", "DST", "IMM", "OFF"),
                    lambda p: Insn(isa.JMP | p.OP | isa.K, p.DST, 0, p.OFF, p.IMM)),
    "BPF_JMP32_REG": (("OP", "DST", "SRC", "OFF"),
                      lambda p: Insn(isa.JMP32 | p.OP | isa.X, p.DST, p.SRC, p.OFF)),
    "BPF_JMP32_IMM": (("OP", "DST", "IMM", "OFF"),
                      lambda p: Insn(isa.JMP32 | p.OP | isa.K, p.DST, 0, p.OFF, p.IMM)),
    "BPF_JMP_A": (("OFF",), lambda p: Insn(isa.JMP | isa.JA, 0, 0, p.OFF)),
    "BPF_CALL_REL": (("IMM",), lambda p: Insn(isa.JMP | isa.CALL, 0, isa.PSEUDO_CALL, 0, p.IMM)),
    "BPF_EXIT_INSN": ((), lambda p: Insn(isa.JMP | isa.EXIT)),
    "BPF_RAW_INSN": (("CODE", "DST", "SRC", "OFF", "IMM"),
                     lambda p: Insn(p.CODE, p.DST, p.SRC, p.OFF, p.IMM)),
}


def _wrap(value: int, bits: int, signed: bool) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if signed and value >> (bits - 1) else value


def instruction(toks: list[Tok], evaluate: Callable[[list[Tok]], int], *, file: str | None = None) -> Insn:
    """`BPF_ST_MEM(BPF_W, BPF_REG_1, 8, 42)` → its Insn; each argument goes through `evaluate`
    and is stored into its field's width, as the struct bpf_insn initialiser would."""
    line = toks[0].line if toks else None
    if len(toks) < 3 or toks[0].text not in INSN_MACROS or toks[1].text != "(" or toks[-1].text != ")":
        raise CheckError(f"unsupported instruction expression '{spell(toks)}'", file=file, line=line)
    params, build = INSN_MACROS[toks[0].text]
    args = split_top(toks[2:-1], ",") if len(toks) > 3 else []
    if len(args) != len(params):
        raise CheckError(f"{toks[0].text} takes {len(params)} arguments, given {len(args)}",
                         file=file, line=line)
    values = SimpleNamespace(**{p: evaluate(a) for p, a in zip(params, args)})
    insn = build(values)
    return Insn(insn.code & 0xFF, insn.dst & 0xF, insn.src & 0xF, _wrap(insn.off, 16, True),
                _wrap(insn.imm, 32, True))


def as_long(insn: Insn) -> int:
    """`*(long *)&insn`: the instruction's 8 bytes read as a signed 64-bit integer."""
    return _wrap(insn.to_u64(), 64, True)
