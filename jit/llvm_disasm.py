"""Slots -> LLVM / kernel pseudo-C BPF text, in the spelling `jit.llvm_asm` reads back.

Style, one line per instruction (an ld_imm64 pair is one line): registers as `r`, except `w`
for 32-bit ALU/JMP and for the 32-bit and smaller atomics (as clang prints them); memory
offsets in hex with a sign, `*(u32 *)(r1 + 0x4)`; ALU and compare immediates in signed
decimal; ld_imm64 constants in hex; jumps as `goto +N`/`-N` (or `goto L7` with labels).
A slot `jit.isa.check` refuses, or an ld_imm64 without its second slot, prints as
`.8byte 0x...`, so assemble(disassemble(x)) == x holds for any slots.

Owns: printing this dialect. Must not import unicorn, capstone, checks/ or bot/.
"""
from __future__ import annotations

from typing import Sequence

from jit import isa
from jit.errors import JitError
from jit.isa import Insn
from jit.llvm_asm import (ALU_ASSIGN, ATOMIC_FETCH, ATOMIC_SWAP, ENDIAN, JMP_OPS, PROBE_MODES,
                          PSEUDO_NAMES, SIGNED_ASSIGN)

_PROBE_PREFIX = {(cls, probed): (prefix, plain) for (cls, plain, prefix), probed in PROBE_MODES.items()}
_LOCK_OPS = {op: ALU_ASSIGN[op] for op in isa.ATOMIC_RMW}


def _valid(*slots: Insn) -> bool:
    try:
        isa.check(list(slots))
    except JitError:
        return False
    return True


def _raw(insn: Insn) -> str:
    return f".8byte 0x{insn.to_u64():016x}"


def _signed_hex(v: int) -> str:
    return f"+ 0x{v:x}" if v >= 0 else f"- 0x{-v:x}"


def _disp(v: int) -> str:
    return f"+{v}" if v >= 0 else str(v)


def _reg(n: int, is64: bool = True) -> str:
    return f"{'r' if is64 else 'w'}{n}"


def _ptr(insn: Insn, signed: bool = False) -> str:
    return f"({'s' if signed else 'u'}{8 * insn.nbytes} *)"


def _alu(insn: Insn) -> str:
    is64, op = insn.cls == isa.ALU64, insn.op
    dst = _reg(insn.dst, is64)
    if op == isa.END:
        return f"r{insn.dst} = {ENDIAN[(insn.cls, insn.source)]}{insn.imm} r{insn.dst}"
    if op == isa.NEG:
        return f"{dst} = -{dst}"
    src = _reg(insn.src, is64) if insn.source == isa.X else str(insn.imm)
    if op != isa.MOV:
        sym = SIGNED_ASSIGN[op] if insn.off == 1 else ALU_ASSIGN[op]
        return f"{dst} {sym} {src}"
    if insn.source == isa.X and insn.off == 1:
        imm = insn.imm & 0xFFFFFFFF
        return f"{dst} = addr_space_cast({src}, {imm >> 16}, {imm & 0xFFFF})"
    return f"{dst} = (s{insn.off}){src}" if insn.off else f"{dst} = {src}"


def _jmp(insn: Insn, target: str | None) -> str:
    op = insn.op
    if op == isa.EXIT:
        return "exit"
    if op == isa.CALL:
        return _call(insn, target)
    if op == isa.JA:
        return (f"gotol {target or _disp(insn.imm)}" if insn.cls == isa.JMP32
                else f"goto {target or _disp(insn.off)}")
    if op == isa.JCOND:
        return f"may_goto {target or _disp(insn.off)}"
    is64 = insn.cls == isa.JMP
    src = _reg(insn.src, is64) if insn.source == isa.X else str(insn.imm)
    return f"if {_reg(insn.dst, is64)} {JMP_OPS[op]} {src} goto {target or _disp(insn.off)}"


def _call(insn: Insn, target: str | None) -> str:
    if insn.source == isa.X:
        return f"callx r{insn.dst}"
    if insn.src == isa.PSEUDO_CALL:
        return f"call {target or 'pc' + _disp(insn.imm)}"
    if insn.src == isa.PSEUDO_KFUNC_CALL:
        return f"call kfunc({insn.imm})"
    return f"call {insn.imm}"


def _ld(insn: Insn, second: Insn | None, target: str | None) -> str:
    if insn.mode in (isa.ABS, isa.IND):
        if insn.mode == isa.ABS:
            return f"r0 = *{_ptr(insn)}skb[{insn.imm}]"
        index = f"r{insn.src}" + (f" {_signed_hex(insn.imm)}" if insn.imm else "")
        return f"r0 = *{_ptr(insn)}skb[{index}]"
    if second is None:
        return _raw(insn)
    if insn.src == 0:
        return f"r{insn.dst} = 0x{isa.imm64(insn, second):x} ll"
    if insn.src == isa.PSEUDO_FUNC and target and not second.imm:
        return f"r{insn.dst} = {target} ll"
    off = f" {_signed_hex(second.imm)}" if second.imm else ""
    return f"r{insn.dst} = {PSEUDO_NAMES[insn.src]}({insn.imm}){off} ll"


