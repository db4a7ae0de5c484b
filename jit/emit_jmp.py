"""JMP and JMP32 instructions → x86: jumps, calls, EXIT and may_goto.

A jump is always the last x86 instruction of its slot, so its displacement is, as in the
kernel, `start[target] - end[this slot]`, and padding (from pass 15) goes just before it.
rel8 is used for displacements in [-128, 123]; the kernel caps at 123 so a jump on the edge
cannot flip between forms from one pass to the next.

With an instruction budget (`Target.budget_address`), a taken backward jump first does
`sub qword [budget], N; js stub` (N = slots from the target to the jump: an upper bound of what
one more trip executes) and a bpf-to-bpf call subtracts the callee's length. The stub, placed
after the function, is `jmp Target.budget_exhausted_address`.

callx follows uBPF where the target provides a helper table (a register value below 2**32 is
a helper id), else calls the register as an address (see `_callx_hybrid`).

Owns: control flow. Must not import capstone, unicorn, checks/ or bot/.
"""
from __future__ import annotations

import struct
from functools import lru_cache

from jit import isa
from jit.emit_ctx import ABS, FUNC, STUB, EmitCtx
from jit.errors import JitError
from jit.frame import AUX, BPF_TO_X86, SCRATCH, emit_epilogue
from jit.isa import Insn
from jit.tail_call import TAIL_CALL_HELPER, emit_load_tcc_ptr, emit_tail_call
from jit.x86 import (OP_CMP, OP_TEST, Cond, Ext, Reg, emit_alu_ri, emit_call_reg, emit_jcc8, emit_jcc32,
                     emit_jmp8, emit_jmp32, emit_mem_ri, emit_mov_rr, emit_op_rr, emit_shift_ri,
                     emit_sub_abs_imm, emit_test_ri, is_simm32)

CONDITIONS = {isa.JEQ: Cond.E, isa.JNE: Cond.NE, isa.JSET: Cond.NE, isa.JGT: Cond.A, isa.JLT: Cond.B,
              isa.JGE: Cond.AE, isa.JLE: Cond.BE, isa.JSGT: Cond.G, isa.JSLT: Cond.L,
              isa.JSGE: Cond.GE, isa.JSLE: Cond.LE}


def is_short_jump(rel: int) -> bool:
    return -128 <= rel <= 123


def emit_jmp_class(ctx: EmitCtx, insn: Insn) -> None:
    """Dispatch one JMP/JMP32 slot."""
    op = insn.op
    if op == isa.JA:
        emit_branch(ctx, None, insn.jump_target(ctx.pc))
    elif op in CONDITIONS:
        ctx.out.code += _compare(insn)
        emit_branch(ctx, CONDITIONS[op], insn.jump_target(ctx.pc))
    elif op == isa.CALL:
        _emit_call(ctx, insn)
    elif op == isa.EXIT:
        _emit_exit(ctx)
    elif op == isa.JCOND:
        _emit_may_goto(ctx, insn)
    else:
        raise JitError(f"unknown jump opcode 0x{insn.code:02x}")


@lru_cache(maxsize=1024)
def _compare(insn: Insn) -> bytes:
    """Set flags for a conditional jump: `test` for JSET and for comparisons with 0, else `cmp`.
    (Cached: jumps are emitted again in every pass.)"""
    out, is64, dst = bytearray(), insn.cls == isa.JMP, BPF_TO_X86[insn.dst]
    if insn.source == isa.X:
        emit_op_rr(out, OP_TEST if insn.op == isa.JSET else OP_CMP, dst, BPF_TO_X86[insn.src], is64)
    elif insn.op == isa.JSET:
        emit_test_ri(out, dst, insn.imm, is64)
    elif insn.imm == 0:
        emit_op_rr(out, OP_TEST, dst, dst, is64)
    else:
        emit_alu_ri(out, Ext.CMP, dst, insn.imm, is64, rax_short=False)
    return bytes(out)


def emit_branch(ctx: EmitCtx, cond: int | None, target_slot: int) -> None:
    """The slot's final jump to `target_slot` (`cond` None = unconditional)."""
    chunk, pc = ctx.out, ctx.pc
    chunk.dynamic = True
    if ctx.target.budget_address is not None and target_slot <= pc:
        _emit_budget_branch(ctx, cond, target_slot)
        return
    chunk.jump_at = len(chunk.code)
    if cond is None and target_slot == pc and not chunk.code:
        emit_jmp8(chunk.code, -2)                 # `goto -1`: a jump to itself
        return
    rel = ctx.start[target_slot] - ctx.end[pc]
    if cond is None:
        if rel:                                   # a jump to the next slot is dropped
            (emit_jmp8 if is_short_jump(rel) else emit_jmp32)(chunk.code, rel)
    elif is_short_jump(rel):
        emit_jcc8(chunk.code, cond, rel)
    else:
        emit_jcc32(chunk.code, cond, rel)


