"""Patchwork checks against a local fake of patchwork's REST API: every patch, no duplicates, no downgrade."""
from __future__ import annotations

import pytest

from _fake_http import Reply
from _fake_patchwork import FakePatchwork
from _triage_cases import SUMMARIES, load
from bot import cli
from bot import patchwork_outlet as pw
from bot.errors import BotError

LONG_URL = "https://github.com/o/r/actions/runs/123456789/job/987654321?pr=7&" + "x=1&" * 60 + "#step:5:12"


@pytest.fixture
def patchwork():
    with FakePatchwork() as server:
        for patch_id, patch in zip((101, 102, 103), load("mixed").series.patches):
            server.add_patch(patch_id, patch.msgid)
        yield server


def client(server, token="pw-token"):
    return pw.PatchworkClient(server.url, token)


def check(state="fail", url="https://ci.example/run/1", description="bpf-kasan: 1 new"):
    return pw.Check(state, "bpf-kasan", description, url)


def test_patches_are_found_by_message_id_in_series_order(patchwork):
    assert client(patchwork).patch_ids(load("mixed").series) == [101, 102, 103]
    assert patchwork.requests[0].query == {"msgid": "20261102.1-jdoe@example.org"}


def test_a_check_goes_to_every_patch_of_the_series(patchwork):
    outcome = pw.post_checks(client(patchwork), [101, 102, 103], check())
    assert outcome == {101: "post", 102: "post", 103: "post"}
    posts = patchwork.posted()
    assert [p.path for p in posts] == [f"/api/1.2/patches/{i}/checks/" for i in (101, 102, 103)]
    assert all(p.headers["authorization"] == "Token pw-token" for p in posts)
    assert posts[0].body == {"state": "fail", "context": "bpf-kasan", "description": "bpf-kasan: 1 new",
                             "target_url": "https://ci.example/run/1"}
    lookups = [r for r in patchwork.requests if r.method == "GET"]
    assert lookups[0].query == {"context": "bpf-kasan", "order": "-date", "per_page": "1"}


def test_an_identical_check_is_not_posted_again(patchwork):
    pw.post_checks(client(patchwork), [101, 102], check())
    assert pw.post_checks(client(patchwork), [101, 102], check()) == {101: "same", 102: "same"}
    assert len(patchwork.posted()) == 2
    assert pw.post_checks(client(patchwork), [101], check(url="https://ci.example/run/2")) == {101: "post"}


def test_a_conclusive_check_is_never_downgraded_to_pending(patchwork):
    pw.post_checks(client(patchwork), [101], check("success"))
    assert pw.post_checks(client(patchwork), [101], check("pending")) == {101: "kept"}
    assert [c["state"] for c in patchwork.checks[101]] == ["success"]


def test_pending_is_followed_by_a_result(patchwork):
    pw.post_checks(client(patchwork), [101], check("pending"))
    assert pw.post_checks(client(patchwork), [101], check("fail")) == {101: "post"}
    assert [c["state"] for c in patchwork.checks[101]] == ["pending", "fail"]


def test_only_our_context_counts(patchwork):
    patchwork.checks[101].append({"id": 1, "date": 0, "state": "success", "context": "other-ci",
                                  "description": "bpf-kasan: 1 new", "target_url": "https://ci.example/run/1"})
    assert pw.post_checks(client(patchwork), [101], check("pending")) == {101: "post"}


def test_a_long_target_url_is_cut_to_200_characters_and_accepted(patchwork):
    url = pw.fit_target_url(LONG_URL)
    assert len(url) <= pw.TARGET_URL_MAX and url.startswith("https://github.com/o/r/actions/runs/123456789")
    pw.post_checks(client(patchwork), [101], check(url=url))
    assert patchwork.checks[101][0]["target_url"] == url


@pytest.mark.parametrize("url, expected", [
    ("https://ci.example/run/1", "https://ci.example/run/1"),
    ("https://ci.example/run/1?x=1#" + "f" * 200, "https://ci.example/run/1?x=1"),
    ("https://ci.example/run/1?" + "q" * 200 + "#frag", "https://ci.example/run/1"),
    ("https://ci.example/" + "p" * 300, "https://ci.example/" + "p" * 181),
    (None, None), ("", None),
])
def test_fit_target_url(url, expected):
    assert pw.fit_target_url(url) == expected


def test_the_context_is_a_valid_slug():
    assert pw.context_slug("bpf-next/bpf-kasan x86_64 (llvm)") == "bpf-next_bpf-kasan_x86_64__llvm_"
    with pytest.raises(BotError, match="must match"):
        pw.Check("fail", "bad context", "d")
    with pytest.raises(BotError, match="unknown check state 'failure'"):
        pw.Check("failure", "ctx", "d")


@pytest.mark.parametrize("conclusion, state", [("success", "success"), ("neutral", "warning"),
                                               ("failure", "fail"), (None, "pending")])
def test_conclusions_map_to_patchwork_states(conclusion, state):
    assert pw.state_for(conclusion) == state


def test_an_unknown_message_id_is_an_error(patchwork):
    del patchwork.patches[102]
    with pytest.raises(BotError, match=r"expected one patch with Message-ID <20261102\.2-jdoe@example\.org>, found 0"):
        client(patchwork).patch_ids(load("mixed").series)


def test_a_patch_without_a_message_id_is_refused_before_any_request(patchwork):
    import dataclasses
    series = load("mixed").series
    series = dataclasses.replace(series, patches=(dataclasses.replace(series.patches[0], msgid=None),
                                                  *series.patches[1:]))
    with pytest.raises(BotError, match=r"patch 1/3 has no Message-ID, so it cannot be found on patchwork"):
        client(patchwork).patch_ids(series)
    assert patchwork.requests == []


def test_a_refusal_is_a_one_line_error(patchwork):
    with pytest.raises(BotError) as e:
        pw.post_checks(client(patchwork, token="wrong"), [101], check())
    assert str(e.value).startswith("patchwork: POST /api/1.2/patches/101/checks/: HTTP 403 ")
    patchwork.fail_next("GET", r"/api/1\.2/patches/101/checks", Reply(500, {"detail": "boom"}))
    with pytest.raises(BotError, match="HTTP 500"):
        pw.post_checks(client(patchwork), [101], check())


def test_posting_needs_a_token(patchwork):
    with pytest.raises(BotError, match="PATCHWORK_TOKEN is not set"):
        pw.post_checks(client(patchwork, token=None), [101], check())


def test_post_command_posts_the_verdict_to_every_patch(patchwork, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATCHWORK_TOKEN", "pw-token")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    args = ["post", "--patchwork", patchwork.url, "--target-url", LONG_URL, str(SUMMARIES / "mixed.json")]
    assert cli.main(args) == 0
    assert cli.main(args) == 0                     # a second run changes nothing
    posts = patchwork.posted()
    assert len(posts) == 3
    assert {p.body["state"] for p in posts} == {"fail"}
    assert posts[0].body["description"] == "bpf-kasan: 1 new, 1 fixed, 1 persisting"
    assert all(len(p.body["target_url"]) <= 200 for p in posts)
