"""KASAN instrumentation of JITed memory accesses: which accesses get a check, and its code.

Which: every LDX MEM/MEMSX (read), ST/STX MEM (write), atomic read-modify-write (one write of the
operand size), load-acquire (read) and store-release (write), unless the base register is r10
(the kernel leaves stack accesses to the guard pages) or the access is a PROBE_* / arena form.

Outline mode emits the merged kernel's exact bytes before the access:
    push rax, rcx, rdx, rsi, rdi, r8, r9, r10, r11
    mov rdi, base            (omitted when base is rdi)
    add rdi, off             (omitted when off is 0)
    call __asan_{load,store}N
    pop r11 ... rax
Inline mode keeps that sequence out of line, after the function, behind a fast path that only
reads shadow memory:
    lea r11, [base+off]; add r11, N; sbb r10, r10; lea r11, [r11-1]; shr r11, 3; or r11, r10
    movabs r10, KASAN_SHADOW_OFFSET; cmp byte [r11+r10], 0; jne slow            (last byte)
    (N > 1) lea r11, [base+off]; shr r11, 3; cmp byte [r11+r10], 0; jne slow   (first byte)
The slow path is the outline sequence followed by `jmp` back to the access. The fast path has no
branch for wild addresses; the emulated machine (checks/machine.py) sends them to the slow path:
- a `cmp` reading unmapped shadow faults, and the machine resumes at the site's slow path
  (CheckSite.probe_offsets, slow_offset; the registers are intact). That covers a range ending
  below the shadowed kernel half and one starting below it, and a range that wraps past 2**64
  (the kernel's `addr + size < addr`): the carry of `add` turns the last byte's granule into all
  ones, whose shadow, just below KASAN_SHADOW_OFFSET, is unmapped;
- a wild address whose shadow address is mapped memory reading zero (the shadow of
  0xfffc64.. is the direct map) passes the fast path, so when the access itself faults the
  machine resumes once at the slow path (CheckSite.access_offset) and the access then faults again.
A non-zero shadow byte for the first or the last byte (an unaligned access may straddle two
granules) takes the `jne`. So both modes report exactly the same accesses, through the same
`__asan_*` call; the CheckSite's return offset is that call's, as the kernel's `_RET_IP_`.

Owns: the instrumentation policy and sequences. Must not import capstone, unicorn, checks/ or bot/.
"""
from __future__ import annotations

from functools import lru_cache

from jit import isa
from jit.emit_ctx import ABS, BACK, SLOW, Chunk, EmitCtx, Site
from jit.errors import JitError
from jit.frame import AUX, SCRATCH
from jit.image import KASAN_SHADOW_OFFSET
from jit.isa import Insn
from jit.x86 import (OP_OR, Cond, Ext, Reg, emit_alu_ri, emit_call, emit_cmp_byte_indexed_0, emit_jcc32,
                     emit_lea, emit_mov_rr, emit_movabs, emit_op_rr, emit_pop, emit_push, emit_shift_ri)

OP_SBB = 0x19          # sbb r/m, reg

SAVED = (Reg.RAX, Reg.RCX, Reg.RDX, Reg.RSI, Reg.RDI, Reg.R8, Reg.R9, Reg.R10, Reg.R11)


def access_of(insn: Insn) -> tuple[bool, int, int, int] | None:
    """(is_write, size, base BPF register, offset) of the access `insn` makes, if it gets a check."""
    cls, mode = insn.cls, insn.mode
    if cls == isa.LDX and mode in (isa.MEM, isa.MEMSX):
        access = (False, insn.nbytes, insn.src, insn.off)
    elif cls in (isa.ST, isa.STX) and mode == isa.MEM:
        access = (True, insn.nbytes, insn.dst, insn.off)
    elif cls == isa.STX and mode == isa.ATOMIC:
        if insn.imm == isa.LOAD_ACQ:
            access = (False, insn.nbytes, insn.src, insn.off)
        else:
            access = (True, insn.nbytes, insn.dst, insn.off)
    else:
        return None
    return None if access[2] == isa.FP else access


