"""`-j` worker processes, `--shard I/N`, merging shard outputs, progress output and the closing lines."""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass

import pytest

from bot import cmd_run
from bot.cli import main as cli
from checks import parallel, runner
from checks.errors import CheckError
from checks.results import Summary, TestResult

from _explore_support import write_demo


def _doc(path) -> dict:
    doc = json.loads(path.read_text())
    for test in doc["tests"]:
        test.pop("duration_s")
    return doc


@pytest.mark.parametrize("text", ["0/2", "3/2", "a/b", "2", "1/0", "-1/2", "1/2/3"])
def test_shard_syntax_is_checked(text):
    with pytest.raises(CheckError, match="shard must be I/N"):
        runner.Shard.parse(text)


def test_shards_partition_the_tests_and_do_not_depend_on_each_other(conformance_dir):
    ids = [test_id for _, test_id, _ in runner.collect([str(conformance_dir / "tests")])]
    for count in (1, 2, 3, 7):
        parts = [{i for i in ids if i in runner.Shard(k, count)} for k in range(1, count + 1)]
        assert sum(len(p) for p in parts) == len(ids) and set().union(*parts) == set(ids)
        assert all(len(p) > len(ids) // count // 2 for p in parts)       # roughly balanced
    # Membership is a function of the id alone: a test added elsewhere moves nothing.
    assert ("add.data" in runner.Shard(1, 3)) == ("add.data" in runner.Shard(1, 3))
    assert [i in runner.Shard(2, 3) for i in ids] == [i in runner.Shard.parse("2/3") for i in ids]


def test_two_workers_give_the_same_lines_and_json_as_one(conformance_dir, tmp_path, capsys):
    outputs = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"j{jobs}.json"
        assert cli(["run", str(conformance_dir), "-j", jobs, "--json", str(out)]) in (0, 1)
        outputs[jobs] = (capsys.readouterr().out, _doc(out))
    assert outputs["1"] == outputs["2"]
    lines = outputs["1"][0].splitlines()
    ids = [t["id"] for t in outputs["1"][1]["tests"]]
    assert ids == [test_id for _, test_id, _ in runner.collect([str(conformance_dir)])]
    assert [line.split()[1].rstrip(":") for line in lines[:len(ids)]] == ids      # collection order


@dataclass
class PidEngine:
    """The interpreter, named after the process that made it and how many it made there."""
    made = 0

    def __post_init__(self):
        PidEngine.made += 1
        self.name = f"pid{os.getpid()}-made{PidEngine.made}"

    def run(self, program, mem, **kw):
        return runner.InterpEngine().run(program, mem, **kw)


def test_workers_are_separate_processes_each_making_its_engine_once(conformance_dir, monkeypatch):
    monkeypatch.setitem(runner.ENGINES, "pid", PidEngine)
    monkeypatch.setattr(PidEngine, "made", 0)
    units = runner.collect([str(conformance_dir / "tests")])
    results = [r for done in parallel.run_files(units, engine="pid", options=runner.RunOptions(),
                                                jobs=2) for r in done.results]
    engines = {r.engine for r in results}
    assert len(results) == len(units) and len(engines) == 2
    assert all(name.endswith("-made1") for name in engines)
    assert f"pid{os.getpid()}-made1" not in engines and PidEngine.made == 0   # none in the parent


class DyingEngine:
    name = "dying"

    def run(self, program, mem, **kw):
        os._exit(3)                       # a worker killed mid-test, as a crash in Unicorn would


def test_a_dead_worker_is_one_error_line_not_a_hang(conformance_dir, monkeypatch, capsys):
    monkeypatch.setitem(runner.ENGINES, "dying", DyingEngine)
    assert cli(["run", str(conformance_dir / "tests"), "-j", "2", "--engine", "dying"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a worker process died" in err and "-j 1" in err


def test_unknown_engine_is_refused_before_workers_start(conformance_dir, capsys):
    assert cli(["run", str(conformance_dir / "tests"), "-j", "2", "--engine", "qemu"]) == 2
    assert "unknown engine 'qemu'" in capsys.readouterr().err


def test_shard_outputs_merge_into_the_unsharded_totals(conformance_dir, tmp_path, capsys):
    (tmp_path / "selftests").mkdir()
    write_demo(tmp_path / "selftests")
    suites = [str(conformance_dir / "tests"), str(conformance_dir / "negative"),
              str(tmp_path / "selftests")]
    common = ["--engine", "jit", "--what-if"]
    whole = tmp_path / "whole.json"
    cli(["run", *suites, *common, "-j", "1", "--json", str(whole)])
    parts = []
    for k in (1, 2, 3):
        parts.append(tmp_path / f"part{k}.json")
        cli(["run", *suites, *common, "-j", "2", "--shard", f"{k}/3", "--json", str(parts[-1])])
    merged = tmp_path / "merged.json"
    assert cli(["merge", *map(str, parts), "-o", str(merged)]) == 0
    capsys.readouterr()
    whole_doc, merged_doc = _doc(whole), _doc(merged)
    assert merged_doc["summary"] == whole_doc["summary"] and whole_doc["summary"]["findings"] == 4
    assert sorted(merged_doc["tests"], key=lambda t: t["id"]) == \
        sorted(whole_doc["tests"], key=lambda t: t["id"])
    assert sorted(f["id"] for f in merged_doc["findings"]) == \
        sorted(f["id"] for f in whole_doc["findings"])
    assert all(_doc(p)["summary"]["tests"] < whole_doc["summary"]["tests"] for p in parts)


# -- output: progress bar or plain lines, and the closing lines ---------------------------------

class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("ci,tty,bar", [("", True, True), ("true", True, False), ("", False, False)])
def test_progress_bar_only_at_a_terminal_outside_ci(monkeypatch, ci, tty, bar):
    monkeypatch.setenv("CI", ci)
    assert cmd_run._interactive(FakeTerminal() if tty else io.StringIO()) is bar


def _result(test_id, status, reason=""):
    return TestResult(id=test_id, file="f", name=test_id, status=status, reason=reason)


def test_the_bar_shows_failures_and_counts_and_plain_mode_shows_every_test():
    batch = [_result("a", "pass"), _result("b", "fail", "r0 = 0x1, expected 0x2"),
             _result("c", "skip", "x")]
    stream = FakeTerminal()
    progress = cmd_run.Progress(stream, files=4, bar=True)
    progress.file_done(batch)
    progress.close()
    text = stream.getvalue()
    assert "FAIL  b: r0 = 0x1, expected 0x2\n" in text and "PASS" not in text and "SKIP" not in text
    assert "[" + "#" * 7 + "." * 23 + "] 1/4 files, 3 tests, 1 failed" in text
    assert text.endswith("\r\x1b[K")                      # the bar is gone when the run ends
    plain = io.StringIO()
    cmd_run.Progress(plain, files=4, bar=False).file_done(batch)
    assert plain.getvalue().splitlines() == ["PASS  a", "FAIL  b: r0 = 0x1, expected 0x2", "SKIP  c: x"]


def test_closing_line_counts_errors_as_failed_with_the_error_count_before_it():
    results = [_result("a", "pass"), _result("b", "fail"), _result("c", "error"), _result("d", "skip")]
    summary = Summary.of(results)
    assert (summary.errors_line(), summary.line()) == ("1 error (counted as failed)",
                                                       "1 passed, 2 failed, 1 skipped")
    assert Summary.of(results[:2]).line() == "1 passed, 1 failed"
    assert Summary.of(results[:2]).errors_line() is None
    assert summary.to_dict()["errors"] == 1 and summary.to_dict()["failed"] == 1    # JSON unchanged


def test_cli_closing_lines(conformance_dir, tmp_path, capsys):
    (tmp_path / "bad.data").write_text("-- asm\nfrob %r0\nexit\n-- result\n0\n")
    (tmp_path / "wrong.data").write_text("-- asm\nmov %r0, 4\nexit\n-- result\n0x3\n")
    (tmp_path / "good.data").write_text("-- asm\nmov %r0, 3\nexit\n-- result\n0x3\n")
    (tmp_path / "elf.data").write_text("-- pyelf\n-- result\n0x2a\n")
    assert cli(["run", str(tmp_path), "-j", "2"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2:] == ["1 error (counted as failed)", "1 passed, 2 failed, 1 skipped"]


def test_single_shot_keeps_only_the_first_report_of_the_invocation_even_with_jobs(tmp_path):
    """Without multishot the kernel prints only the first KASAN report since boot: the whole run,
    not each worker, is the "boot"."""
    from bot.cli import main as cli
    for name in ("a.data", "b.data"):
        (tmp_path / name).write_text("-- asm\nmov %r1, 0x10\nldxdw %r0, [%r1]\nexit\n-- result\n0x0\n")
    counts = {}
    for flag in ("--multishot", "--no-multishot"):
        out = tmp_path / f"{flag}.json"
        cli(["run", str(tmp_path), "-j", "2", flag, "--json", str(out)])
        doc = json.loads(out.read_text())
        counts[flag] = [f["bug_type"] for f in doc["findings"]]
    assert counts == {"--multishot": ["null-ptr-deref"] * 2, "--no-multishot": ["null-ptr-deref"]}
