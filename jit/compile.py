"""`compile_program`: Program → Image, the way the 6.12 x86-64 kernel JIT does it.

Functions are laid out one after another, each as
    prologue | code of its slots | out-of-line KASAN slow paths | budget stub (if used)
`Image.insn_offsets[i]` is where slot i's code starts, except that a function's first slot
starts at the function (its prologue counts as part of it, as bpftool shows it); the extra
last entry is the image length. The second slot of an ld_imm64 has no code of its own.

Passes repeat until the image length stops changing (first estimate 64 bytes per slot, at most
20 passes, NOP padding from pass 15 so code can no longer shrink); one more pass must then give
exactly the same layout, or the compile fails, as the kernel's `proglen != oldproglen`. Slots
whose code cannot change length are emitted once (identical slots share their code); only
jumps and the like are re-emitted. rel32 fields that point at helpers, `__asan_*`, functions
and slow paths are patched last.

Input contract: ld_imm64 map references must already hold final addresses (see emit_mem);
without a verifier, the checks the JIT depends on are done here (flow_check), and register
divisors get the verifier's runtime guards (emit_alu).

Owns: passes, layout, Image assembly. Per-class code lives in emit_alu/emit_mem/emit_atomic/
emit_jmp, KASAN in kasan, tail calls in tail_call. Must not import capstone, unicorn, checks/ or bot/.
"""
from __future__ import annotations

from dataclasses import dataclass

from jit import isa
from jit.emit_alu import emit_alu
from jit.emit_atomic import emit_stx_atomic
from jit.emit_ctx import ABS, BACK, FUNC, SLOW, STUB, Chunk, EmitCtx
from jit.emit_jmp import emit_jmp_class
from jit.emit_mem import emit_ld, emit_ldx, emit_st, emit_stx_mem
from jit.errors import JitError
from jit.flow_check import check_flow, check_slots, imm64_tails
from jit.frame import build_frames, emit_prologue
from jit.image import KASAN_MODES, CheckSite, FuncImage, Image, Target
from jit.isa import Insn
from jit.program import Program
from jit.tail_call import TAIL_CALL_HELPER
from jit.x86 import REL32_JMP_LEN, emit_nops, is_simm32

MAX_PASSES = 20
PADDING_PASSES = 15
FIRST_ESTIMATE = 64          # bytes per slot assumed before the first pass


def _emit_stx(ctx: EmitCtx, insn: Insn) -> None:
    if insn.mode in (isa.ATOMIC, isa.PROBE_ATOMIC):
        emit_stx_atomic(ctx, insn)
    else:
        emit_stx_mem(ctx, insn)


# Classes whose code depends on nothing but the slot itself (LD is not: LD_ABS returns through
# its function's epilogue, and PSEUDO_FUNC depends on the layout).
_SLOT_ONLY = frozenset((isa.ALU, isa.ALU64, isa.LDX, isa.ST, isa.STX))
_EMITTERS = {isa.ALU: emit_alu, isa.ALU64: emit_alu, isa.JMP: emit_jmp_class, isa.JMP32: emit_jmp_class,
             isa.LD: emit_ld, isa.LDX: emit_ldx, isa.ST: emit_st, isa.STX: _emit_stx}


@dataclass(frozen=True)
class Layout:
    """Where each function's parts lie in the image, for listings (the Image itself only has
    function extents and slot offsets)."""
    body_start: tuple[int, ...]     # per function: first byte after its prologue
    body_end: tuple[int, ...]       # per function: first byte after its slots' code


def compile_program(program: Program, target: Target) -> Image:
    """JIT `program` for `target`. Raises JitError (located at the slot) for what it cannot compile."""
    return _Compiler(program, target).run()


def compile_with_layout(program: Program, target: Target) -> tuple[Image, Layout]:
    """`compile_program`, plus where prologues end and out-of-line code begins."""
    compiler = _Compiler(program, target)
    image = compiler.run()
    ctx = compiler.ctx
    starts = tuple(ctx.start[f.start] for f in ctx.frames)
    ends = tuple(ctx.end[f.stop - 1] for f in ctx.frames)
    return image, Layout(starts, ends)


