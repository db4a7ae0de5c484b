"""ALU and ALU64 instructions → x86, as the 6.12 kernel JIT emits them, plus the guards the
verifier's `do_misc_fixups` would have added around register divisors (we run without a verifier).

Owns: arithmetic. Must not import capstone, unicorn, checks/ or bot/.
"""
from __future__ import annotations

from jit import isa
from jit.emit_ctx import EmitCtx
from jit.errors import JitError
from jit.frame import AUX, SCRATCH
from jit.isa import Insn
from jit.x86 import (OP_ADD, OP_AND, OP_OR, OP_SUB, OP_TEST, OP_XOR, Cond, Ext, Reg, emit_alu_ri, emit_bswap,
                     emit_div, emit_imul_ri, emit_imul_rr, emit_jcc, emit_jmp, emit_mov_ri32, emit_mov_rr, emit_mov_sx32,
                     emit_movsx_rr, emit_movzx16_rr, emit_neg, emit_op_rr, emit_pop, emit_push, emit_ror16_8,
                     emit_shift_cl, emit_shift_ri, emit_sign_extend_rax)

_RR_OPCODE = {isa.ADD: OP_ADD, isa.SUB: OP_SUB, isa.AND: OP_AND, isa.OR: OP_OR, isa.XOR: OP_XOR}
_RI_EXT = {isa.ADD: Ext.ADD, isa.SUB: Ext.SUB, isa.AND: Ext.AND, isa.OR: Ext.OR, isa.XOR: Ext.XOR}
_SHIFT_EXT = {isa.LSH: Ext.SHL, isa.RSH: Ext.SHR, isa.ARSH: Ext.SAR}


def emit_alu(ctx: EmitCtx, insn: Insn) -> None:
    """Dispatch one ALU/ALU64 slot by operation."""
    out = ctx.out.code
    is64 = insn.cls == isa.ALU64
    dst = ctx.reg(insn.dst)
    op = insn.op
    if op in _RR_OPCODE:
        if insn.source == isa.X:
            emit_op_rr(out, _RR_OPCODE[op], dst, ctx.reg(insn.src), is64)
        else:
            emit_alu_ri(out, _RI_EXT[op], dst, insn.imm, is64)
    elif op == isa.MOV:
        _emit_mov(out, insn, ctx, dst, is64)
    elif op == isa.NEG:
        emit_neg(out, dst, is64)
    elif op == isa.MUL:
        if insn.source == isa.X:
            emit_imul_rr(out, dst, ctx.reg(insn.src), is64)
        else:
            emit_imul_ri(out, dst, insn.imm, is64)
    elif op in _SHIFT_EXT:
        _emit_shift(out, insn, ctx, dst, is64)
    elif op in (isa.DIV, isa.MOD):
        _emit_div_mod(out, insn, ctx, is64)
    elif op == isa.END:
        _emit_end(out, insn, dst)
    else:
        raise JitError(f"unknown ALU opcode 0x{insn.code:02x}")


def _emit_mov(out: bytearray, insn: Insn, ctx: EmitCtx, dst: int, is64: bool) -> None:
    if insn.source == isa.K:
        emit_mov_ri32(out, dst, insn.imm, is64)
    elif insn.off == 0:
        emit_mov_rr(out, dst, ctx.reg(insn.src), is64)
    elif insn.off in (8, 16, 32):
        emit_movsx_rr(out, dst, ctx.reg(insn.src), insn.off, is64)
    else:
        raise JitError("addr_space_cast needs a BPF arena, which this JIT does not support")


def _emit_shift(out: bytearray, insn: Insn, ctx: EmitCtx, dst: int, is64: bool) -> None:
    """Immediate counts are direct; a register count goes through cl, saving rcx (or working
    in r11 when the destination is rcx itself)."""
    ext = _SHIFT_EXT[insn.op]
    if insn.source == isa.K:
        emit_shift_ri(out, ext, dst, insn.imm, is64)
        return
    src = ctx.reg(insn.src)
    work = AUX if dst == Reg.RCX else dst
    if dst == Reg.RCX:
        emit_mov_rr(out, AUX, Reg.RCX, True)
    else:
        emit_push(out, Reg.RCX)
    if src != Reg.RCX:
        emit_mov_rr(out, Reg.RCX, src, True)
    emit_shift_cl(out, ext, work, is64)
    if dst == Reg.RCX:
        emit_mov_rr(out, Reg.RCX, AUX, True)
    else:
        emit_pop(out, Reg.RCX)


def _emit_end(out: bytearray, insn: Insn, dst: int) -> None:
    """Byte swaps (BE on a little-endian host, and ALU64 bswap) and LE truncations."""
    width = insn.imm
    swap = insn.source == isa.TO_BE or insn.cls == isa.ALU64
    if width == 16:
        if swap:
            emit_ror16_8(out, dst)
        emit_movzx16_rr(out, dst, dst)
    elif width == 32:
        if swap:
            emit_bswap(out, dst, False)
        else:
            emit_mov_rr(out, dst, dst, False)
    elif swap:
        emit_bswap(out, dst, True)


# --- division ---------------------------------------------------------------------------------

