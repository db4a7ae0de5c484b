"""BPF_PROG_TEST_RUN as test_loader drives it, on the emulated kernel (`checks.kernel.Kernel`).

One run: fresh maps (`Kernel.begin`), the pre-execution callback of the test's file, the ctx and
packet of the program type (`checks.contexts`, data_in = 64 zero bytes unless a variant says
otherwise), the program with its ctx accesses converted (`checks.ctx_convert`), repeat = 1. The
retval is what the syscall reports: the low 32 bits of r0, which test_loader compares as an int.

Programs are loaded as test_loader loads them: the test program plus the programs its prog
arrays name (libbpf fills them from `.values`), linked here into one program after the main one
so that one image holds every tail-call target.

Facts from prog_tests/verifier.c (6.12): before running, verifier_array_access fills element 0
of map_array_ro and verifier_value_ptr_arith element 0 of map_array_48b with
`struct test_val {.index = 28, .foo[6] = 0xabcdef12}`.

Owns: one test run's set-up and its retval. Must not import github or bot/.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import struct
import weakref
from dataclasses import dataclass
from typing import Mapping

from checks import contexts
from checks.boundary_values import fill_bytes
from checks.ctx_convert import convert
from checks.errors import CheckError
from checks.extra_helpers import register_extra_helpers
from checks.iter_kfuncs import register_iter_kfuncs
from checks.kernel import Kernel, KernelRun
from jit import isa
from jit.program import Program

# struct test_val { unsigned int index; int foo[11]; } with index = 28, foo[6] = 0xabcdef12.
TEST_VAL_INIT = struct.pack("<I11I", 28, *(0xABCDEF12 if i == 6 else 0 for i in range(11)))
# By file stem (the name before its first dot), so `x.c`, `x.o` and `x.bpf.o` all match.
PRE_EXECUTION = {"verifier_array_access": "map_array_ro",
                 "verifier_value_ptr_arith": "map_array_48b"}


@dataclass(frozen=True)
class TestRun:
    __test__ = False                       # not a pytest test class despite the name

    run: KernelRun

    @property
    def completed(self) -> bool:
        return self.run.fault is None and self.run.error is None

    @property
    def retval(self) -> int | None:
        """r0's low 32 bits as an int; None if the program did not finish."""
        return retval32(self.run.r0) if self.completed else None


def retval32(r0: int) -> int:
    """The u32 retval BPF_PROG_TEST_RUN reports, read as test_loader's int."""
    return isa.s32(r0)


def with_tail_targets(program: Program, others: Mapping[str, Program]) -> Program:
    """`program` with every program its prog arrays name (from `others`, by function name)
    appended as functions of the same image, their map references renumbered into ours."""
    wanted = [name for m in program.maps if m.type == "prog_array" for _, name in m.values]
    placed = {name for _, name in program.funcs}
    for name in dict.fromkeys(wanted):
        if name not in placed and name in others:
            program = _append(program, others[name])
            placed.update(n for _, n in program.funcs)
    return program


def _append(program: Program, other: Program) -> Program:
    maps = list(program.maps)
    index = {}
    for i, m in enumerate(other.maps):
        found = next((j for j, mine in enumerate(maps) if mine.name == m.name), None)
        if found is None:
            maps.append(m)
            found = len(maps) - 1
        index[i] = found
    base = len(program.insns)
    insns = list(program.insns)
    for insn in other.insns:
        if insn.is_ld_imm64 and insn.src in (isa.PSEUDO_MAP_FD, isa.PSEUDO_MAP_VALUE):
            insn = dataclasses.replace(insn, imm=index[insn.imm])
        insns.append(insn)
    funcs = program.funcs + tuple((base + start, name) for start, name in other.funcs)
    lines = {**program.lines, **{base + pc: line for pc, line in other.lines.items()}}
    return dataclasses.replace(program, insns=tuple(insns), maps=tuple(maps), funcs=funcs,
                               lines=lines, stack_depth=None)


def new_kernel(*, kasan: str = "inline", multishot: bool = True) -> Kernel:
    """A Kernel that can run test_run programs (the LD_ABS loaders, packet lookup and the
    iterator kfuncs served)."""
    kernel = Kernel(kasan=kasan, multishot=multishot)
    _make_ready(kernel)
    return kernel


