"""KASAN overhead of the JIT under Unicorn, instrumented against uninstrumented, in one run.

Run: python benchmarks/kasan.py [--rounds R] [--iterations N]
The program is a memory-heavy loop over a map value: ten BPF instructions a trip, two of them
checked accesses (a load and a store through a map-value pointer), N trips. It runs on three
`Kernel`s sharing one machine (KASAN off, inline, outline) and prints each wall time and the
ratios to "off" (target: inline <= 2.5x; outline is printed for comparison). Figures are
medians of R rounds; only ratios measured in the same run are comparable (unicorn-perf.md).
"""
from __future__ import annotations

import argparse
import statistics
import time

from checks.kernel import Kernel
from checks.machine import shared_machine
from jit import isa
from jit.llvm_asm import assemble
from jit.program import MapDef, Program

INLINE_TARGET = 2.5
LOOP = """
        r1 = 0
        *(u32 *)(r10 - 4) = r1
        r2 = r10
        r2 += -4
        r1 = values ll
        call 1
        if r0 == 0 goto out
        r6 = r0
        r7 = {n}
    loop:
        r1 = *(u64 *)(r6 + 0)
        r1 += r7
        r2 = r1
        r2 ^= 0x55
        r2 &= 0xff
        *(u64 *)(r6 + 8) = r2
        r3 = r2
        r3 <<= 1
        r7 -= 1
        if r7 != 0 goto loop
        r0 = *(u64 *)(r6 + 8)
    out:
        exit
"""


def loop_program(n: int) -> Program:
    asm = assemble(LOOP.format(n=n), resolve=lambda name: (isa.PSEUDO_MAP_FD, 0))
    return Program("kasan_bench", tuple(asm.insns), (MapDef("values", "array", 4, 16, 1),))


def median_run(kernel: Kernel, program: Program, rounds: int, limit: int) -> tuple[float, int]:
    """Median wall seconds of `execute` (image cached after the first) and its r0."""
    times, r0 = [], None
    for _ in range(rounds + 1):
        kernel.begin(program)
        started = time.perf_counter()
        run = kernel.execute(program, insn_limit=limit, time_limit=60.0)
        times.append(time.perf_counter() - started)
        if run.error or run.fault or run.findings:
            raise SystemExit(f"the benchmark loop did not run cleanly: {run}")
        r0 = run.r0
    return statistics.median(times[1:]), r0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=1_000_000)
    args = parser.parse_args()
    machine = shared_machine()
    program = loop_program(args.iterations)
    limit = 20 * args.iterations
    times, results = {}, set()
    for mode in ("off", "inline", "outline"):
        times[mode], r0 = median_run(Kernel(kasan=mode, machine=machine), program, args.rounds, limit)
        results.add(r0)
    if len(results) != 1:
        raise SystemExit(f"the KASAN modes disagree on r0: {results}")
    insns = 10 * args.iterations
    for mode, seconds in times.items():
        print(f"{mode:>8}: {seconds * 1e3:8.1f} ms, {insns / seconds:,.0f} BPF insns/s "
              f"({2 * args.iterations:,} checked accesses)")
    inline, outline = times["inline"] / times["off"], times["outline"] / times["off"]
    print(f"ratio inline/off {inline:.2f}x (target <= {INLINE_TARGET}x) "
          f"{'OK' if inline <= INLINE_TARGET else 'MISSED'}")
    print(f"ratio outline/off {outline:.2f}x")


if __name__ == "__main__":
    main()
