"""The JIT under Unicorn against its targets, all measured in one run on the same programs.

Run: python benchmarks/jit_speed.py [--rounds R]
Prints:
 1. JIT compile throughput over the conformance programs, BPF insns/s   (target >= 100,000)
 2. executed BPF insns/s on a loop-heavy program, JIT under Unicorn vs the interpreter, and the
    ratio (target >= 100x). Both rates use the interpreter's exact instruction count: the
    program's count is a + b * iterations, fitted from two small interpreter runs, so the JIT can
    run long enough to be measured without a slow interpreter run of the same length.
 3. fixed cost of one more run of an already loaded program: machine reset + run, and the whole
    `JitEngine.run` (image cache hit, helpers served, input copied)   (target <= 0.2 ms)
Figures are medians of R rounds; the VM's speed flips between runs (unicorn-perf.md), so only
ratios measured in the same run are comparable.
"""
from __future__ import annotations

import argparse
import importlib.util
import pathlib
import statistics
import time

from checks import interp
from checks.jit_engine import JitEngine
from checks.machine import Machine
from jit.compile import compile_program
from jit.ubpf_asm import assemble_program

HERE = pathlib.Path(__file__).resolve().parent

COMPILE_TARGET, RATIO_TARGET, FIXED_TARGET_MS = 100_000, 100, 0.2

LOOP = """
    mov %r9, {n}
    mov %r0, 0
    stxdw [%r10-8], %r0
loop:
    ldxdw %r2, [%r10-8]
    add %r2, %r9
    stxdw [%r10-8], %r2
    ldxw %r4, [%r1+4]
    mov %r3, %r9
    mul %r3, 7
    xor %r0, %r3
    rsh %r3, 3
    add %r0, %r4
    add %r0, %r3
    and %r0, 0xffffff
    sub %r9, 1
    jne %r9, 0, loop
    exit
"""
MEM = bytes(range(16))


def loop_program(n: int):
    return assemble_program(LOOP.format(n=n), name="loop")


def median_time(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def suite_programs() -> list:
    """The conformance programs, as benchmarks/jit_compile.py collects them."""
    spec = importlib.util.spec_from_file_location("jit_compile_bench", HERE / "jit_compile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.suite_programs()


def compile_rate(machine: Machine, rounds: int) -> tuple[float, int]:
    programs = suite_programs()
    target = machine.target()
    for p in programs:                               # every helper gets a stub first
        JitEngine(machine).prepare(p)
    insns = sum(len(p.insns) for p in programs)
    seconds = median_time(lambda: [compile_program(p, target) for p in programs], rounds)
    return insns / seconds, len(programs)


def exec_rates(engine: JitEngine, rounds: int) -> tuple[float, float, int]:
    small, large = 2_000, 4_000
    a_small = interp.run(loop_program(small), mem=MEM).insns
    a_large = interp.run(loop_program(large), mem=MEM).insns
    per_iter = (a_large - a_small) // (large - small)
    fixed = a_small - per_iter * small
    interp_s = median_time(lambda: interp.run(loop_program(large), mem=MEM), rounds)
    check = engine.run(loop_program(large), MEM)
    if check.error or check.r0 != interp.run(loop_program(large), mem=MEM).r0:
        raise SystemExit(f"the JIT disagrees with the interpreter on the loop: {check}")
    n = 2_000_000
    program = loop_program(n)
    jit_s = median_time(lambda: engine.run(program, MEM, insn_limit=1 << 40), rounds)
    insns = fixed + per_iter * n
    return a_large / interp_s, insns / jit_s, insns


def fixed_costs(machine: Machine, engine: JitEngine, runs: int) -> tuple[float, float]:
    program = assemble_program("mov %r0, 1\nexit\n", name="tiny")
    image = engine.prepare(program).image
    engine.run(program, MEM)

    def machine_run():
        machine.reset()
        machine.run(image, ())
    per_machine = min(median_time(lambda: [machine_run() for _ in range(runs)], 5) / runs
                      for _ in range(3))
    per_engine = min(median_time(lambda: [engine.run(program, MEM) for _ in range(runs)], 5) / runs
                     for _ in range(3))
    return per_machine, per_engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    machine = Machine()
    engine = JitEngine(machine)
    rate, count = compile_rate(machine, args.rounds)
    print(f"compile: {rate:,.0f} BPF insns/s over {count} conformance programs "
          f"(target >= {COMPILE_TARGET:,}) {'OK' if rate >= COMPILE_TARGET else 'MISSED'}")
    interp_rate, jit_rate, insns = exec_rates(engine, args.rounds)
    ratio = jit_rate / interp_rate
    print(f"execute: interpreter {interp_rate:,.0f} insns/s, JIT under Unicorn {jit_rate:,.0f} "
          f"insns/s ({insns:,} insns per run)")
    print(f"execute: ratio JIT/interpreter {ratio:,.0f}x (target >= {RATIO_TARGET}x) "
          f"{'OK' if ratio >= RATIO_TARGET else 'MISSED'}")
    per_machine, per_engine = fixed_costs(machine, engine, 2_000)
    print(f"fixed cost of one more run: machine reset+run {per_machine * 1e3:.3f} ms, "
          f"JitEngine.run {per_engine * 1e3:.3f} ms (target <= {FIXED_TARGET_MS} ms) "
          f"{'OK' if per_engine * 1e3 <= FIXED_TARGET_MS else 'MISSED'}")


if __name__ == "__main__":
    main()
