"""`bpf-kasan run PATH...`: run test files on an engine, one line per test, a closing summary line.

Output: on a terminal, a progress bar with a line for each test that failed or errored; in CI
(`CI=true`) or into a pipe, one plain line per test. Then, for a selftest run, a table (tests,
imported, run, retval passes, failed, skipped by reason); with `--what-if`, how many memory-safety
rejections KASAN backs up; the error count when tests errored; and last, exactly
`N passed, N failed` (errors counted as failed), plus `, N skipped` when some were skipped.

Exit status: 0 when nothing failed or errored, 1 otherwise, 2 for bad input. A single test file
named alone is treated like a compiler input: if it is malformed, the one-line error is printed and
the exit status is 2. In any other run a malformed file is an `error` result and the run goes on.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="test files or directories (searched recursively)")
    parser.add_argument("--engine", default="jit",
                        help="execution engine: jit (default; the x86-64 JIT under Unicorn, with "
                             "KASAN) or interp (the reference interpreter)")
    parser.add_argument("--insn-limit", type=_positive, default=1_000_000, metavar="N",
                        help="stop a program after N executed instructions (default: 1000000)")
    parser.add_argument("--json", metavar="FILE", help="write results JSON to FILE")
    parser.add_argument("-k", dest="pattern", metavar="PATTERN",
                        help="only run tests whose id contains PATTERN (case-insensitive)")
    parser.add_argument("-j", "--jobs", type=_positive, default=None, metavar="N",
                        help="worker processes (default: one per core)")
    parser.add_argument("--shard", metavar="I/N",
                        help="run only part I of N (1 <= I <= N), split by a hash of the test id")
    parser.add_argument("--explore", type=_at_least_zero, default=None, metavar="N",
                        help="input variants run after each executed test (default: 4; 0: none)")
    parser.add_argument("--what-if", action="store_true",
                        help="also run tests the verifier must reject, as if it had accepted them")
    kasan = parser.add_mutually_exclusive_group()
    kasan.add_argument("--kasan-mode", choices=("inline", "outline"), default="inline",
                       help="how the JIT emits KASAN checks (default: inline)")
    kasan.add_argument("--no-kasan", action="store_true", help="run without KASAN checks")
    parser.add_argument("--multishot", action=argparse.BooleanOptionalAction, default=True,
                        help="keep every KASAN report (default: on); --no-multishot keeps only the "
                             "first of the whole invocation, as the kernel without kasan_multi_shot, "
                             "and so runs in one process")
    parser.add_argument("--no-compile", action="store_true",
                        help="never build a selftest's C-bodied tests with clang (they stay skipped: "
                             "'needs a compiler')")


def _positive(text: str) -> int:
    value = _integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _at_least_zero(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None


def _line(result) -> str:
    text = f"{result.status.upper():5} {result.id}"
    if result.status == "pass" and result.expect == "failure":
        matched = {True: "message matches", False: "message differs"}.get(result.error_match, "")
        text += f" (refused as expected{'; ' + matched if matched else ''})"
    elif result.reason:
        first, _, rest = result.reason.strip().partition("\n")
        text += f": {first}" + (" [more in --json]" if rest else "")    # one line per test
    if result.findings:
        count = len(result.findings)
        text += f" [{count} finding{'s' if count != 1 else ''}]"
    return text


def _interactive(stream) -> bool:
    """A progress bar only for a person at a terminal: never in CI or into a pipe or file."""
    ci = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
    return not ci and stream.isatty()


class Progress:
    """Per-test output: plain lines, or a bar redrawn after each file plus the failing tests."""
    WIDTH = 30

    def __init__(self, stream, files: int, *, bar: bool):
        self.stream, self.files, self.bar = stream, files, bar
        self.done = self.tests = self.bad = 0
        self.started = time.monotonic()

    def file_done(self, results) -> None:
        self.done += 1
        for result in results:
            self.tests += 1
            failing = result.status in ("fail", "error")
            self.bad += failing
            if not self.bar:
                print(_line(result), file=self.stream, flush=True)
            elif failing:
                self.stream.write("\r\x1b[K" + _line(result) + "\n")
        if self.bar:
            self._draw()

    def _draw(self) -> None:
        filled = self.WIDTH * self.done // max(self.files, 1)
        self.stream.write(f"\r\x1b[K[{'#' * filled}{'.' * (self.WIDTH - filled)}] "
                          f"{self.done}/{self.files} files, {self.tests} tests, {self.bad} failed, "
                          f"{time.monotonic() - self.started:.1f}s")
        self.stream.flush()

    def close(self) -> None:
        if self.bar:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def main(args: argparse.Namespace) -> int:
    from checks import parallel, runner
    from checks.kselftest.compile import NO_COMPILE_ENV

    if args.no_compile:                 # read where selftest files are loaded, in every worker
        os.environ[NO_COMPILE_ENV] = "1"
    # Without multishot only the first report since "boot" counts: one process keeps that order.
    jobs = 1 if not args.multishot else args.jobs or parallel.default_jobs()
    files = runner.collect(args.paths)
    progress = Progress(sys.stdout, len(files), bar=_interactive(sys.stdout))
    results = []
    try:
        for done in parallel.run_files(files, engine=args.engine, options=_run_options(args),
                                       jobs=jobs, engine_options=_engine_options(args)):
            results += done.results
            progress.file_done(done.results)
    finally:
        progress.close()
    return _close(results, args)


def _run_options(args):
    from checks.explore import DEFAULT_EXPLORE
    from checks.runner import RunOptions, Shard
    return RunOptions(insn_limit=args.insn_limit, pattern=args.pattern,
                      strict=len(args.paths) == 1 and pathlib.Path(args.paths[0]).is_file(),
                      explore=DEFAULT_EXPLORE if args.explore is None else args.explore,
                      what_if=args.what_if, shard=Shard.parse(args.shard) if args.shard else None)


def _engine_options(args):
    from checks.runner import EngineOptions
    return EngineOptions(kasan="off" if args.no_kasan else args.kasan_mode, multishot=args.multishot)


def _close(results, args) -> int:
    from checks.results import SUITE, SuiteTable, Summary, all_findings, to_json
    from checks.whatif import Backup

    summary = Summary.of(results, all_findings(results))
    selftests = [r for r in results if r.extra.get(SUITE) == "kselftest"]
    if selftests:
        print("\n".join(SuiteTable.of(selftests).lines()))
    if args.what_if:
        print("\n".join(Backup.of(results).lines()))
    if summary.findings:
        print(f"{summary.findings} KASAN finding{'s' if summary.findings != 1 else ''}")
    if summary.errors_line():
        print(summary.errors_line())
    print(summary.line())
    if args.json:
        _write(args.json, to_json(results))
    return 0 if summary.ok else 1


def _write(path: str, text: str) -> None:
    from checks.errors import CheckError
    try:
        pathlib.Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise CheckError(f"cannot write results: {e.strerror}", file=path) from None


if __name__ == "__main__":
    sys.exit("run through `bpf-kasan run`")
