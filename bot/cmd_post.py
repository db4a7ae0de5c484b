"""`bpf-kasan post`: publish a triage JSON (from an untrusted CI artifact) to its outlets.

GitHub (with --repo): the sticky PR comment, the check run and the job summary. Patchwork (with
--patchwork): one check on every patch of the series. Mail (with --reply FILE): an RFC 2822 reply
written to FILE. The results file is validated by `Triage.from_json` before anything is posted,
because in the workflow_run job it was produced by a stranger's pull request.

Environment: GITHUB_TOKEN, GITHUB_API_URL (GitHub Enterprise), GITHUB_STEP_SUMMARY, PATCHWORK_TOKEN,
and GITHUB_SERVER_URL / GITHUB_REPOSITORY / GITHUB_RUN_ID for the link to this run.
"""
from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="triage JSON (`bpf-kasan triage --json-output`); untrusted, validated first")
    gh = parser.add_argument_group("GitHub")
    gh.add_argument("--repo", metavar="OWNER/REPO", help="post the sticky comment and check run here")
    gh.add_argument("--pr", type=int, metavar="N", help="pull request number (checked against --sha)")
    gh.add_argument("--sha", metavar="SHA", help="head commit the results are for; finds the PR without --pr")
    gh.add_argument("--check-run", action=argparse.BooleanOptionalAction, default=True,
                    help="create a check run with annotations (default: yes)")
    gh.add_argument("--bot-login", default=os.environ.get("BPF_KASAN_BOT_LOGIN"),
                    help="login the token comments as (default: github-actions[bot])")
    pw = parser.add_argument_group("patchwork")
    pw.add_argument("--patchwork", metavar="URL", help="patchwork server; PATCHWORK_TOKEN authenticates")
    pw.add_argument("--patchwork-project", metavar="NAME", help="restrict the Message-ID lookup to a project")
    pw.add_argument("--context", default="bpf-kasan", help="patchwork check context (default: bpf-kasan)")
    parser.add_argument("--target-url", help="link for patchwork checks (default: this Actions run)")
    parser.add_argument("--reply", metavar="FILE", type=pathlib.Path, help="write a mail reply to FILE")
    parser.add_argument("--config", type=pathlib.Path, help="config file (default: .github/bpf-kasan.yml)")


def main(args: argparse.Namespace) -> int:
    from bot import summary
    from bot.config import load_config
    from bot.errors import BotError

    if not (args.repo or args.patchwork or args.reply or os.environ.get("GITHUB_STEP_SUMMARY")):
        raise BotError("nothing to post to: give --repo, --patchwork or --reply")
    if args.repo is None and (args.pr is not None or args.sha):
        raise BotError("--pr and --sha need --repo")
    triage = _load_results(args.results)
    config = load_config(args.config)
    triage, waivers = config.waive(triage, datetime.date.today())
    conclusion = config.conclusion(triage)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        _post_job_summary(os.environ["GITHUB_STEP_SUMMARY"], triage, waivers)
    if args.repo:
        _post_github(args, triage, waivers, conclusion)
    if args.patchwork:
        _post_patchwork(args, triage, waivers, conclusion)
    if args.reply:
        from bot import mail
        body = summary.render(triage, "text", waivers=waivers)
        mail.write_reply(args.reply, mail.reply_message(triage.series, body))
        print(f"bpf-kasan: mail reply written to {args.reply}", file=sys.stderr)
    return 0


def _load_results(path: str):
    """The artifact is untrusted: `from_json` refuses anything off-schema before we look at it."""
    from bot.errors import BotError
    from bot.triage_model import Triage
    try:
        data = pathlib.Path(path).read_bytes()
    except OSError as e:
        raise BotError(f"cannot read results: {e.strerror}", file=path) from None
    return Triage.from_json(data, source=path)


def _post_job_summary(path: str, triage, waivers) -> None:
    from bot import github_outlet, summary
    room = github_outlet.job_summary_room(path)
    github_outlet.append_job_summary(path, summary.render(triage, "markdown", limit=room, waivers=waivers))


def _post_github(args, triage, waivers, conclusion: str) -> None:
    from bot import github_outlet as gh
    from bot import summary
    client = gh.connect(os.environ.get("GITHUB_TOKEN"), os.environ.get("GITHUB_API_URL"))
    repo = gh.get_repo(client, args.repo)
    pull = gh.resolve_pull(repo, args.pr, args.sha)
    markdown = summary.render(triage, "markdown", limit=summary.COMMENT_LIMIT, waivers=waivers)
    action = gh.upsert_sticky_comment(pull, markdown, bot_login=args.bot_login or gh.DEFAULT_BOT_LOGIN)
    print(f"bpf-kasan: comment on #{pull.number} {action}", file=sys.stderr)
    if args.check_run:
        with gh.github_errors(f"head of #{pull.number}"):
            head_sha = args.sha or pull.head.sha
        output = gh.CheckOutput(conclusion, summary.headline(triage, waivers), markdown, gh.annotations(triage))
        gh.publish_check_run(repo, head_sha, output, details_url=_run_url())
        print(f"bpf-kasan: check run {conclusion} with {len(output.annotations)} annotations", file=sys.stderr)


def _post_patchwork(args, triage, waivers, conclusion: str) -> None:
    post_patchwork(args.patchwork, triage, waivers, conclusion, context=args.context,
                   project=args.patchwork_project, target_url=args.target_url or _run_url())


def post_patchwork(server: str, triage, waivers, conclusion: str, *, context: str = "bpf-kasan",
                   project: str | None = None, target_url: str | None = None) -> dict[int, str]:
    """KPD's way: one check (state from the conclusion, the headline as description) on every
    patch of the series; PATCHWORK_TOKEN authenticates. Returns what happened per patch."""
    from bot import patchwork_outlet as pw
    from bot import summary
    client = pw.PatchworkClient(server, os.environ.get("PATCHWORK_TOKEN"))
    check = pw.Check(pw.state_for(conclusion), pw.context_slug(context),
                     summary.headline(triage, waivers), pw.fit_target_url(target_url))
    outcome = pw.post_checks(client, client.patch_ids(triage.series, project), check)
    posted = sum(v == "post" for v in outcome.values())
    print(f"bpf-kasan: patchwork check {check.state} posted to {posted} of {len(outcome)} patches",
          file=sys.stderr)
    return outcome


def _run_url() -> str | None:
    server, repo, run = (os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    return f"{server}/{repo}/actions/runs/{run}" if server and repo and run else None
