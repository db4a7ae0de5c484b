"""What a per-class emitter writes into (`Chunk`) and what it may ask about the layout (`EmitCtx`).

A Chunk is the code of one BPF slot, or of one out-of-line path. Every rel32 whose target is
only known once the image is laid out (helpers, `__asan_*`, other functions, slow paths) is a
relocation, patched after the last pass; so most chunks are emitted once and reused by every
pass. Only chunks whose *length* depends on the layout (jumps, later EXITs, PSEUDO_FUNC loads)
are marked `dynamic` and emitted again each pass.

Owns: the emitter-facing state of a compile. Must not import capstone, unicorn, checks/ or bot/.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from jit.errors import JitError
from jit.frame import BPF_TO_X86, Frame
from jit.image import Target
from jit.isa import Insn
from jit.x86 import emit_call, emit_jcc32, emit_jmp32

# Relocation kinds: what the value of a rel32 field names.
ABS = 0        # an absolute address
FUNC = 1       # the first byte of function number `value`
SLOW = 2       # out-of-line path number `value` of the same chunk
STUB = 3       # the budget-exhausted stub of the current function
BACK = 4       # byte `value` of the chunk that owns this out-of-line path


@dataclass(slots=True)
class Site:
    """A KASAN check: where its `call __asan_*` returns to, and what it checks."""
    slow: int | None     # index of the out-of-line path holding the call; None = in the main chunk
    ret_at: int          # offset just after the call, within that chunk
    size: int
    is_write: bool
    base_reg: int        # BPF register
    off: int
    probes: tuple = ()   # inline: offsets in the main chunk of the fast path's shadow `cmp`s
    access_at: int | None = None   # inline: offset in the main chunk where the access follows


@dataclass(slots=True)
class Chunk:
    code: bytearray = field(default_factory=bytearray)
    relocs: list = field(default_factory=list)       # (offset of the rel32 field, kind, value)
    sites: list = field(default_factory=list)        # Site
    slow: list = field(default_factory=list)         # out-of-line Chunks, placed after the function
    jump_at: int | None = None                        # start of the final jump: padding goes before it
    dynamic: bool = False
    uses_stub: bool = False                           # jumps to the function's budget stub

    def rel32(self, emit, kind: int, value: int) -> None:
        """Emit a rel32-ending instruction (`emit(code, 0)`) whose target is resolved later."""
        emit(self.code, 0)
        self.relocs.append((len(self.code) - 4, kind, value))

    def call(self, kind: int, value: int) -> None:
        self.rel32(emit_call, kind, value)

    def jmp32(self, kind: int, value: int) -> None:
        self.rel32(emit_jmp32, kind, value)

    def jcc32(self, cond: int, kind: int, value: int) -> None:
        self.rel32(lambda code, rel: emit_jcc32(code, cond, rel), kind, value)


@dataclass(slots=True)
class EmitCtx:
    """The compile as an emitter sees it. `start`/`end` hold each slot's image offsets: this
    pass's values for slots already emitted, the previous pass's for the rest (as the kernel's
    `addrs[]`)."""
    target: Target
    insns: tuple[Insn, ...]
    frames: list[Frame]
    frame_of: list[int]                     # slot -> index into frames
    start: list[int]
    end: list[int]
    func_offset: list[int]                  # per frame, image offset of its prologue
    first_exit: list[int | None]            # per frame, slot of the first EXIT (its epilogue)
    pc: int = 0
    frame: Frame | None = None
    out: Chunk | None = None

    @staticmethod
    def reg(bpf_reg: int) -> int:
        return BPF_TO_X86[bpf_reg]

    @property
    def kasan(self) -> str:
        return self.target.kasan

    def call_address(self, src: int, imm: int) -> int:
        return self.target.call_address(src, imm)

    def frame_index(self, slot: int, what: str) -> int:
        """The function starting at `slot`; JitError if no function starts there."""
        for index, frame in enumerate(self.frames):
            if frame.start == slot:
                return index
        raise JitError(f"{what} target {slot} is not the start of a function")
