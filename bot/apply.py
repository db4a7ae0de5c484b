"""Scratch git trees for a series: the base checkout and the base with the series `git am --3way`ed.

`--tree` may be a git repository, a `git bundle` file (cloned to a scratch repository), or a plain
directory of files (turned into a one-commit scratch repository with a fixed date, so its commit id
is stable and a mbox made against it carries a matching `base-commit:`). The user's repository
only gains two temporary worktrees, removed (and pruned) on the way out even when `git am` fails.

A series that does not apply is a result (`ApplyOutcome`), not an error. A git failure anywhere
else is a `BotError` naming the tree. Imports the stdlib, `bot.errors`, `bot.triage_model` only.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from bot.errors import BotError
from bot.triage_model import ApplyOutcome

GIT_TIMEOUT_S = 600
_IDENTITY = {"GIT_AUTHOR_NAME": "bpf-kasan", "GIT_AUTHOR_EMAIL": "bpf-kasan@localhost",
             "GIT_COMMITTER_NAME": "bpf-kasan", "GIT_COMMITTER_EMAIL": "bpf-kasan@localhost"}
# A fixed date makes the scratch commit of a plain directory reproducible.
_FIXED_DATE = {"GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z"}
# Never run hooks of the tree under test, never sign, never page.
_SAFE_CONFIG = ("-c", "core.hooksPath=/dev/null", "-c", "commit.gpgSign=false", "-c", "core.pager=cat")


@dataclass(frozen=True)
class Trees:
    """The checked-out base, and the head (None when the series did not apply)."""
    base_dir: Path
    base_rev: str
    head_dir: Path | None
    head_rev: str | None
    outcome: ApplyOutcome


def git(cwd: Path, *args: str, stdin: bytes | None = None, env: dict | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run git in `cwd`; a failure (when `check`) becomes a BotError with git's first error line."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    clean.update(_IDENTITY, **(env or {}))
    try:
        done = subprocess.run(["git", *_SAFE_CONFIG, *args], cwd=cwd, input=stdin, env=clean,
                              capture_output=True, timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BotError(f"git {args[0]}: {e}", file=str(cwd)) from None
    if check and done.returncode:
        raise BotError(f"git {args[0]} failed: {first_line(done.stderr) or 'no message'}", file=str(cwd))
    return done


def first_line(output: bytes, pattern: str = r".") -> str:
    for line in output.decode(errors="replace").splitlines():
        if re.match(pattern, line.strip()):
            return line.strip()
    return ""


@contextmanager
def repository(tree: str | Path) -> Iterator[Path]:
    """The git repository for `--tree`: itself, or a scratch clone/commit that is deleted afterwards."""
    path = Path(tree)
    if not path.exists():
        raise BotError("tree not found", file=str(tree))
    if path.is_dir() and _is_repository(path):
        yield path
        return
    scratch = Path(tempfile.mkdtemp(prefix="bpf-kasan-repo-"))
    try:
        repo = scratch / "repo"
        if path.is_file():
            git(scratch, "clone", "--quiet", str(path.resolve()), str(repo))
        else:
            shutil.copytree(path, repo, symlinks=True)
            git(repo, "init", "--quiet", "--initial-branch=main")
            git(repo, "add", "--all")
            git(repo, "commit", "--quiet", "-m", f"{path.name}: imported tree", env=_FIXED_DATE)
        yield repo
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _is_repository(path: Path) -> bool:
    """A repository's top (or a bare one); a plain directory that merely sits inside a repo is not."""
    bare = git(path, "rev-parse", "--is-bare-repository", check=False)
    if bare.returncode:
        return False
    if bare.stdout.strip() == b"true":
        return True
    top = git(path, "rev-parse", "--show-toplevel", check=False)
    return top.returncode == 0 and Path(top.stdout.decode().strip()).resolve() == path.resolve()


def resolve_base(repo: Path, base: str | None, hint: str | None) -> str:
    """--base if given; else the series' `base-commit:` when the tree has it; else HEAD."""
    if base is None and hint and rev_parse(repo, hint, check=False):
        return rev_parse(repo, hint)
    return rev_parse(repo, base or "HEAD")


def rev_parse(repo: Path, rev: str, check: bool = True) -> str | None:
    done = git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    if done.returncode:
        if not check:
            return None
        raise BotError(f"revision {rev!r} not found", file=str(repo))
    return done.stdout.decode().strip()


@contextmanager
def applied_trees(repo: Path, base_rev: str, mbox: bytes, total: int) -> Iterator[Trees]:
    """Worktrees of base and of base + series; both removed on exit."""
    scratch = Path(tempfile.mkdtemp(prefix="bpf-kasan-wt-"))
    added: list[Path] = []
    try:
        base_dir = _worktree(repo, scratch / "base", base_rev, added)
        head_dir = _worktree(repo, scratch / "head", base_rev, added)
        outcome = _am(head_dir, mbox, total)
        head_rev = rev_parse(head_dir, "HEAD") if outcome.applied else None
        yield Trees(base_dir, base_rev, head_dir if outcome.applied else None, head_rev, outcome)
    finally:
        for wt in added:
            git(repo, "worktree", "remove", "--force", str(wt), check=False)
        git(repo, "worktree", "prune", check=False)
        shutil.rmtree(scratch, ignore_errors=True)


def _worktree(repo: Path, where: Path, rev: str, added: list[Path]) -> Path:
    git(repo, "worktree", "add", "--quiet", "--detach", str(where), rev)
    added.append(where)
    return where


def _am(head_dir: Path, mbox: bytes, total: int) -> ApplyOutcome:
    # The author date as commit date (and our fixed committer) make the head commit a function of
    # base and series, so reruns and reports name the same head.
    done = git(head_dir, "am", "--3way", "--committer-date-is-author-date", "--patch-format=mboxrd",
               stdin=mbox, check=False)
    if done.returncode == 0:
        return ApplyOutcome(applied=True)
    git(head_dir, "am", "--abort", check=False)
    failed = re.search(rb"^Patch failed at (\d+)", done.stdout + done.stderr, re.M)
    reason = (first_line(done.stdout, r"CONFLICT") or first_line(done.stderr, r"(error|fatal):")
              or first_line(done.stderr) or "git am failed")
    reason = re.sub(r"^(error|fatal): ", "", reason)
    return ApplyOutcome(applied=False, failed_seq=int(failed.group(1)) if failed else 1,
                        total=total, reason=reason)
