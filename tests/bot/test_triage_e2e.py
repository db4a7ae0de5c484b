"""`bpf-kasan triage` end to end: real repositories, real `git am`, the runner in-process."""
from __future__ import annotations

import json


from _git_fixtures import (EXAMPLE_MBOX, EXAMPLE_TEST, EXAMPLE_TREE, OOB_LOAD_LINE, OOB_TEST, commit,
                           format_patch, git, insert_test, make_repo, simple_test)
from bot.cli import main
from bot.triage_model import Triage


def _triage(tmp_path, *argv) -> tuple[int, Triage]:
    out = tmp_path / "triage.json"
    code = main(["triage", *argv, "--format", "json", "--output", str(out)])
    return code, Triage.from_json(out.read_text(), str(out))


def _oob_series(tmp_path):
    """A repo at base, and an mbox of one patch adding a test that reads past a map value."""
    repo = make_repo(tmp_path / "repo")
    commit(repo, "selftests/bpf: add a map value OOB read", insert_test(OOB_TEST))
    mbox = tmp_path / "oob.mbox"
    mbox.write_bytes(format_patch(repo, "HEAD~1", "-v3", "--subject-prefix=PATCH bpf-next", "--base=HEAD~1"))
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    return repo, mbox


def test_series_that_does_not_apply_gives_the_clear_result(tmp_path, capsys):
    repo, mbox = _oob_series(tmp_path)
    commit(repo, "upstream moved the licence", lambda t: t.replace('char _license[] SEC("license") = "GPL";', ""))
    code, triage = _triage(tmp_path, "--mbox", str(mbox), "--tree", str(repo), "--base", "HEAD")
    assert code == 1 and triage.verdict == "conflict" and triage.tests == () and triage.findings == ()
    assert triage.apply.text.startswith("does not apply at patch 1/1: ")
    assert EXAMPLE_TEST in triage.apply.text
    assert triage.series.version == 3 and triage.series.tags == ("bpf-next",)
    assert triage.base_rev == git(repo, "rev-parse", "HEAD").strip() and triage.head_rev is None
    assert git(repo, "worktree", "list").count("\n") == 1


def test_series_touching_no_selftest_passes_with_a_note(tmp_path):
    repo = make_repo(tmp_path / "repo")
    (repo / "README").write_text("hello\n")
    git(repo, "add", "README")
    git(repo, "commit", "-q", "-m", "docs: add a README")
    mbox = tmp_path / "docs.mbox"
    mbox.write_bytes(format_patch(repo, "HEAD~1"))
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    code, triage = _triage(tmp_path, "--mbox", str(mbox), "--tree", str(repo))
    assert code == 0 and triage.verdict == "pass" and triage.apply.applied
    assert triage.notes == ("no selftest touched by this series",) and triage.head_rev


def test_comment_only_change_points_at_all_in_file(tmp_path):
    repo = make_repo(tmp_path / "repo")
    commit(repo, "comment", lambda t: t.replace("// Same shape", "// The same shape"))
    mbox = tmp_path / "c.mbox"
    mbox.write_bytes(format_patch(repo, "HEAD~1"))
    code, triage = _triage(tmp_path, "--mbox", str(mbox), "--tree", str(repo), "--base", "HEAD~1")
    assert code == 0 and "try --all-in-file" in triage.notes[0]


def test_patchwork_without_a_server_is_refused_before_anything_runs(capsys):
    assert main(["triage", "--mbox", str(EXAMPLE_MBOX), "--tree", str(EXAMPLE_TREE), "--post-patchwork"]) == 2
    assert main(["triage", "--patchwork-series", "1", "--tree", str(EXAMPLE_TREE)]) == 2
    assert capsys.readouterr() == ("", "bpf-kasan: error: --post-patchwork: needs --patchwork-url\n"
                                       "bpf-kasan: error: --patchwork-series: needs --patchwork-url\n")


def test_malformed_mbox_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.mbox"
    bad.write_text("From x\nSubject: [PATCH 3/2] nope\n\n")
    assert main(["triage", "--mbox", str(bad), "--tree", str(EXAMPLE_TREE)]) == 2
    err = capsys.readouterr().err
    assert err == f"bpf-kasan: error: {bad}:1: bad patch number 3/2 in subject '[PATCH 3/2] nope'\n"


