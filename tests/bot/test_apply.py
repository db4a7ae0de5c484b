"""bot.apply with real repositories, worktrees and `git am --3way`."""
from __future__ import annotations

import subprocess

import pytest

from _git_fixtures import (EXAMPLE_MBOX, EXAMPLE_TEST, EXAMPLE_TREE, commit, format_patch, git, insert_test,
                           make_repo, simple_test)
from bot.apply import applied_trees, repository, resolve_base
from bot.errors import BotError
from bot.series import parse_series


@pytest.fixture
def repo(tmp_path):
    return make_repo(tmp_path / "repo")


def _series(repo, count=2):
    for i in range(count):
        commit(repo, f"selftests/bpf: add t{i}", insert_test(simple_test(f"t{i}")))
    mbox = format_patch(repo, f"HEAD~{count}", "--cover-letter", "-v2", f"--base=HEAD~{count}")
    git(repo, "reset", "-q", "--hard", f"HEAD~{count}")
    return parse_series(mbox, "s.mbox")


def _worktrees(repo):
    return [line for line in git(repo, "worktree", "list", "--porcelain").splitlines() if line.startswith("worktree ")]


def test_series_applies_on_base_and_worktrees_are_removed(repo):
    s = _series(repo)
    base = resolve_base(repo, None, s.series.base_commit)
    with applied_trees(repo, base, s.as_mbox(), 2) as trees:
        assert trees.outcome.applied and trees.outcome.text == "applied"
        head_text = (trees.head_dir / EXAMPLE_TEST).read_text()
        assert "void t0(void)" in head_text and "void t1(void)" in head_text
        assert "void t0(void)" not in (trees.base_dir / EXAMPLE_TEST).read_text()
        log = git(trees.head_dir, "log", "--format=%s", f"{base}..HEAD").splitlines()
        assert log == ["selftests/bpf: add t1", "selftests/bpf: add t0"]
        assert len(_worktrees(repo)) == 3
        where = trees.head_dir
    assert not where.exists() and len(_worktrees(repo)) == 1
    assert git(repo, "status", "--porcelain") == ""


def test_conflict_reports_the_patch_and_gits_reason(repo):
    s = _series(repo)
    base = resolve_base(repo, None, None)
    # Upstream moved: the licence line the patches insert before is rewritten.
    commit(repo, "upstream change", lambda t: t.replace('char _license[] SEC("license") = "GPL";', "/* moved */"))
    with applied_trees(repo, "HEAD", s.as_mbox(), 2) as trees:
        assert not trees.outcome.applied and trees.head_dir is None and trees.head_rev is None
        assert trees.outcome.failed_seq == 1 and trees.outcome.total == 2
        assert trees.outcome.text.startswith("does not apply at patch 1/2: ")
        assert "verifier_example.c" in trees.outcome.reason and "\n" not in trees.outcome.reason
    assert len(_worktrees(repo)) == 1
    assert base != resolve_base(repo, None, None)


def test_conflict_at_second_patch(repo):
    commit(repo, "add t0", insert_test(simple_test("t0")))
    commit(repo, "return 8", lambda t: t.replace("r0 = 7;", "r0 = 8;").replace("__retval(7)", "__retval(8)"))
    s = parse_series(format_patch(repo, "HEAD~2"), "s.mbox")
    git(repo, "reset", "-q", "--hard", "HEAD~2")
    commit(repo, "upstream returns 9", lambda t: t.replace("r0 = 7;", "r0 = 9;"))
    with applied_trees(repo, "HEAD~1", s.as_mbox(), 2) as trees:
        assert trees.outcome.applied                       # on the old base it applies
    with applied_trees(repo, "HEAD", s.as_mbox(), 2) as trees:
        assert (trees.outcome.failed_seq, trees.outcome.total) == (2, 2), trees.outcome
        assert trees.outcome.reason == f"CONFLICT (content): Merge conflict in {EXAMPLE_TEST}"


def test_base_commit_hint_and_explicit_base(repo):
    first = git(repo, "rev-parse", "HEAD").strip()
    commit(repo, "later", insert_test(simple_test("later")))
    assert resolve_base(repo, None, first) == first
    assert resolve_base(repo, None, "0" * 40) == git(repo, "rev-parse", "HEAD").strip()   # unknown hint
    assert resolve_base(repo, "HEAD~1", None) == first
    with pytest.raises(BotError, match=r"revision 'nope' not found"):
        resolve_base(repo, "nope", None)


def test_plain_directory_becomes_a_stable_scratch_repo():
    with repository(EXAMPLE_TREE) as a:
        first = git(a, "rev-parse", "HEAD").strip()
        scratch = a
    assert not scratch.exists()
    with repository(EXAMPLE_TREE) as b:
        assert git(b, "rev-parse", "HEAD").strip() == first
    assert parse_series(EXAMPLE_MBOX.read_bytes(), "x").series.base_commit == first


def test_bundle_file_is_cloned(repo, tmp_path):
    bundle = tmp_path / "tree.bundle"
    git(repo, "bundle", "create", str(bundle), "HEAD", "main")
    with repository(bundle) as clone:
        assert clone != repo and (clone / EXAMPLE_TEST).is_file()
        assert git(clone, "rev-parse", "HEAD") == git(repo, "rev-parse", "HEAD")


def test_missing_tree_and_bad_bundle(tmp_path):
    with pytest.raises(BotError, match="tree not found"):
        with repository(tmp_path / "absent"):
            pass
    junk = tmp_path / "junk.bundle"
    junk.write_bytes(b"not a bundle")
    with pytest.raises(BotError, match=r"git clone failed") as e:
        with repository(junk):
            pass
    assert "\n" not in str(e.value)


def test_hooks_of_the_tree_do_not_run(repo, tmp_path):
    s = _series(repo, 1)
    marker = tmp_path / "hook-ran"
    hook = repo / ".git" / "hooks" / "applypatch-msg"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    with applied_trees(repo, "HEAD", s.as_mbox(), 1) as trees:
        assert trees.outcome.applied
    assert not marker.exists()
    assert subprocess.run(["git", "-C", str(repo), "am", "--show-current-patch"], capture_output=True).returncode