def _make_ready(kernel: Kernel) -> None:
    register_extra_helpers(kernel)
    register_iter_kfuncs(kernel)
    _ready.add(kernel)


_ready: weakref.WeakSet = weakref.WeakSet()          # kernels that serve the extra helpers
_default: dict[int, Kernel] = {}                     # pid -> this process's own kernel


def kernel_for(engine) -> Kernel:
    """The Kernel to run in: the engine's (the jit engine holds one configured from the command
    line), else this process's default (KASAN inline, multishot); made able to run test_run
    programs on first use."""
    kernel = getattr(engine, "kernel", None)
    if not isinstance(kernel, Kernel):
        pid = os.getpid()
        if pid not in _default:
            _default.clear()
            _default[pid] = new_kernel()
        kernel = _default[pid]
    if kernel not in _ready:
        _make_ready(kernel)
    return kernel


TRAP = isa.Insn(isa.JMP | isa.JA, off=-1)      # what the verifier puts in place of dead code


def sanitize_fp_writes(program: Program) -> Program:
    """Writes to r10 replaced by `ja -1`. The verifier refuses such a write only on a path it
    explores, so in an accepted program every one is dead code, which the verifier removes or
    (unprivileged) turns into `ja -1`; the engines refuse them wherever they are."""
    insns = list(program.insns)
    pc = 0
    while pc < len(insns):
        insn = insns[pc]
        width = 2 if insn.is_ld_imm64 else 1
        if insn.dst == isa.FP and (insn.is_alu or insn.cls in (isa.LDX, isa.LD)):
            insns[pc:pc + width] = [TRAP] * width
        pc += width
    changed = insns != list(program.insns)
    return dataclasses.replace(program, insns=tuple(insns)) if changed else program


def loaded(program: Program, others: Mapping[str, Program] = {}) -> Program:
    """The program as libbpf hands it to the kernel (with the programs its prog arrays name
    linked in): what the kernel computes tags over."""
    return with_tail_targets(program, others)


def prepare(program: Program, others: Mapping[str, Program] = {}) -> Program:
    """The program as the kernel would run it: tail-call targets linked in, dead writes to the
    frame pointer trapped, ctx accesses converted."""
    return convert(sanitize_fp_writes(loaded(program, others)))


def fill_pre_execution(kernel: Kernel, file: str) -> None:
    """test_loader's pre-execution callback for `file`, if it has one."""
    map_name = PRE_EXECUTION.get(pathlib.Path(file).name.split(".")[0])
    if map_name is None:
        return
    target = next((m for m in kernel.maps if m.name == map_name), None)
    if target is None:               # the map exists in the object, but this program cannot see it
        return
    target.update(bytes(target.definition.key_size), TEST_VAL_INIT[:target.definition.value_size])


def run(kernel: Kernel, program: Program, *, file: str = "", test: str = "",
        data_in: bytes | None = None, begin: Mapping | None = None,
        insn_limit: int = 1_000_000, loaded_as: Program | None = None,
        ctx_in: bytes | None = None) -> TestRun:
    """BPF_PROG_TEST_RUN of a `prepare`d program. `begin` holds extra `Kernel.begin` options
    (an exploration variant's helper values, map prefill...). Runs every program type that has a
    context, also those test_run would leave alone (`contexts.unsupported`): callers decide.
    `loaded_as` is the program before `prepare` (`loaded`): the tags an oops names come from it.
    `ctx_in`: a byte pattern the ctx is filled with, for the types whose ctx is a plain buffer
    (tracepoint record, pt_regs, tracing arguments); others keep theirs."""
    if program.prog_type not in contexts.KINDS:
        raise CheckError(contexts.unsupported(program.prog_type), file=file or None)
    kernel.begin(program, test=test, **(begin or {}))
    if (begin or {}).get("map_fill") is None:        # a variant's map contents win
        fill_pre_execution(kernel, file)
    ctx = contexts.build(kernel, program.prog_type,
                         bytes(contexts.TEST_DATA_LEN) if data_in is None else data_in)
    kind = contexts.KINDS[program.prog_type]
    if ctx_in is not None and isinstance(kind, contexts.BufferKind):
        kernel.write(ctx.ctx, fill_bytes(ctx_in, kind.size))
    return TestRun(kernel.execute(program, args=(ctx.ctx,), insn_limit=insn_limit, loaded_as=loaded_as))