def emit_check(ctx: EmitCtx, access: tuple[bool, int, int, int] | None, base: int | None = None) -> None:
    """The check for `access` at the current end of the chunk, in the target's KASAN mode.
    `base` overrides the x86 register holding the base (the atomic fetch loop moves rax away)."""
    if access is None or ctx.kasan == "off":
        return
    if ctx.target.asan_address is None:
        raise JitError(f"KASAN mode {ctx.kasan!r} needs Target.asan_address")
    is_write, size, bpf_base, off = access
    reg = ctx.reg(bpf_base) if base is None else base
    asan = ctx.target.asan_address(is_write, size)
    chunk = ctx.out
    if ctx.kasan == "outline":
        ret_at = _place_asan_call(chunk, reg, off, asan)
        chunk.sites.append(Site(None, ret_at, size, is_write, bpf_base, off))
        return
    slow_index = len(chunk.slow)
    code, fields, probes = fast_path(reg, off, size)
    at = len(chunk.code)
    chunk.code += code
    chunk.relocs += [(at + f, SLOW, slow_index) for f in fields]
    slow = Chunk()
    ret_at = _place_asan_call(slow, reg, off, asan)
    slow.jmp32(BACK, len(chunk.code))
    chunk.slow.append(slow)
    chunk.sites.append(Site(slow_index, ret_at, size, is_write, bpf_base, off,
                            tuple(at + p for p in probes), len(chunk.code)))


def _place_asan_call(chunk: Chunk, base: int, off: int, asan: int) -> int:
    """Append the outline sequence; returns the offset just after its call."""
    code, field = asan_call(base, off)
    at = len(chunk.code)
    chunk.code += code
    chunk.relocs.append((at + field, ABS, asan))
    return at + field + 4


@lru_cache(maxsize=512)
def asan_call(base: int, off: int) -> tuple[bytes, int]:
    """The outline sequence with a zero rel32, and where that rel32 is."""
    code = bytearray()
    for reg in SAVED:
        emit_push(code, reg)
    if base != Reg.RDI:
        emit_mov_rr(code, Reg.RDI, base, True)
    if off:
        emit_alu_ri(code, Ext.ADD, Reg.RDI, off, True)
    emit_call(code, 0)
    field = len(code) - 4
    for reg in reversed(SAVED):
        emit_pop(code, reg)
    return bytes(code), field


@lru_cache(maxsize=512)
def fast_path(base: int, off: int, size: int) -> tuple[bytes, tuple[int, ...], tuple[int, ...]]:
    """The inline fast path with zero rel32s, where those rel32s (all to the slow path) are, and
    where its shadow-reading `cmp` instructions (the site's probes) start."""
    code, fields, probes = bytearray(), [], []

    def jne_slow():
        emit_jcc32(code, Cond.NE, 0)
        fields.append(len(code) - 4)

    # No metadata test. The last byte's shadow address comes from the 65-bit end of the range:
    # when `addr + size` (addr = base+off) carries past 2**64 (the kernel's `addr + size < addr`), `sbb` makes
    # r10 all ones and `or` turns the granule into all ones, whose shadow (just below
    # KASAN_SHADOW_OFFSET) is unmapped. The shadow of any wild address is unmapped too, so the
    # `cmp` faults and the machine resumes at the slow path (Image.check_sites: probe_offsets).
    emit_lea(code, AUX, base, off)
    emit_alu_ri(code, Ext.ADD, AUX, size, True, rax_short=False)
    emit_op_rr(code, OP_SBB, SCRATCH, SCRATCH, True)
    emit_lea(code, AUX, AUX, -1)
    emit_shift_ri(code, Ext.SHR, AUX, 3, True)
    emit_op_rr(code, OP_OR, AUX, SCRATCH, True)
    emit_movabs(code, SCRATCH, KASAN_SHADOW_OFFSET)
    probes.append(len(code))
    emit_cmp_byte_indexed_0(code, AUX, SCRATCH)
    jne_slow()
    if size > 1:
        emit_lea(code, AUX, base, off)
        emit_shift_ri(code, Ext.SHR, AUX, 3, True)
        probes.append(len(code))
        emit_cmp_byte_indexed_0(code, AUX, SCRATCH)
        jne_slow()
    return bytes(code), tuple(fields), tuple(probes)
