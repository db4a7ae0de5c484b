"""The compiled route into selftests: checks.kselftest.compile (clang, generated headers, the
object cache), checks.kselftest.compiled (which tests come from the object), the ELF linker's
kfunc resolution and the iterator kfuncs, on our own tests/data/kselftest_run/compiled_c.c;
then the kernel's 6.12 suite scored by shared/tools/kernel-suite-score.

Every test that needs clang skips, saying why, when there is no clang with the BPF target."""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from bot import cli
from checks.iter_kfuncs import KFUNC_IDS
from checks.kselftest import load_cases
from checks.kselftest import compile as cc
from checks.kselftest.case import SelftestCase
from checks.kselftest.compiled import wants_object, with_object
from checks.kselftest.run import c_file_cases
from jit import isa
from jit.elf import NeedsKernel, is_bpf_object, read_object

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = ROOT / "tests" / "data" / "kselftest_run" / "compiled_c.c"
SHARED = pathlib.Path(os.environ.get("BPF_KASAN_SHARED", ROOT.parent / "shared"))
SCORER = SHARED / "tools" / "kernel-suite-score"
CLANG = cc.find_clang()
needs_clang = pytest.mark.skipif(CLANG is None,
                                 reason="no clang with the BPF target (apt-get install clang-19)")

