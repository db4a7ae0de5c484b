"""jit/dump.py and `bpf-kasan jit`: golden listings of a few conformance programs.

Regenerate with `BPF_KASAN_UPDATE_GOLDEN=1 python -m pytest tests/jit/test_jit_dump.py` and
review the diff before committing it."""
from __future__ import annotations

import os
import pathlib
import re

import pytest

from jit.dump import format_listing

GOLDEN = pathlib.Path(__file__).resolve().parent.parent / "data" / "jit_dump"
UPDATE = os.environ.get("BPF_KASAN_UPDATE_GOLDEN") == "1"
# (conformance test, KASAN mode, budget): one of each kind of code the JIT emits.
CASES = [("ldxb", "inline", False), ("ldxb", "outline", False), ("stxh", "inline", False),
         ("lock_fetch_or", "outline", False), ("lock_cmpxchg32", "off", False),
         ("call_local", "off", True), ("sdiv64-reg", "off", False), ("smod32-neg-by-neg-reg", "off", False),
         ("be16", "off", False), ("ubpf/mul-loop", "off", True), ("lsh32-reg", "off", False)]


def load(suite_dir: pathlib.Path, name: str):
    from checks.conformance import build_program, parse_file
    return build_program(parse_file(str(suite_dir / "tests" / f"{name}.data")))


@pytest.mark.parametrize("name,kasan,budget", CASES, ids=[f"{n}-{k}{'-budget' * b}" for n, k, b in CASES])
def test_listing_matches_golden(request, name, kasan, budget):
    suite, _, name = name.rpartition("/")
    suite_dir = request.getfixturevalue("ubpf_dir" if suite == "ubpf" else "conformance_dir")
    listing = format_listing(load(suite_dir, name), kasan=kasan, budget=budget)
    golden = GOLDEN / f"{name}.{kasan}{'.budget' if budget else ''}.expected"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(listing)
    assert golden.exists(), f"{golden} missing: run with BPF_KASAN_UPDATE_GOLDEN=1"
    assert listing == golden.read_text()


def test_every_slot_is_listed_once(conformance_dir):
    prog = load(conformance_dir, "call_local")
    listing = format_listing(prog, kasan="inline")
    assert sum(line.startswith("; ") and line != "; prologue" for line in listing.splitlines()) == len(prog.insns)
    assert listing.count("; prologue") == 2 and re.search(r"^bpf_prog_0{16}_F1:$", listing, re.M)


def test_listing_marks_asan_calls(conformance_dir):
    listing = format_listing(load(conformance_dir, "ldxb"), kasan="outline")
    assert re.search(r"call 0xffffffff818000\w\w <__asan_load1>$", listing, re.M)
    inline = format_listing(load(conformance_dir, "ldxb"), kasan="inline")
    assert "; out of line" in inline and "<__asan_load1>" in inline.split("; out of line")[1]


def test_cli_prints_the_listing_with_kernel_symbols(conformance_dir, capsys):
    from bot.cli import main
    assert main(["jit", str(conformance_dir / "tests" / "ldxb.data"), "--no-kasan"]) == 0
    out = capsys.readouterr().out
    assert re.match(r"bpf_prog_[0-9a-f]{16}_ldxb:\n; prologue\n", out)
    assert "__asan" not in out and "movzx rax, byte ptr [rdi + 2]" in out


def test_cli_refuses_an_unknown_test_name(conformance_dir, capsys):
    from bot.cli import main
    assert main(["jit", str(conformance_dir / "tests" / "ldxb.data"), "--test", "nope"]) == 2
    assert "no program named 'nope'" in capsys.readouterr().err
