"""Posting a triage to GitHub: one sticky PR comment, one check run, and the job summary.

Owns: the pygithub client (capped retries, spaced writes), finding the PR a result belongs to and
checking its head, the sticky comment (found by a hidden marker *and* its author, edited in place,
never duplicated), check-run annotations in batches of 50, and appending to $GITHUB_STEP_SUMMARY
within its 1 MiB limit. The only module that needs a token. GitHub's errors become `BotError`.

Uses pygithub; never jinja2 (it posts text `bot.summary` made) or the checks layer.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
from dataclasses import dataclass

from github import Auth, Consts, Github, GithubException, GithubRetry
from github.CheckRun import CheckRun
from github.IssueComment import IssueComment
from github.PullRequest import PullRequest
from github.Repository import Repository

from bot.config import finding_title
from bot.errors import BotError
from bot.triage_model import Finding, Triage

STICKY_MARKER = "<!-- bpf-kasan:sticky -->"
CHECK_NAME = "bpf-kasan"
DEFAULT_BOT_LOGIN = "github-actions[bot]"      # who GITHUB_TOKEN comments as
ANNOTATIONS_PER_REQUEST = 50                   # GitHub refuses more in one check-run request
MAX_ANNOTATIONS = 500                          # 10 writes; the rest are in the summary and artifact
JOB_SUMMARY_MAX = 1024 * 1024                  # per step; over it GitHub drops the summary whole
_LEVEL = {"new": "failure", "persisting": "warning", "fixed": "notice"}
_PULLS_SCANNED = 300                           # open PRs searched for a head SHA


_CAPPED_RETRY = object()


def connect(token: str | None, base_url: str | None = None, *, retry=_CAPPED_RETRY,
            seconds_between_requests: float = 0.25, seconds_between_writes: float = 1.0) -> Github:
    """A client for GitHub or GitHub Enterprise. By default, retries and rate-limit waits are capped
    (15 s) so a CI job fails instead of sleeping silently; tests pass `retry=None`."""
    if not token:
        raise BotError("GITHUB_TOKEN is not set: posting to GitHub needs a token")
    if retry is _CAPPED_RETRY:
        retry = GithubRetry(total=5, secondary_rate_wait=15, max_rate_limit_wait=15)
    return Github(base_url=base_url or Consts.DEFAULT_BASE_URL, auth=Auth.Token(token), retry=retry,
                  seconds_between_requests=seconds_between_requests,
                  seconds_between_writes=seconds_between_writes, lazy=True)


@contextlib.contextmanager
def github_errors(what: str):
    """Translate pygithub's exceptions into one-line `BotError`s saying what we were doing."""
    try:
        yield
    except GithubException as e:
        data = e.data if isinstance(e.data, dict) else {}
        details = "; ".join(str(err.get("message", err)) for err in data.get("errors", []) if err)
        message = data.get("message") or str(e.data or e)
        raise BotError(f"GitHub: {what}: {e.status} {message}" + (f" ({details})" if details else "")) from None
    except OSError as e:                        # connection refused, DNS, TLS: no HTTP status at all
        raise BotError(f"GitHub: {what}: {e}") from None


def get_repo(gh: Github, full_name: str) -> Repository:
    if full_name.count("/") != 1 or not all(full_name.split("/")):
        raise BotError(f"--repo must be OWNER/REPO, got {full_name!r}")
    with github_errors(f"repository {full_name}"):
        return gh.get_repo(full_name)            # lazy: no request until used


def resolve_pull(repo: Repository, number: int | None, head_sha: str | None) -> PullRequest:
    """The PR to post on. A given number must have `head_sha` as its head (results for another commit
    are stale or forged); with no number, the one open PR whose head is `head_sha` (fork PRs carry
    no PR list in workflow_run events)."""
    if number is None and not head_sha:
        raise BotError("give --pr, or --sha to find the pull request by its head commit")
    with github_errors(f"pull request #{number}" if number else f"open pull requests for {head_sha}"):
        if number is not None:
            pull = repo.get_pull(number)
            if pull.head.sha != head_sha and head_sha:      # reading head also fetches the lazy PR
                raise BotError(f"pull request #{number} has head {pull.head.sha}, not {head_sha}: "
                               "the results are for another commit")
            return pull
        matches = [p for p in repo.get_pulls(state="open", sort="updated", direction="desc")[:_PULLS_SCANNED]
                   if p.head.sha == head_sha]
    if len(matches) != 1:
        found = ", ".join(f"#{p.number}" for p in matches) or "none"
        raise BotError(f"expected exactly one open pull request with head {head_sha}, found {found}")
    return matches[0]