# Every C-bodied test of compiled_c.c whose retval is compared, with the value it must give.
RETVALS = {
    "c_sum_loop": 55, "c_bitfield_roundtrip": 433, "c_iter_num_sum": 45, "c_iter_num_inverted": -22,
    "c_iter_num_too_long": -7, "c_map_in_map_slots": 2, "c_bits_one_word": 1234,
    "c_bits_three_words": 318, "c_bits_errors": 0,
}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> pathlib.Path:
    """A cache of this test's own, also for the default compiler; compiling on."""
    monkeypatch.setenv(cc.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(cc.NO_COMPILE_ENV, "0")
    return tmp_path / "cache"


def results(source: pathlib.Path) -> dict:
    return {r.id.split("::")[1]: r for r in (c.run(None, insn_limit=100_000)
                                            for c in c_file_cases(str(source), source.name))}


def case(reason: str | None) -> SelftestCase:
    return SelftestCase(id="f.c::t", file="f.c", name="t", line=1, description="t", sec="socket",
                        prog_type="socket_filter", expect="success", expect_unpriv=None, retval=0,
                        retval_unpriv=None, skip_reason=reason)


# -- which tests the object serves --------------------------------------------------------------

@pytest.mark.parametrize("reason, wanted", [
    ("needs a compiler: C body", True),
    ("needs a compiler: calls C function helper", True),
    ("__imm_ptr: compiler-chosen register", True),
    ("needs vmlinux.h: incomplete type 'struct skb_shared_info'", True),
    ("calls kfunc bpf_iter_bits_new: needs kernel BTF", True),       # served by name
    ("calls kfunc bpf_task_acquire: needs kernel BTF", False),       # the object cannot help
    ("arch arm64 only", False),
    (None, False),
])
def test_wants_object_takes_what_a_compiler_can_build(reason, wanted):
    assert wants_object(case(reason)) is wanted


def test_the_selftests_tree_is_found_from_a_source_inside_it(tmp_path):
    progs = tmp_path / "linux" / "tools" / "testing" / "selftests" / "bpf" / "progs"
    progs.mkdir(parents=True)
    assert cc.Tree.of(progs / "verifier_x.c") == cc.Tree(tmp_path.resolve() / "linux")
    assert cc.Tree.of(SOURCE) is None


# -- the compiler and its cache -----------------------------------------------------------------

@needs_clang
def test_a_build_is_cached_until_a_header_changes(tmp_path):
    (tmp_path / "t.h").write_text("#define VALUE 1\n")
    source = tmp_path / "t.c"
    source.write_text('#include "t.h"\n'
                      '__attribute__((section("socket"), used)) int f(void *c) { return VALUE; }\n')
    compiler = cc.Compiler(CLANG, cache=tmp_path / "cache")
    first = compiler.build(source)
    assert first.how == "built" and is_bpf_object(first.object)
    assert compiler.build(source) == cc.Built(first.object, "cached")
    (tmp_path / "t.h").write_text("#define VALUE 2\n")
    cc._file_digest.cache_clear()                  # a header edited within one process
    assert compiler.build(source).how == "built"


@needs_clang
def test_a_failed_build_is_the_skip_reason_and_is_cached(tmp_path):
    source = tmp_path / "broken.c"
    source.write_text("int f(void) { return missing_name; }\n")
    compiler = cc.Compiler(CLANG, cache=tmp_path / "cache")
    built = compiler.build(source)
    assert built.object is None
    assert re.fullmatch(rf"needs a compiler: {re.escape(compiler.name)} failed: .*missing_name.*",
                        built.how)
    assert [p.name for p in (tmp_path / "cache").glob("*/error.txt")] == ["error.txt"]
    assert compiler.build(source) == built


@needs_clang
def test_arguments_follow_the_selftests_makefile(tmp_path):
    compiler = cc.Compiler(CLANG, cache=tmp_path / "cache")
    args = compiler.arguments(SOURCE)
    assert {"-mcpu=v4", "-O2", "-g", "-D__TARGET_ARCH_x86", "--target=bpf"} <= set(args)
    assert "-idirafter" in args                    # the host compiler's search list, after ours


def test_generated_headers_go_into_the_cache_not_the_tree(kernel_selftests, tmp_path):
    tree = cc.Tree.of(kernel_selftests / "progs" / "verifier_and.c")
    made = cc.generated_includes(tree, tmp_path)
    assert all(tmp_path in d.parents for d in made)
    assert "bpf_map_lookup_elem" in (made[0] / "bpf_helper_defs.h").read_text()
    if shutil.which("bpftool") and cc.VMLINUX_BTF.is_file():
        assert "struct bpf_iter_bits" in (made[1] / "vmlinux.h").read_text()


# -- the compiled route -------------------------------------------------------------------------

@needs_clang
def test_the_c_bodied_retval_tests_run_from_the_object(cache):
    judged = results(SOURCE)
    for name, retval in RETVALS.items():
        assert (name, judged[name].status, judged[name].reason) == (name, "pass", "")
        assert judged[name].expected_retval == retval and judged[name].extra["executed"]
    assert judged["naked_from_source"].status == "pass"
    assert judged["c_unserved_kfunc"].reason == "calls kfunc bpf_rcu_read_lock: needs kernel BTF"


@needs_clang
def test_only_the_tests_that_need_it_come_from_the_object(cache):
    source_cases = load_cases(SOURCE)
    merged = {c.name: c for c in with_object(source_cases, SOURCE)}
    for c in source_cases:
        if c.program is not None:                  # imported from the C source: kept as it was
            assert merged[c.name] is c
        else:
            assert merged[c.name].program is not None or "kfunc" in merged[c.name].skip_reason
            assert merged[c.name].retval == c.retval and merged[c.name].line == c.line


@needs_clang
def test_a_file_that_does_not_build_keeps_its_c_tests_skipped_with_the_reason(cache, tmp_path):
    source = tmp_path / "broken.c"
    text = SOURCE.read_text().replace('#include "../elf/include/',
                                      f'#include "{SOURCE.parent}/../elf/include/')
    source.write_text(text.replace("sum += i;", "sum += undeclared;"))
    judged = results(source)
    assert judged["c_sum_loop"].status == "skip"
    assert re.match(r"needs a compiler: clang(-19)? failed: .*undeclared", judged["c_sum_loop"].reason)
    assert judged["naked_from_source"].status == "pass"


def test_no_compile_keeps_the_c_tests_skipped(cache, capsys):
    assert cli.main(["run", str(SOURCE), "--no-compile", "--explore", "0"]) == 0
    assert os.environ[cc.NO_COMPILE_ENV] == "1"
    out = capsys.readouterr().out
    assert "SKIP  compiled_c.c::c_sum_loop: needs a compiler: C body" in out
    assert "PASS  compiled_c.c::naked_from_source" in out
    assert not cache.exists()                      # nothing was built


# -- kfuncs by name -----------------------------------------------------------------------------

@needs_clang
def test_the_linker_turns_served_kfunc_names_into_their_ids(tmp_path):
    obj = read_object(cc.Compiler(CLANG, cache=tmp_path).build(SOURCE).object)
    program = obj.program("c_bits_one_word", prog_type="syscall", kfuncs=KFUNC_IDS)
    calls = {i.imm for i in program.insns if i.is_call and i.src == isa.PSEUDO_KFUNC_CALL}
    assert calls == {KFUNC_IDS[f"bpf_iter_bits_{n}"] for n in ("new", "next", "destroy")}
    with pytest.raises(NeedsKernel, match="calls kfunc bpf_iter_bits_new: needs kernel BTF"):
        obj.program("c_bits_one_word", prog_type="syscall")


# -- the kernel's suite -------------------------------------------------------------------------

@needs_clang
def test_the_kernel_suite_scores_at_least_98_percent_of_retvals(kernel_selftests, tmp_path):
    if not SCORER.is_file():
        pytest.skip(f"the scorer {SCORER} is not there (set BPF_KASAN_SHARED)")
    progs, out = kernel_selftests / "progs", tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "bot.cli", "run", str(progs), "--json",
                           str(out)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    line = subprocess.run([str(SCORER), str(out), str(progs), "0"], capture_output=True, text=True).stdout
    passed, total = map(int, re.search(r"retval (\d+)/(\d+)", line).groups())
    assert passed >= 0.98 * total, line
    assert "faithful findings on __success 0;" in line, line
    assert json.loads(out.read_text())["summary"]["tests"] > 1300
