"""Import speed of the kernel's verifier_*.c selftests (target: all files in < 3 s), and what
happened to every test: imported, skipped (with the reason), or refused (malformed).

Run: python benchmarks/kselftest_import.py [PROGS_DIR] [--rounds R]
PROGS_DIR defaults to $BPF_KASAN_KERNEL_SELFTESTS/progs, else what shared/tools/kernel-selftests
prints. Each round starts cold (the UAPI header is parsed again); nothing is cached on disk.
"""
from __future__ import annotations

import argparse
import collections
import os
import pathlib
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from checks.kselftest import load_cases, uapi  # noqa: E402


def progs_dir(arg: str | None) -> pathlib.Path:
    if arg:
        return pathlib.Path(arg)
    env = os.environ.get("BPF_KASAN_KERNEL_SELFTESTS")
    if env:
        return pathlib.Path(env, "progs")
    tool = pathlib.Path(__file__).resolve().parents[2] / "shared" / "tools" / "kernel-selftests"
    out = subprocess.run([str(tool)], capture_output=True, text=True, check=True)
    return pathlib.Path(out.stdout.strip(), "progs")


def import_all(files: list[pathlib.Path]) -> tuple[float, list]:
    uapi._from_tree.cache_clear()
    start = time.perf_counter()
    cases = [case for f in files for case in load_cases(f)]
    return time.perf_counter() - start, cases


def outcome(case) -> str:
    if case.error is not None:
        return f"error: {case.error.message}"
    if case.skip_reason is not None:
        # One row per kind of reason, not per kfunc or callee name.
        return re.sub(r"(calls kfunc|calls C function) [\w.]+", r"\1 NAME", case.skip_reason)
    return "imported"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("progs", nargs="?")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    files = sorted(progs_dir(args.progs).glob("verifier_*.c"))
    times, cases = [], []
    for _ in range(args.rounds):
        seconds, cases = import_all(files)
        times.append(seconds)
    tests = [c for c in cases if not c.auxiliary]
    naked = [c for c in tests if c.naked]
    print(f"{len(files)} files, {len(cases)} programs: {len(tests)} tests + {len(cases) - len(tests)} "
          f"auxiliary; {len(naked)} naked tests")
    print(f"import time over {args.rounds} cold rounds: median {statistics.median(times):.2f} s, "
          f"max {max(times):.2f} s (target < 3 s)")
    print("\nWhat happened to each naked test:")
    table = collections.Counter(outcome(c) for c in naked)
    for reason, count in table.most_common():
        print(f"  {count:5}  {reason}")
    print("\nWhat happened to the other (C-bodied) tests:")
    for reason, count in collections.Counter(outcome(c) for c in tests if not c.naked).most_common():
        print(f"  {count:5}  {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
