"""The results model every run produces and `--json` writes: `TestResult`, `Summary`, `to_json`.

JSON schema (names are a contract with the bot and CI; add fields, never rename):
  {"tests": [{"id", "file", "name", "status": "pass|fail|error|skip", "reason",
              "expect": "success|failure", "retval", "expected_retval", "duration_s", "insns",
              "findings": [finding ids], "engine", "error_match"}],
   "findings": [...], "summary": {"tests", "passed", "failed", "errors", "skipped", "findings"}}

`error_match` is set for tests that expect a failure: whether our refusal matched the suite's
expected text (None when the test expected success or was not judged).
`extra` carries fields a later producer adds (variant, register map...) without a schema change.

Owns: plain data and its JSON form. Must not import unicorn, capstone or bot/.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

STATUSES = ("pass", "fail", "error", "skip")
EXPECTS = ("success", "failure")


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

    def to_dict(self) -> dict:
        out = {"id": self.id, "file": self.file, "name": self.name, "status": self.status,
               "reason": self.reason, "expect": self.expect, "retval": self.retval,
               "expected_retval": self.expected_retval, "duration_s": round(self.duration_s, 6),
               "insns": self.insns, "findings": list(self.findings), "engine": self.engine,
               "error_match": self.error_match}
        out.update(self.extra)
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

    def line(self) -> str:
        """The closing line: `N passed, N failed`, then `, N errors` / `, N skipped` when nonzero."""
        text = f"{self.passed} passed, {self.failed} failed"
        if self.errors:
            text += f", {self.errors} errors"
        if self.skipped:
            text += f", {self.skipped} skipped"
        return text

    def to_dict(self) -> dict:
        return {"tests": self.tests, "passed": self.passed, "failed": self.failed,
                "errors": self.errors, "skipped": self.skipped, "findings": self.findings}


def to_json(results, findings=()) -> str:
    """The whole document; `findings` are already-JSON-able dicts (their producer owns their shape)."""
    results = list(results)
    doc = {"tests": [r.to_dict() for r in results], "findings": list(findings),
           "summary": Summary.of(results, findings).to_dict()}
    return json.dumps(doc, indent=2) + "\n"
