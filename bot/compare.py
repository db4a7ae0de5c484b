"""Base against head: which findings a series brings (new), removes (fixed) or leaves (persisting),
and how each selected test fared on both sides.

Two findings are the same bug when their dedup key matches: the syzbot-normalised title (addresses,
offsets, line and other numbers masked, so a program tag or a shifted line never splits a bucket),
the test id and the instruction index. A test whose expectation moved from `__failure` to `__success`
is flagged: the verifier now accepts something it used to reject, so it deserves more variants.

Imports the stdlib, `checks.titles` (the normalisation) and bot modules; never github or git.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Mapping, Sequence

from bot.config import finding_title
from bot.errors import BotError
from bot.selection import TestFunction
from bot.triage_model import Finding, TestComparison, parse_record
from checks.titles import normalise

HARDER_FACTOR = 4          # a failure→success test gets this many times the usual variants...
HARDER_MINIMUM = 64        # ...and never fewer than this

_FINDING_FIELDS = {f.name for f in dataclasses.fields(Finding)}
STRICTER_UNSPECIFIED = "our objects are stricter than the kernel's here"


def dedup_key(finding: Finding) -> tuple[str, str, int]:
    return normalise(finding_title(finding)), finding.test, finding.insn


def harder(explore: int) -> int:
    return max(explore * HARDER_FACTOR, HARDER_MINIMUM)


def findings_of(results: Mapping, source: str) -> list[Finding]:
    """The findings of one runner results dict, validated as the triage artifact's findings are."""
    raw = results.get("findings", [])
    if not isinstance(raw, list):
        raise BotError("results: 'findings' must be a list", file=source)
    return [parse_record(Finding, _as_record(item), source, f"$.findings[{i}]")
            for i, item in enumerate(raw)]


def _as_record(item) -> object:
    """Runner finding → model record: keep known fields, lower-case the access, hex address → int,
    `stricter` as its reason (or absent)."""
    if not isinstance(item, dict):
        return item
    record = {k: v for k, v in item.items() if k in _FINDING_FIELDS}
    record.setdefault("change", "new")             # placeholder; compare_findings sets the real one
    if isinstance(record.get("access"), str):
        record["access"] = record["access"].lower()
    if record.get("stricter") is True:             # an older producer's flag, without the reason
        record["stricter"] = STRICTER_UNSPECIFIED
    elif not record.get("stricter"):
        record.pop("stricter", None)
    if isinstance(record.get("address"), str):
        try:
            record["address"] = int(record["address"], 0)
        except ValueError:
            pass                                   # left as a string: validation names the field
    return record


def compare_findings(base: Iterable[Finding], head: Iterable[Finding]) -> tuple[Finding, ...]:
    """new (head only), persisting (both; head's copy), fixed (base only); duplicates within a side dropped."""
    base_by_key = _unique(base)
    head_by_key = _unique(head)
    out = [dataclasses.replace(f, change="persisting" if key in base_by_key else "new")
           for key, f in head_by_key.items()]
    out += [dataclasses.replace(f, change="fixed") for key, f in base_by_key.items() if key not in head_by_key]
    return tuple(out)


def _unique(findings: Iterable[Finding]) -> dict:
    by_key: dict = {}
    for f in findings:
        by_key.setdefault(dedup_key(f), f)
    return by_key


def compare_tests(selected: Sequence[TestFunction], base_tests: Sequence[TestFunction],
                  base_results: Mapping, head_results: Mapping,
                  variants: Mapping[tuple[str, str], int]) -> tuple[TestComparison, ...]:
    """One comparison per selected head test; base status is None when the test is new."""
    base_expect = {(t.file, t.name): t.expect for t in base_tests}
    base_rows, head_rows = _rows_by_test(base_results), _rows_by_test(head_results)
    out = []
    for t in selected:
        key = (t.file, t.name)
        base_row = _row_for(base_rows, t)
        head_row = _row_for(head_rows, t)
        out.append(TestComparison(
            test_id=(head_row or {}).get("id") or f"{t.file}/{t.name}", file=t.file, function=t.name,
            line=t.line, base_status=_status(base_row) if key in base_expect else None,
            head_status=_status(head_row),
            expect_base=base_expect.get(key), expect_head=t.expect,
            variants_explored=variants.get(key, 0), moved_failure_to_success=is_moved(t, base_expect),
            base_reason=_reason(base_row), head_reason=_reason(head_row)))
    return tuple(out)


def is_moved(test: TestFunction, base_expect: Mapping[tuple[str, str], str]) -> bool:
    return base_expect.get((test.file, test.name)) == "failure" and test.expect == "success"


def _rows_by_test(results: Mapping) -> dict[tuple[str, str], dict]:
    rows = results.get("tests", [])
    return {(r.get("file"), r.get("name")): r for r in rows if isinstance(r, dict)}


def _row_for(rows: Mapping, test: TestFunction) -> dict | None:
    """A runner row names a test by its function or, as test_loader does, by its description."""
    return rows.get((test.file, test.name)) or rows.get((test.file, test.description))


def _status(row: dict | None) -> str:
    if row is None:
        return "missing"                   # selected, present in the tree, but the runner said nothing
    status = row.get("status")
    return status if isinstance(status, str) and re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", status) else "error"


def _reason(row: dict | None) -> str | None:
    reason = (row or {}).get("reason")
    return reason[:65536] if isinstance(reason, str) and reason else None
