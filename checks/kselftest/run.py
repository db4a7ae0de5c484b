"""Selftest cases run the way test_loader runs them: `SelftestCase` → runner cases → `TestResult`s.

Per test (functions marked `__auxiliary` are not tests; they are only loaded alongside):
- the privileged run, when the test has one; the unprivileged run (id suffix ` @unpriv`) only when
  its expected result or retval differs from the privileged one (otherwise it would repeat it);
- `__failure`: not executed (the verifier is not emulated): "pass", reason "expected rejection;
  not executed" (what-if mode runs it through `run_variant`);
- `__success` with `__retval`: executed with BPF_PROG_TEST_RUN (`checks.test_run`) and the retval
  compared as a 32-bit int; `__success` without one (or POINTER_VALUE): executed for KASAN findings,
  any retval passes; fentry/fexit programs are not run (test_run calls the kernel's test functions,
  which run only attached programs) and their retval is 0;
- a run that faults or reports KASAN (faithful mode) fails; a run we could not complete (an
  emulation gap: unknown helper, budget exceeded) is an error; tests we cannot build or whose
  program type has no test_run context are skipped with the reason.
Both modes run the same program; of the rewrites the verifier makes only for unprivileged programs,
the tail-call index guard is emulated (the JIT emits it: `Target.tail_call_index_guard`, set
through `Kernel.begin(unpriv=True)`), ALU sanitation is not. Whatever engine the runner names,
programs run in the emulated kernel on the JIT (the jit engine's own Kernel when it is that one).

Results carry `suite`, `imported` and `executed` (checks.results) and their findings' records.
The cases implement `checks.explore.Explorable`, so the runner can explore and run what-if.

Owns: test_loader's judgement. Must not import github or bot/; unicorn only lazily, when a
program runs (the runner imports this module to list file types).
"""
from __future__ import annotations

import pathlib
import time
from dataclasses import dataclass
from typing import Mapping

from checks import contexts
from checks.explore import FAITHFUL, Outcome, Surface, Variant, surface_of
from checks.kselftest.case import SelftestCase
from checks.kselftest.compiled import with_object
from checks.kselftest.importer import load_cases
from checks.results import EXECUTED, IMPORTED, SUITE, TestResult
from jit.errors import BpfKasanError
from jit.program import Program

UNPRIV = " @unpriv"
# The verifier bounds every accepted program's run (may_goto and bpf_loop allow 8M iterations
# each), so a run of a `__success` test gets at least this budget; the run's time limit stays
# the backstop.
VERIFIED_INSN_LIMIT = 64 * 1024 * 1024
NOT_EXECUTED = "expected rejection; not executed"
NOT_ATTACHED = "not attached, so BPF_PROG_TEST_RUN does not run it; retval 0"
ENGINE = "jit"                     # selftests always run on the JIT, in the emulated kernel


@dataclass(frozen=True)
class Mode:
    """One of test_loader's two runs of a test."""
    suffix: str                    # "" (privileged) or UNPRIV
    expect: str
    retval: int | None             # compared when not None
    executes: bool
    msgs: tuple[str, ...]


def modes(case: SelftestCase) -> list[Mode]:
    """The runs that are tests of their own: auxiliary programs have none, and an unprivileged
    run that expects what the privileged one does is left out."""
    out = []
    priv = _mode("", case.expect, case.retval, case.executes, case.msgs)
    if case.runs_priv and not case.auxiliary:
        out.append(priv)
    if case.runs_unpriv and not case.auxiliary_unpriv:
        unpriv = _mode(UNPRIV, case.expect_unpriv, case.retval_unpriv, case.executes_unpriv,
                       case.msgs_unpriv)
        same = (unpriv.expect, unpriv.retval, unpriv.executes) == (priv.expect, priv.retval, priv.executes)
        if not (out and same):
            out.append(unpriv)
    return out


def _mode(suffix: str, expect: str, retval: int | None, executes: bool, msgs) -> Mode:
    """A retval is only run and compared when the load is expected to succeed."""
    success = expect == "success"
    return Mode(suffix, expect, retval if success else None, executes and success, tuple(msgs))


