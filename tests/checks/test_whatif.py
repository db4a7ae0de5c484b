"""What-if mode: expected rejections run as if accepted, their labels, and the backup counts."""
from __future__ import annotations

from dataclasses import replace

import pytest

from checks import runner, whatif
from checks.explore import Outcome
from checks.results import TestResult

from _explore_support import FakeCase

TITLE = "KASAN: slab-out-of-bounds Read in bpf_prog_t"


@pytest.mark.parametrize("msg,memory", [
    ("invalid access to map value, value_size=48 off=48 size=8", True),
    ("R0 min value is outside of the allowed memory range", True),
    ("invalid read from stack R2 off -8+0 size 8", True),
    ("invalid bpf_context access off=76 size=4", True),
    ("R1 invalid mem access 'scalar'", True),
    ("R0 !read_ok", False),
    ("unreachable insn 3", False),
])
def test_memory_rejection_messages(msg, memory):
    assert whatif.is_memory_rejection(["first message", msg]) is memory


class RejectedCase(FakeCase):
    """A `__failure` test whose program, run anyway, hits a bug only with a prandom edge value
    (and oopses on the plain run)."""

    def run_variant(self, engine, variant, *, insn_limit):
        self.ran.append(variant.name)
        if variant.name == "":
            return Outcome(fault="BUG: kernel NULL pointer dereference, address: 0000000000000000")
        if variant.name == "prandom=0x80000000":
            return Outcome(findings=({"id": "f1", "title": TITLE, "insn": 5, "mode": "faithful",
                                     "stricter": "packed elements"},))
        return Outcome()


def _rejected(**changes):
    case = RejectedCase(expect="failure", executed=False, msgs=("invalid access to map value",))
    return replace(case, **changes) if changes else case


def test_what_if_runs_plain_then_variants_and_labels_findings():
    case = _rejected()
    result = runner.run_case(case, runner.InterpEngine(), runner.RunOptions(explore=2, what_if=True))
    assert case.ran == ["", "prandom=0xffffffff", "prandom=0x80000000"]
    assert result.status == "pass"
    [finding] = result.finding_records
    assert finding["mode"] == "what-if" and finding["label"] == whatif.LABEL
    assert finding["variant"] == "prandom=0x80000000" and finding["stricter"] == "packed elements"
    assert result.extra["what_if"] == {"memory": True, "kasan": ["prandom=0x80000000"], "oops": [""],
                                       "errors": []}


def test_without_what_if_an_expected_rejection_is_not_run():
    case = _rejected()
    result = runner.run_case(case, runner.InterpEngine(), runner.RunOptions(explore=4))
    assert case.ran == [] and "what_if" not in result.extra


def test_what_if_needs_an_imported_program():
    case = _rejected(program_surface=None)
    result = runner.run_case(case, runner.InterpEngine(), runner.RunOptions(what_if=True))
    assert case.ran == [] and result.status == "pass"


def test_a_crash_while_running_what_if_is_an_error_of_the_test():
    case = _rejected()
    case.run_variant = lambda engine, variant, insn_limit: {}["missing"]
    result = runner.run_case(case, runner.InterpEngine(), runner.RunOptions(what_if=True))
    assert result.status == "error" and result.reason.startswith("what-if run crashed: KeyError")


@pytest.mark.parametrize("failing,ran", [
    ("", [""]),                                               # plain run stopped: no variants
    ("prandom=0xffffffff", ["", "prandom=0xffffffff", "prandom=0x80000000"]),
])
def test_a_limit_of_ours_is_noted_and_only_a_stopped_plain_run_ends_the_what_if(failing, ran):
    from checks.errors import CheckError

    case = _rejected()

    def run_variant(engine, variant, *, insn_limit):
        case.ran.append(variant.name)
        if variant.name == failing:
            raise CheckError("helper 999 is not implemented")
        return Outcome()
    case.run_variant = run_variant
    result = runner.run_case(case, runner.InterpEngine(), runner.RunOptions(explore=2, what_if=True))
    assert result.status == "pass" and case.ran == ran
    assert result.extra["what_if"]["errors"] == ["helper 999 is not implemented"]


