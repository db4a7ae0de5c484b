"""The GitHub outlet through real pygithub against a local fake of GitHub's REST API."""
from __future__ import annotations

import json

import pytest
from github import GithubRetry

from _fake_github import COMMENT_MAX, FakeGitHub
from _fake_http import Reply
from _triage_cases import SUMMARIES, huge, load
from bot import cli, github_outlet as gh, summary
from bot.errors import BotError

SHA = "a0b1c2d3e4f5a6b7" + "0" * 24
OTHER_SHA = "f" * 40


@pytest.fixture
def github():
    with FakeGitHub() as server:
        server.add_pull(7, SHA)
        yield server


def client(server, **kw):
    return gh.connect("ghs_test", server.url, retry=kw.pop("retry", None), seconds_between_requests=0,
                      seconds_between_writes=0, **kw)


def pull(server, number=7, sha=SHA):
    return gh.resolve_pull(gh.get_repo(client(server), "o/r"), number, sha)


def test_posting_twice_leaves_one_comment_edited_in_place(github):
    pr = pull(github)
    assert gh.upsert_sticky_comment(pr, "first") == "created"
    assert gh.upsert_sticky_comment(pr, "second") == "edited"
    assert gh.upsert_sticky_comment(pr, "second") == "unchanged"
    ours = [c for c in github.comments[7] if gh.STICKY_MARKER in c["body"]]
    assert len(ours) == 1 and ours[0]["body"] == f"{gh.STICKY_MARKER}\nsecond"
    assert [r.method for r in github.writes()] == ["POST", "PATCH"]


def test_a_marker_pasted_by_someone_else_is_not_our_comment(github):
    github.add_comment(7, "looks fine to me", "alice")
    forged = github.add_comment(7, f"{gh.STICKY_MARKER}\nall clean!", "mallory")
    assert gh.upsert_sticky_comment(pull(github), "real results") == "created"
    assert forged["body"] == f"{gh.STICKY_MARKER}\nall clean!"
    assert github.comments[7][-1]["user"]["login"] == gh.DEFAULT_BOT_LOGIN


def test_the_sticky_comment_is_found_on_a_later_page(github):
    for i in range(45):                           # pygithub's default page is 30 comments
        github.add_comment(7, f"comment {i}", "alice")
    github.add_comment(7, f"{gh.STICKY_MARKER}\nold", gh.DEFAULT_BOT_LOGIN)
    assert gh.upsert_sticky_comment(pull(github), "new") == "edited"
    assert any("page=2" in f"{r.path}?{r.query}" or r.query.get("page") == "2" for r in github.requests)


def test_a_huge_triage_still_makes_a_comment_github_accepts(github):
    markdown = summary.render(huge(400), "markdown", limit=summary.COMMENT_LIMIT)
    assert gh.upsert_sticky_comment(pull(github), markdown) == "created"
    body = github.comments[7][-1]["body"]
    assert len(body) <= COMMENT_MAX and "more findings omitted; see the artifact." in body


def test_120_annotations_go_in_3_batches_of_at_most_50(github):
    repo = gh.get_repo(client(github), "o/r")
    notes = tuple({"path": "progs/t.c", "start_line": i, "end_line": i, "annotation_level": "warning",
                   "message": f"m{i}"} for i in range(1, 121))
    gh.publish_check_run(repo, SHA, gh.CheckOutput("failure", "t", "s", notes))
    create, *edits = github.writes(pattern=r".*/check-runs.*")
    assert create.method == "POST" and create.json()["status"] == "in_progress" and create.json()["head_sha"] == SHA
    sizes = [len(e.json()["output"]["annotations"]) for e in edits]
    assert sizes == [50, 50, 20]
    assert [e.json().get("status") for e in edits] == [None, None, "completed"]
    assert edits[-1].json()["conclusion"] == "failure"
    (run,) = github.check_runs.values()
    assert [a["message"] for a in run["annotations"]] == [f"m{i}" for i in range(1, 121)]


def test_a_check_run_without_annotations_completes_in_one_edit(github):
    gh.publish_check_run(gh.get_repo(client(github), "o/r"), SHA, gh.CheckOutput("success", "t", "s"))
    assert [r.method for r in github.writes()] == ["POST", "PATCH"]
    (run,) = github.check_runs.values()
    assert (run["status"], run["conclusion"]) == ("completed", "success")


def test_annotations_sit_at_the_bpf_source_line_with_a_level_per_change():
    notes = gh.annotations(load("mixed"))
    assert [(n["path"], n["start_line"], n["annotation_level"]) for n in notes] == [
        ("progs/verifier_map_value.c", 49, "failure"),   # f1 and f2 share title and line: one annotation
        ("progs/verifier_map_value.c", 61, "failure"),
        ("progs/verifier_spill.c", 33, "warning"),
        ("progs/verifier_ringbuf.c", 20, "notice")]
    assert notes[0]["title"] == "KASAN: slab-out-of-bounds Read in bpf_prog_ADDR_narrow_load"
    assert notes[0]["message"].startswith("new in verifier_map_value/narrow_load, insn #7\n====")


def test_an_unattributed_finding_is_annotated_without_an_instruction():
    import dataclasses
    triage = load("mixed")
    unplaced = dataclasses.replace(triage.findings[0], insn=None)
    (note,) = gh.annotations(dataclasses.replace(triage, findings=(unplaced,)))
    assert note["message"].startswith("new in verifier_map_value/narrow_load\n====")
    assert "None" not in note["message"]