def test_oob_map_value_read_is_a_new_finding_with_file_and_line(tmp_path):
    repo, mbox = _oob_series(tmp_path)
    code, triage = _triage(tmp_path, "--mbox", str(mbox), "--tree", str(repo))
    assert code == 1 and triage.verdict == "fail"
    (test,) = triage.tests
    assert (test.function, test.base_status, test.head_status, test.expect_head) == \
        ("example_map_value_oob", None, "fail", "success")
    (finding,) = triage.findings_by_change("new")
    head_text = insert_test(OOB_TEST)((repo / EXAMPLE_TEST).read_text())
    load_line = 1 + next(i for i, text in enumerate(head_text.splitlines()) if OOB_LOAD_LINE in text)
    assert finding.bug_type == "slab-out-of-bounds" and finding.access == "read" and finding.size == 8
    assert (finding.file, finding.line) == (EXAMPLE_TEST, load_line)      # the C line of the bad load
    assert finding.insn == 8 and finding.mode == "faithful"
    assert "example_map_value_oob" in finding.title
    # The report names the file as the series does, not by the scratch worktree that is gone now.
    assert f"bpf-kasan: source {EXAMPLE_TEST}:{load_line}: {OOB_LOAD_LINE[:-1]}" in finding.report
    assert "bpf-kasan-wt-" not in triage.to_json()


def test_bundled_example_runs_with_no_network(tmp_path):
    code, triage = _triage(tmp_path, "--mbox", str(EXAMPLE_MBOX), "--tree", str(EXAMPLE_TREE))
    assert triage.apply.applied and code == 1
    rows = {t.function: t for t in triage.tests}
    assert set(rows) == {"example_map_value_oob", "example_uninit_reg"}
    moved, oob = rows["example_uninit_reg"], rows["example_map_value_oob"]
    assert moved.moved_failure_to_success and not oob.moved_failure_to_success
    assert (moved.base_status, moved.head_status, moved.expect_base) == ("pass", "pass", "failure")
    # Explored variants are the runs really made: a map-reading test has more inputs to vary.
    assert moved.variants_explored >= 1 and oob.variants_explored > moved.variants_explored
    (finding,) = triage.findings_by_change("new")
    assert finding.function.endswith("_example_map_value_oob") and finding.location == f"{EXAMPLE_TEST}:73"
    assert triage.notes == ()


def test_moved_tests_are_explored_harder_and_explore_is_honoured(tmp_path):
    """`--explore 1`: one variant for usual tests; the test moved to __success gets harder(1) = 64
    requested (as many as its inputs allow), so it ran more variants than the usual test could."""
    code, triage = _triage(tmp_path, "--mbox", str(EXAMPLE_MBOX), "--tree", str(EXAMPLE_TREE), "--explore", "1")
    rows = {t.function: t for t in triage.tests}
    assert rows["example_map_value_oob"].variants_explored == 1
    assert rows["example_uninit_reg"].variants_explored > 1
    code, triage = _triage(tmp_path, "--mbox", str(EXAMPLE_MBOX), "--tree", str(EXAMPLE_TREE), "--explore", "0")
    rows = {t.function: t for t in triage.tests}
    assert rows["example_map_value_oob"].variants_explored == 0 and code == 1      # faithful run still finds it


def test_head_and_report_are_reproducible(tmp_path):
    """`git am` keeps the author date as the commit date, so the same series gives the same head."""
    first = _triage(tmp_path, "--mbox", str(EXAMPLE_MBOX), "--tree", str(EXAMPLE_TREE))[1]
    second = _triage(tmp_path, "--mbox", str(EXAMPLE_MBOX), "--tree", str(EXAMPLE_TREE))[1]
    assert first.head_rev == second.head_rev and first.to_json() == second.to_json()


