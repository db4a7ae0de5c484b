"""The verifier's ctx access conversion, as far as a run needs it: loads of the 32-bit UAPI packet
pointers (`__sk_buff.data`, `data_end`, `data_meta`; `xdp_md.data`, `data_end`, `data_meta`)
become 64-bit loads of the real pointers from the kernel-side object (`checks.contexts`).

Only loads whose base register holds the ctx pointer are rewritten, so a forward dataflow finds
them: per instruction, which registers and which 8-byte stack slots may hold PTR_TO_CTX. r1 holds
it at a program's entry (the main function, and every function a prog array names: a tail call
enters it with the ctx in r1); `rX = rY` copies it; a full 64-bit spill to the stack and the fill
back keep it, through r10 or any register known to be r10 plus a constant; anything else written
to a register or slot ends it; calls clobber r0-r5. Paths join by union for ctx (the verifier
rejects a load whose base is ctx on one path and another pointer on the other, so "ctx on some
path" is exact for accepted programs) and by agreement for stack offsets. A bpf-to-bpf callee
gets ctx in r1 only where a caller passes it there; callbacks (PSEUDO_FUNC) never do.

Every rewrite replaces one slot by one slot, so instruction indices (and the reports that name
them) are those of the original program.

Owns: ctx-pointer dataflow and the load rewrite. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

from checks.contexts import CtxLayout, layout_of
from jit import isa
from jit.frame import MAX_BPF_STACK
from jit.isa import Insn
from jit.program import Program

CTX_ENTRY = 1 << 1                   # r1 holds the ctx at a program's entry
_SCRATCH = 0b111111                  # r0-r5: clobbered by calls


class State(NamedTuple):
    """What may hold the ctx on entry to a slot, and where registers may point into the frame.
    Every part only grows at joins (a "may" analysis), so the result does not depend on the
    order paths are visited in; frame offsets stay within the stack, so it terminates."""
    ctx: int                         # bitmask of registers that may hold the ctx
    spills: frozenset                # frame offsets of 8-byte slots that may hold the ctx
    frame: frozenset                 # (register, offset): the register may be r10 + offset

    def join(self, other: "State") -> "State":
        return State(self.ctx | other.ctx, self.spills | other.spills, self.frame | other.frame)

    def clobber(self, mask: int) -> "State":
        """Registers in `mask` overwritten with something that is neither ctx nor a frame pointer."""
        return State(self.ctx & ~mask, self.spills,
                     frozenset(e for e in self.frame if not (1 << e[0]) & mask))

    def offsets(self, reg: int) -> set[int]:
        if reg == isa.FP:
            return {0}
        return {off for r, off in self.frame if r == reg}


ENTRY = State(CTX_ENTRY, frozenset(), frozenset())


def entries(program: Program) -> list[int]:
    """Slots where a program starts with the ctx in r1: slot 0 and every prog-array target."""
    targets = {name for m in program.maps if m.type == "prog_array" for _, name in m.values}
    return [0] + [start for start, name in program.funcs if start and name in targets]


def ctx_states(program: Program) -> list[State | None]:
    """Per slot, the state on entry to it (None: unreachable)."""
    insns = program.insns
    states: list[State | None] = [None] * len(insns)
    work = entries(program)
    for pc in work:
        states[pc] = ENTRY
    while work:
        pc = work.pop()
        for target, state in _successors(insns, pc, states[pc]):
            if not 0 <= target < len(insns):
                continue
            old = states[target]
            new = state if old is None else old.join(state)
            if new != old:
                states[target] = new
                work.append(target)
    return states


def _successors(insns, pc: int, state: State):
    insn = insns[pc]
    if insn.is_ld_imm64:
        return [(pc + 2, state.clobber(1 << insn.dst))]
    if insn.is_jump:
        return _jump_successors(insn, pc, state)
    return [(pc + 1, _transfer(insn, state))]


def _jump_successors(insn: Insn, pc: int, state: State):
    op = insn.op
    if op == isa.EXIT:
        return []
    if op == isa.CALL:
        after = state.clobber(_SCRATCH)
        if insn.is_pseudo_call:
            callee = State(state.ctx & CTX_ENTRY, frozenset(), frozenset())
            return [(pc + 1, after), (pc + 1 + insn.imm, callee)]
        return [(pc + 1, after)]
    taken = (insn.jump_target(pc), state)
    if op == isa.JA:
        return [taken]
    return [(pc + 1, state), taken]


def _transfer(insn: Insn, state: State) -> State:
    """The state after a non-jump instruction."""
    cls, dst = insn.cls, insn.dst
    if cls in (isa.ALU, isa.ALU64):
        return _alu(insn, state)
    if cls == isa.LD:                                   # LD_ABS / LD_IND: a call in disguise
        return state.clobber(_SCRATCH)
    if cls == isa.LDX:
        filled = insn.size == isa.DW and insn.mode == isa.MEM and any(
            at + insn.off in state.spills for at in state.offsets(insn.src))
        after = state.clobber(1 << dst)
        return after._replace(ctx=after.ctx | (1 << dst)) if filled else after
    return _store(insn, state)


def _alu(insn: Insn, state: State) -> State:
    dst_bit = 1 << insn.dst
    after = state.clobber(dst_bit)
    if insn.cls != isa.ALU64:
        return after
    if insn.op == isa.MOV and insn.source == isa.X and insn.off == 0:
        ctx = dst_bit if state.ctx & (1 << insn.src) else 0
        copied = {(insn.dst, off) for off in state.offsets(insn.src)}
        return State(after.ctx | ctx, after.spills, after.frame | copied)
    if insn.op in (isa.ADD, isa.SUB) and insn.source == isa.K:
        step = insn.imm if insn.op == isa.ADD else -insn.imm
        moved = {(insn.dst, off + step) for off in state.offsets(insn.dst)
                 if -MAX_BPF_STACK <= off + step <= 0}
        return after._replace(frame=after.frame | moved)
    return after


def _store(insn: Insn, state: State) -> State:
    """ST / STX: a store into the frame ends the spills it overlaps; a 64-bit spill of ctx starts
    one; atomics that fetch overwrite a register."""
    if insn.cls == isa.STX and insn.mode == isa.ATOMIC:
        if insn.imm == isa.ATOMIC_CMPXCHG:
            state = state.clobber(1)
        elif insn.imm & isa.FETCH:
            state = state.clobber(1 << insn.src)
    bases = state.offsets(insn.dst)
    if not bases:
        return state
    spills = state.spills
    if len(bases) == 1:                                  # a definite store ends what it overlaps
        lo = next(iter(bases)) + insn.off
        spills = frozenset(s for s in spills if s + 8 <= lo or s >= lo + insn.nbytes)
    if insn.cls == isa.STX and insn.mode == isa.MEM and insn.size == isa.DW and state.ctx & (1 << insn.src):
        spills |= {base + insn.off for base in bases}
    return state._replace(spills=spills)


def ctx_loads(program: Program) -> list[int]:
    """Slots of the loads (LDX) whose base register holds the ctx on some path."""
    states = ctx_states(program)
    return [pc for pc, (insn, state) in enumerate(zip(program.insns, states))
            if state is not None and insn.cls == isa.LDX and state.ctx & (1 << insn.src)]


def convert(program: Program, layout: CtxLayout | None = None) -> Program:
    """`program` with its ctx packet-pointer loads redirected to the kernel-side 64-bit slots of
    `layout` (default: the layout of the program's type). Unchanged when there is nothing to do."""
    layout = layout or layout_of(program.prog_type)
    if layout is None or not layout.pointers:
        return program
    insns = list(program.insns)
    changed = False
    for pc in ctx_loads(program):
        insn = insns[pc]
        slot = layout.pointers.get(insn.off)
        if slot is not None and insn.size == isa.W and insn.mode == isa.MEM:
            insns[pc] = Insn(isa.LDX | isa.MEM | isa.DW, insn.dst, insn.src, slot, 0)
            changed = True
    return replace(program, insns=tuple(insns)) if changed else program