def test_a_plain_run_that_ran_out_of_budget_gets_no_variants():
    case = _rejected()
    case.run_variant = lambda engine, variant, insn_limit: (
        case.ran.append(variant.name) or Outcome(error="instruction limit exceeded (1000000)"))
    result = runner.run_case(case, runner.InterpEngine(), runner.RunOptions(explore=4, what_if=True))
    assert case.ran == [""] and result.extra["what_if"]["kasan"] == []


def _entry(kasan=(), oops=(), memory=True):
    return TestResult(id="x", file="f", name="x", status="pass", expect="failure",
                      extra={whatif.WHAT_IF: {"memory": memory, "kasan": list(kasan), "oops": list(oops),
                                              "errors": []}})


def test_backup_counts_reports_and_oopses_apart_with_and_without_exploration():
    results = [_entry(kasan=[""]), _entry(kasan=["v1"]), _entry(oops=[""]), _entry(oops=["v2"]),
               _entry(), _entry(kasan=[""], memory=False),
               TestResult(id="y", file="f", name="y", status="pass")]
    backup = whatif.Backup.of(results)
    assert backup == whatif.Backup(tests=5, kasan_plain=1, kasan_explored=2, oops_plain=1,
                                   oops_explored=2, caught_plain=2, caught_explored=4)
    assert backup.lines()[1] == "  KASAN report: 1/5 plain, 2/5 with exploration"
    assert backup.lines()[3] == "  either:       2/5 plain, 4/5 with exploration"


# -- end to end, on the emulated kernel ------------------------------------------------------------

def test_cli_what_if_reports_labels_and_backup_counts(tmp_path, capsys):
    import json

    from _explore_support import write_demo
    from bot.cli import main as cli

    demo = write_demo(tmp_path)
    out = tmp_path / "r.json"
    assert cli(["run", str(demo), "--engine", "jit", "--what-if", "-j", "1", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-6:] == ["what-if: 2 memory-safety rejections run as if accepted",
                          "  KASAN report: 1/2 plain, 2/2 with exploration",
                          "  oops (fault): 1/2 plain, 1/2 with exploration",
                          "  either:       1/2 plain, 2/2 with exploration",
                          "4 KASAN findings", "5 passed, 0 failed"]
    assert " retval pass  2/2" in lines and "         run  2" in lines       # the selftest table
    doc = json.loads(out.read_text())
    tests = {t["name"]: t for t in doc["tests"]}
    refused = ("refused_overread", "refused_null_deref", "refused_uninit")
    assert [tests[n]["status"] for n in refused] == ["pass"] * 3
    assert tests["refused_null_deref"]["what_if"]["oops"] == [""]             # the plain run oopsed
    assert tests["refused_uninit"]["what_if"]["memory"] is False
    what_if = [f for f in doc["findings"] if f["mode"] == "what-if"]
    assert {f["test"].split("::")[1] for f in what_if} == {"refused_overread", "refused_null_deref"}
    assert all(f["label"] == whatif.LABEL for f in what_if)
    assert doc["summary"]["findings"] == len(doc["findings"]) == 4


def test_on_the_kernel_suite_exploration_backs_up_more_rejections_than_the_plain_run(kernel_selftests):
    """Files of the 6.12 suite where only pre-filled maps or edge values reach the refused access."""
    files = ["verifier_and.c", "verifier_array_access.c", "verifier_value_illegal_alu.c",
             "verifier_search_pruning.c"]
    engine = runner.make_engine("jit", runner.EngineOptions())
    results = [r for f in files for r in runner.run_tests([str(kernel_selftests / "progs" / f)],
                                                        engine=engine, what_if=True)]
    backup = whatif.Backup.of(results)
    assert backup.tests >= 10
    assert backup.caught_explored > backup.caught_plain and backup.kasan_explored > backup.kasan_plain
    rejected = [r for r in results if r.expect == "failure"]
    assert all(r.status == "pass" for r in rejected)
    labels = {f.get("label") for r in rejected for f in r.finding_records}
    assert labels == {whatif.LABEL}