def test_the_pr_is_found_by_head_sha_across_pages(github):
    for n in range(100, 140):
        github.add_pull(n, f"{n:040x}")
    github.add_pull(99, OTHER_SHA, state="closed")
    assert pull(github, None, SHA).number == 7


@pytest.mark.parametrize("number, sha, message", [
    (7, OTHER_SHA, f"pull request #7 has head {SHA}, not {OTHER_SHA}: the results are for another commit"),
    (None, OTHER_SHA, f"expected exactly one open pull request with head {OTHER_SHA}, found none"),
    (None, None, "give --pr, or --sha to find the pull request by its head commit"),
    (8, None, "GitHub: pull request #8: 404 Not Found"),
])
def test_a_pr_that_does_not_match_is_refused(github, number, sha, message):
    with pytest.raises(BotError) as e:
        pull(github, number, sha).head.sha
    assert str(e.value) == message


def test_github_errors_become_one_line_bot_errors(github):
    github.fail_next("POST", r"/repos/o/r/issues/7/comments",
                     Reply(403, {"message": "Resource not accessible by integration"}))
    with pytest.raises(BotError) as e:
        gh.upsert_sticky_comment(pull(github), "x")
    assert str(e.value) == "GitHub: comment on #7: 403 Resource not accessible by integration"


def test_a_bad_token_is_reported(github):
    repo = gh.get_repo(gh.connect("wrong", github.url, retry=None, seconds_between_requests=0), "o/r")
    with pytest.raises(BotError, match=r"^GitHub: pull request #7: 401 Bad credentials$"):
        gh.resolve_pull(repo, 7, SHA)


def test_a_server_error_is_retried(github):
    github.fail_next("GET", r"/repos/o/r/pulls/7", Reply(502, {"message": "Bad Gateway"}))
    retry = GithubRetry(total=2, backoff_factor=0)
    repo = gh.get_repo(client(github, retry=retry), "o/r")
    assert gh.resolve_pull(repo, 7, SHA).number == 7
    assert [r.path for r in github.requests].count("/repos/o/r/pulls/7") == 2


def test_no_token_no_client():
    with pytest.raises(BotError, match="GITHUB_TOKEN is not set"):
        gh.connect(None)


def test_the_job_summary_is_appended_within_what_is_left_of_one_mib(tmp_path):
    path = tmp_path / "summary.md"
    path.write_text("earlier step\n" + "x" * (gh.JOB_SUMMARY_MAX - 40_000))
    room = gh.job_summary_room(path)
    assert 30_000 < room < 40_000
    gh.append_job_summary(path, summary.render(huge(50), "markdown", limit=room))
    assert path.stat().st_size <= gh.JOB_SUMMARY_MAX and path.read_text().startswith("earlier step\n")
    assert gh.job_summary_room(tmp_path / "absent.md") == gh.JOB_SUMMARY_MAX - 1024


# --- `bpf-kasan post` end to end ---

def post(monkeypatch, server, *args, token="ghs_test"):
    monkeypatch.setenv("GITHUB_TOKEN", token)
    monkeypatch.setenv("GITHUB_API_URL", server.url)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    return cli.main(["post", *args])


def test_post_comments_checks_and_writes_the_job_summary(github, monkeypatch, tmp_path, capsys):
    results = str(SUMMARIES / "mixed.json")
    monkeypatch.chdir(tmp_path)                   # no config file here: defaults (fail-on: new)
    assert post(monkeypatch, github, "--repo", "o/r", "--sha", SHA, results) == 0
    step_summary = tmp_path / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    assert cli.main(["post", "--repo", "o/r", "--pr", "7", "--sha", SHA, "--no-check-run", results]) == 0
    ours = [c for c in github.comments[7] if c["body"].startswith(gh.STICKY_MARKER)]
    assert len(ours) == 1 and "### bpf-kasan: 1 new KASAN issue" in ours[0]["body"]
    (run,) = github.check_runs.values()
    assert (run["conclusion"], run["output"]["title"]) == ("failure", "bpf-kasan: 1 new, 1 fixed, 1 persisting")
    assert len(run["annotations"]) == 4
    assert step_summary.read_text().startswith("### bpf-kasan: 1 new KASAN issue")
    assert "comment on #7 created" in capsys.readouterr().err


def test_post_refuses_a_forged_artifact_before_touching_github(github, monkeypatch, tmp_path, capsys):
    forged = json.loads((SUMMARIES / "mixed.json").read_text())
    forged["summary"]["new"] = 0                  # claims to be clean
    path = tmp_path / "triage.json"
    path.write_text(json.dumps(forged))
    assert post(monkeypatch, github, "--repo", "o/r", "--sha", SHA, str(path)) == 2
    assert capsys.readouterr().err == (f"bpf-kasan: error: {path}: triage JSON: 'summary' does not match "
                                       "the findings and tests\n")
    assert github.requests == []


def test_post_without_a_token_is_a_one_line_error(github, monkeypatch, capsys):
    assert post(monkeypatch, github, "--repo", "o/r", "--pr", "7", str(SUMMARIES / "clean.json"), token="") == 2
    assert capsys.readouterr().err == ("bpf-kasan: error: GITHUB_TOKEN is not set: posting to GitHub "
                                       "needs a token\n")
