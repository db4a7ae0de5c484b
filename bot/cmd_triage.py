"""`bpf-kasan triage`: fetch a patch series, apply it to a tree, run the selftests it touches on
base and head, and report what changed (new / fixed / persisting KASAN findings).

Source (exactly one): --mbox FILE|URL, --msgid ID [--inbox-url], --patchwork-series N
--patchwork-url URL, or --pr OWNER/REPO#N. --tree is a git repository, a `git bundle`, or a plain
directory (made into a scratch repository); --base defaults to the series' `base-commit:` when the
tree has it, else HEAD. Exit status: 1 when the config's verdict is failure (by default: the
series does not apply, or brings a new finding not on the ignore list), 0 otherwise, 2 for bad
input. Reads no GitHub token: this half runs untrusted programs.

Owns the orchestration (`triage_series`) and the thin adapter to `checks.runner` (`run_selected`),
which runs the selected tests of one tree in-process. Heavy imports happen inside functions.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from jit.errors import BpfKasanError

FORMATS = ("markdown", "text", "json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--mbox", metavar="FILE|URL", help="the series as an mbox (gzip accepted)")
    source.add_argument("--msgid", metavar="ID", help="a Message-ID of the thread on a public-inbox")
    source.add_argument("--patchwork-series", type=_at_least(1), metavar="N", help="a patchwork series id")
    source.add_argument("--pr", metavar="OWNER/REPO#N", help="a GitHub pull request (read anonymously)")
    parser.add_argument("--inbox-url", default="https://lore.kernel.org", metavar="URL",
                        help="public-inbox for --msgid (default: %(default)s)")
    parser.add_argument("--patchwork-url", metavar="URL", help="patchwork server (--patchwork-series, --post-patchwork)")
    parser.add_argument("--tree", required=True, metavar="DIR|BUNDLE",
                        help="kernel tree: a git repository, a git bundle, or a plain directory")
    parser.add_argument("--base", metavar="REV", help="base revision (default: base-commit: of the series, else HEAD)")
    parser.add_argument("--tests", action="append", metavar="GLOB",
                        help="test files to consider (repeatable; default: the config's, else "
                             "tools/testing/selftests/bpf/progs/*.c and **/verifier_*.c)")
    parser.add_argument("--config", metavar="FILE", help="bot config (default: .github/bpf-kasan.yml if present)")
    parser.add_argument("--all-in-file", action="store_true", help="run every test of a touched file")
    parser.add_argument("--explore", type=_at_least(0), metavar="N",
                        help="input variants per test (default: the config's); tests moved from "
                             "__failure to __success get more")
    parser.add_argument("--format", choices=FORMATS, default="markdown",
                        help="output format: markdown (what the PR comment and job summary show; the "
                             "default), text (the mail reply) or json (the triage artifact)")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the output here instead of stdout")
    parser.add_argument("--json-output", metavar="FILE", help="also write the triage JSON (the artifact) here")
    parser.add_argument("--reply", metavar="FILE", help="write a mail reply to the series (In-Reply-To the cover)")
    parser.add_argument("--post-patchwork", action="store_true",
                        help="post a check to every patch on --patchwork-url (token in PATCHWORK_TOKEN)")


def _at_least(minimum: int):
    """An argparse type: an integer no smaller than `minimum`."""
    def integer(text: str) -> int:
        value = int(text)                 # a ValueError becomes argparse's "invalid integer value"
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}: {text}")
        return value
    return integer


def main(args: argparse.Namespace) -> int:
    from bot.config import load_config
    from bot.errors import BotError
    from bot.series import parse_series

    if args.post_patchwork and not args.patchwork_url:      # before the run, not after it
        raise BotError("needs --patchwork-url", file="--post-patchwork")
    config = load_config(args.config)
    fetched = _fetch(args)
    parsed = parse_series(fetched.data, fetched.source, fetched.url)
    if fetched.subject:
        parsed = dataclasses.replace(parsed, series=dataclasses.replace(parsed.series, subject=fetched.subject))
    globs = tuple(args.tests) if args.tests else _globs(config)
    explore = config.explore if args.explore is None else args.explore
    triage = triage_series(parsed, args.tree, base=args.base, globs=globs, all_in_file=args.all_in_file,
                           explore=explore)
    # The artifact keeps every finding; the ignore list only shapes what people read and the verdict.
    waived, waivers = config.waive(triage, datetime.date.today())
    _emit(args, triage, waived, waivers)
    if args.post_patchwork:
        _post_patchwork(args, waived, waivers, config)
    return 1 if config.conclusion(waived) == "failure" else 0


def _fetch(args):
    from bot import fetch
    from bot.errors import BotError

    if args.mbox:
        return fetch.load_mbox(args.mbox)
    if args.msgid:
        return fetch.lore_mbox(args.msgid, args.inbox_url)
    if args.patchwork_series:
        if not args.patchwork_url:
            raise BotError("needs --patchwork-url", file="--patchwork-series")
        return fetch.patchwork_mbox(args.patchwork_series, args.patchwork_url)
    return fetch.pr_mbox(args.pr)


def _globs(config) -> tuple[str, ...]:
    from bot.selection import DEFAULT_GLOBS
    return config.tests if config.source != "<defaults>" else DEFAULT_GLOBS


def _emit(args, triage, waived, waivers) -> None:
    from bot import summary

    if args.format == "json":
        text = triage.to_json()
    else:       # Markdown goes to $GITHUB_STEP_SUMMARY in CI, where over 1 MiB the whole of it is lost
        limit = summary.JOB_SUMMARY_LIMIT if args.format == "markdown" else None
        text = summary.render(waived, args.format, limit=limit, waivers=waivers)
    if args.json_output:
        write_output(args.json_output, triage.to_json())
    if args.reply:
        from bot import mail
        body = summary.render(waived, "text", waivers=waivers)
        mail.write_reply(args.reply, mail.reply_message(waived.series, body))
    if args.output:
        write_output(args.output, text)
    else:
        sys.stdout.write(text)


def _post_patchwork(args, waived, waivers, config) -> None:
    from bot.cmd_post import post_patchwork
    post_patchwork(args.patchwork_url, waived, waivers, config.conclusion(waived), target_url=waived.series.url)


def write_output(path: str, content: str | bytes) -> None:
    from bot.errors import BotError
    try:
        if isinstance(content, bytes):
            Path(path).write_bytes(content)
        else:
            Path(path).write_text(content, encoding="utf-8")
    except OSError as e:
        raise BotError(f"cannot write: {e.strerror}", file=path) from None


# --- the pipeline: apply, select, run base and head, compare ---

def triage_series(parsed, tree: str | Path, *, base: str | None, globs, all_in_file: bool, explore: int):
    """The `Triage` of a parsed series on `tree`; the worktrees are gone when this returns."""
    from bot.apply import applied_trees, repository, resolve_base
    from bot.triage_model import Triage

    with repository(tree) as repo:
        base_rev = resolve_base(repo, base, parsed.series.base_commit)
        with applied_trees(repo, base_rev, parsed.as_mbox(), len(parsed.patches)) as trees:
            if not trees.outcome.applied:
                return Triage(parsed.series, trees.outcome, base_rev=base_rev)      # nothing to test
            return _compare_trees(parsed.series, trees, globs, all_in_file, explore)


def _compare_trees(series, trees, globs, all_in_file: bool, explore: int):
    from bot.compare import compare_findings, compare_tests, findings_of, harder, is_moved
    from bot.selection import functions_in, select_tests
    from bot.triage_model import Triage

    selection = select_tests(trees.head_dir, trees.base_rev, trees.head_rev, globs, all_in_file)
    outcome = dict(series=series, apply=trees.outcome, base_rev=trees.base_rev, head_rev=trees.head_rev)
    if not selection.tests:
        return Triage(**outcome, notes=(_nothing_selected(selection),))
    base_tests = [t for rel in selection.files for t in functions_in(trees.base_dir / rel, rel)]
    base_expect = {(t.file, t.name): t.expect for t in base_tests}
    # The verifier now accepts what it used to reject: the likeliest place for a new bug, so those
    # tests get more input variants.
    depth = {(t.file, t.name): harder(explore) if is_moved(t, base_expect) else explore
             for t in selection.tests}
    engine = _engine()
    head = run_selected(trees.head_dir, selection.tests, engine=engine, explore=depth)
    wanted = [t for t in base_tests if (t.file, t.name) in depth]
    base_run = run_selected(trees.base_dir, wanted, engine=engine, explore=depth)
    findings = compare_findings(findings_of(base_run.results, "base results"),
                                findings_of(head.results, "head results"))
    tests = compare_tests(selection.tests, base_tests, base_run.results, head.results, head.variants)
    return Triage(**outcome, tests=tests, findings=findings, notes=tuple(unhealthy(tests, findings)))


def _nothing_selected(selection) -> str:
    if selection.files:
        return f"no test function changed in {len(selection.files)} touched selftest file(s); try --all-in-file"
    return "no selftest touched by this series"


def unhealthy(tests, findings) -> list[str]:
    """Notes on head tests that say nothing about memory safety but a maintainer wants to know of:
    each one that could not be run or failed without a KASAN finding to explain it, and the ones
    not run, one note per reason."""
    explained = {f.test for f in findings if f.change != "fixed"}
    notes, skipped = [], {}
    for t in tests:
        reason = (t.head_reason or "no reason given").splitlines()[0]
        if t.head_status == "error" or (t.head_status == "fail" and t.test_id not in explained):
            verb = "could not be run" if t.head_status == "error" else "fails"
            notes.append(f"{t.test_id} {verb} on head: {reason}")
        elif t.head_status == "skip":
            skipped.setdefault(reason, []).append(t.function)
    for reason, names in skipped.items():
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        notes.append(f"not run ({reason}): {shown}")
    return notes


def _engine():
    """The JIT under Unicorn with KASAN (inline checks, every report kept), as `bpf-kasan run` makes it."""
    from checks.runner import EngineOptions, make_engine
    return make_engine("jit", EngineOptions())


@dataclass
class TreeRun:
    """The runner's results for one tree (checks.results schema) and the variants each test ran."""
    results: dict = field(default_factory=lambda: {"tests": [], "findings": [], "summary": {}})
    variants: dict = field(default_factory=dict)


