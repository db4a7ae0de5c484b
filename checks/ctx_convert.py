"""The verifier's ctx access conversion, as far as a run needs it: loads of the 32-bit UAPI packet
pointers (`__sk_buff.data`, `data_end`, `data_meta`; `xdp_md.data`, `data_end`, `data_meta`)
become 64-bit loads of the real pointers from the kernel-side object (`checks.contexts`).

Only loads whose base register holds the ctx pointer are rewritten, so a forward dataflow finds
them: per instruction, which registers and which 8-byte r10 stack slots may hold PTR_TO_CTX. r1
holds it at entry; `rX = rY` copies it; a full 64-bit spill to the stack and the fill back keep
it; anything else written to a register or slot ends it; calls clobber r0-r5. Paths join by union
(the verifier rejects a load whose base is ctx on one path and another pointer on the other, so
"ctx on some path" is exact for accepted programs). A bpf-to-bpf callee gets ctx in r1 only where
a caller passes it there; callbacks (PSEUDO_FUNC) never do.

Every rewrite replaces one slot by one slot, so instruction indices (and the reports that name
them) are those of the original program.

Owns: ctx-pointer dataflow and the load rewrite. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

from dataclasses import replace

from checks.contexts import CtxLayout, layout_of
from jit import isa
from jit.isa import Insn
from jit.program import Program

CTX_ENTRY = 1 << 1                   # r1 holds the ctx at a program's entry
_SCRATCH = 0b111111                  # r0-r5: clobbered by calls
_State = tuple[int, frozenset]       # (bitmask of ctx registers, r10 offsets of ctx spills)


def ctx_states(program: Program) -> list[_State | None]:
    """Per slot, the ctx registers and stack slots on entry to it (None: unreachable)."""
    insns = program.insns
    states: list[_State | None] = [None] * len(insns)
    work = [0]
    states[0] = (CTX_ENTRY, frozenset())
    while work:
        pc = work.pop()
        for target, state in _successors(insns, pc, states[pc]):
            if not 0 <= target < len(insns):
                continue
            old = states[target]
            new = state if old is None else (old[0] | state[0], old[1] | state[1])
            if new != old:
                states[target] = new
                work.append(target)
    return states


def _successors(insns, pc: int, state: _State):
    insn = insns[pc]
    regs, slots = state
    if insn.is_ld_imm64:
        return [(pc + 2, (regs & ~(1 << insn.dst), slots))]
    if insn.is_jump:
        return _jump_successors(insn, pc, regs, slots)
    return [(pc + 1, _transfer(insn, regs, slots))]


def _jump_successors(insn: Insn, pc: int, regs: int, slots: frozenset):
    op = insn.op
    if op == isa.EXIT:
        return []
    if op == isa.CALL:
        after = (regs & ~_SCRATCH, slots)
        if insn.is_pseudo_call:
            return [(pc + 1, after), (pc + 1 + insn.imm, (regs & CTX_ENTRY, frozenset()))]
        return [(pc + 1, after)]
    taken = (insn.jump_target(pc), (regs, slots))
    if op == isa.JA:
        return [taken]
    return [(pc + 1, (regs, slots)), taken]


def _transfer(insn: Insn, regs: int, slots: frozenset) -> _State:
    """The state after a non-jump instruction."""
    cls, dst_bit = insn.cls, 1 << insn.dst
    if cls == isa.ALU64 and insn.op == isa.MOV and insn.source == isa.X and insn.off == 0:
        copied = dst_bit if regs & (1 << insn.src) else 0
        return (regs & ~dst_bit) | copied, slots
    if cls in (isa.ALU, isa.ALU64):
        return regs & ~dst_bit, slots
    if cls == isa.LD:                                   # LD_ABS / LD_IND: a call in disguise
        return regs & ~_SCRATCH, slots
    if cls == isa.LDX:
        filled = insn.src == isa.FP and insn.size == isa.DW and insn.mode == isa.MEM and insn.off in slots
        return (regs & ~dst_bit) | (dst_bit if filled else 0), slots
    return _store(insn, regs, slots)


def _store(insn: Insn, regs: int, slots: frozenset) -> _State:
    """ST / STX: a store to the stack ends the spills it overlaps; a 64-bit spill of ctx starts one;
    atomics that fetch overwrite a register."""
    if insn.cls == isa.STX and insn.mode == isa.ATOMIC:
        if insn.imm == isa.ATOMIC_CMPXCHG:
            regs &= ~1
        elif insn.imm & isa.FETCH:
            regs &= ~(1 << insn.src)
    if insn.dst != isa.FP:
        return regs, slots
    lo, hi = insn.off, insn.off + insn.nbytes
    kept = frozenset(s for s in slots if s + 8 <= lo or s >= hi)
    spill = (insn.cls == isa.STX and insn.mode == isa.MEM and insn.size == isa.DW
             and regs & (1 << insn.src))
    return regs, (kept | {insn.off}) if spill else kept


def ctx_loads(program: Program) -> list[int]:
    """Slots of the loads (LDX) whose base register holds the ctx on some path."""
    states = ctx_states(program)
    return [pc for pc, (insn, state) in enumerate(zip(program.insns, states))
            if state is not None and insn.cls == isa.LDX and state[0] & (1 << insn.src)]


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
