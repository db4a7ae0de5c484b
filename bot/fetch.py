"""Where a series comes from: an mbox file or URL, a lore thread by Message-ID, a patchwork series,
or a GitHub pull request. Each source gives back the mbox bytes plus a label and link for reports.

All network access has a timeout and a bounded number of retries (connection errors, 5xx, 429);
any other refusal is a `BotError` naming the URL. GitHub is read anonymously through pygithub at
`GITHUB_API_URL` (default https://api.github.com): this half runs untrusted code, so it never
reads a token. Imports the stdlib, pygithub (inside `pr_mbox`) and `bot.errors`.
"""
from __future__ import annotations

import email.utils
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bot.errors import BotError

DEFAULT_INBOX = "https://lore.kernel.org"
DEFAULT_GITHUB_API = "https://api.github.com"
TIMEOUT_S = 30
RETRIES = 3                     # attempts after the first
MAX_BYTES = 64 * 1024 * 1024
_RETRY_STATUS = {429, 500, 502, 503, 504}
_MAX_WAIT_S = 30


@dataclass(frozen=True)
class Fetched:
    """An mbox and where it came from (`source` names it in errors; `url` links to it in reports)."""
    data: bytes
    source: str
    url: str | None = None
    subject: str | None = None          # overrides the mbox's subject (a PR's title)


def http_get(url: str, *, accept: str | None = None, retries: int = RETRIES, backoff_s: float = 0.5) -> bytes:
    """GET `url` (http/https only), retrying transient failures with exponential backoff."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise BotError("only http and https URLs are fetched", file=url)
    request = urllib.request.Request(url, headers={"User-Agent": "bpf-kasan-ci", **({"Accept": accept} if accept else {})})
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                data = response.read(MAX_BYTES + 1)
            if len(data) > MAX_BYTES:
                raise BotError(f"response larger than {MAX_BYTES >> 20} MiB", file=url)
            return data
        except urllib.error.HTTPError as e:
            if e.code not in _RETRY_STATUS or attempt == retries:
                raise BotError(f"HTTP {e.code} {e.reason}", file=url) from None
            wait = _retry_after(e.headers.get("Retry-After"), backoff_s * 2 ** attempt)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            if attempt == retries:
                raise BotError(f"cannot fetch: {getattr(e, 'reason', e)}", file=url) from None
            wait = backoff_s * 2 ** attempt
        time.sleep(wait)
    raise AssertionError("unreachable")


def _retry_after(header: str | None, default: float) -> float:
    try:
        return min(float(header), _MAX_WAIT_S) if header else default
    except ValueError:
        return default


def load_mbox(where: str) -> Fetched:
    """`--mbox FILE|URL`."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", where, re.I):
        return Fetched(http_get(where), where, where)
    path = Path(where)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise BotError(f"mbox larger than {MAX_BYTES >> 20} MiB", file=where)
        return Fetched(path.read_bytes(), where)
    except OSError as e:
        raise BotError(f"cannot read mbox: {e.strerror}", file=where) from None


def lore_mbox(msgid: str, inbox_url: str = DEFAULT_INBOX) -> Fetched:
    """`--msgid`: the whole thread, `<inbox>/all/<msgid>/t.mbox.gz` (series.py unzips it)."""
    msgid = msgid.strip().strip("<>")
    if not msgid or re.search(r"[\s/]", msgid):
        raise BotError(f"not a Message-ID: {msgid!r}", file="--msgid")
    quoted = urllib.parse.quote(msgid, safe="@!$&'()*+,;=:._~-")
    base = f"{inbox_url.rstrip('/')}/all/{quoted}"
    return Fetched(http_get(f"{base}/t.mbox.gz"), f"{base}/t.mbox.gz", f"{base}/")


