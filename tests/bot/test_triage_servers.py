"""`bpf-kasan triage` end to end with its sources and outlets on local servers: a lore thread and a
patchwork series in (urllib), patchwork checks out, a GitHub pull request in (pygithub, anonymous)
and its sticky comment and check run out (`bpf-kasan post`, pygithub with a token). Real `git am`,
the real runner, JIT and KASAN run in between; nothing leaves 127.0.0.1."""
from __future__ import annotations

import gzip
import urllib.parse

from _fake_github import FakeGitHub
from _fake_http import FakeServer, Reply
from _fake_patchwork import FakePatchwork
from _git_fixtures import EXAMPLE_MBOX, EXAMPLE_TEST, EXAMPLE_TREE
from bot import github_outlet as gh
from bot.cli import main
from bot.series import parse_series
from bot.triage_model import Triage

COVER = "cover.1795620830.git.ada@example.org"
PATCH_MSGIDS = [p.msgid for p in parse_series(EXAMPLE_MBOX.read_bytes(), "example").series.patches]
OOB_LOCATION = f"{EXAMPLE_TEST}:73"                 # the `r0 = *(u64*)(r0 + 8)` line after the series
PR_HEAD = "c0ffee" + "0" * 34


class FakeLore(FakeServer):
    """A public-inbox with one thread: `/all/<msgid>/t.mbox.gz` for the cover's Message-ID."""

    def __init__(self, mbox: bytes):
        super().__init__()
        self.route("GET", r"/all/(?P<msgid>[^/]+)/t\.mbox\.gz", lambda request, match: (
            Reply(200, gzip.compress(mbox), {"Content-Type": "application/gzip"})
            if urllib.parse.unquote(match["msgid"]) == COVER else Reply(404, {"message": "no such thread"})))


def triage(tmp_path, *argv) -> tuple[int, Triage]:
    out = tmp_path / "triage.json"
    code = main(["triage", *argv, "--tree", str(EXAMPLE_TREE), "--format", "json", "--output", str(out)])
    return code, Triage.from_json(out.read_text(), str(out))


def assert_new_oob_finding(result: Triage) -> None:
    (finding,) = result.findings_by_change("new")
    assert finding.title == "KASAN: slab-out-of-bounds Read in bpf_prog_ADDR_example_map_value_oob"
    assert finding.location == OOB_LOCATION and finding.size == 8


def test_a_lore_thread_by_message_id(tmp_path):
    with FakeLore(EXAMPLE_MBOX.read_bytes()) as lore:
        code, result = triage(tmp_path, "--msgid", f"<{COVER}>", "--inbox-url", lore.url)
    assert code == 1 and result.series.url == f"{lore.url}/all/{COVER}/"
    assert [r.path for r in lore.requests] == [f"/all/{COVER}/t.mbox.gz"]
    assert_new_oob_finding(result)


def test_a_patchwork_series_in_and_one_check_on_every_patch_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                     # no config here: the defaults (fail-on: new)
    with FakePatchwork() as patchwork:
        ids = patchwork.add_series(42, EXAMPLE_MBOX.read_bytes(), PATCH_MSGIDS)
        monkeypatch.setenv("PATCHWORK_TOKEN", patchwork.token)
        args = ("--patchwork-series", "42", "--patchwork-url", patchwork.url, "--post-patchwork")
        code, result = triage(tmp_path, *args)
        assert triage(tmp_path, *args)[0] == 1      # the same verdict again: nothing new to post
    assert code == 1
    assert_new_oob_finding(result)
    posts = patchwork.posted()
    assert [p.path for p in posts] == [f"/api/1.2/patches/{i}/checks/" for i in ids]
    assert posts[0].body == {"state": "fail", "context": "bpf-kasan",
                             "description": "bpf-kasan: 1 new, 0 fixed, 0 persisting",
                             "target_url": f"{patchwork.url}/project/bpf/list/?series=42"}


def test_a_pull_request_in_then_its_comment_and_check_run_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    with FakeGitHub(public=True) as github:
        github.add_pull(7, PR_HEAD, title="selftests/bpf: example", patch=EXAMPLE_MBOX.read_bytes())
        monkeypatch.setenv("GITHUB_API_URL", github.url)
        monkeypatch.setenv("GITHUB_TOKEN", "ghs_test")        # the triage half must not send it
        code, result = triage(tmp_path, "--pr", "o/r#7")
        reads = list(github.requests)
        assert main(["post", "--repo", "o/r", "--sha", PR_HEAD, str(tmp_path / "triage.json")]) == 0
    assert code == 1 and result.series.subject == "selftests/bpf: example"
    assert_new_oob_finding(result)
    assert reads and all("authorization" not in r.headers for r in reads)
    (comment,) = github.comments[7]
    assert comment["body"].startswith(gh.STICKY_MARKER + "\n### bpf-kasan: 1 new KASAN issue")
    assert f"at `{OOB_LOCATION}`" in comment["body"] and "<summary>new: KASAN: slab-out-of-bounds" in comment["body"]
    (run,) = github.check_runs.values()
    assert (run["conclusion"], run["head_sha"]) == ("failure", PR_HEAD)
    (note,) = run["annotations"]
    assert (note["path"], note["start_line"], note["annotation_level"]) == (EXAMPLE_TEST, 73, "failure")
    assert note["message"].startswith("new in verifier_example.c::example_map_value_oob, insn #8\n")