def _emit_div_mod(out: bytearray, insn: Insn, ctx: EmitCtx, is64: bool) -> None:
    """Divisors 0 and (signed) -1 get their BPF results without dividing: x / 0 = 0,
    x % 0 = x, x s/ -1 = -x, x s% -1 = 0. Immediates are decided here; register divisors get the
    runtime guards of the verifier's `do_misc_fixups`, then the kernel's sequence."""
    is_mod, signed = insn.op == isa.MOD, insn.off == 1
    dst = ctx.reg(insn.dst)
    if insn.source == isa.K:
        if insn.imm == 0:
            _emit_by_zero(out, dst, is_mod, is64)
        elif signed and insn.imm == -1:
            _emit_by_minus_one(out, dst, is_mod, is64)
        else:
            emit_div_sequence(out, insn, ctx, is64)
        return
    divide = bytearray()
    emit_div_sequence(divide, insn, ctx, is64)
    if signed:
        _emit_signed_guard(out, insn, ctx, is64, divide)
    else:
        _emit_unsigned_guard(out, ctx.reg(insn.src), dst, is_mod, is64, divide)


def _emit_by_zero(out: bytearray, dst: int, is_mod: bool, is64: bool) -> None:
    """x / 0 = 0; x % 0 = x (zero-extended for 32 bits)."""
    if not is_mod:
        emit_mov_ri32(out, dst, 0, False)
    elif not is64:
        emit_mov_rr(out, dst, dst, False)


def _emit_by_minus_one(out: bytearray, dst: int, is_mod: bool, is64: bool) -> None:
    """x s/ -1 = -x and x s% -1 = 0, without the #DE that INT_MIN / -1 raises."""
    if is_mod:
        emit_mov_ri32(out, dst, 0, False)
    else:
        emit_neg(out, dst, is64)


def _emit_unsigned_guard(out: bytearray, src: int, dst: int, is_mod: bool, is64: bool,
                         divide: bytearray) -> None:
    """`if src == 0: <by zero> else: <divide>`; the test is 32-bit for ALU32, like the verifier's
    JMP32 (upper bits of a 32-bit divisor must not hide a zero)."""
    by_zero = bytearray()
    _emit_by_zero(by_zero, dst, is_mod, is64)
    emit_op_rr(out, OP_TEST, src, src, is64)
    _emit_choice(out, [(Cond.E, by_zero)], divide)


def _emit_signed_guard(out: bytearray, insn: Insn, ctx: EmitCtx, is64: bool, divide: bytearray) -> None:
    """With r10 = src + 1: above 1 → divide; 1 (src 0) → by zero; 0 (src -1) → by minus one."""
    is_mod, dst = insn.op == isa.MOD, ctx.reg(insn.dst)
    by_zero, by_minus_one = bytearray(), bytearray()
    _emit_by_zero(by_zero, dst, is_mod, is64)
    _emit_by_minus_one(by_minus_one, dst, is_mod, is64)
    emit_mov_rr(out, SCRATCH, ctx.reg(insn.src), True)
    emit_alu_ri(out, Ext.ADD, SCRATCH, 1, is64)
    emit_alu_ri(out, Ext.CMP, SCRATCH, 1, is64, rax_short=False)
    _emit_choice(out, [(Cond.E, by_zero), (Cond.B, by_minus_one)], divide)


def _emit_choice(out: bytearray, cases: list[tuple[int, bytearray]], default: bytearray) -> None:
    """From one set of flags: `j<cc_1> case_1; ...; default; jmp done; case_1; jmp done; ...;
    case_n; done:` (each `jmp done` only where code follows). All jumps are rel8."""
    tails = [bytearray(code) for _, code in cases]
    after = 0
    for tail in reversed(tails):
        if after:
            emit_jmp(tail, after)
        after += len(tail)
    body = bytearray(default)
    if after:
        emit_jmp(body, after)
    skip = 2 * len(cases) + len(body)
    for i, (cond, _) in enumerate(cases):
        rel = skip - 2 * (i + 1) + sum(len(t) for t in tails[:i])
        assert rel <= 127, "division guard too long for rel8"
        emit_jcc(out, cond, rel)
    out += body
    for tail in tails:
        out += tail


def emit_div_sequence(out: bytearray, insn: Insn, ctx: EmitCtx, is64: bool) -> None:
    """The kernel's div/mod through rdx:rax, saving rax/rdx unless they are the destination;
    a divisor that lives in rax/rdx (or an immediate) is moved to r11 first."""
    dst = ctx.reg(insn.dst)
    if dst != Reg.RAX:
        emit_push(out, Reg.RAX)
    if dst != Reg.RDX:
        emit_push(out, Reg.RDX)
    if insn.source == isa.X:
        src = ctx.reg(insn.src)
        if src in (Reg.RAX, Reg.RDX):
            emit_mov_rr(out, AUX, src, True)
            src = AUX
    else:
        emit_mov_sx32(out, AUX, insn.imm)
        src = AUX
    if dst != Reg.RAX:
        emit_mov_rr(out, Reg.RAX, dst, is64)
    signed = insn.off == 1
    if signed:
        emit_sign_extend_rax(out, is64)
    else:
        emit_op_rr(out, OP_XOR, Reg.RDX, Reg.RDX, False)
    emit_div(out, src, signed, is64)
    result = Reg.RDX if insn.op == isa.MOD else Reg.RAX
    if dst != result:
        emit_mov_rr(out, dst, result, is64)
    if dst != Reg.RDX:
        emit_pop(out, Reg.RDX)
    if dst != Reg.RAX:
        emit_pop(out, Reg.RAX)