def run_selected(tree: Path, tests, *, engine, explore: Mapping[tuple[str, str], int]) -> TreeRun:
    """Run exactly the selected tests of `tree` through `checks.runner`, each test with its own
    number of input variants (`explore[(file, name)]`), and keep their rows and findings."""
    from checks.runner import FILE_TYPES, RunOptions, run_case

    run = TreeRun()
    for rel in dict.fromkeys(t.file for t in tests):
        path = tree / rel
        selected = {t.name: t for t in tests if t.file == rel}
        selected |= {t.description: t for t in selected.values() if t.description}
        kind = next((k for k in FILE_TYPES if k.claims(path)), None)
        if kind is None:               # e.g. a test_progs program: not a format the runner knows
            _keep_unrun(run, rel, selected.values(), "skip", "not in a test format bpf-kasan runs")
            continue
        try:
            cases = kind.cases(str(path), path.name)
        except BpfKasanError as e:     # the series made the file unreadable: its tests are errors
            _keep_unrun(run, rel, selected.values(), "error", _without_tree(str(e), tree))
            continue
        for case in cases:
            test = selected.get(case.name)
            if test is not None:
                options = RunOptions(explore=explore.get((rel, test.name), 0))
                _keep(run, tree, rel, test, run_case(case, engine, options))
    return run


def _keep(run: TreeRun, tree: Path, rel: str, test, result) -> None:
    from checks.explore import EXPLORED
    row = _relative(result.to_dict(), tree, "reason") | {"file": rel, "name": test.name}
    run.results["tests"].append(row)
    run.results["findings"].extend(_relative(f, tree, "file", "report") for f in result.finding_records)
    run.variants[(rel, test.name)] = result.extra.get(EXPLORED, {}).get("variants", 0)


def _keep_unrun(run: TreeRun, rel: str, tests, status: str, reason: str) -> None:
    for test in dict.fromkeys(tests):
        run.results["tests"].append({"id": f"{rel}::{test.name}", "file": rel, "name": test.name,
                                     "status": status, "reason": reason})


def _relative(record: dict, tree: Path, *keys: str) -> dict:
    """Worktree paths differ between base and head and vanish afterwards: name files relative to the tree."""
    return record | {k: _without_tree(record[k], tree) for k in keys if isinstance(record.get(k), str)}


def _without_tree(text: str, tree: Path) -> str:
    return text.replace(f"{tree}/", "")