class KselftestCase:
    """One mode of one selftest, as the runner's `Case` (and `Explorable`)."""

    def __init__(self, case: SelftestCase, mode: Mode, others: Mapping[str, Program]):
        self.case, self.mode, self.others = case, mode, others
        self.id = case.id + mode.suffix
        self.path = case.file
        self.name = case.name + mode.suffix
        self.msgs = mode.msgs
        self._prepared: Program | None = None
        self._loaded: Program | None = None      # as libbpf loads it, for the tags

    # -- the runner's Case ----------------------------------------------------------------------

    def run(self, engine, *, insn_limit: int) -> TestResult:
        started = time.perf_counter()
        why_not = self.why_not_run()
        if why_not is not None:
            status, reason = why_not
            return self._result(status, reason, started)
        try:
            done = self._execute(engine, FAITHFUL, insn_limit)
        except BpfKasanError as e:
            return self._result("error", str(e), started, executed=True)
        status, reason = judge(self.mode, done)
        result = self._result(status, reason, started, executed=True, retval=done.run.r0,
                              insns=done.run.insns)
        return result.with_findings([f.to_json() for f in done.run.findings])

    def why_not_run(self) -> tuple[str, str] | None:
        """(status, reason) when the faithful run does not execute the program."""
        case = self.case
        if case.error is not None:
            return "error", str(case.error)
        if case.program is None:
            return "skip", case.skip_reason or "not imported"
        if self.mode.expect == "failure":
            return "pass", NOT_EXECUTED
        unsupported = contexts.unsupported(case.program.prog_type, case.sec)
        if unsupported:
            return "skip", unsupported
        if contexts.unattached(case.program.prog_type, case.sec):
            if self.mode.retval in (None, 0):
                return "pass", NOT_ATTACHED
            return "fail", f"retval 0 != expected {self.mode.retval} ({NOT_ATTACHED})"
        return None

    def _result(self, status: str, reason: str, started: float, *, executed: bool = False,
                retval: int | None = None, insns: int = 0) -> TestResult:
        return TestResult(id=self.id, file=self.path, name=self.name, status=status, reason=reason,
                          expect=self.mode.expect, retval=retval, expected_retval=self.mode.retval,
                          duration_s=time.perf_counter() - started, insns=insns, engine=ENGINE,
                          extra={SUITE: "kselftest", IMPORTED: self.case.program is not None,
                                 EXECUTED: executed})

    # -- Explorable -----------------------------------------------------------------------------

    def surface(self) -> Surface | None:
        """None when there is nothing to run; the program types BPF_PROG_TEST_RUN leaves alone
        still run here on their zeroed context, for what-if."""
        program = self.case.program
        if program is None or program.prog_type not in contexts.KINDS:
            return None
        return surface_of(self.prepared(), packet=contexts.has_packet(program.prog_type),
                          ctx=isinstance(contexts.KINDS[program.prog_type], contexts.BufferKind))

    def run_variant(self, engine, variant: Variant, *, insn_limit: int) -> Outcome:
        if self.surface() is None:
            return Outcome(error="no program to run")
        try:
            done = self._execute(engine, variant, insn_limit)
        except BpfKasanError as e:
            return Outcome(error=str(e))
        fault = done.run.fault.splitlines()[0] if done.run.fault else None
        return Outcome(findings=tuple(f.to_json() for f in done.run.findings), fault=fault,
                       error=done.run.error, r0=done.run.r0)

    # -- running --------------------------------------------------------------------------------

    def prepared(self) -> Program:
        if self._prepared is None:
            from checks.test_run import loaded, prepare
            self._loaded = loaded(self.case.program, self.others)
            self._prepared = prepare(self._loaded)          # its tail-call targets are in
        return self._prepared

    def _execute(self, engine, variant: Variant, insn_limit: int):
        from checks import test_run
        options = variant.kernel_options()
        if self.mode.suffix == UNPRIV:
            options["unpriv"] = True
        return test_run.run(test_run.kernel_for(engine), self.prepared(), file=self.path, test=self.id,
                            data_in=variant.packet, ctx_in=variant.ctx_in, begin=options,
                            insn_limit=self._insn_limit(insn_limit), loaded_as=self._loaded)

    def _insn_limit(self, insn_limit: int) -> int:
        """Only a verified program has the verifier's bound on its run; a what-if run of an
        expected rejection (often an endless loop) gets the runner's own budget."""
        return insn_limit if self.mode.expect == "failure" else max(insn_limit, VERIFIED_INSN_LIMIT)


def judge(mode: Mode, done) -> tuple[str, str]:
    """(status, reason) of a faithful `checks.test_run.TestRun`."""
    run = done.run
    if run.fault is not None:
        where = f" at insn {run.fault_insn}" if run.fault_insn is not None else ""
        return "fail", f"{run.fault.splitlines()[0]}{where}"
    if run.error is not None:
        return "error", run.error
    faithful = [f for f in run.findings if f.mode == "faithful"]
    if faithful:
        return "fail", faithful[0].title
    if mode.retval is not None and done.retval != mode.retval:
        return "fail", f"retval {done.retval} != expected {mode.retval}"
    return "pass", ""


def runner_cases(cases: list[SelftestCase]) -> list[KselftestCase]:
    """The runner cases of one file's selftests, in source order."""
    others = {c.name: c.program for c in cases if c.program is not None}
    return [KselftestCase(c, mode, others) for c in cases for mode in modes(c)]


def c_file_cases(path: str, file_id: str) -> list[KselftestCase]:
    """The runner's `FileType.cases` for selftest C files (`checks.kselftest.is_selftest_source`):
    the tests only a compiler builds come from the file's object when one can be made
    (`checks.kselftest.compiled`)."""
    del file_id                      # ids are "<file name>::<function>", as test_progs names them
    source = pathlib.Path(path)
    return runner_cases(with_object(load_cases(source), source))
