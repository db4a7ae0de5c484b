"""One JITed function's frame: the BPF→x86 register map, its stack depth, the callee-saved
registers it uses, and its prologue and epilogue bytes (the kernel's 6.12 layout).

Owns: the calling convention. Must not import capstone, unicorn or anything from checks/ or bot/.
"""
from __future__ import annotations

from dataclasses import dataclass

from jit import isa
from jit.errors import JitError
from jit.isa import Insn
from jit.program import Program
from jit.x86 import (OP_XOR, Cond, Ext, Reg, emit_alu_ri, emit_alu_ri32, emit_jcc8, emit_jmp8, emit_leave,
                     emit_mov_rr, emit_nops, emit_op_rr, emit_pop, emit_push, emit_ret, emit_store_imm)

# BPF register -> x86 register (the kernel's reg2hex): r0..r5 are the C argument/return
# registers, r6..r9 callee-saved, r10 the frame pointer.
BPF_TO_X86 = (Reg.RAX, Reg.RDI, Reg.RSI, Reg.RDX, Reg.RCX, Reg.R8,
              Reg.RBX, Reg.R13, Reg.R14, Reg.R15, Reg.RBP)
AUX = Reg.R11          # the JIT's own temporary inside one BPF instruction
SCRATCH = Reg.R10      # BPF_REG_AX in the kernel; free here because we never blind constants
CALLEE_SAVED = ((6, Reg.RBX), (7, Reg.R13), (8, Reg.R14), (9, Reg.R15))

MAX_BPF_STACK = 512
BPF_MAX_LOOPS = 8 * 1024 * 1024       # may_goto budget per frame, as the 6.12 verifier sets it
PATCH_NOP_LEN = 5                     # the patchable NOP that starts every program
TAIL_CALL_OFFSET = 12                 # where a tail call enters: after push rbp; mov rbp, rsp
MAX_TAIL_CALL_CNT = 33


@dataclass(frozen=True)
class Frame:
    """What the JIT knows about one function before emitting it."""
    index: int
    name: str
    start: int                        # first slot
    stop: int                         # one past the last slot
    stack_depth: int                  # bytes below rbp, rounded to 8 (includes the may_goto counter)
    callee_saved: tuple[Reg, ...]     # pushed after `sub rsp`, popped before `leave`
    may_goto_off: int | None          # rbp offset of the may_goto counter, if the function uses may_goto
    tail_calls: bool = False          # tail calls are reachable: the frame holds the tail-call counter

    @property
    def is_subprog(self) -> bool:
        return self.index > 0

    @property
    def tcc_ptr_off(self) -> int:
        """rbp offset of the pointer to the tail-call counter (the counter itself is 8 above it)."""
        return -(self.stack_depth + 16)


def build_frames(program: Program, tail_calls: bool = False) -> list[Frame]:
    """One Frame per entry of `program.funcs`, which must start at slot 0 and be ordered.
    `tail_calls`: the program makes tail calls, so every function keeps the counter."""
    starts = [s for s, _ in program.funcs]
    n = len(program.insns)
    if not starts or starts[0] != 0 or starts != sorted(set(starts)) or starts[-1] >= n:
        raise JitError(f"bad function table {list(program.funcs)}: must start at slot 0, "
                       f"ascending, inside the {n} slots", file=program.file or None)
    frames = []
    for index, (start, name) in enumerate(program.funcs):
        stop = starts[index + 1] if index + 1 < len(starts) else n
        frames.append(_frame(program, index, name, start, stop, tail_calls))
    return frames


def _frame(program: Program, index: int, name: str, start: int, stop: int, tail_calls: bool) -> Frame:
    body = program.insns[start:stop]
    depth = program.stack_depth if program.stack_depth is not None else _stack_depth(body)
    if depth > MAX_BPF_STACK:
        raise JitError(f"function {name}: stack depth {depth} exceeds {MAX_BPF_STACK} bytes",
                       file=program.file or None, insn=start)
    depth = (depth + 7) & ~7
    may_goto = any(i.code == (isa.JMP | isa.JCOND) for i in body)
    if may_goto:
        depth += 8
    used = {r for i in body for r in (i.dst, i.src)}
    saved = tuple(x86 for bpf, x86 in CALLEE_SAVED if bpf in used)
    return Frame(index, name, start, stop, depth, saved, -depth if may_goto else None, tail_calls)


