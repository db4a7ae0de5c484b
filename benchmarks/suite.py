"""The full kernel 6.12 verifier selftest suite: faithful runs + default exploration + what-if, on
every core. Target: 30 s wall or less on 2 cores.

Run: python benchmarks/suite.py [PROGS_DIR] [-j N] [--engine E] [--no-phases] [--profile]
PROGS_DIR defaults to $BPF_KASAN_KERNEL_SELFTESTS/progs, else what shared/tools/kernel-selftests
prints. Prints:
 1. wall time of `bpf-kasan run PROGS --what-if -j N --json` in a fresh process, start-up included
    (what CI pays), and its score from shared/tools/kernel-suite-score;
 2. per phase, in this process on one core (unless --no-phases): import, faithful runs, default
    exploration, what-if; each phase is the difference between two runs that differ only in it;
 3. the cost of making the engine (once per worker) and the mean cost per executed run;
 4. with --profile: the functions with the most own time over a one-core full run.
Wall figures on this VM drift between runs (unicorn-perf.md); compare phases within one run only.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pathlib
import pstats
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from checks import parallel, runner  # noqa: E402
from checks.explore import DEFAULT_EXPLORE  # noqa: E402
from checks.kselftest import load_cases, uapi  # noqa: E402

sys.path.insert(0, str(HERE))
from kselftest_import import progs_dir  # noqa: E402

SCORE = HERE.parents[1] / "shared" / "tools" / "kernel-suite-score"
TARGET_S = 30.0


def cli_run(progs: pathlib.Path, jobs: int, engine: str, out: pathlib.Path) -> float:
    """Wall seconds of the whole command in a fresh process."""
    command = [sys.executable, "-m", "bot.cli", "run", str(progs), "--what-if", "-j", str(jobs),
               "--engine", engine, "--json", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=HERE.parent)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        sys.exit(f"bpf-kasan run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    print("\n".join(proc.stdout.splitlines()[-16:]))
    return wall


def score(out: pathlib.Path, progs: pathlib.Path, wall: float) -> None:
    if SCORE.exists():
        proc = subprocess.run([str(SCORE), str(out), str(progs), f"{wall:.2f}"],
                              capture_output=True, text=True)
        print(f"score: {proc.stdout.strip() or proc.stderr.strip()}")


def timed_run(units, engine: str, options: runner.RunOptions) -> tuple[float, list]:
    """One run in this process (the engine is made again: a few ms, see `phases`)."""
    start = time.perf_counter()
    results = [r for done in parallel.run_files(units, engine=engine, options=options, jobs=1,
                                                engine_options=runner.EngineOptions())
               for r in done.results]
    return time.perf_counter() - start, results


def phases(progs: pathlib.Path, engine_name: str) -> None:
    files = sorted(progs.glob("verifier_*.c"))
    uapi._from_tree.cache_clear()
    start = time.perf_counter()
    cases = [c for f in files for c in load_cases(f)]
    imported = time.perf_counter() - start
    start = time.perf_counter()
    runner.make_engine(engine_name, runner.EngineOptions())
    made = time.perf_counter() - start
    units = runner.collect([str(progs)])
    faithful, results = timed_run(units, engine_name, runner.RunOptions(explore=0))
    explored, _ = timed_run(units, engine_name, runner.RunOptions(explore=DEFAULT_EXPLORE))
    full, _ = timed_run(units, engine_name, runner.RunOptions(explore=DEFAULT_EXPLORE, what_if=True))
    executed = sum(1 for r in results if r.executed)
    print(f"phases on one core ({len(files)} files, {len(cases)} programs, {executed} executed):")
    print(f"  import (cold)            {imported:7.2f} s")
    print(f"  faithful runs            {faithful - imported:7.2f} s  (whole run {faithful:.2f} s)")
    print(f"  exploration (N={DEFAULT_EXPLORE})      {explored - faithful:7.2f} s")
    print(f"  what-if                  {full - explored:7.2f} s")
    print(f"  all phases, one core     {full:7.2f} s")
    print(f"engine made once per worker: {made * 1e3:.1f} ms; "
          f"mean per executed test (faithful): {(faithful - imported) / max(executed, 1) * 1e3:.2f} ms")


def profile(progs: pathlib.Path, engine_name: str, top: int = 25) -> None:
    units = runner.collect([str(progs)])
    profiler = cProfile.Profile()
    profiler.enable()
    timed_run(units, engine_name, runner.RunOptions(explore=DEFAULT_EXPLORE, what_if=True))
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    print(text.getvalue())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("progs", nargs="?")
    parser.add_argument("-j", "--jobs", type=int, default=parallel.default_jobs())
    parser.add_argument("--engine", default="jit")
    parser.add_argument("--no-phases", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    progs = progs_dir(args.progs)
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp, "results.json")
        wall = cli_run(progs, args.jobs, args.engine, out)
        print(f"wall: {wall:.2f} s with -j {args.jobs} (target <= {TARGET_S:.0f} s on 2 cores)")
        score(out, progs, wall)
    if not args.no_phases:
        phases(progs, args.engine)
    if args.profile:
        profile(progs, args.engine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
