"""STX ATOMIC instructions → x86 (W and DW; load-acquire / store-release at any size).

add/and/or/xor → `lock <op> [m], src`; add|FETCH → `lock xadd`; xchg → `xchg` (implicitly
locked, the kernel still emits the prefix); cmpxchg → `lock cmpxchg` with r0 in rax, then a
32-bit zero extension of r0 as the verifier inserts. and/or/xor|FETCH become the kernel's
cmpxchg loop through r10/r11. Load-acquire / store-release are plain moves on x86 (TSO).

Owns: atomic emission. Must not import capstone, unicorn, checks/ or bot/.
"""
from __future__ import annotations

from jit import isa
from jit.emit_ctx import EmitCtx
from jit.emit_mem import emit_load_checked, emit_store_checked
from jit.errors import JitError
from jit.frame import AUX, SCRATCH
from jit.isa import Insn
from jit.kasan import access_of, emit_check
from jit.x86 import OP_ADD, OP_AND, OP_OR, OP_XOR, Cond, Reg, emit_atomic, emit_jcc, emit_load, emit_mov_rr, emit_op_rr

_LOCK_OPCODE = {isa.ADD: bytes((OP_ADD,)), isa.AND: bytes((OP_AND,)), isa.OR: bytes((OP_OR,)),
                isa.XOR: bytes((OP_XOR,)), isa.ADD | isa.FETCH: b"\x0f\xc1",
                isa.ATOMIC_XCHG: b"\x87", isa.ATOMIC_CMPXCHG: b"\x0f\xb1"}
_CMPXCHG = b"\x0f\xb1"
_LOOP_OP = {isa.AND | isa.FETCH: OP_AND, isa.OR | isa.FETCH: OP_OR, isa.XOR | isa.FETCH: OP_XOR}


def emit_stx_atomic(ctx: EmitCtx, insn: Insn) -> None:
    if insn.mode == isa.PROBE_ATOMIC:
        raise JitError("arena atomics (PROBE_ATOMIC) are not supported")
    if insn.imm == isa.LOAD_ACQ:
        emit_load_checked(ctx, insn)
        return
    if insn.imm == isa.STORE_REL:
        emit_store_checked(ctx, insn)
        return
    if insn.imm in _LOOP_OP:
        _emit_fetch_loop(ctx, insn)
        return
    emit_check(ctx, access_of(insn))
    is64 = insn.size == isa.DW
    out = ctx.out.code
    emit_atomic(out, _LOCK_OPCODE[insn.imm], ctx.reg(insn.dst), insn.off, ctx.reg(insn.src), is64)
    if insn.imm == isa.ATOMIC_CMPXCHG and not is64:
        emit_mov_rr(out, Reg.RAX, Reg.RAX, False)


def _emit_fetch_loop(ctx: EmitCtx, insn: Insn) -> None:
    """r10 = rax; retry: rax = [m]; r11 = rax op src; lock cmpxchg [m], r11; jne retry;
    src = rax (the old value); rax = r10. r0 as an operand is read from r10 instead."""
    is64 = insn.size == isa.DW
    out = ctx.out.code
    access = access_of(insn)
    if ctx.kasan == "inline":
        emit_check(ctx, access)               # the fast path needs r10/r11, so check before
    emit_mov_rr(out, SCRATCH, Reg.RAX, True)
    src = SCRATCH if insn.src == 0 else ctx.reg(insn.src)
    dst = SCRATCH if insn.dst == 0 else ctx.reg(insn.dst)
    if ctx.kasan == "outline":
        emit_check(ctx, access, base=dst)     # as the kernel: after rax is saved, from the real base
    retry = len(out)
    emit_load(out, Reg.RAX, dst, insn.off, insn.nbytes)
    emit_mov_rr(out, AUX, Reg.RAX, is64)
    emit_op_rr(out, _LOOP_OP[insn.imm], AUX, src, is64)
    emit_atomic(out, _CMPXCHG, dst, insn.off, AUX, is64)
    emit_jcc(out, Cond.NE, retry - (len(out) + 2))
    emit_mov_rr(out, src, Reg.RAX, is64)
    emit_mov_rr(out, Reg.RAX, SCRATCH, True)
