"""JIT compile throughput, in BPF instructions per second, over every conformance program.

Run: python benchmarks/jit_compile.py [--rounds R] [--big N]
Prints one line per KASAN mode (median of R rounds over the bpf_conformance and uBPF suites),
one for a single large straight-line-plus-loops program of N slots, and the ratios between modes
measured in this run. Target: >= 100,000 insns/s in every mode.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import time

from jit.compile import compile_program
from jit.dump import listing_target
from jit.errors import JitError
from jit.ubpf_asm import assemble_program

SHARED = pathlib.Path(os.environ.get("BPF_KASAN_SHARED", pathlib.Path(__file__).resolve().parents[2] / "shared"))
SUITES = ("conformance/bpf_conformance", "conformance/ubpf")
TARGET_RATE = 100_000

# One loop body of mixed work: ALU, memory through r1 (checked), stack, a division, a back-edge.
BIG_BODY = """
    ldxw %r2, [%r1+{off}]
    add %r2, %r3
    stxw [%r1+{off}], %r2
    stxdw [%r10-8], %r2
    div %r2, %r4
    jne %r2, 0, +1
    mov %r0, 1
"""


def suite_programs() -> list:
    from checks.conformance import build_program, parse_file     # the suites' file format
    programs = []
    for suite in SUITES:
        for path in sorted((SHARED / suite / "tests").glob("*.data")):
            test = parse_file(str(path))
            if test.has("result"):
                try:
                    programs.append(build_program(test))
                except JitError:
                    pass
    return programs


def big_program(slots: int):
    body = "".join(BIG_BODY.format(off=4 * (i % 64)) for i in range(slots // 8))
    return assemble_program("mov %r0, 0\nmov %r4, 3\n" + body + "exit\n", name="big")


def rate(programs, kasan: str, rounds: int) -> float:
    """Median BPF slots compiled per second of CPU time (other jobs on the machine do not count)."""
    insns = sum(len(p.insns) for p in programs)
    rates = []
    for _ in range(rounds):
        target, _ = listing_target(kasan, budget=True)
        start = time.process_time()
        for program in programs:
            compile_program(program, target)
        rates.append(insns / (time.process_time() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--big", type=int, default=20_000, help="slots of the large program")
    args = parser.parse_args()
    programs = suite_programs()
    big = [big_program(args.big)]
    print(f"{len(programs)} conformance programs, {sum(len(p.insns) for p in programs)} slots; "
          f"big program {len(big[0].insns)} slots")
    results = {}
    for kasan in ("off", "inline", "outline"):
        results[kasan] = rate(programs, kasan, args.rounds)
        big_rate = rate(big, kasan, max(1, args.rounds // 2))
        verdict = "ok" if min(results[kasan], big_rate) >= TARGET_RATE else f"BELOW {TARGET_RATE:,}"
        print(f"kasan={kasan:8s} suites {results[kasan]:>10,.0f} insns/s   big {big_rate:>10,.0f} insns/s   {verdict}")
    print(f"ratio inline/off {results['inline'] / results['off']:.2f}, "
          f"outline/off {results['outline'] / results['off']:.2f}")


if __name__ == "__main__":
    main()