def find_sticky_comment(pull: PullRequest, bot_login: str) -> IssueComment | None:
    """Our comment: it starts with the marker AND was written by us (anyone can paste a marker)."""
    with github_errors(f"comments of #{pull.number}"):
        for comment in pull.get_issue_comments():
            author = comment.user.login if comment.user else None     # None: a deleted account
            if author == bot_login and (comment.body or "").startswith(STICKY_MARKER):
                return comment
    return None


def upsert_sticky_comment(pull: PullRequest, markdown: str, *, bot_login: str = DEFAULT_BOT_LOGIN) -> str:
    """Create the sticky comment, or edit it in place; returns "created", "edited" or "unchanged"."""
    body = f"{STICKY_MARKER}\n{markdown}"
    comment = find_sticky_comment(pull, bot_login)
    with github_errors(f"comment on #{pull.number}"):
        if comment is None:
            pull.create_issue_comment(body)
            return "created"
        if comment.body == body:
            return "unchanged"                  # saves a write against the content-creation limit
        comment.edit(body)
        return "edited"


@dataclass(frozen=True)
class CheckOutput:
    conclusion: str                             # success | neutral | failure
    title: str
    summary: str                                # Markdown, at most 65,535 chars
    annotations: tuple[dict, ...] = ()


def publish_check_run(repo: Repository, head_sha: str, output: CheckOutput, *,
                      details_url: str | None = None) -> CheckRun:
    """Create the run in progress, then send annotations 50 per request; the last one completes it."""
    batches = [list(output.annotations[i:i + ANNOTATIONS_PER_REQUEST])
               for i in range(0, len(output.annotations), ANNOTATIONS_PER_REQUEST)] or [[]]
    extra = {"details_url": details_url} if details_url else {}
    with github_errors(f"check run on {head_sha}"):
        run = repo.create_check_run(name=CHECK_NAME, head_sha=head_sha, status="in_progress", **extra)
        for i, batch in enumerate(batches):
            fields = {"title": output.title, "summary": output.summary, "annotations": batch}
            if i < len(batches) - 1:
                run.edit(output=fields)
            else:
                run.edit(status="completed", conclusion=output.conclusion, output=fields)
    return run


def annotations(triage: Triage) -> tuple[dict, ...]:
    """One annotation per distinct (title, file, line), at the BPF source line, else the test's."""
    tests = {t.test_id: t for t in triage.tests}
    seen, out = set(), []
    for finding in sorted(triage.findings, key=lambda f: ("new", "persisting", "fixed").index(f.change)):
        place = _place(finding, tests)
        key = (finding_title(finding), *place) if place else None
        if key is None or key in seen:
            continue
        seen.add(key)
        out.append(_annotation(finding, *place))
        if len(out) == MAX_ANNOTATIONS:
            break
    return tuple(out)


def _place(finding: Finding, tests: dict) -> tuple[str, int] | None:
    test = tests.get(finding.test)
    path, line = (finding.file, finding.line) if finding.file and finding.line else \
        ((test.file, test.line) if test and test.line else (None, None))
    if not path:
        return None
    path = path.removeprefix("./")
    return (path, line) if not path.startswith("/") and ".." not in path.split("/") else None


def _annotation(finding: Finding, path: str, line: int) -> dict:
    report = "\n".join(finding.report.splitlines()[:12])
    insn = f", insn #{finding.insn}" if finding.insn is not None else ""
    return {"path": path, "start_line": line, "end_line": line, "annotation_level": _LEVEL[finding.change],
            "title": finding_title(finding)[:255],
            "message": f"{finding.change} in {finding.test}{insn}\n{report}"[:4000]}


def job_summary_room(path: str | os.PathLike) -> int:
    """Bytes left in this step's summary file (other steps' content counts against the 1 MiB)."""
    try:
        used = os.path.getsize(path)
    except OSError:
        used = 0
    return max(0, JOB_SUMMARY_MAX - used - 1024)


def append_job_summary(path: str | os.PathLike, markdown: str) -> None:
    try:
        with pathlib.Path(path).open("a", encoding="utf-8") as f:
            f.write(markdown if markdown.endswith("\n") else markdown + "\n")
    except OSError as e:
        raise BotError(f"cannot append the job summary: {e}", file=str(path)) from None
