"""What the compiled selftest route costs: the kernel 6.12 suite run as CI scores it
(`bpf-kasan run PROGS --json R.json`, a fresh process, every core), with the object cache cold
(an empty cache directory: every file that needs it is compiled, and vmlinux.h and
bpf_helper_defs.h generated), then warm (the same cache again), then with `--no-compile`.
Target: 30 s wall or less on 2 cores, cold included.

Run: python benchmarks/kselftest_compile.py [PROGS_DIR] [-j N]
Prints, for each of the three runs, the wall time and shared/tools/kernel-suite-score's line;
then the ratios cold/no-compile and warm/no-compile, measured in this one run.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from checks import parallel  # noqa: E402
from checks.kselftest.compile import CACHE_ENV  # noqa: E402
from kselftest_import import progs_dir  # noqa: E402
from suite import score  # noqa: E402


def wall_of(progs: pathlib.Path, out: pathlib.Path, jobs: int, cache: pathlib.Path, *extra: str) -> float:
    """Wall seconds of `bpf-kasan run` in a fresh process, object cache at `cache`."""
    command = [sys.executable, "-m", "bot.cli", "run", str(progs), "-j", str(jobs), "--json", str(out),
               *extra]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=HERE.parent,
                          env={**os.environ, CACHE_ENV: str(cache)})
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        sys.exit(f"bpf-kasan run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("progs", nargs="?")
    parser.add_argument("-j", "--jobs", type=int, default=parallel.default_jobs())
    args = parser.parse_args()
    progs = progs_dir(args.progs)
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache, out = pathlib.Path(tmp, "elf-cache"), pathlib.Path(tmp, "results.json")
        for label, extra in (("cold cache", ()), ("warm cache", ()), ("--no-compile", ("--no-compile",))):
            walls[label] = wall_of(progs, out, args.jobs, cache, *extra)
            print(f"{label:13} wall {walls[label]:6.2f} s with -j {args.jobs}")
            score(out, progs, walls[label])
    base = walls["--no-compile"]
    print(f"cold / no-compile: {walls['cold cache'] / base:.2f}x; warm / no-compile: "
          f"{walls['warm cache'] / base:.2f}x (target: cold <= 30 s on 2 cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
