"""What-if mode: run the tests the verifier is expected to reject (`__failure`) as though a verifier
bug had let them through, and count how many memory-safety rejections KASAN backs up.

A what-if test runs its program once on the test's own inputs (the "plain" run, variant "") and
then on the same input variants as exploration. Its findings get mode "what-if" and the label
LABEL; its status stays what the faithful judgement said (the verifier's expectation is not ours
to check) unless running it crashed our tool, which makes it an error.

Memory-safety rejections are the `__failure` tests whose `__msg` text is about a bad memory access
(MEMORY_MSG). Two kinds of evidence show such a bug, and are counted apart: a KASAN report (a
finding), and an oops (the run faulted, e.g. a page fault on a NULL or wild pointer, which the
kernel would print instead of a KASAN report). Each is counted on the plain run alone and with
exploration; a test with either is "caught".

Owns: the what-if runs and judgement, its label and the backup counts. Must not import unicorn,
github or bot/; programs run through the case (`checks.explore.Explorable.run_variant`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from checks.explore import (FAITHFUL, Explorable, Outcome, Variant, budget, crashed, explore,
                            explored_findings, variant_runner, variants)
from checks.results import TestResult

MODE_WHAT_IF = "what-if"
LABEL = "would be caught if the verifier accepted this"
WHAT_IF = "what_if"              # extra key: {"memory", "kasan", "oops", "errors"} (see record())
MEMORY_MSG = re.compile(
    r"invalid access to (map value|packet|memory)|outside of the allowed memory range|"
    r"invalid mem access|invalid (read|write) from stack|out of bounds|min value is negative|"
    r"invalid bpf_context access|R\d+ min value is outside|access beyond|"
    r"invalid variable-offset|unbounded memory access|invalid zero-sized read", re.I)


def is_memory_rejection(msgs) -> bool:
    """Whether a test's expected verifier messages say it was refused for a bad memory access."""
    return any(MEMORY_MSG.search(m) for m in msgs)


def record(runs: list[tuple[Variant, Outcome]], *, memory: bool) -> dict:
    """The `what_if` entry of a result: which runs (by variant name, "" = plain) showed what."""
    return {"memory": memory,
            "kasan": [v.name for v, o in runs if o.findings],
            "oops": [v.name for v, o in runs if o.fault],
            "errors": sorted({o.error for _, o in runs if o.error})}


def what_if_case(case: Explorable, result: TestResult, engine, insn_limit: int,
                 n: int) -> TestResult:
    """Run an expected rejection as if accepted: the plain run, then `n` variants. Variants follow
    only a plain run that ended (normally or in an oops): one stopped by a limit of ours (budget,
    time, an unemulated helper) would mostly stop again, at full cost each time (rejected programs
    include infinite loops)."""
    surface = case.surface()
    if surface is None:                   # its program did not import: nothing to run
        return result
    run = variant_runner(case, engine, insn_limit)
    try:
        runs = explore(run, [FAITHFUL], 1)
        if runs[0][1].error is None:
            runs += explore(run, variants(surface), budget(surface, n))
    except Exception as e:                # noqa: BLE001 - a crash of ours makes the test an error
        return crashed(result, e, "what-if")
    return what_if_result(result, runs, memory=is_memory_rejection(case.msgs))


def what_if_result(result: TestResult, runs: list[tuple[Variant, Outcome]], *,
                   memory: bool) -> TestResult:
    """`result` (the faithful judgement of a `__failure` test) with its what-if runs added; `runs`
    starts with the plain run (FAITHFUL)."""
    findings = explored_findings((), runs, mode=MODE_WHAT_IF, label=LABEL)
    return result.with_findings(result.finding_records + findings,
                                extra={WHAT_IF: record(runs, memory=memory)})


# -- the backup counts ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Backup:
    """Among the memory-safety `__failure` tests run what-if: how many showed their bug."""
    tests: int
    kasan_plain: int              # a KASAN report on the plain run
    kasan_explored: int           # ... on the plain run or any variant
    oops_plain: int               # an oops (fault) on the plain run
    oops_explored: int
    caught_plain: int             # a report or an oops
    caught_explored: int

    @classmethod
    def of(cls, results) -> "Backup":
        entries = [r.extra[WHAT_IF] for r in results if r.extra.get(WHAT_IF, {}).get("memory")]

        def count(kind: str, plain: bool) -> int:
            return sum(1 for e in entries if _shows(e, kind, plain))

        def caught(plain: bool) -> int:
            return sum(1 for e in entries if _shows(e, "kasan", plain) or _shows(e, "oops", plain))

        return cls(tests=len(entries), kasan_plain=count("kasan", True),
                   kasan_explored=count("kasan", False), oops_plain=count("oops", True),
                   oops_explored=count("oops", False), caught_plain=caught(True),
                   caught_explored=caught(False))

    def lines(self) -> list[str]:
        rows = (("KASAN report:", self.kasan_plain, self.kasan_explored),
                ("oops (fault):", self.oops_plain, self.oops_explored),
                ("either:", self.caught_plain, self.caught_explored))
        n = self.tests
        return [f"what-if: {n} memory-safety rejections run as if accepted"] + \
            [f"  {name:13} {plain}/{n} plain, {explored}/{n} with exploration"
             for name, plain, explored in rows]


def _shows(entry: dict, kind: str, plain: bool) -> bool:
    names = entry.get(kind, [])
    return FAITHFUL.name in names if plain else bool(names)
