"""The results model every run produces and `--json` writes: `TestResult`, `Summary`, `to_json`,
and the closing table of a selftest run (`SuiteTable`).

JSON schema (names are a contract with the bot and CI; add fields, never rename):
  {"tests": [{"id", "file", "name", "status": "pass|fail|error|skip", "reason",
              "expect": "success|failure", "retval", "expected_retval", "duration_s", "insns",
              "findings": [finding ids], "engine", "error_match"}],
   "findings": [...], "summary": {"tests", "passed", "failed", "errors", "skipped", "findings"}}

`error_match` is set for tests that expect a failure: whether our refusal matched the suite's
expected text (None when the test expected success or was not judged).
`extra` carries fields a later producer adds without a schema change: `suite`, `imported`,
`executed` (the selftest runner), `explored` (checks.explore), `what_if` (checks.whatif).
One key of `extra` is not a field of the test row: `finding_records`, the JSON-able finding dicts
the test produced (their producer owns their shape; each has an `id`). They travel with the result
(also across worker processes) and `to_json` lists them once, under `findings`.

Owns: plain data and its JSON form. Must not import unicorn, capstone or bot/.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace

STATUSES = ("pass", "fail", "error", "skip")
EXPECTS = ("success", "failure")
FINDING_RECORDS = "finding_records"        # extra key: the finding dicts, listed once in `findings`
SUITE = "suite"                  # extra key: the suite a result belongs to ("kselftest"...)
IMPORTED = "imported"            # extra key: the test's program was built (False: skipped before)
EXECUTED = "executed"            # extra key: the program ran (faithfully)


@dataclass(frozen=True)
class TestResult:
    __test__ = False                      # not a pytest test class despite the name

    id: str                               # unique within a run (a .data test: its path under the root)
    file: str
    name: str
    status: str                           # one of STATUSES
    reason: str = ""                      # why it did not pass (empty when it passed)
    expect: str = "success"               # one of EXPECTS
    retval: int | None = None             # r0 as u64, when the program ran to completion
    expected_retval: int | None = None
    duration_s: float = 0.0               # parse + build + run, excluding process start-up
    insns: int = 0                        # instructions executed
    findings: tuple[str, ...] = ()        # ids into the run's findings list
    engine: str = ""
    error_match: bool | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")
        if self.expect not in EXPECTS:
            raise ValueError(f"expect {self.expect!r} is not one of {EXPECTS}")

    @property
    def executed(self) -> bool:
        """Whether the program ran: the producer says so (`extra["executed"]`), else a retval or
        executed instructions show it."""
        return bool(self.extra.get(EXECUTED, self.retval is not None or self.insns > 0))

    @property
    def finding_records(self) -> list[dict]:
        return list(self.extra.get(FINDING_RECORDS, ()))

    def with_findings(self, records: list[dict], **changes) -> "TestResult":
        """This result carrying exactly `records` (ids follow), plus any other field `changes`."""
        extra = {**self.extra, **changes.pop("extra", {}), FINDING_RECORDS: list(records)}
        return replace(self, findings=tuple(r["id"] for r in records), extra=extra, **changes)

    def to_dict(self) -> dict:
        out = {"id": self.id, "file": self.file, "name": self.name, "status": self.status,
               "reason": self.reason, "expect": self.expect, "retval": self.retval,
               "expected_retval": self.expected_retval, "duration_s": round(self.duration_s, 6),
               "insns": self.insns, "findings": list(self.findings), "engine": self.engine,
               "error_match": self.error_match}
        out.update((k, v) for k, v in self.extra.items() if k != FINDING_RECORDS)
        return out


@dataclass(frozen=True)
class Summary:
    tests: int
    passed: int
    failed: int
    errors: int
    skipped: int
    findings: int

    @classmethod
    def of(cls, results, findings=()) -> "Summary":
        count = {s: 0 for s in STATUSES}
        for r in results:
            count[r.status] += 1
        return cls(tests=sum(count.values()), passed=count["pass"], failed=count["fail"],
                   errors=count["error"], skipped=count["skip"], findings=len(findings))

    @property
    def ok(self) -> bool:
        return not (self.failed or self.errors)

    def errors_line(self) -> str | None:
        """Printed just before the closing line when tests errored (they count as failed there)."""
        if not self.errors:
            return None
        return f"{self.errors} error{'s' if self.errors != 1 else ''} (counted as failed)"

    def line(self) -> str:
        """The closing line: `N passed, N failed` (errors included), then `, N skipped` if any."""
        text = f"{self.passed} passed, {self.failed + self.errors} failed"
        if self.skipped:
            text += f", {self.skipped} skipped"
        return text

    def to_dict(self) -> dict:
        return {"tests": self.tests, "passed": self.passed, "failed": self.failed,
                "errors": self.errors, "skipped": self.skipped, "findings": self.findings}


def all_findings(results) -> list[dict]:
    """Every finding record the results carry, in result order."""
    return [record for r in results for record in r.finding_records]


def to_json(results, findings=None) -> str:
    """The whole document. `findings` defaults to the records the results carry."""
    results = list(results)
    findings = all_findings(results) if findings is None else list(findings)
    doc = {"tests": [r.to_dict() for r in results], "findings": findings,
           "summary": Summary.of(results, findings).to_dict()}
    return json.dumps(doc, indent=2) + "\n"


# -- the closing table of a selftest run ---------------------------------------------------------

# Names inside skip reasons (kfuncs, callees, helpers) would split one cause into many rows.
_REASON_NAMES = re.compile(r"\b(kfunc|function|helper) [\w.]+")


def reason_group(reason: str) -> str:
    """A skip reason with the names in it masked, so that one cause is one row."""
    first = reason.strip().splitlines()[0] if reason.strip() else "(no reason given)"
    return _REASON_NAMES.sub(r"\1 NAME", first)


@dataclass(frozen=True)
class SuiteTable:
    """What happened to the tests of an imported suite, for the closing table."""
    tests: int
    imported: int
    run: int
    retval_tests: int
    retval_pass: int
    failed: int                   # fail + error
    skipped: int
    skip_reasons: tuple[tuple[str, int], ...]      # (grouped reason, count), most frequent first

    @classmethod
    def of(cls, results) -> "SuiteTable":
        results = list(results)
        retval = [r for r in results if r.expected_retval is not None and r.expect == "success"]
        skips = Counter(reason_group(r.reason) for r in results if r.status == "skip")
        return cls(tests=len(results),
                   imported=sum(1 for r in results if r.extra.get(IMPORTED, r.status != "error")),
                   run=sum(1 for r in results if r.executed),
                   retval_tests=len(retval),
                   retval_pass=sum(1 for r in retval if r.status == "pass"),
                   failed=sum(1 for r in results if r.status in ("fail", "error")),
                   skipped=sum(skips.values()),
                   skip_reasons=tuple(sorted(skips.items(), key=lambda kv: (-kv[1], kv[0]))))

    def lines(self) -> list[str]:
        rows = [("tests", self.tests), ("imported", self.imported), ("run", self.run),
                ("retval pass", f"{self.retval_pass}/{self.retval_tests}"),
                ("failed", self.failed), ("skipped", self.skipped)]
        out = [f"{name:>12}  {value}" for name, value in rows]
        out += [f"{count:>12}  skip: {reason}" for reason, count in self.skip_reasons]
        return out
