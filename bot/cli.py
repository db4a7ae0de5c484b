"""`bpf-kasan <command>`: the only place that prints errors and chooses exit codes.

Each command lives in its own module `bot.cmd_<name>` with `add_arguments(parser)` and
`main(args) -> int`; heavy imports happen inside `main`, so start-up stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from jit.errors import BpfKasanError

COMMANDS = {
    "run": "run test programs (conformance .data, verifier_*.c, ELF) with KASAN",
    "jit": "print the JITed image of a program, bpftool-style",
    "triage": "fetch a patch series, apply it, run the tests it touches, summarise",
    "post": "post results to a GitHub pull request (sticky comment, check run, job summary)",
    "merge": "combine shard results JSON files into one",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bpf-kasan", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        try:
            module = importlib.import_module(f"bot.cmd_{name}")
        except ModuleNotFoundError as e:
            if e.name != f"bot.cmd_{name}":
                raise
            continue                      # a command not built yet is simply not offered
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args._module.main(args)
    except BpfKasanError as e:
        print(f"bpf-kasan: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bpf-kasan: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