def _probe(insn: Insn) -> tuple[str, int]:
    """The probe_* prefix (with a trailing blank) and the plain mode of a memory access."""
    prefix, plain = _PROBE_PREFIX.get((insn.cls, insn.mode), ("", insn.mode))
    return (prefix + " " if prefix else ""), plain


def _memory(insn: Insn) -> str:
    prefix, mode = _probe(insn)
    off = _signed_hex(insn.off)
    if insn.cls == isa.LDX:
        return f"{prefix}r{insn.dst} = *{_ptr(insn, mode == isa.MEMSX)}(r{insn.src} {off})"
    if insn.cls == isa.ST:
        return f"{prefix}*{_ptr(insn)}(r{insn.dst} {off}) = {insn.imm}"
    if mode == isa.MEM:
        return f"{prefix}*{_ptr(insn)}(r{insn.dst} {off}) = r{insn.src}"
    return prefix + _atomic(insn, off)


def _atomic(insn: Insn, off: str) -> str:
    is64, imm = insn.size == isa.DW, insn.imm
    src, addr = _reg(insn.src, is64), f"r{insn.dst} {off}"
    if imm == isa.LOAD_ACQ:
        return f"{_reg(insn.dst, is64)} = load_acquire({_ptr(insn)}(r{insn.src} {off}))"
    if imm == isa.STORE_REL:
        return f"store_release({_ptr(insn)}({addr}), {src})"
    if imm in _LOCK_OPS:
        return f"lock *{_ptr(insn)}({addr}) {_LOCK_OPS[imm]} {src}"
    if imm in ATOMIC_FETCH:
        return f"{src} = {ATOMIC_FETCH[imm]}({_ptr(insn)}({addr}), {src})"
    name = ATOMIC_SWAP[imm] + ("_64" if is64 else "32_32")
    if imm == isa.ATOMIC_XCHG:
        return f"{src} = {name}({addr}, {src})"
    r0 = _reg(0, is64)
    return f"{r0} = {name}({addr}, {r0}, {src})"


def _format(insn: Insn, second: Insn | None, target: str | None) -> str:
    if not (_valid(insn, second) if insn.is_ld_imm64 and second is not None else _valid(insn)):
        return _raw(insn)
    if insn.is_alu:
        return _alu(insn)
    if insn.is_jump:
        return _jmp(insn, target)
    if insn.cls == isa.LD:
        return _ld(insn, second, target)
    return _memory(insn)


def format_insn(insn: Insn, next_insn: Insn | None = None) -> str:
    """One instruction; an ld_imm64 needs `next_insn` (its second slot), else it prints raw."""
    return _format(insn, next_insn if insn.is_ld_imm64 else None, None)


def _units(insns: list[Insn]) -> list[tuple[int, Insn, Insn | None]]:
    """(slot, first slot, second slot or None) for each printed line."""
    out, pc, n = [], 0, len(insns)
    while pc < n:
        insn = insns[pc]
        if insn.is_ld_imm64 and pc + 1 < n and _valid(insn, insns[pc + 1]):
            out.append((pc, insn, insns[pc + 1]))
            pc += 2
        else:
            out.append((pc, insn, None))
            pc += 1
    return out


def _target(pc: int, insn: Insn) -> int | None:
    """The slot a jump, bpf2bpf call or ld_imm64 of a function refers to."""
    if insn.is_jump and (insn.op in JMP_OPS or insn.op in (isa.JA, isa.JCOND)):
        return insn.jump_target(pc) if _valid(insn) else None
    if insn.is_pseudo_call or insn.is_ld_imm64 and insn.src == isa.PSEUDO_FUNC:
        return pc + 1 + insn.imm
    return None


def disassemble(insns: Sequence[Insn], *, labels: bool = False) -> list[str]:
    """One line per instruction. With `labels`, targets that start a line get `L<slot>:`
    and the jumps, calls and function loads naming them print the label."""
    units = _units(list(insns))
    starts = {pc for pc, _, _ in units}
    targets = {pc: _target(pc, insn) for pc, insn, _ in units} if labels else {}
    used = {t for t in targets.values() if t in starts}
    lines = []
    for pc, insn, second in units:
        dest = targets.get(pc)
        text = _format(insn, second, f"L{dest}" if dest in used else None)
        lines.append(f"L{pc}: {text}" if pc in used else text)
    return lines