def _emit_budget_branch(ctx: EmitCtx, cond: int | None, target_slot: int) -> None:
    """[j!cc over] sub qword [budget], N; js stub; jmp target."""
    chunk, pc = ctx.out, ctx.pc
    rel = ctx.start[target_slot] - ctx.end[pc]
    jmp_len = 2 if is_short_jump(rel) else 5
    charge = bytearray()
    emit_sub_abs_imm(charge, ctx.target.budget_address, pc - target_slot + 1)
    if cond is not None:
        emit_jcc8(chunk.code, cond ^ 1, len(charge) + 6 + jmp_len)
    _emit_budget_charge(ctx, pc - target_slot + 1)
    chunk.jump_at = len(chunk.code)
    (emit_jmp8 if jmp_len == 2 else emit_jmp32)(chunk.code, rel)


def _emit_budget_charge(ctx: EmitCtx, slots: int) -> None:
    """sub qword [budget], slots; js <the function's budget stub>."""
    if ctx.target.budget_exhausted_address is None:
        raise JitError("Target.budget_address is set but budget_exhausted_address is not")
    emit_sub_abs_imm(ctx.out.code, ctx.target.budget_address, slots)
    ctx.out.jcc32(Cond.S, STUB, 0)
    ctx.out.uses_stub = True


def _emit_call(ctx: EmitCtx, insn: Insn) -> None:
    chunk = ctx.out
    if ctx.frame.tail_calls and insn.src == isa.CALL_HELPER and insn.imm == TAIL_CALL_HELPER:
        emit_tail_call(ctx)
        return
    emit_load_tcc_ptr(ctx)
    if insn.source == isa.X:                      # callx: helper id or absolute address in dst
        if ctx.target.budget_address is not None:
            _emit_budget_charge(ctx, len(ctx.insns))
        if ctx.target.helper_table_address is None:
            emit_call_reg(chunk.code, ctx.reg(insn.dst))
        else:
            chunk.code += _callx_hybrid(ctx.reg(insn.dst), ctx.target.helper_table_address)
    elif insn.src == isa.PSEUDO_CALL:
        callee = ctx.frame_index(ctx.pc + 1 + insn.imm, "bpf-to-bpf call")
        if ctx.target.budget_address is not None:
            frame = ctx.frames[callee]
            _emit_budget_charge(ctx, frame.stop - frame.start)
        chunk.call(FUNC, callee)
    else:
        chunk.call(ABS, ctx.call_address(insn.src, insn.imm))


@lru_cache(maxsize=64)
def _callx_hybrid(reg: int, table: int) -> bytes:
    """callx by uBPF's rule and by address: a value below 2**32 is a helper id, looked up in
    `table` ({u64 count; u64 stub[count]}); an id past the count, or without a helper (0), calls
    address 0, a NULL instruction fetch the machine reports as an oops. Any other value is called
    as an absolute address. Clobbers r10/r11, which are free between BPF instructions."""
    out = bytearray()
    emit_mov_rr(out, AUX, reg, True)                       # mov r11, reg
    emit_mov_rr(out, SCRATCH, AUX, True)                   # mov r10, r11
    emit_shift_ri(out, Ext.SHR, SCRATCH, 32, True)         # shr r10, 32
    lookup = bytearray(b"\x4c\x3b\x1c\x25" + _abs32(table))       # cmp r11, qword ptr [table]
    load = b"\x4e\x8b\x1c\xdd" + _abs32(table + 8)                # mov r11, [8*r11 + table + 8]
    bad = b"\x45\x31\xdb"                                   # bad: xor r11d, r11d
    emit_jcc8(lookup, Cond.AE, len(load) + 2)              # jae bad
    lookup += load
    emit_jmp8(lookup, len(bad))                            # jmp call
    lookup += bad
    emit_jcc8(out, Cond.NE, len(lookup))                   # jnz call        ; an address
    out += lookup
    out += b"\x41\xff\xd3"                                 # call: call r11
    return bytes(out)


def _abs32(addr: int) -> bytes:
    """`addr` as the sign-extended disp32 of an absolute operand (kernel half or low 2 GiB)."""
    signed = addr - (1 << 64) if addr >> 63 else addr
    if not is_simm32(signed):
        raise JitError(f"address {addr:#x} is not reachable as an absolute disp32")
    return struct.pack("<i", signed)


def _emit_exit(ctx: EmitCtx) -> None:
    """The function's first EXIT is its epilogue; later ones jump there."""
    index = ctx.frame_of[ctx.pc]
    if ctx.first_exit[index] == ctx.pc:
        emit_epilogue(ctx.out.code, ctx.frame)
        return
    chunk = ctx.out
    chunk.dynamic = True
    chunk.jump_at = 0
    rel = ctx.start[ctx.first_exit[index]] - ctx.end[ctx.pc]      # emitted earlier in this pass
    (emit_jmp8 if is_short_jump(rel) else emit_jmp32)(chunk.code, rel)


def _emit_may_goto(ctx: EmitCtx, insn: Insn) -> None:
    """`may_goto +off`: jump once the frame's counter (BPF_MAX_LOOPS at entry) is exhausted,
    else decrement it. `sub [c], 1` borrows exactly when c was 0; `adc [c], 0` then undoes the
    wrap, leaving CF set for `jb`."""
    off = ctx.frame.may_goto_off
    emit_mem_ri(ctx.out.code, Ext.SUB, Reg.RBP, off, 1)
    emit_mem_ri(ctx.out.code, Ext.ADC, Reg.RBP, off, 0)
    emit_branch(ctx, Cond.B, insn.jump_target(ctx.pc))
