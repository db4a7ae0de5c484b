"""bot.compare: dedup keys, new/fixed/persisting, per-test comparison and the failure→success flag."""
from __future__ import annotations

import pytest

from bot.compare import compare_findings, compare_tests, dedup_key, findings_of, harder
from bot.errors import BotError
from bot.selection import TestFunction


def finding(**kw) -> dict:
    base = {"id": "f1", "test": "verifier_example.c/oob", "function": "oob", "insn": 7,
            "bug_type": "slab-out-of-bounds", "access": "Read", "size": 8, "address": "0xffff888012345678",
            "object": "map value of size 8", "title": "KASAN: slab-out-of-bounds Read in bpf_prog_6deef7357e7b4530_oob",
            "report": "BUG: KASAN: slab-out-of-bounds in bpf_prog_6deef7357e7b4530_oob+0x42/0x100\n",
            "mode": "multishot", "variant": "default", "file": "verifier_example.c", "line": 70,
            "engine": "jit"}                               # extra runner fields are dropped
    return base | kw


def results(*items) -> dict:
    return {"tests": [], "findings": list(items), "summary": {}}


def test_runner_findings_are_validated_and_normalised():
    (f,) = findings_of(results(finding()), "head.json")
    assert f.access == "read" and f.address == 0xffff888012345678 and f.location == "verifier_example.c:70"
    with pytest.raises(BotError, match=r"head\.json: triage JSON: \$\.findings\[0\]\.insn must be an integer"):
        findings_of(results(finding(insn="7")), "head.json")
    with pytest.raises(BotError, match=r"findings\[0\]\.access must be one of read, write"):
        findings_of(results(finding(access="execute")), "head.json")
    with pytest.raises(BotError, match="'findings' must be a list"):
        findings_of({"findings": {}}, "head.json")


def test_stricter_keeps_its_reason_and_an_old_flag_gets_one():
    reason = "array map elements share one allocation in the kernel"
    plain, with_reason, flagged = findings_of(results(finding(stricter=None), finding(id="f2", stricter=reason),
                                                      finding(id="f3", stricter=True)), "head.json")
    assert (plain.stricter, with_reason.stricter) == (None, reason)
    assert flagged.stricter == "our objects are stricter than the kernel's here"


def test_new_fixed_persisting():
    base = findings_of(results(finding(id="b1", insn=3, title="KASAN: use-after-free Read in bpf_prog_aaaaaaaaaaaaaaaa_oob"),
                               finding(id="b2", insn=7)), "base.json")
    head = findings_of(results(finding(id="h1", insn=7, title="KASAN: slab-out-of-bounds Read in bpf_prog_0123456789abcdef_oob"),
                               finding(id="h2", insn=9)), "head.json")
    out = {f.id: f.change for f in compare_findings(base, head)}
    assert out == {"h1": "persisting", "h2": "new", "b1": "fixed"}          # the tag does not split a bucket


def test_duplicates_within_a_side_collapse():
    head = findings_of(results(finding(id="a", variant="v1"), finding(id="b", variant="v2")), "h")
    assert [(f.id, f.change) for f in compare_findings([], head)] == [("a", "new")]
    assert dedup_key(head[0]) == dedup_key(head[1])


def test_empty_title_falls_back_to_a_built_title():
    head = findings_of(results(finding(id="a", title="")), "h")
    assert dedup_key(head[0])[0] == "KASAN: slab-out-of-bounds Read in oob"


def _fn(name, expect, line=10, description=None):
    return TestFunction("progs/verifier_example.c", name, line, line - 2, line + 6, expect, description)


def test_test_comparison_statuses_and_moved_flag():
    head_sel = [_fn("new_test", "success"), _fn("moved", "success", 30, "example: moved"), _fn("same", "failure", 50)]
    base_tests = [_fn("moved", "failure", 28), _fn("same", "failure", 48)]
    base = {"tests": [{"id": "v/moved", "file": "progs/verifier_example.c", "name": "example: moved", "status": "pass"},
                      {"id": "v/same", "file": "progs/verifier_example.c", "name": "same", "status": "pass"}]}
    head = {"tests": [{"id": "v/new_test", "file": "progs/verifier_example.c", "name": "new_test", "status": "fail",
                       "reason": "retval 1, expected 0"},
                      {"id": "v/moved", "file": "progs/verifier_example.c", "name": "moved", "status": "pass"}]}
    variants = {("progs/verifier_example.c", "moved"): harder(16), ("progs/verifier_example.c", "new_test"): 16}
    rows = {t.function: t for t in compare_tests(head_sel, base_tests, base, head, variants)}
    assert (rows["new_test"].base_status, rows["new_test"].head_status) == (None, "fail")
    assert rows["new_test"].head_reason == "retval 1, expected 0" and rows["new_test"].expect_base is None
    assert rows["moved"].moved_failure_to_success and rows["moved"].variants_explored == 64
    assert (rows["moved"].expect_base, rows["moved"].expect_head) == ("failure", "success")
    assert rows["moved"].base_status == "pass" and rows["moved"].test_id == "v/moved"
    assert not rows["same"].moved_failure_to_success
    assert (rows["same"].base_status, rows["same"].head_status) == ("pass", "missing")
    assert rows["same"].test_id == "progs/verifier_example.c/same"


def test_the_checks_layer_finding_record_is_accepted():
    """The producer's own `to_json` shape (checks.report.Finding) passes validation unchanged."""
    from checks.report import Finding as CheckFinding
    made = CheckFinding(id="abc", test="verifier_example.c::oob", function="bpf_prog_0123456789abcdef_oob",
                        insn=None, bug_type="slab-out-of-bounds", access="read", size=8, address=0xffff888000100008,
                        object="map value", title="KASAN: slab-out-of-bounds Read in bpf_prog_ADDR_oob",
                        report="BUG: KASAN: ...\n", alt_titles=("bad-access in bpf_prog_ADDR_oob",))
    (f,) = findings_of(results(made.to_json()), "head.json")
    assert (f.insn, f.address, f.mode, f.alt_titles) == (None, 0xffff888000100008, "faithful",
                                                         ("bad-access in bpf_prog_ADDR_oob",))