def _stack_depth(body) -> int:
    """Deepest byte below r10 the function touches. Follows pointers made by `rX = r10; rX += k`;
    when r10 escapes in a way this scan cannot follow, assume the whole 512 bytes."""
    if not any(i.dst == isa.FP or i.src == isa.FP for i in body):
        return 0
    deepest = 0
    fp_off: dict[int, int] = {isa.FP: 0}        # register -> its known offset from r10
    for insn in body:
        cls = insn.cls
        if cls in (isa.LDX, isa.ST, isa.STX):
            base = insn.src if cls == isa.LDX else insn.dst
            if base in fp_off:
                deepest = max(deepest, -(fp_off[base] + insn.off))
            if cls == isa.STX and insn.src in fp_off and insn.src != base:
                return MAX_BPF_STACK                  # a stack pointer stored to memory
            if cls == isa.LDX and insn.dst != isa.FP:
                fp_off.pop(insn.dst, None)
            continue
        if insn.is_call:
            deepest = max([deepest] + [-off for r, off in fp_off.items() if r != isa.FP])
            for r in range(6):
                fp_off.pop(r, None)
            continue
        if cls in (isa.ALU, isa.ALU64) or insn.is_ld_imm64:
            escaped = _track_alu(insn, fp_off)
            if escaped:
                return MAX_BPF_STACK
    return max(deepest, 0)


def _track_alu(insn: Insn, fp_off: dict[int, int]) -> bool:
    """Update `fp_off` for one ALU/ld_imm64 slot; True when r10 flows somewhere untracked."""
    is_mov_x = insn.cls == isa.ALU64 and insn.op == isa.MOV and insn.source == isa.X and insn.off == 0
    if is_mov_x and insn.src in fp_off:
        fp_off[insn.dst] = fp_off[insn.src]
        return False
    if insn.dst in fp_off and insn.cls == isa.ALU64 and insn.source == isa.K and insn.op in (isa.ADD, isa.SUB):
        fp_off[insn.dst] += insn.imm if insn.op == isa.ADD else -insn.imm
        return False
    if insn.source == isa.X and insn.src in fp_off and not insn.is_ld_imm64:
        return True
    fp_off.pop(insn.dst, None)
    return False


def emit_prologue(frame: Frame) -> bytearray:
    """nop5; `xor rax, rax` (a tail-calling main program: rax is the tail-call counter) or nop3;
    push rbp; mov rbp, rsp; [tail-call entry: TAIL_CALL_OFFSET] sub rsp, depth; the tail-call
    counter slots; push callee-saved; the may_goto counter's initial value."""
    out = bytearray()
    emit_nops(out, PATCH_NOP_LEN)
    if frame.tail_calls and not frame.is_subprog:
        emit_op_rr(out, OP_XOR, Reg.RAX, Reg.RAX, True)
    else:
        emit_nops(out, 3)
    emit_push(out, Reg.RBP)
    emit_mov_rr(out, Reg.RBP, Reg.RSP, True)
    assert len(out) == TAIL_CALL_OFFSET
    if frame.stack_depth:
        emit_alu_ri32(out, Ext.SUB, Reg.RSP, frame.stack_depth, True)
    if frame.tail_calls:
        _emit_tail_call_slots(out, frame)
    for reg in frame.callee_saved:
        emit_push(out, reg)
    if frame.may_goto_off is not None:
        emit_store_imm(out, Reg.RBP, frame.may_goto_off, BPF_MAX_LOOPS, 8)
    return out


def _emit_tail_call_slots(out: bytearray, frame: Frame) -> None:
    """Push the counter and a pointer to it (6.12). A subprog gets the pointer in rax from its
    caller; a main program gets the count in rax (0 from `xor`, or the count a tail call carried
    over), or a pointer when a subprog tail-called it; counts never exceed MAX_TAIL_CALL_CNT."""
    if not frame.is_subprog:
        emit_alu_ri(out, Ext.CMP, Reg.RAX, MAX_TAIL_CALL_CNT, True, rax_short=False)
        emit_jcc8(out, Cond.A, 6)                    # a pointer: skip the next three
        emit_push(out, Reg.RAX)                      # the count
        emit_mov_rr(out, Reg.RAX, Reg.RSP, True)     # rax = its address
        emit_jmp8(out, 1)
    emit_push(out, Reg.RAX)
    emit_push(out, Reg.RAX)                          # the pointer, at tcc_ptr_off


def emit_epilogue(out: bytearray, frame: Frame) -> None:
    """pop callee-saved (reverse order); leave; ret."""
    for reg in reversed(frame.callee_saved):
        emit_pop(out, reg)
    emit_leave(out)
    emit_ret(out)
