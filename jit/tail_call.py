"""bpf_tail_call (helper 12) as the 6.12 kernel JIT emits it: inline, no helper call.

The prog array it reads is our own simplified layout, at the map address the program passes
in r2 (rsi), which the machine must build:
    struct prog_array { u32 max_entries; u32 pad; u64 ptrs[max_entries]; }
where `ptrs[i]` is the entry address (first byte, prologue included) of a JITed program, or 0.
The kernel's array holds `struct bpf_prog *` and reads `bpf_func` from it; we keep the entry
address directly, so there is one load fewer. The sequence:
    (unprivileged only, `Target.tail_call_index_guard`: the verifier's inserted guard)
    mov eax, dword [rsi] ; cmp rdx, rax ; jae out   ; 64-bit r3 >= max_entries
    mov edx, edx                          ; index (r3) is a u32
    cmp dword [rsi], edx ; jbe out        ; index >= max_entries
    mov rax, [rbp + tcc_ptr_off]
    cmp qword [rax], 33 ; jae out         ; MAX_TAIL_CALL_CNT reached
    mov rcx, [rsi + rdx*8 + 8] ; test rcx, rcx ; je out
    add qword [rax], 1
    pop callee-saved ; pop rax ; pop rax  ; rax = the count (or the pointer, in a subprog)
    add rsp, depth
    add rcx, TAIL_CALL_OFFSET ; jmp rcx   ; the target's frame replaces ours, rbp is kept
  out:
A program that tail-calls keeps the counter in its frame (see `frame.emit_prologue`), and
every call it makes passes the counter's address in rax, as in the kernel.

Owns: the tail-call sequence and the prog-array layout. Must not import capstone, unicorn,
checks/ or bot/.
"""
from __future__ import annotations

from jit.emit_ctx import EmitCtx
from jit.frame import MAX_TAIL_CALL_CNT, TAIL_CALL_OFFSET, Frame
from jit.x86 import (OP_CMP, OP_TEST, Cond, Ext, Reg, emit_alu_ri, emit_alu_ri32, emit_jcc8, emit_jmp_reg, emit_load,
                     emit_mov_rr, emit_op_rr, emit_pop)

TAIL_CALL_HELPER = 12
MAX_ENTRIES_OFF = 0          # struct prog_array field offsets
PTRS_OFF = 8


def emit_tail_call(ctx: EmitCtx) -> None:
    code, frame = ctx.out.code, ctx.frame
    out = bytearray()
    emit_mov_rr(out, Reg.RDX, Reg.RDX, False)
    out += bytes((0x39, 0x56, MAX_ENTRIES_OFF))                  # cmp dword [rsi + 0], edx
    checks_end = bytearray()                                       # everything after the first jbe
    emit_load(checks_end, Reg.RAX, Reg.RBP, frame.tcc_ptr_off, 8)
    checks_end += bytes((0x48, 0x83, 0x38, MAX_TAIL_CALL_CNT))    # cmp qword [rax], 33
    jump = _jump_to_target(frame)
    fetch = bytes((0x48, 0x8B, 0x4C, 0xD6, PTRS_OFF))             # mov rcx, [rsi + rdx*8 + 8]
    test = bytearray()
    emit_op_rr(test, OP_TEST, Reg.RCX, Reg.RCX, True)
    emit_jcc8(test, Cond.E, len(jump))
    emit_jcc8(checks_end, Cond.AE, len(fetch) + len(test) + len(jump))
    checks_end += fetch + test + jump
    emit_jcc8(out, Cond.BE, len(checks_end))
    out += checks_end
    if ctx.target.tail_call_index_guard:
        assert len(out) < 128, "tail-call sequence too long for jae rel8"
        emit_load(code, Reg.RAX, Reg.RSI, MAX_ENTRIES_OFF, 4)     # mov eax, dword [rsi + 0]
        emit_op_rr(code, OP_CMP, Reg.RDX, Reg.RAX, True)          # cmp rdx, rax
        emit_jcc8(code, Cond.AE, len(out))
    code += out


def _jump_to_target(frame: Frame) -> bytes:
    """Count the call, unwind our frame down to rbp, enter the target after its `mov rbp, rsp`."""
    out = bytearray(b"\x48\x83\x00\x01")                          # add qword [rax], 1
    for reg in reversed(frame.callee_saved):
        emit_pop(out, reg)
    emit_pop(out, Reg.RAX)
    emit_pop(out, Reg.RAX)
    if frame.stack_depth:
        emit_alu_ri32(out, Ext.ADD, Reg.RSP, frame.stack_depth, True)
    emit_alu_ri(out, Ext.ADD, Reg.RCX, TAIL_CALL_OFFSET, True)
    emit_jmp_reg(out, Reg.RCX)
    return bytes(out)


def emit_load_tcc_ptr(ctx: EmitCtx) -> None:
    """Before any call from a tail-calling program: rax = the counter's address, for the callee."""
    if ctx.frame.tail_calls:
        emit_load(ctx.out.code, Reg.RAX, Reg.RBP, ctx.frame.tcc_ptr_off, 8)

