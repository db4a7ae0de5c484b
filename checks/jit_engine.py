"""The `jit` engine: Program -> (pseudo loads resolved) -> compile for the machine -> load -> run.

It answers exactly like the interpreter (`checks.runner.EngineResult`: r0, executed instructions,
final input buffer, error and the slot it happened at), so the two can be compared run for run.
Differences that are by design, each with its reason:
- `insns` is an upper bound, not an exact count: the JIT counts budget on back-edges and calls
  only (see `checks.machine.Machine.run`), because counting every instruction would cost more
  than the program itself.
- A bad memory access is the emulated kernel's oops text (`BUG: unable to handle page fault...`),
  where the interpreter names the regions it knows; both name the instruction.
- Stack addresses differ (the JIT's frames sit in one kernel task stack); the input buffer is at the
  interpreter's address, so a program that returns a pointer into it agrees.

Seams for later layers: `resolve_pseudo` (maps: turns ld_imm64 map references into addresses before
compiling), `kasan`/`asan_address` (KASAN: how checks are emitted and where `__asan_*` live) and
`before_run` (poison shadow, set up map values and records once the machine is reset).

Owns: the engine glue. Must not import github or bot/.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable

from checks.errors import CheckError
from checks.interp import check_control_flow
from checks.machine import (DEFAULT_INSN_LIMIT, DEFAULT_TIME_LIMIT, HelperError, Machine, MachineRun,
                            StopRun, shared_machine)
from checks.memory_regions import INPUT_BASE, Memory, MemoryFault, Region
from checks.runner import EngineResult, register_engine
from jit import isa
from jit.image import Image
from jit.isa import Insn
from jit.program import Program

# (first slot, second slot, pc) -> the 64-bit value the ld_imm64 loads (as the interpreter's).
PseudoResolver = Callable[[Insn, Insn, int], int]
# ld_imm64 sources the loader turns into plain constants; PSEUDO_FUNC is the JIT's own business.
LOADER_PSEUDO = (isa.PSEUDO_MAP_FD, isa.PSEUDO_MAP_VALUE, isa.PSEUDO_BTF_ID, isa.PSEUDO_MAP_IDX,
                 isa.PSEUDO_MAP_IDX_VALUE)
_CACHE_SIZE = 256


def resolve_pseudo_loads(program: Program, resolve: PseudoResolver | None) -> Program:
    """`program` with every loader-resolved ld_imm64 replaced by the constant it stands for."""
    insns = list(program.insns)
    changed = False
    for pc, insn in enumerate(insns):
        if not (insn.is_ld_imm64 and insn.src in LOADER_PSEUDO):
            continue
        if resolve is None:
            raise CheckError(f"ld_imm64 with pseudo source {insn.src} needs a resolver (maps are "
                             "not set up for this program)", file=program.file or None, insn=pc)
        first, second = isa.ld_imm64(insn.dst, resolve(insn, insns[pc + 1], pc))
        insns[pc], insns[pc + 1] = first, second
        changed = True
    if not changed:
        return program
    return replace(program, insns=tuple(insns))


def prog_tag(program: Program) -> str:
    """The kernel's program tag: the first 8 bytes of SHA-1 over the instructions, with the
    loader-patched immediates of map references zeroed (so the tag does not depend on fds)."""
    raw = bytearray(isa.encode(program.insns))
    for pc, insn in enumerate(program.insns):
        if insn.is_ld_imm64 and insn.src in (isa.PSEUDO_MAP_FD, isa.PSEUDO_MAP_VALUE):
            raw[pc * 8 + 4:pc * 8 + 8] = bytes(4)
            raw[pc * 8 + 12:pc * 8 + 16] = bytes(4)
    return hashlib.sha1(raw).hexdigest()[:16]


def _called_helpers(program: Program) -> tuple[tuple[int, int], ...]:
    return tuple(sorted({(i.src, i.imm & 0xFFFFFFFF) for i in program.insns if i.is_call
                         and i.source == isa.K and i.src in (isa.CALL_HELPER, isa.PSEUDO_KFUNC_CALL)}))


def _compiler():
    try:
        from jit.compile import compile_program
    except ModuleNotFoundError as e:
        if e.name != "jit.compile":
            raise
        raise CheckError("the JIT is not available (jit/compile.py is missing)") from None
    return compile_program


@dataclass(frozen=True)
class Compiled:
    """A program ready to run on the machine."""
    image: Image
    tag: str                                # the kernel's prog tag, for `bpf_prog_<tag>_<name>`
    calls: tuple[tuple[int, int], ...]      # (src, imm) of every helper and kfunc it calls


class JitEngine:
    """Runs programs through the x86-64 JIT on the emulated machine."""
    name = "jit"

    def __init__(self, machine: Machine | None = None, *, kasan: str = "off", asan_address=None,
                 time_limit: float = DEFAULT_TIME_LIMIT,
                 before_run: Callable[[Machine], None] | None = None):
        self.machine = machine or shared_machine()
        self.kasan, self.asan_address, self.time_limit = kasan, asan_address, time_limit
        # Called after the machine is reset and the input placed, before the program runs:
        # where a KASAN or maps layer poisons shadow, allocates map values, clears its records.
        self.before_run = before_run
        self._cache: OrderedDict[Program, Compiled] = OrderedDict()
        self._last: tuple = (None, None, None)          # (program, resolver, Compiled)
        self._memory: Memory | None = None
        self.last_run: MachineRun | None = None      # the machine's own view, with the oops

    def prepare(self, program: Program, resolve_pseudo: PseudoResolver | None = None) -> Compiled:
        """`program` with its pseudo loads resolved, checked and compiled (cached). The same
        Program object again costs nothing: scanning or hashing a big one costs more than a run."""
        last_program, last_resolver, last = self._last
        if program is last_program and resolve_pseudo is last_resolver:
            return last
        resolved = resolve_pseudo_loads(program, resolve_pseudo)
        compiled = self._cache.get(resolved)
        if compiled is None:
            compiled = self._compile(resolved, prog_tag(program))
            self._cache[resolved] = compiled
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        self._cache.move_to_end(resolved)
        self._last = (program, resolve_pseudo, compiled)
        return compiled

    def _compile(self, program: Program, tag: str) -> Compiled:
        """Every helper the program calls gets a stub, so one nobody serves fails when it is
        called, as in the interpreter, not at compile time."""
        isa.check(program.insns, file=program.file or None)     # refuse what the interpreter
        check_control_flow(program)                             # refuses, and alike
        calls = _called_helpers(program)
        for src, imm in calls:
            if not self.machine.has_helper(src, imm):
                self.machine.register_helper(imm, None, src=src)
        target = self.machine.target(kasan=self.kasan, asan_address=self.asan_address)
        return Compiled(_compiler()(program, target), tag, calls)

    def run(self, program: Program, mem: bytes, *, helpers=None, insn_limit: int = DEFAULT_INSN_LIMIT,
            unwind_helper: int | None = None, kfuncs=None,
            resolve_pseudo: PseudoResolver | None = None) -> EngineResult:
        compiled = self.prepare(program, resolve_pseudo)
        m = self.machine
        m.reset()
        addr, view = m.alloc("mem", len(mem), at=INPUT_BASE)
        view[:] = mem
        self._serve(compiled.calls, helpers or {}, kfuncs or {}, unwind_helper, addr, view)
        if self.before_run is not None:
            self.before_run(m)
        r = m.run(compiled.image, (addr if mem else 0, len(mem)), insn_limit=insn_limit,
                  time_limit=self.time_limit, tag=compiled.tag)
        self.last_run = r
        error = "\n".join(r.fault.lines) if r.fault else r.error
        return EngineResult(r.r0 if r.r0 is not None else 0, r.insns, bytes(view), error,
                            r.error_insn)

    def _serve(self, calls, helpers, kfuncs, unwind_helper, addr: int, view) -> None:
        """Point each helper stub the program uses at this run's handler."""
        stack = self.machine.stack
        self._memory = Memory([Region("stack", stack.start, stack.view),
                               Region("mem", addr, view)])
        for src, imm in calls:
            kfunc = src == isa.PSEUDO_KFUNC_CALL
            fn = (kfuncs if kfunc else helpers).get(imm)
            label = f"{'kfunc' if kfunc else 'helper'} {imm}"
            unwind = not kfunc and imm == unwind_helper
            self.machine.register_helper(imm, fn and self._adapt(fn, label, unwind), src=src,
                                         name=label)

    def _adapt(self, fn, label: str, unwind: bool):
        """An interpreter-style helper `fn(memory, r1..r5)` as a machine helper."""
        def call(machine: Machine, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
            try:
                r0 = fn(self._memory, r1, r2, r3, r4, r5)
            except MemoryFault as e:
                raise HelperError(f"{e} (in {label} called by insn #{machine.caller_insn()})") from None
            if unwind and r0 == 0:
                raise StopRun(0)             # uBPF's unwind: a zero return ends the program
            return r0
        return call


register_engine("jit", JitEngine)
