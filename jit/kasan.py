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
    lea r11, [base+off+N]; mov r10, r11; sar r10, 47; cmp r10, -1; jne slow   (wild, or wraps)
    lea r11, [base+off+N-1]; shr r11, 3; movabs r10, KASAN_SHADOW_OFFSET
    cmp byte [r11+r10], 0; jne slow
    (N > 1) lea r11, [base+off]; shr r11, 3; cmp byte [r11+r10], 0; jne slow
The slow path is the outline sequence followed by `jmp` back to the access. The fast path goes
slow whenever `__asan_*` could report: a range ending below the shadowed kernel half (a wild
address, or a range that wraps past 2**64), or a non-zero
shadow byte for the first or the last byte (an unaligned access may straddle two granules). So
both modes report exactly the same accesses, through the same `__asan_*` call; the CheckSite's
return offset is that call's, as the kernel's `_RET_IP_`.

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
from jit.x86 import (Cond, Ext, Reg, emit_alu_ri, emit_call, emit_cmp_byte_indexed_0, emit_jcc32, emit_lea,
                     emit_mov_rr, emit_movabs, emit_pop, emit_push, emit_shift_ri)

SAVED = (Reg.RAX, Reg.RCX, Reg.RDX, Reg.RSI, Reg.RDI, Reg.R8, Reg.R9, Reg.R10, Reg.R11)
# Addresses whose top 17 bits are not all ones have no shadow (addr < 0xffff800000000000).
_NO_SHADOW_SHIFT = 47


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
    code, fields = fast_path(reg, off, size)
    at = len(chunk.code)
    chunk.code += code
    chunk.relocs += [(at + f, SLOW, slow_index) for f in fields]
    slow = Chunk()
    ret_at = _place_asan_call(slow, reg, off, asan)
    slow.jmp32(BACK, len(chunk.code))
    chunk.slow.append(slow)
    chunk.sites.append(Site(slow_index, ret_at, size, is_write, bpf_base, off))


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
def fast_path(base: int, off: int, size: int) -> tuple[bytes, tuple[int, ...]]:
    """The inline fast path with zero rel32s, and where those rel32s (all to the slow path) are."""
    code, fields = bytearray(), []

    def jne_slow():
        emit_jcc32(code, Cond.NE, 0)
        fields.append(len(code) - 4)

    # The metadata test looks at the end of the range: one that wraps past 2**64 (the kernel's
    # `addr + size < addr`) ends below the kernel half, so it goes to the slow path, where
    # __asan_* reports it as outline mode does. (A range straddling 0xffff800000000000 from
    # below, non-canonical on x86-64, is the one case that faults on the shadow read instead.)
    emit_lea(code, AUX, base, off + size)
    emit_mov_rr(code, SCRATCH, AUX, True)
    emit_shift_ri(code, Ext.SAR, SCRATCH, _NO_SHADOW_SHIFT, True)
    emit_alu_ri(code, Ext.CMP, SCRATCH, -1, True, rax_short=False)
    jne_slow()
    emit_lea(code, AUX, base, off + size - 1)
    emit_shift_ri(code, Ext.SHR, AUX, 3, True)
    emit_movabs(code, SCRATCH, KASAN_SHADOW_OFFSET)
    emit_cmp_byte_indexed_0(code, AUX, SCRATCH)
    jne_slow()
    if size > 1:
        emit_lea(code, AUX, base, off)
        emit_shift_ri(code, Ext.SHR, AUX, 3, True)
        emit_cmp_byte_indexed_0(code, AUX, SCRATCH)
        jne_slow()
    return bytes(code), tuple(fields)
