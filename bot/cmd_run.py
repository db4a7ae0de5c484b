"""`bpf-kasan run PATH...`: run test files on an engine, one line per test, a closing summary line.

Exit status: 0 when nothing failed or errored, 1 otherwise, 2 for bad input. A single test file
named alone is treated like a compiler input: if it is malformed, the one-line error is printed and
the exit status is 2. In any other run a malformed file is an `error` result and the run goes on.
"""
from __future__ import annotations

import argparse
import pathlib
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="test files or directories (searched recursively)")
    parser.add_argument("--engine", default="interp",
                        help="execution engine (default: interp, the reference interpreter)")
    parser.add_argument("--insn-limit", type=_positive, default=1_000_000, metavar="N",
                        help="stop a program after N executed instructions (default: 1000000)")
    parser.add_argument("--json", metavar="FILE", help="write results JSON to FILE")
    parser.add_argument("-k", dest="pattern", metavar="PATTERN",
                        help="only run tests whose id contains PATTERN (case-insensitive)")


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _line(result) -> str:
    text = f"{result.status.upper():5} {result.id}"
    if result.status == "pass" and result.expect == "failure":
        matched = {True: "message matches", False: "message differs"}.get(result.error_match, "")
        text += f" (refused as expected{'; ' + matched if matched else ''})"
    elif result.reason:
        first, _, rest = result.reason.strip().partition("\n")
        text += f": {first}" + (" [more in --json]" if rest else "")    # one line per test
    return text


def main(args: argparse.Namespace) -> int:
    from checks.results import Summary, to_json
    from checks.runner import make_engine, run_tests

    engine = make_engine(args.engine)
    strict = len(args.paths) == 1 and pathlib.Path(args.paths[0]).is_file()
    results = []
    for result in run_tests(args.paths, engine=engine, insn_limit=args.insn_limit,
                            pattern=args.pattern, strict=strict):
        results.append(result)
        print(_line(result), flush=True)
    summary = Summary.of(results)
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
