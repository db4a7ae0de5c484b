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

KASAN (default inline) is the emulated kernel's (`checks.kernel.Kernel`): the engine holds one,
configured from the command line (`configure(EngineOptions)`), and exposes it as `kernel` for
test types that need the whole emulated kernel (maps, contexts). Each `run` result carries the
run's KASAN reports as `findings`. Seams for later layers: `resolve_pseudo` (ld_imm64 map
references of programs run without a Kernel) and `before_run` (called once the machine is reset
and the input placed).

Owns: the engine glue. Must not import github or bot/.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable

from checks.errors import CheckError
from checks.interp import check_control_flow
from checks.kernel import Kernel, called_helpers
from checks.machine import (DEFAULT_INSN_LIMIT, DEFAULT_TIME_LIMIT, HelperError, Machine, MachineRun,
                            StopRun, shared_machine)
from checks.memory_regions import INPUT_BASE, Memory, MemoryFault, Region
from checks.report import Finding
from checks.runner import EngineResult, register_engine
from jit import isa
from jit.image import Image
from jit.isa import Insn
from jit.program import Program
from jit.tag import func_tags

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


@dataclass(frozen=True)
class JitResult(EngineResult):
    """An engine result plus the run's KASAN reports."""
    findings: tuple[Finding, ...] = ()


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
    tags: tuple[str, ...]                   # each function's prog tag, for `bpf_prog_<tag>_<name>`
    calls: tuple[tuple[int, int], ...]      # (src, imm) of every helper and kfunc it calls

    @property
    def tag(self) -> str:
        return self.tags[0]


class JitEngine:
    """Runs programs through the x86-64 JIT on the emulated machine."""
    name = "jit"

    def __init__(self, machine: Machine | None = None, *, kasan: str = "inline",
                 multishot: bool = True, time_limit: float = DEFAULT_TIME_LIMIT,
                 before_run: Callable[[Machine], None] | None = None):
        self.machine = machine or shared_machine()
        self.kernel = Kernel(kasan=kasan, multishot=multishot, machine=self.machine)
        self.time_limit = time_limit
        self.before_run = before_run
        self._cache: OrderedDict[tuple, Compiled] = OrderedDict()
        self._last: tuple = (None, None, None)          # (program, resolver, Compiled)
        self._memory: Memory | None = None
        self.last_run: MachineRun | None = None      # the machine's own view, with the oops

    @property
    def kasan(self) -> str:
        return self.kernel.kasan

    def configure(self, options) -> None:
        """`checks.runner.EngineOptions` from the command line: KASAN mode and multishot."""
        self.kernel = Kernel(kasan=options.kasan, multishot=options.multishot, machine=self.machine)
        self._cache.clear()
        self._last = (None, None, None)

    def prepare(self, program: Program, resolve_pseudo: PseudoResolver | None = None) -> Compiled:
        """`program` with its pseudo loads resolved, checked and compiled (cached). The same
        Program object again costs nothing: scanning or hashing a big one costs more than a run."""
        last_program, last_resolver, last = self._last
        if program is last_program and resolve_pseudo is last_resolver:
            return last
        resolved = resolve_pseudo_loads(program, resolve_pseudo)
        compiled = self._cache.get(resolved)
        if compiled is None:
            compiled = self._compile(resolved, func_tags(program))
            self._cache[resolved] = compiled
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        self._cache.move_to_end(resolved)
        self._last = (program, resolve_pseudo, compiled)
        return compiled

    def _compile(self, program: Program, tags: tuple[str, ...]) -> Compiled:
        """Every helper the program calls gets a stub, so one nobody serves fails when it is
        called, as in the interpreter, not at compile time."""
        isa.check(program.insns, file=program.file or None)     # refuse what the interpreter
        check_control_flow(program)                             # refuses, and alike
        calls = called_helpers(program)
        for src, imm in calls:
            if not self.machine.has_helper(src, imm):
                self.machine.register_helper(imm, None, src=src)
        asan = self.kernel.asan.address if self.kasan != "off" else None
        target = self.machine.target(kasan=self.kasan, asan_address=asan)
        return Compiled(_compiler()(program, target), tags, calls)

    def run(self, program: Program, mem: bytes, *, helpers=None, insn_limit: int = DEFAULT_INSN_LIMIT,
            unwind_helper: int | None = None, kfuncs=None,
            resolve_pseudo: PseudoResolver | None = None) -> JitResult:
        compiled = self.prepare(program, resolve_pseudo)
        m = self.machine
        m.reset()
        self.kernel.asan.begin_run()
        addr, view = m.alloc("mem", len(mem), at=INPUT_BASE)
        view[:] = mem
        self._serve(compiled.calls, helpers or {}, kfuncs or {}, unwind_helper, addr, view)
        if self.before_run is not None:
            self.before_run(m)
        r = m.run(compiled.image, (addr if mem else 0, len(mem)), insn_limit=insn_limit,
                  time_limit=self.time_limit, tag=compiled.tags)
        self.last_run = r
        error = "\n".join(r.fault.lines) if r.fault else r.error
        findings = self.kernel.findings_of(program, compiled.image, test=program.file or program.name)
        return JitResult(r.r0 if r.r0 is not None else 0, r.insns, bytes(view), error,
                         r.error_insn, tuple(findings))

    def _serve(self, calls, helpers, kfuncs, unwind_helper, addr: int, view) -> None:
        """Point each helper stub the program may call (its calls, and every helper offered, for
        callx by helper id) at this run's handler."""
        stack = self.machine.stack
        self._memory = Memory([Region("stack", stack.start, stack.view),
                               Region("mem", addr, view)])
        keys = set(calls) | {(isa.CALL_HELPER, i) for i in helpers} \
            | {(isa.PSEUDO_KFUNC_CALL, i) for i in kfuncs}
        for src, imm in sorted(keys):
            if self.machine.is_native(src, imm):
                continue
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