class _Compiler:
    def __init__(self, program: Program, target: Target):
        if target.kasan not in KASAN_MODES:
            raise JitError(f"unknown KASAN mode {target.kasan!r} (expected one of {', '.join(KASAN_MODES)})")
        self.program = program
        insns = program.insns
        if not insns:
            raise JitError("empty program", file=program.file or None)
        self.tails = imm64_tails(insns)
        try:
            check_slots(insns, program.file or None)
            frames = build_frames(program, tail_calls=_makes_tail_calls(insns, target))
            check_flow(insns, frames, self.tails)
        except JitError as e:
            raise self._located(e, e.insn)
        frame_of = [0] * len(insns)
        for index, frame in enumerate(frames):
            frame_of[frame.start:frame.stop] = [index] * (frame.stop - frame.start)
        n = len(insns)
        self.ctx = EmitCtx(target, insns, frames, frame_of,
                           start=[FIRST_ESTIMATE * (pc + 1) for pc in range(n)],
                           end=[FIRST_ESTIMATE * (pc + 2) for pc in range(n)],
                           func_offset=[FIRST_ESTIMATE * f.start for f in frames],
                           first_exit=[_first_exit(insns, f) for f in frames])
        self.prologues = [bytes(emit_prologue(f)) for f in frames]
        self.chunks: list[Chunk | None] = [None] * n
        self.stub_offset = [0] * len(frames)
        self.slow_len = [0] * len(frames)
        self.tail_len: list[int | None] = [None] * len(frames)     # slow paths + stub, per function
        self._same_code: dict[Insn, Chunk] = {}       # identical slots share one (read-only) chunk

    def run(self) -> Image:
        old_len, padding = 0, False
        for pass_no in range(MAX_PASSES):
            padding = pass_no >= PADDING_PASSES
            length = self._pass(padding)
            if length == old_len:
                break
            old_len = length
        else:
            raise self._located(JitError(f"image did not converge in {MAX_PASSES} passes"), None)
        lengths = [e - s for s, e in zip(self.ctx.start, self.ctx.end)]
        final = self._pass(padding)
        changed = [pc for pc, (s, e) in enumerate(zip(self.ctx.start, self.ctx.end)) if e - s != lengths[pc]]
        if final != old_len or changed:
            raise self._located(JitError(f"proglen={final} != oldproglen={old_len}"),
                                changed[0] if changed else None)
        return self._image(final)

    # --- passes -----------------------------------------------------------------------------

    def _pass(self, padding: bool) -> int:
        ctx, chunks, start, end = self.ctx, self.chunks, self.ctx.start, self.ctx.end
        pos = 0
        for index, frame in enumerate(ctx.frames):
            ctx.func_offset[index] = pos
            pos += len(self.prologues[index])
            for pc in range(frame.start, frame.stop):
                start[pc] = pos
                chunk = chunks[pc]
                if chunk is None or chunk.dynamic:
                    chunk = chunks[pc] = self._emit(pc, frame, padding)
                pos += len(chunk.code)
                end[pc] = pos
            pos = self._out_of_line(index, frame, pos)
        return pos

    def _out_of_line(self, index: int, frame, pos: int) -> int:
        """Lay out the function's slow paths and budget stub from `pos`. Their sizes are known
        after the first pass: only static chunks have slow paths, and whether a slot needs the
        stub does not depend on the layout."""
        if self.tail_len[index] is None:
            slots = self.chunks[frame.start:frame.stop]
            self.slow_len[index] = sum(len(s.code) for c in slots for s in c.slow)
            self.tail_len[index] = self.slow_len[index] + (REL32_JMP_LEN if any(c.uses_stub for c in slots) else 0)
        self.stub_offset[index] = pos + self.slow_len[index]
        return pos + self.tail_len[index]

    def _emit(self, pc: int, frame, padding: bool) -> Chunk:
        ctx = self.ctx
        insn = ctx.insns[pc]
        if pc in self.tails:
            return Chunk()
        cls = insn.code & 0x07
        slot_only = cls in _SLOT_ONLY
        if slot_only and insn in self._same_code:
            return self._same_code[insn]
        chunk = ctx.out = Chunk()
        ctx.pc, ctx.frame = pc, frame
        try:
            _EMITTERS[cls](ctx, insn)
        except JitError as e:
            raise self._located(e, pc)
        if slot_only:
            self._same_code[insn] = chunk
        prev_len = ctx.end[pc] - ctx.start[pc]
        if padding and chunk.dynamic and len(chunk.code) < prev_len:
            _pad(chunk, prev_len - len(chunk.code))
        return chunk

    def _located(self, error: JitError, pc: int | None) -> JitError:
        src = self.program.lines.get(pc) if pc is not None else None
        if src is not None:
            return error.located(file=src.file, line=src.line, insn=pc)
        return error.located(file=self.program.file or None, insn=pc)

    # --- final image ------------------------------------------------------------------------

    def _image(self, length: int) -> Image:
        ctx = self.ctx
        code = bytearray()
        placed = []                                   # (image offset, chunk, owner slot)
        slow_at: dict[tuple[int, int], int] = {}
        funcs = []
        for index, frame in enumerate(ctx.frames):
            code += self.prologues[index]
            for pc in range(frame.start, frame.stop):
                placed.append((len(code), self.chunks[pc], pc))
                code += self.chunks[pc].code
            for pc in range(frame.start, frame.stop):
                for k, slow in enumerate(self.chunks[pc].slow):
                    slow_at[pc, k] = len(code)
                    placed.append((len(code), slow, pc))
                    code += slow.code
            if _frame_uses_stub(self.chunks, frame):
                stub = Chunk()
                stub.jmp32(ABS, ctx.target.budget_exhausted_address)
                placed.append((len(code), stub, frame.start))
                code += stub.code
            offset = ctx.func_offset[index]
            funcs.append(FuncImage(frame.name, frame.start, offset, len(code) - offset, frame.stack_depth))
        if len(code) != length:
            raise JitError(f"internal: assembled {len(code)} bytes, laid out {length}")
        self._patch(code, placed, slow_at)
        offsets = list(ctx.start)
        for frame in ctx.frames:
            offsets[frame.start] = ctx.func_offset[frame.index]
        return Image(bytes(code), ctx.target.image_base, tuple(offsets) + (len(code),), tuple(funcs),
                     self._sites(slow_at), ctx.target.kasan)

    def _patch(self, code: bytearray, placed, slow_at) -> None:
        ctx, base = self.ctx, self.ctx.target.image_base
        for at, chunk, pc in placed:
            for field, kind, value in chunk.relocs:
                if kind == ABS:
                    dest = value
                elif kind == FUNC:
                    dest = base + ctx.func_offset[value]
                elif kind == SLOW:
                    dest = base + slow_at[pc, value]
                elif kind == STUB:
                    dest = base + self.stub_offset[ctx.frame_of[pc]]
                else:
                    assert kind == BACK
                    dest = base + ctx.start[pc] + value
                rel = dest - (base + at + field + 4)
                if not is_simm32(rel):
                    raise self._located(JitError(f"call target {dest:#x} is out of rel32 reach of the image "
                                                 f"at {base:#x}"), pc)
                code[at + field:at + field + 4] = (rel & 0xFFFFFFFF).to_bytes(4, "little")

    def _sites(self, slow_at) -> tuple[CheckSite, ...]:
        sites = []
        for pc, chunk in enumerate(self.chunks):
            for s in chunk.sites:
                where = self.ctx.start[pc] if s.slow is None else slow_at[pc, s.slow]
                probes = tuple(self.ctx.start[pc] + p for p in s.probes)
                slow = None if s.slow is None else slow_at[pc, s.slow]
                access = None if s.access_at is None else self.ctx.start[pc] + s.access_at
                sites.append(CheckSite(pc, where + s.ret_at, s.size, s.is_write, s.base_reg, s.off,
                                       probes, slow, access))
        return tuple(sites)


def _makes_tail_calls(insns, target: Target) -> bool:
    """Tail calls are emitted inline (jit/tail_call.py) when the machine declares support for
    them; otherwise helper 12 is called like any helper."""
    return target.tail_call_address is not None and any(
        i.code == (isa.JMP | isa.CALL) and i.src == isa.CALL_HELPER and i.imm == TAIL_CALL_HELPER for i in insns)


def _first_exit(insns, frame) -> int | None:
    for pc in range(frame.start, frame.stop):
        if insns[pc].is_exit:
            return pc
    return None


def _frame_uses_stub(chunks, frame) -> bool:
    return any(chunks[pc].uses_stub for pc in range(frame.start, frame.stop))


def _pad(chunk: Chunk, count: int) -> None:
    """NOPs just before the final jump, so its displacement (counted from the slot's end) holds."""
    at = len(chunk.code) if chunk.jump_at is None else chunk.jump_at
    nops = bytearray()
    emit_nops(nops, count)
    chunk.code[at:at] = nops
    chunk.relocs = [(f + count if f >= at else f, k, v) for f, k, v in chunk.relocs]
