"""Run the collected test files on several worker processes; results come back in collection order.

The unit of work is one test file (a `.data` test, or a selftest file with all its tests): the
worker imports it, runs its selected cases (faithful, what-if, exploration) and returns the list.
Workers are forked, so they inherit the registries (engines, file types) as the parent has them,
and each makes its engine once, in its initializer: one Unicorn machine per process, reused for
every test, never one per test. The parent creates no engine when it has workers.

Files are handed out largest first, so a big file does not start last and leave one core idle at
the end; a reorder buffer still yields them in collection order, so the output and the JSON do not
depend on `-j` (provided a test's outcome does not depend on what ran before it in its process,
which the emulated kernel's per-run reset is there to ensure).

Owns: the process pool and result ordering. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

import os
import pathlib
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Iterator

from checks import runner
from checks.errors import CheckError
from checks.results import TestResult


def default_jobs() -> int:
    """Every core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                              # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class FileResults:
    """The results of one collected file, in the order its tests were run."""
    path: str
    test_id: str
    results: list[TestResult]


def run_files(units, *, engine: str, options: runner.RunOptions, jobs: int = 1,
              engine_options: runner.EngineOptions | None = None) -> Iterator[FileResults]:
    """Yield the results of each of `units` (what `runner.collect` returns), in that order, using
    `jobs` processes."""
    if jobs <= 1 or len(units) <= 1:
        yield from _in_process(units, runner.make_engine(engine, engine_options), options)
    else:
        _check_engine(engine)
        yield from _in_pool(units, (engine, engine_options), options, jobs)


def _check_engine(name: str) -> None:
    """Refuse an unknown engine before any process starts (make_engine's message)."""
    if name not in runner.ENGINES and name not in runner.ENGINE_MODULES:
        runner.make_engine(name)


def _in_process(units, engine, options) -> Iterator[FileResults]:
    for path, test_id, file_type in units:
        yield FileResults(path, test_id, list(runner.run_file(path, test_id, file_type, engine,
                                                              options)))


# -- the pool ------------------------------------------------------------------------------------

_worker_engine = None                   # each worker process's engine, made once


def _start_worker(engine_name: str, engine_options: runner.EngineOptions | None) -> None:
    global _worker_engine
    _worker_engine = runner.make_engine(engine_name, engine_options)


def _run_unit(path: str, test_id: str, type_index: int, options: runner.RunOptions) -> list:
    file_type = runner.FILE_TYPES[type_index]
    return list(runner.run_file(path, test_id, file_type, _worker_engine, options))


def _size(path: str) -> int:
    try:
        return pathlib.Path(path).stat().st_size
    except OSError:
        return 0


def _in_pool(units, engine: tuple, options, jobs: int) -> Iterator[FileResults]:
    """`engine` is (name, EngineOptions) for the workers' initializer."""
    order = sorted(range(len(units)), key=lambda i: -_size(units[i][0]))      # largest first
    done: dict[int, list] = {}
    next_out = 0
    pool = ProcessPoolExecutor(min(jobs, len(units)), mp_context=get_context("fork"),
                               initializer=_start_worker, initargs=engine)
    try:
        pending = {pool.submit(_run_unit, units[i][0], units[i][1],
                               runner.FILE_TYPES.index(units[i][2]), options): i for i in order}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                done[pending.pop(future)] = future.result()
            while next_out in done:
                path, test_id, _ = units[next_out]
                yield FileResults(path, test_id, done.pop(next_out))
                next_out += 1
    except BrokenProcessPool:
        raise CheckError("a worker process died (killed, or crashed inside the emulator); "
                         "rerun with -j 1 to see which test") from None
    finally:                                # also when the consumer stops early (Ctrl-C)
        pool.shutdown(wait=True, cancel_futures=True)