def test_tests_that_fail_error_or_cannot_run_are_noted(tmp_path):
    """Not memory-safety verdicts, but a maintainer wants to know: a wrong retval, a test whose
    source is malformed, and a program in a format the runner does not know."""
    repo = make_repo(tmp_path / "repo")
    commit(repo, "two tests", insert_test(simple_test("t_wrong", "__success __retval(1)")
                                          + simple_test("t_broken", insns="r0 = ;")))
    (repo / "tools/testing/selftests/bpf/progs/test_plain.c").write_text(
        '#include <linux/bpf.h>\nSEC("xdp")\nint plain_prog(struct xdp_md *ctx)\n{\n\treturn 2;\n}\n')
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a plain program")
    mbox = tmp_path / "s.mbox"
    mbox.write_bytes(format_patch(repo, "HEAD~2"))
    code, triage = _triage(tmp_path, "--mbox", str(mbox), "--tree", str(repo), "--base", "HEAD~2",
                           "--tests", "tools/testing/selftests/bpf/progs/*.c")
    assert code == 0 and triage.verdict == "pass" and len(triage.tests) == 3
    wrong, broken, skipped = triage.notes
    assert wrong.startswith("verifier_example.c::t_wrong fails on head: ")
    assert broken.startswith("verifier_example.c::t_broken could not be run on head: ")
    assert skipped == "not run (not in a test format bpf-kasan runs): plain_prog"
    assert "bpf-kasan-wt-" not in triage.to_json()


def test_bundle_tree_and_base_from_series(tmp_path):
    repo, mbox = _oob_series(tmp_path)
    commit(repo, "upstream moved on", lambda t: t.replace("// Same shape", "// Same  shape"))
    bundle = tmp_path / "tree.bundle"
    git(repo, "bundle", "create", str(bundle), "main")
    args = ["triage", "--mbox", str(mbox), "--tree", str(bundle), "--tests", "none/*.c", "--format", "json"]
    out = tmp_path / "t.json"
    assert main([*args, "--output", str(out)]) == 0
    triage = Triage.from_json(out.read_text())
    assert triage.base_rev == git(repo, "rev-parse", "HEAD~1").strip()      # the series' base-commit:
    assert triage.apply.applied and triage.notes == ("no selftest touched by this series",)


def test_markdown_output_and_json_artifact(tmp_path):
    repo, mbox = _oob_series(tmp_path)
    commit(repo, "upstream moved the licence", lambda t: t.replace('char _license[] SEC("license") = "GPL";', ""))
    md, art = tmp_path / "s.md", tmp_path / "a.json"
    assert main(["triage", "--mbox", str(mbox), "--tree", str(repo), "--base", "HEAD", "--format", "markdown",
                 "--output", str(md), "--json-output", str(art)]) == 1
    triage = Triage.from_json(art.read_text())
    assert triage.verdict == "conflict"
    assert md.read_text() != art.read_text() and "does not apply" in md.read_text()
    assert json.loads(art.read_text())["summary"]["verdict"] == "conflict"


def test_reply_threads_under_the_cover_letter(tmp_path):
    import email
    import email.policy
    repo = make_repo(tmp_path / "repo")
    commit(repo, "upstream moved the licence", lambda t: t.replace('char _license[] SEC("license") = "GPL";', ""))
    reply = tmp_path / "reply.eml"
    assert main(["triage", "--mbox", str(EXAMPLE_MBOX), "--tree", str(repo), "--reply", str(reply),
                 "--output", str(tmp_path / "t.json")]) == 1
    msg = email.message_from_bytes(reply.read_bytes(), policy=email.policy.default)
    assert msg["In-Reply-To"] == "<cover.1795620830.git.ada@example.org>"
    assert msg["Subject"].startswith("Re: [PATCH bpf-next v2 0/2] selftests/bpf: example series")
    assert "patch 1/2" in msg.get_content() and "Merge conflict" in msg.get_content()


def test_markdown_output_is_cut_to_the_job_summary_limit(tmp_path):
    """In CI the Markdown goes to $GITHUB_STEP_SUMMARY, which GitHub drops whole when over 1 MiB."""
    import argparse

    from _triage_cases import huge
    from bot import cmd_triage, summary
    from bot.config import Waivers
    big = huge(300, report_repeat=40)                # ~4 MB of reports
    out = tmp_path / "step.md"
    args = argparse.Namespace(format="markdown", json_output=str(tmp_path / "t.json"), reply=None, output=str(out))
    cmd_triage._emit(args, big, big, Waivers())
    assert len(out.read_bytes()) <= summary.JOB_SUMMARY_LIMIT and "more findings omitted" in out.read_text()
    assert Triage.from_json((tmp_path / "t.json").read_text()) == big     # the artifact keeps everything
