"""Selftests run the way test_loader runs them: our own files in the kernel format under
tests/data/kselftest_run/, then the kernel's 6.12 suite when it is available."""
from __future__ import annotations

import collections
import pathlib

import pytest

from checks.explore import FAITHFUL, Variant
from checks.kselftest import load_cases
from checks.kselftest.run import NOT_ATTACHED, NOT_EXECUTED, UNPRIV, c_file_cases, modes
from checks.runner import make_engine, run_tests

DATA = pathlib.Path(__file__).resolve().parent.parent / "data" / "kselftest_run"


def results(name: str) -> dict:
    return {r.id.split("::")[1]: r for r in (c.run(None, insn_limit=100_000)
                                            for c in c_file_cases(str(DATA / name), name))}


@pytest.fixture(scope="module")
def judged() -> dict:
    out = {}
    for name in ("ctx_skb.c", "ctx_other.c", "verifier_array_access.c"):
        out.update(results(name))
    return out


# Every test of our files whose retval is compared, with the value it must give.
RETVALS = {
    "socket_len": 50, "socket_len_narrow": 50, "socket_ifindex_protocol": 1 + 0x400,
    "socket_ld_abs_bounds": 0, "socket_ld_abs_last_word": 7, "socket_sk": 7,
    "tc_len_and_span": 128, "tc_meta": 0, "tc_ctx_spill_subprog": 64, "cgroup_skb_len": 50,
    "lwt_span": 50, "xdp_span": 65, "xdp_not_ctx": 0, "raw_tp_args": 0, "tracepoint_record": 0,
    "kprobe_regs": 0, "syscall_null_ctx": 0, "prefilled_value": -0x543210EE,
    "tail_call_target": 3, "retval_low_32_bits": -1, "dead_fp_write": 0, "unpriv_differs": 0,
    "unpriv_same": 0,
}


@pytest.mark.parametrize("name", sorted(RETVALS))
def test_retval_tests_pass_with_the_kernel_value(judged, name):
    result = judged[name]
    assert (result.status, result.reason) == ("pass", "")
    assert result.expected_retval == RETVALS[name]
    assert result.extra["executed"] and result.extra["suite"] == "kselftest"
    assert not result.findings


# (test, status, text the reason must contain)
JUDGEMENTS = [
    ("wrong_retval", "fail", "retval 1 != expected 2"),
    ("kasan_on_success", "fail", "KASAN: slab-out-of-bounds Read in bpf_prog_"),
    ("expected_rejection", "pass", NOT_EXECUTED),
    ("unpriv_differs" + UNPRIV, "pass", NOT_EXECUTED),
    ("sk_msg_skipped", "skip", "no emulated context for program type sk_msg"),
    ("lsm_skipped", "skip", "does not run LSM programs"),
    ("fentry_not_attached", "pass", NOT_ATTACHED),
    ("pointer_value", "pass", ""),
    ("no_retval", "pass", ""),
]


@pytest.mark.parametrize("name, status, reason", JUDGEMENTS, ids=[j[0] for j in JUDGEMENTS])
def test_judgement(judged, name, status, reason):
    assert judged[name].status == status
    assert reason in judged[name].reason


def test_findings_travel_with_the_result(judged):
    result = judged["kasan_on_success"]
    records = result.finding_records
    assert [r["id"] for r in records] == list(result.findings)
    assert records[0]["test"] == "verifier_array_access.c::kasan_on_success"
    assert records[0]["mode"] == "faithful"


def test_auxiliary_programs_and_duplicate_unpriv_runs_are_not_tests(judged):
    assert "target_3" not in judged
    assert "unpriv_same" + UNPRIV not in judged
    cases = {c.name: c for c in load_cases(DATA / "verifier_array_access.c")}
    assert modes(cases["target_3"]) == []
    assert [m.suffix for m in modes(cases["unpriv_differs"])] == ["", UNPRIV]
    assert modes(cases["unpriv_differs"])[1].retval is None       # a rejection has no retval


def case_named(file: str, name: str):
    return next(c for c in c_file_cases(str(DATA / file), file) if c.name == name)


def test_variants_change_the_packet_and_keep_the_retval_unjudged():
    case = case_named("ctx_skb.c", "socket_len")
    assert case.surface().packet
    assert case.run_variant(None, FAITHFUL, insn_limit=10_000).r0 == 50
    shortest = case.run_variant(None, Variant("packet=14", packet=bytes(14)), insn_limit=10_000)
    assert shortest.r0 == 0 and shortest.error is None and shortest.fault is None


def test_rejected_tests_can_still_run_for_what_if():
    outcome = case_named("verifier_array_access.c", "expected_rejection").run_variant(
        None, FAITHFUL, insn_limit=10_000)
    assert outcome.error is None


def test_runner_finds_selftest_files():
    found = list(run_tests([str(DATA)], engine=make_engine("interp"), insn_limit=100_000,
                           pattern="ctx_other.c::xdp_span"))
    assert [(r.id, r.status) for r in found] == [("ctx_other.c::xdp_span", "pass")]


# -- the kernel's own suite ----------------------------------------------------------------------

def test_kernel_suite_retvals_and_no_faithful_findings(kernel_selftests):
    """Every imported `__success` + `__retval` test of the 6.12 suite: at least 98% give the
    expected value, and no faithful run of a `__success` test reports KASAN. Tests that need a
    C compiler cannot be imported and are counted apart."""
    progs = kernel_selftests / "progs"
    found = [r for path in sorted(progs.glob("verifier_*.c"))
             for r in (c.run(None, insn_limit=1_000_000) for c in c_file_cases(str(path), path.name))]
    retval = [r for r in found if r.expect == "success" and r.expected_retval is not None]
    imported = [r for r in retval if r.extra["imported"]]
    passed = [r for r in imported if r.status == "pass"]
    failures = collections.Counter(f"{r.status}: {r.reason.splitlines()[0][:70]}"
                                   for r in imported if r.status != "pass")
    assert len(retval) >= 550 and len(imported) >= 520
    assert len(passed) >= 0.98 * len(imported), failures.most_common()
    faithful = [(r.id, rec["title"]) for r in found if r.expect == "success"
                for rec in r.finding_records if rec["mode"] == "faithful"]
    assert faithful == []
