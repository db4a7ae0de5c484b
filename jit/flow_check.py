"""The verifier's structural checks that the JIT relies on, since we run without a verifier:
jumps stay inside their function and land on an instruction (not on the second slot of an
ld_imm64), and every function ends in EXIT or an unconditional jump, so no code falls into
the out-of-line paths placed after it.

Owns: structural validation. Must not import capstone, unicorn, checks/ or bot/.
"""
from __future__ import annotations

from functools import lru_cache

from jit import isa
from jit.errors import JitError
from jit.frame import Frame


def check_slots(insns, file: str | None) -> None:
    """`isa.check`, one instruction (or ld_imm64 pair) at a time through a cache: programs
    repeat their instructions, and the JIT validates every program it compiles."""
    pc, n = 0, len(insns)
    while pc < n:
        width = 2 if insns[pc].is_ld_imm64 and pc + 1 < n else 1
        refusal = _refusal(tuple(insns[pc:pc + width]))
        if refusal:
            message, at = refusal
            raise JitError(message, file=file, insn=pc + at)
        pc += width


@lru_cache(maxsize=4096)
def _refusal(slots: tuple) -> tuple[str, int] | None:
    try:
        isa.check(slots)
    except JitError as e:
        return e.message, e.insn or 0
    return None


def imm64_tails(insns) -> set[int]:
    """Slots that are the second half of an ld_imm64."""
    tails, pc = set(), 0
    while pc < len(insns):
        if insns[pc].is_ld_imm64:
            tails.add(pc + 1)
            pc += 2
        else:
            pc += 1
    return tails


def check_flow(insns, frames: list[Frame], tails: set[int]) -> None:
    """Raise JitError (with the slot) for the first structural violation."""
    for frame in frames:
        for pc in range(frame.start, frame.stop):
            insn = insns[pc]
            if pc in tails or not insn.is_jump or insn.op in (isa.CALL, isa.EXIT):
                continue
            target = insn.jump_target(pc)
            if not frame.start <= target < frame.stop:
                raise JitError(f"jump out of range from insn {pc} to {target}", insn=pc)
            if target in tails:
                raise JitError(f"jump into the middle of ld_imm64 at insn {target - 1}", insn=pc)
        _check_last(insns, frame, tails)


def _check_last(insns, frame: Frame, tails: set[int]) -> None:
    last = frame.stop - 1
    insn = insns[last]
    if last in tails or not (insn.is_exit or (insn.is_jump and insn.op == isa.JA)):
        raise JitError(f"function {frame.name}: last insn is not an exit or jmp", insn=last)
