"""Reference interpreter speed, in BPF instructions per second, on loop-heavy programs.

Run: python benchmarks/interp.py [--insns N] [--rounds R]
Prints one line per program (median of R rounds) and the ratio between them, measured in this run.
There is no target: the interpreter is the oracle, and clarity comes first.
"""
from __future__ import annotations

import argparse
import statistics
import time

from checks import interp
from jit.ubpf_asm import assemble_program

# ALU and conditional jumps only: the interpreter's dispatch cost.
ALU_LOOP = """
    mov %r0, 0
    mov %r1, {n}
loop:
    add %r0, %r1
    xor %r0, 0x55
    lsh32 %r0, 3
    sub %r1, 1
    jne %r1, 0, loop
    exit
"""

# Every iteration loads and stores through the region lookup.
MEMORY_LOOP = """
    mov %r0, 0
    mov %r1, {n}
    stdw [%r10-8], 0
loop:
    ldxdw %r2, [%r10-8]
    add %r2, %r1
    stxdw [%r10-8], %r2
    sub %r1, 1
    jne %r1, 0, loop
    ldxdw %r0, [%r10-8]
    exit
"""


def measure(text: str, insns: int, rounds: int) -> float:
    """Median instructions/second over `rounds` runs of a loop sized to ~`insns` instructions."""
    program = assemble_program(text.format(n=insns // 5), name="bench")
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        result = interp.run(program, insn_limit=insns * 2)
        elapsed = time.perf_counter() - start
        assert result.error is None, result.error
        rates.append(result.insns / elapsed)
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--insns", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    alu = measure(ALU_LOOP, args.insns, args.rounds)
    mem = measure(MEMORY_LOOP, args.insns, args.rounds)
    print(f"interp alu loop:    {alu:>12,.0f} insns/s")
    print(f"interp memory loop: {mem:>12,.0f} insns/s")
    print(f"memory/alu ratio:   {mem / alu:>12.2f}")


if __name__ == "__main__":
    main()
