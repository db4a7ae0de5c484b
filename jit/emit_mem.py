"""LD, LDX, ST and STX MEM instructions → x86: loads and stores (with their KASAN check),
ld_imm64, and the legacy packet loads LD_ABS / LD_IND.

ld_imm64 immediates are taken as final values: map references (PSEUDO_MAP_FD, MAP_VALUE,
MAP_IDX, MAP_IDX_VALUE, BTF_ID) must already have been rewritten to addresses by whoever
loads the program (the machine does this before compiling). Only PSEUDO_FUNC is resolved here,
to the absolute address of the function it names, because only the JIT knows that.

LD_ABS / LD_IND become what the verifier's `bpf_gen_ld_abs` makes of them:
    rsi = imm (ABS) or src + imm (IND); rdi = r6 (the skb);
    call stub SKB_LOAD_STUB[size]     (Target.call_address(0, -size))
    if rax s< 0: return 0             (out of bounds ends the program with 0)
    else r0 = rax                     (the value, zero-extended)
The stub is a helper like any other: args in rdi/rsi, result in rax, clobbers r1-r5.

Owns: memory-access emission. Must not import capstone, unicorn, checks/ or bot/.
"""
from __future__ import annotations

from jit import isa
from jit.emit_ctx import ABS, EmitCtx
from jit.errors import JitError
from jit.frame import emit_epilogue
from jit.isa import Insn
from jit.kasan import access_of, emit_check
from jit.x86 import (OP_TEST, OP_XOR, Cond, Ext, Reg, emit_alu_ri, emit_jcc, emit_load, emit_load_sx,
                     emit_mov_ri32, emit_mov_ri64, emit_mov_rr, emit_op_rr, emit_store, emit_store_imm)

SKB_LOAD_STUB = {1: -1, 2: -2, 4: -4}     # call_address(0, id) of bpf_skb_load_helper_{8,16,32}


def emit_ldx(ctx: EmitCtx, insn: Insn) -> None:
    """LDX MEM/MEMSX, and PROBE_MEM[SX] as plain loads (no exception table: a bad PROBE load faults)."""
    if insn.mode == isa.PROBE_MEM32:
        raise JitError("arena loads (PROBE_MEM32) are not supported")
    emit_load_checked(ctx, insn, signed=insn.mode in (isa.MEMSX, isa.PROBE_MEMSX))


def emit_st(ctx: EmitCtx, insn: Insn) -> None:
    if insn.mode != isa.MEM:
        raise JitError("arena stores (PROBE_MEM32) are not supported")
    emit_check(ctx, access_of(insn))
    emit_store_imm(ctx.out.code, ctx.reg(insn.dst), insn.off, insn.imm, insn.nbytes)


def emit_stx_mem(ctx: EmitCtx, insn: Insn) -> None:
    if insn.mode != isa.MEM:
        raise JitError("arena stores (PROBE_MEM32) are not supported")
    emit_store_checked(ctx, insn)


def emit_load_checked(ctx: EmitCtx, insn: Insn, signed: bool = False) -> None:
    """dst = *(size *)(src + off), zero- or sign-extended, after its KASAN check."""
    emit_check(ctx, access_of(insn))
    load = emit_load_sx if signed else emit_load
    load(ctx.out.code, ctx.reg(insn.dst), ctx.reg(insn.src), insn.off, insn.nbytes)


def emit_store_checked(ctx: EmitCtx, insn: Insn) -> None:
    """*(size *)(dst + off) = src, after its KASAN check."""
    emit_check(ctx, access_of(insn))
    emit_store(ctx.out.code, ctx.reg(insn.dst), insn.off, ctx.reg(insn.src), insn.nbytes)


def emit_ld(ctx: EmitCtx, insn: Insn) -> None:
    """ld_imm64 (the second slot emits nothing) and LD_ABS / LD_IND."""
    if insn.is_ld_imm64:
        _emit_ld_imm64(ctx, insn)
    else:
        _emit_ld_packet(ctx, insn)


def _emit_ld_imm64(ctx: EmitCtx, insn: Insn) -> None:
    pc = ctx.pc
    value = isa.imm64(insn, ctx.insns[pc + 1])
    if insn.src == isa.PSEUDO_FUNC:
        target = pc + 1 + insn.imm
        frame = ctx.frame_index(target, "ld_imm64 PSEUDO_FUNC")
        value = ctx.target.image_base + ctx.func_offset[frame]
        ctx.out.dynamic = True
    emit_mov_ri64(ctx.out.code, ctx.reg(insn.dst), value)


def _emit_ld_packet(ctx: EmitCtx, insn: Insn) -> None:
    out = ctx.out.code
    if insn.mode == isa.ABS:
        emit_mov_ri32(out, Reg.RSI, insn.imm, True)
    else:
        emit_mov_rr(out, Reg.RSI, ctx.reg(insn.src), True)
        if insn.imm:
            emit_alu_ri(out, Ext.ADD, Reg.RSI, insn.imm, True)
    emit_mov_rr(out, Reg.RDI, ctx.reg(6), True)
    ctx.out.call(ABS, ctx.call_address(isa.CALL_HELPER, SKB_LOAD_STUB[insn.nbytes]))
    emit_op_rr(out, OP_TEST, Reg.RAX, Reg.RAX, True)
    fail = bytearray()
    emit_op_rr(fail, OP_XOR, Reg.RAX, Reg.RAX, False)
    emit_epilogue(fail, ctx.frame)
    emit_jcc(out, Cond.GE, len(fail))
    out += fail
