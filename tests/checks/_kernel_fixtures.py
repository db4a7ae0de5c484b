"""Shared by the Kernel tests: LLVM-asm programs with named maps and kfuncs, and running them.

`program(text, maps)` assembles pseudo-C BPF where `name ll` loads a map of `maps` (by name) and
`call kfunc(<kfunc name>)` is spelled with the KFUNC_IDS of checks.helpers; function labels
called with `call label` become functions of their own, named after their label.
"""
from __future__ import annotations

from checks.helpers import KFUNC_IDS
from checks.kernel import Kernel, KernelRun
from jit import isa
from jit.llvm_asm import assemble
from jit.program import MapDef, Program

# The KASAN selftest's map value: struct { u8 data_1; u16 data_2; u32 data_4; u64 data_8; }.
KASAN_VALUE = MapDef("not_on_stack", "array", 4, 16, 1)
FIELD = {1: 0, 2: 2, 4: 4, 8: 8}            # offset of data_<size>
POISON, UNPOISON, OOB_ALLOC = (KFUNC_IDS[n] for n in ("bpf_kfunc_kasan_poison",
                                                     "bpf_kfunc_kasan_unpoison",
                                                     "bpf_testmod_oob_alloc"))


def program(text: str, maps: tuple[MapDef, ...] = (KASAN_VALUE,), name: str = "prog") -> Program:
    index = {m.name: i for i, m in enumerate(maps)}
    asm = assemble(text, resolve=lambda sym: (isa.PSEUDO_MAP_FD, index[sym]))
    starts = isa.subprog_starts(asm.insns)
    names = {slot: label for label, slot in asm.labels.items()}
    funcs = tuple((s, name if s == 0 else names.get(s, f"F{s}")) for s in starts)
    return Program(name, tuple(asm.insns), maps, funcs=funcs, file="test.s")


def run(kernel: Kernel, prog: Program, *, args: tuple[int, ...] = (), **begin) -> KernelRun:
    kernel.begin(prog, test=prog.name, **begin)
    return kernel.execute(prog, args=args)


def value_of(map_name: str = "not_on_stack") -> str:
    """Asm leaving the address of element 0 of `map_name` in r6 (or exiting with 1 on NULL)."""
    return f"""
        r1 = 0
        *(u32 *)(r10 - 4) = r1
        r2 = r10
        r2 += -4
        r1 = {map_name} ll
        call 1
        if r0 == 0 goto miss
        r6 = r0
    """


MISS = """
        r0 = 0
        exit
    miss:
        r0 = 1
        exit
"""


def poisoned(body: str, size: int = 8) -> str:
    """`body` run on r6 = a map value whose data_<size> field was poisoned by the kfunc."""
    return value_of() + f"""
        r1 = r6
        r1 += {FIELD[size]}
        r2 = {size}
        call kfunc({POISON})
    """ + body + MISS


def shape(run: KernelRun) -> list[tuple]:
    """What a finding says, without what depends on the KASAN mode (code offsets, reports)."""
    return [(f.bug_type, f.access, f.size, f.insn, f.address, f.object, f.title, f.mode)
            for f in run.findings]
