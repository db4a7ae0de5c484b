"""bot.fetch against a local http.server replaying lore, patchwork and GitHub (through pygithub)."""
from __future__ import annotations

import gzip
import http.server
import json
import threading

import pytest
from github import Github

from _git_fixtures import EXAMPLE_MBOX, EXAMPLE_TEST, commit, git, insert_test, make_repo, simple_test
from bot import fetch
from bot.apply import applied_trees
from bot.cli import main
from bot.errors import BotError
from bot.series import parse_series

MSGID = "cover.1795620830.git.ada@example.org"


class Replay(http.server.ThreadingHTTPServer):
    """Serves `routes[path] = [(status, headers, body), ...]`, one entry per request, the last repeating."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, list] = {}
        self.seen: list[tuple[str, dict]] = []
        self.posted: list[tuple[str, dict, bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add(self, path, body, status=200, headers=None):
        body = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        self.routes.setdefault(path, []).append((status, headers or {}, body))


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.seen.append((self.path, dict(self.headers)))
        routes = self.server.routes
        answers = (routes.get(self.path) or routes.get(self.path.split("?")[0])   # pygithub adds ?page=1
                   or [(404, {}, b'{"message": "Not Found"}')])
        status, headers, body = answers.pop(0) if len(answers) > 1 else answers[0]
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.posted.append((self.path, dict(self.headers), body))
        self.send_response(201)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = Replay()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def test_lore_thread_by_msgid(server):
    server.add(f"/all/{MSGID}/t.mbox.gz", gzip.compress(EXAMPLE_MBOX.read_bytes()),
               headers={"Content-Type": "application/gzip"})
    got = fetch.lore_mbox(f"<{MSGID}>", server.url + "/")
    assert got.url == f"{server.url}/all/{MSGID}/"
    s = parse_series(got.data, got.source, got.url).series
    assert s.version == 2 and len(s.patches) == 2 and s.cover_msgid == MSGID


def test_lore_msgid_is_url_quoted_and_checked(server):
    server.add("/all/a%25b@x/t.mbox.gz", gzip.compress(EXAMPLE_MBOX.read_bytes()))
    assert fetch.lore_mbox("a%b@x", server.url).data[:2] == b"\x1f\x8b"
    with pytest.raises(BotError, match="not a Message-ID"):
        fetch.lore_mbox("a/../b", server.url)


def test_patchwork_series_and_its_mbox(server):
    server.add("/api/series/42/", {"id": 42, "name": "example", "version": 2, "received_all": True,
                                   "total": 2, "received_total": 2, "web_url": server.url + "/project/bpf/list/?series=42",
                                   "mbox": server.url + "/series/42/mbox/"})
    server.add("/series/42/mbox/", EXAMPLE_MBOX.read_bytes(), headers={"Content-Type": "text/plain"})
    got = fetch.patchwork_mbox(42, server.url + "/")
    assert got.url.endswith("?series=42") and got.source == server.url + "/series/42/mbox/"
    assert len(parse_series(got.data, got.source).series.patches) == 2
    assert server.seen[0][1].get("Accept") == "application/json"


def test_patchwork_incomplete_and_malformed(server):
    server.add("/api/series/5/", {"received_all": False, "received_total": 1, "total": 3, "mbox": "x"})
    with pytest.raises(BotError, match=r"series 5 is incomplete: received 1 of 3"):
        fetch.patchwork_mbox(5, server.url)
    server.add("/api/series/6/", b"<html>")
    with pytest.raises(BotError, match=r"api/series/6/: patchwork answered with something that is not JSON"):
        fetch.patchwork_mbox(6, server.url)
    server.add("/api/series/7/", [1, 2])
    with pytest.raises(BotError, match="no 'mbox' link"):
        fetch.patchwork_mbox(7, server.url)


def test_transient_failures_are_retried_then_given_up(server):
    server.add("/flaky", b"busy", status=503)
    server.add("/flaky", b"busy", status=429, headers={"Retry-After": "0"})
    server.add("/flaky", b"From x\n")
    assert fetch.http_get(server.url + "/flaky", backoff_s=0) == b"From x\n"
    assert [p for p, _ in server.seen].count("/flaky") == 3
    server.add("/down", b"", status=502)
    with pytest.raises(BotError, match=r"/down: HTTP 502"):
        fetch.http_get(server.url + "/down", retries=2, backoff_s=0)
    assert [p for p, _ in server.seen].count("/down") == 3
    with pytest.raises(BotError, match=r"/missing: HTTP 404"):
        fetch.http_get(server.url + "/missing", backoff_s=0)
    assert [p for p, _ in server.seen].count("/missing") == 1


def test_mbox_from_url_file_and_bad_scheme(server, tmp_path):
    server.add("/s.mbox", EXAMPLE_MBOX.read_bytes())
    assert fetch.load_mbox(server.url + "/s.mbox").data == EXAMPLE_MBOX.read_bytes()
    assert fetch.load_mbox(str(EXAMPLE_MBOX)).url is None
    with pytest.raises(BotError, match=r"absent\.mbox: cannot read mbox: No such file"):
        fetch.load_mbox(str(tmp_path / "absent.mbox"))
    with pytest.raises(BotError, match="only http and https"):
        fetch.load_mbox("file:///etc/passwd")


def _pr_json(server, number, title="selftests/bpf: example"):
    server.add("/repos/o/r", {"full_name": "o/r", "name": "r", "url": f"{server.url}/repos/o/r"})
    return {"number": number, "title": title, "state": "open",
            "url": f"{server.url}/repos/o/r/pulls/{number}",
            "html_url": f"{server.url}/o/r/pull/{number}", "patch_url": f"{server.url}/o/r/pull/{number}.patch"}


def test_pr_patch_through_pygithub_and_github_api_url(server, monkeypatch):
    server.add("/repos/o/r/pulls/7", _pr_json(server, 7))
    server.add("/o/r/pull/7.patch", EXAMPLE_MBOX.read_bytes(), headers={"Content-Type": "text/plain"})
    monkeypatch.setenv("GITHUB_API_URL", server.url)
    monkeypatch.setenv("GITHUB_TOKEN", "must-not-be-sent")
    got = fetch.pr_mbox("o/r#7")
    assert (got.subject, got.url) == ("selftests/bpf: example", f"{server.url}/o/r/pull/7")
    assert got.data == EXAMPLE_MBOX.read_bytes()
    assert all("Authorization" not in headers for _, headers in server.seen)


def test_pr_rebuilt_from_commits_applies(server, tmp_path):
    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD").strip()
    commits = []
    for name in ("t_a", "t_b"):
        sha = commit(repo, f"selftests/bpf: add {name}\n\nBody of {name}.", insert_test(simple_test(name)))
        diff = git(repo, "diff", f"{sha}~1", sha)
        patch = diff[diff.index("@@"):]
        commits.append({"sha": sha, "url": f"{server.url}/repos/o/r/commits/{sha}",
                        "commit": {"message": f"selftests/bpf: add {name}\n\nBody of {name}.",
                                   "author": {"name": "Ada Example", "email": "ada@example.org",
                                              "date": "2026-06-04T10:00:00Z"}},
                        "files": [{"filename": "tools/testing/selftests/bpf/progs/verifier_example.c",
                                   "status": "modified", "patch": patch, "sha": sha}]})
    server.add("/repos/o/r/pulls/8", _pr_json(server, 8))
    server.add("/repos/o/r/pulls/8/commits", [{k: v for k, v in c.items() if k != "files"} for c in commits])
    for c in commits:
        server.add(f"/repos/o/r/commits/{c['sha']}", c)
    got = fetch.pr_mbox("o/r#8", client=Github(base_url=server.url, retry=None, seconds_between_requests=0))
    s = parse_series(got.data, got.source, got.url)
    assert [p.subject for p in s.series.patches] == ["selftests/bpf: add t_a", "selftests/bpf: add t_b"]
    assert s.series.patches[0].author == "Ada Example <ada@example.org>"
    with applied_trees(repo, base, s.as_mbox(), 2) as trees:
        assert trees.outcome.applied
        assert git(trees.head_dir, "diff", "HEAD", commits[-1]["sha"]) == ""     # same tree as the PR


def test_pr_errors(server):
    gh = Github(base_url=server.url, retry=None, seconds_between_requests=0)
    with pytest.raises(BotError, match=r"o/r#9: GitHub: HTTP 404: Not Found"):
        fetch.pr_mbox("o/r#9", client=gh)
    with pytest.raises(BotError, match="expected OWNER/REPO#NUMBER"):
        fetch.pr_mbox("o/r/9", client=gh)


def _conflicting_tree(tmp_path):
    """A tree on which the bundled example series stops at patch 1/2, so no test runner is needed."""
    repo = make_repo(tmp_path / "repo")
    commit(repo, "upstream", lambda t: t.replace('char _license[] SEC("license") = "GPL";', ""))
    return str(repo)


def test_triage_cli_from_lore_and_pr(server, tmp_path, monkeypatch):
    tree = _conflicting_tree(tmp_path)
    server.add(f"/all/{MSGID}/t.mbox.gz", gzip.compress(EXAMPLE_MBOX.read_bytes()))
    out = tmp_path / "lore.json"
    assert main(["triage", "--msgid", MSGID, "--inbox-url", server.url, "--tree", tree, "--format", "json", "-o", str(out)]) == 1
    lore = json.loads(out.read_text())
    assert lore["series"]["url"] == f"{server.url}/all/{MSGID}/"
    assert lore["apply"]["failed_seq"] == 1 and EXAMPLE_TEST in lore["apply"]["reason"]
    server.add("/repos/o/r/pulls/3", _pr_json(server, 3, title="PR title wins"))
    server.add("/o/r/pull/3.patch", EXAMPLE_MBOX.read_bytes())
    monkeypatch.setenv("GITHUB_API_URL", server.url)
    assert main(["triage", "--pr", "o/r#3", "--tree", tree, "--format", "json", "-o", str(out)]) == 1
    assert json.loads(out.read_text())["series"]["subject"] == "PR title wins"


def test_triage_cli_from_patchwork_posts_checks(server, tmp_path, monkeypatch):
    tree = _conflicting_tree(tmp_path)
    server.add("/api/series/42/", {"received_all": True, "mbox": server.url + "/series/42/mbox/",
                                   "web_url": server.url + "/series/42/"})
    server.add("/series/42/mbox/", EXAMPLE_MBOX.read_bytes())
    msgids = parse_series(EXAMPLE_MBOX.read_bytes(), "x").series.patches
    for i, patch in enumerate(msgids, 100):
        server.add(f"/api/1.2/patches/?msgid={patch.msgid.replace('@', '%40')}", [{"id": i}])
        server.add(f"/api/1.2/patches/{i}/checks/?context=bpf-kasan&order=-date&per_page=1", [])
    monkeypatch.setenv("PATCHWORK_TOKEN", "pw-token")
    args = ["triage", "--patchwork-series", "42", "--patchwork-url", server.url, "--tree", tree,
            "--post-patchwork", "-o", str(tmp_path / "t.json")]
    assert main(args) == 1
    assert [p for p, _, _ in server.posted] == ["/api/1.2/patches/100/checks/", "/api/1.2/patches/101/checks/"]
    _, headers, body = server.posted[0]
    assert headers["Authorization"] == "Token pw-token"
    assert b"state=fail" in body and b"context=bpf-kasan" in body and b"does+not+apply+at+patch+1%2F2" in body