def patchwork_mbox(series_id: int, patchwork_url: str) -> Fetched:
    """`--patchwork-series N`: `GET /api/series/N/`, then its `mbox` link; an incomplete series is refused."""
    api = f"{patchwork_url.rstrip('/')}/api/series/{series_id}/"
    try:
        meta = json.loads(http_get(api, accept="application/json"))
    except ValueError:
        raise BotError("patchwork answered with something that is not JSON", file=api) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("mbox"), str):
        raise BotError("patchwork series has no 'mbox' link", file=api)
    if meta.get("received_all") is False:
        raise BotError(f"patchwork series {series_id} is incomplete: received "
                       f"{meta.get('received_total')} of {meta.get('total')} patches", file=api)
    web = meta.get("web_url") if isinstance(meta.get("web_url"), str) else api
    return Fetched(http_get(meta["mbox"]), meta["mbox"], web)


def pr_mbox(spec: str, client=None) -> Fetched:
    """`--pr OWNER/REPO#N`: the PR's `.patch` (format-patch mbox), else one rebuilt from its commits."""
    from github import Github, GithubException, GithubRetry

    match = re.fullmatch(r"([\w.-]+/[\w.-]+)#(\d+)", spec)
    if not match:
        raise BotError("expected OWNER/REPO#NUMBER", file=spec)
    api = os.environ.get("GITHUB_API_URL") or DEFAULT_GITHUB_API
    gh = client or Github(base_url=api, timeout=TIMEOUT_S, lazy=True,
                          retry=GithubRetry(total=RETRIES, secondary_rate_wait=15, max_rate_limit_wait=15))
    try:
        pr = gh.get_repo(match.group(1)).get_pull(int(match.group(2)))
        try:
            data = http_get(pr.patch_url)
        except BotError:
            data = _mbox_from_commits(pr)          # e.g. the web host is not reachable from here
        return Fetched(data, spec, pr.html_url, pr.title)
    except GithubException as e:
        raise BotError(f"GitHub: HTTP {e.status}: {_github_message(e)}", file=spec) from None
    except OSError as e:                           # requests' connection errors derive from OSError
        raise BotError(f"GitHub: cannot connect: {e}", file=spec) from None


def _github_message(e) -> str:
    data = e.data if isinstance(e.data, dict) else {}
    return str(data.get("message") or e.data or "no message")[:200]


def _mbox_from_commits(pr) -> bytes:
    commits = list(pr.get_commits())
    return b"".join(_commit_mail(c, i, len(commits)) for i, c in enumerate(commits, 1))


def _commit_mail(commit, seq: int, total: int) -> bytes:
    """A git-am-able mail for one PR commit, from its message, author and per-file patches."""
    git_commit = commit.commit
    title, _, body = git_commit.message.partition("\n")
    author = git_commit.author
    date = email.utils.format_datetime(author.date) if author.date else "Thu, 1 Jan 1970 00:00:00 +0000"
    diffs = "".join(_file_diff(f) for f in commit.files)
    head = (f"From {commit.sha} Mon Sep 17 00:00:00 2001\nFrom: {author.name} <{author.email}>\n"
            f"Date: {date}\nSubject: [PATCH {seq}/{total}] {title.strip()}\n\n")
    return (head + body.strip("\n") + "\n---\n" + diffs + "\n").encode()


def _file_diff(f) -> str:
    old = f.previous_filename or f.filename
    header = f"diff --git a/{old} b/{f.filename}\n"
    if f.status == "added":
        header += f"new file mode 100644\n--- /dev/null\n+++ b/{f.filename}\n"
    elif f.status == "removed":
        header += f"deleted file mode 100644\n--- a/{old}\n+++ /dev/null\n"
    else:
        if old != f.filename:
            header += f"rename from {old}\nrename to {f.filename}\n"
        header += f"--- a/{old}\n+++ b/{f.filename}\n"
    if not f.patch:
        return ""                                  # binary or too large: GitHub gives no text patch
    return header + f.patch.rstrip("\n") + "\n"
