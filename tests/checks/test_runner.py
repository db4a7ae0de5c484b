"""Test discovery, the engine and file-type registries, and `bpf-kasan run` end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from bot.cli import main as cli
from checks import runner
from checks.errors import CheckError
from checks.results import TestResult
from jit.ubpf_asm import assemble_program

GOOD = "-- asm\nmov %r0, 3\nexit\n-- result\n0x3\n"
WRONG = "-- asm\nmov %r0, 4\nexit\n-- result\n0x3\n"
MALFORMED = "-- asm\nmov %r0, 1\nfrob %r0\nexit\n-- result\n0x1\n"
REFUSED = "-- asm\nmov %r10, 1\nexit\n-- error\nframe pointer\n"


@pytest.fixture
def suite(tmp_path):
    (tmp_path / "sub").mkdir()
    for name, text in {"good.data": GOOD, "sub/good.data": GOOD, "wrong.data": WRONG,
                       "bad.data": MALFORMED, "refused.data": REFUSED}.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "notes.txt").write_text("not a test")
    return tmp_path


def test_collect_walks_directories_and_ignores_unclaimed_files(suite):
    found = runner.collect([str(suite), str(suite / "good.data")])
    ids = [test_id for _, test_id, _ in found]
    assert ids[:5] == ["bad.data", "good.data", "refused.data", "sub/good.data", "wrong.data"]
    assert ids[5] == str(suite / "good.data")          # the same id twice becomes the path


def test_collect_refuses_missing_and_unclaimed_paths(suite):
    with pytest.raises(CheckError, match="no such file or directory"):
        runner.collect([str(suite / "missing.data")])
    with pytest.raises(CheckError, match="no test format claims this file"):
        runner.collect([str(suite / "notes.txt")])


def test_unknown_engine():
    with pytest.raises(CheckError, match="unknown engine .qemu. \\(known: interp, jit\\)"):
        runner.make_engine("qemu")


def test_malformed_file_is_an_error_result_unless_strict(suite):
    results = {r.id: r for r in runner.run_tests([str(suite)], engine=runner.InterpEngine())}
    assert results["bad.data"].status == "error"
    assert results["bad.data"].reason == f"{suite / 'bad.data'}:3: Invalid mnemonic: frob"
    assert results["wrong.data"].status == "fail" and results["good.data"].status == "pass"
    with pytest.raises(Exception, match="Invalid mnemonic"):
        list(runner.run_tests([str(suite / "bad.data")], engine=runner.InterpEngine(), strict=True))


@dataclass
class CountingEngine:
    """A second engine: the interpreter with every run recorded, as the JIT engine will plug in."""
    name: str = "counting"

    def __post_init__(self):
        self.programs = []

    def run(self, program, mem, **kw):
        self.programs.append(program.name)
        return runner.InterpEngine().run(program, mem, **kw)


def test_a_registered_engine_is_used_by_the_cli(suite, monkeypatch, capsys):
    engine = CountingEngine()
    monkeypatch.setitem(runner.ENGINES, "counting", lambda: engine)
    assert cli(["run", str(suite / "good.data"), "--engine", "counting"]) == 0
    assert engine.programs == ["good"]
    assert capsys.readouterr().out == "PASS  good.data\n1 passed, 0 failed\n"


@dataclass(frozen=True)
class AsmCase:
    """A test format made up for this test: `.bpfs` files whose first line is `; expect N`."""
    id: str
    path: str
    name: str

    def run(self, engine, *, insn_limit):
        with open(self.path) as f:
            expected = int(f.readline().split()[-1])
            program = assemble_program(f.read(), name=self.name, file=self.path, first_line=2)
        got = engine.run(program, b"", insn_limit=insn_limit)
        return TestResult(id=self.id, file=self.path, name=self.name, engine=engine.name,
                          status="pass" if got.r0 == expected else "fail", retval=got.r0,
                          expected_retval=expected, insns=got.insns)


def test_a_registered_file_type_is_collected_and_run(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "FILE_TYPES", list(runner.FILE_TYPES))
    runner.register_file_type(runner.FileType(
        "made-up .bpfs", lambda p: p.suffix == ".bpfs",
        lambda path, test_id: [AsmCase(test_id, path, "only")]))
    (tmp_path / "x.bpfs").write_text("; expect 9\nmov %r0, 9\nexit\n")
    (tmp_path / "y.data").write_text(GOOD)
    results = list(runner.run_tests([str(tmp_path)], engine=runner.InterpEngine()))
    assert [(r.id, r.status, r.insns) for r in results] == [("x.bpfs", "pass", 2), ("y.data", "pass", 2)]


def test_cli_directory_run_lines_summary_json_and_exit_code(suite, tmp_path, capsys):
    out_json = tmp_path / "out.json"
    assert cli(["run", str(suite), "--engine", "interp", "--json", str(out_json)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"ERROR bad.data: {suite / 'bad.data'}:3: Invalid mnemonic: frob"
    assert lines[2] == "PASS  refused.data (refused as expected; message matches)"
    assert lines[4] == "FAIL  wrong.data: r0 = 0x4, expected 0x3"
    assert lines[-2:] == ["1 error (counted as failed)", "3 passed, 2 failed"]
    doc = json.loads(out_json.read_text())
    assert doc["summary"] == {"tests": 5, "passed": 3, "failed": 1, "errors": 1, "skipped": 0,
                              "findings": 0}
    assert doc["findings"] == []
    good = next(t for t in doc["tests"] if t["id"] == "good.data")
    assert set(good) >= {"id", "file", "name", "status", "reason", "expect", "retval",
                         "expected_retval", "duration_s", "insns", "findings"}
    assert (good["retval"], good["expected_retval"], good["insns"], good["expect"]) == (3, 3, 2, "success")
    assert next(t for t in doc["tests"] if t["id"] == "refused.data")["expect"] == "failure"


def test_cli_filter_skip_count_and_success_exit(suite, capsys):
    (suite / "sub" / "elf.data").write_text("-- pyelf\n-- result\n0x2a\n")
    assert cli(["run", str(suite), "-k", "SUB/"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["SKIP  sub/elf.data: needs uBPF's pyelf ELF mutator", "PASS  sub/good.data",
                     "1 passed, 0 failed, 1 skipped"]


@pytest.mark.parametrize("engine,message", [("interp", "instruction limit of 50 reached"),
                                            ("jit", "instruction limit exceeded (50)")])
def test_cli_insn_limit(tmp_path, capsys, engine, message):
    (tmp_path / "loop.data").write_text("-- asm\nja -1\nexit\n-- result\n0\n")
    assert cli(["run", str(tmp_path), "--engine", engine, "--insn-limit", "50"]) == 1
    assert message in capsys.readouterr().out


@pytest.mark.parametrize("text,message", [
    (MALFORMED, "bad.data:3: Invalid mnemonic: frob"),
    ("-- raw\n07 00 01 00 01 00 00\n-- result\n0\n", "bad.data:2: raw: truncated instruction: 7 bytes"),
    ("-- raw\n0x00000000000000ff\n-- result\n0\n", "bad.data:2: unknown opcode 0xff"),
])
def test_cli_single_malformed_file_is_one_line_and_exit_2(tmp_path, capsys, text, message):
    (tmp_path / "bad.data").write_text(text)
    assert cli(["run", str(tmp_path / "bad.data")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bpf-kasan: error: ") and message in err


def test_cli_subprocess_unreadable_file(tmp_path):
    bad = tmp_path / "bad.data"
    bad.write_bytes(b"\xff-- asm\n")
    proc = subprocess.run([sys.executable, "-m", "bot.cli", "run", str(bad)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 2
    assert proc.stderr == f"bpf-kasan: error: {bad}: cannot read test file: not UTF-8 text (byte 0)\n"
    assert "Traceback" not in proc.stderr and proc.stdout == ""


class OopsEngine:
    """An engine whose faults are multi-line oops texts, as the JIT engine's are."""
    name = "oops"

    def run(self, program, mem, **kw):
        return runner.EngineResult(r0=0, insns=1, mem=mem, error="BUG: oops\nRIP: 0x5", error_insn=0)


def test_cli_prints_one_line_per_test_and_keeps_the_whole_reason_in_json(suite, tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.setitem(runner.ENGINES, "oops", OopsEngine)
    out_json = tmp_path / "o.json"
    assert cli(["run", str(suite / "good.data"), "--engine", "oops", "--json", str(out_json)]) == 1
    assert capsys.readouterr().out.splitlines()[0] == \
        f"FAIL  good.data: {suite / 'good.data'}:2: BUG: oops [more in --json]"
    assert json.loads(out_json.read_text())["tests"][0]["reason"].endswith("BUG: oops\nRIP: 0x5")
