"""`bpf-kasan jit FILE`: print the JITed code of the programs in FILE, bpftool-style.

FILE is any test file the runner knows (conformance/uBPF `.data`, `verifier_*.c` selftests, ...). The listing links
against fixed dummy addresses, so it needs no machine; see `jit.dump`.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a test file (.data, verifier_*.c, ...)")
    parser.add_argument("--test", metavar="NAME", help="only the program with this name or id")
    parser.add_argument("--no-kasan", action="store_true", help="compile without KASAN checks")
    parser.add_argument("--kasan-mode", choices=("inline", "outline"), default="inline",
                        help="how checks are emitted (default: inline)")
    parser.add_argument("--budget", action="store_true",
                        help="show the instruction-budget counting on back-edges and calls")


def main(args: argparse.Namespace) -> int:
    from bot.errors import BotError
    from checks.report import prog_symbol
    from jit.dump import format_listing

    programs = _programs(args.file)
    if args.test:
        programs = [(name, p) for name, p in programs if args.test == name]
        if not programs:
            raise BotError(f"no program named {args.test!r}", file=args.file)
    kasan = "off" if args.no_kasan else args.kasan_mode
    listings = [format_listing(p, kasan=kasan, budget=args.budget, symbol_of=prog_symbol)
                for _, p in programs]
    print("\n".join(listings), end="")
    return 0


def _programs(path: str) -> list:
    """(name, Program) for every program of every test in `path`, through the runner's registry."""
    from checks.conformance import DataCase, build_program, parse_file
    from checks.runner import collect

    found = []
    for file, test_id, file_type in collect([path]):
        for case in file_type.cases(file, test_id):
            program = getattr(case, "program", None)
            if program is None:              # a selftest case carries its imported SelftestCase
                program = getattr(getattr(case, "case", None), "program", None)
            if program is None and isinstance(case, DataCase):
                program = build_program(parse_file(case.path))
            if program is not None:
                found.append((case.name, program))
    return found
