"""checks.iter_kfuncs in the emulated kernel, from hand-written asm (no compiler needed): the
number and bits iterators as their kernel versions behave, called by the ids the ELF linker
resolves their names to."""
from __future__ import annotations

import pytest
from _kernel_fixtures import program, run

from checks import test_run
from checks.iter_kfuncs import KFUNC_IDS
from jit.isa import s32

NUM = {n: KFUNC_IDS[f"bpf_iter_num_{n}"] for n in ("new", "next", "destroy")}
BITS = {n: KFUNC_IDS[f"bpf_iter_bits_{n}"] for n in ("new", "next", "destroy")}


def sum_of(kind: dict, setup: str, new_args: str) -> str:
    """Asm: `setup`, then iterate (iterator at fp-48) adding up what `next` points to; r0 is the
    sum, or new()'s error when it fails."""
    return f"""
        {setup}
        r1 = r10
        r1 += -48
        {new_args}
        call kfunc({kind['new']})
        r7 = r0
        r6 = 0
    loop:
        r1 = r10
        r1 += -48
        call kfunc({kind['next']})
        if r0 == 0 goto done
        r1 = *(s32 *)(r0 + 0)
        r6 += r1
        goto loop
    done:
        r1 = r10
        r1 += -48
        call kfunc({kind['destroy']})
        r0 = r6
        if r7 == 0 goto out
        r0 = r7
    out:
        exit
    """


@pytest.fixture(scope="module")
def kernel():
    return test_run.new_kernel()


@pytest.mark.parametrize("start, end, want", [
    (0, 10, 45), (-3, 2, -5), (4, 4, 0),
    (5, 3, -22),                                    # -EINVAL
    (-1, 8 * 1024 * 1024, -7),                      # -E2BIG: over BPF_MAX_LOOPS steps
])
def test_iter_num_yields_start_to_end_exclusive(kernel, start, end, want):
    text = sum_of(NUM, "", f"r2 = {start}\n r3 = {end}")
    assert s32(run(kernel, program(text, maps=())).r0) == want


WORDS = """
        r1 = 5
        *(u64 *)(r10 - 24) = r1
        r1 = 0x8000000000000000 ll
        *(u64 *)(r10 - 16) = r1
        r1 = 0x100000000 ll
        *(u64 *)(r10 - 8) = r1
"""


@pytest.mark.parametrize("args, want", [
    ("r2 = r10\n r2 += -24\n r3 = 1", 0 + 2),                       # one word, copied inline
    ("r2 = r10\n r2 += -24\n r3 = 3", 0 + 2 + 127 + 160),           # words in a kernel copy
    ("r2 = r10\n r2 += -16\n r3 = 2", 63 + 96),
    ("r2 = 0\n r3 = 1", -22),                                       # NULL
    ("r2 = r10\n r2 += -24\n r3 = 0", -22),                         # no words
    ("r2 = r10\n r2 += -24\n r3 = 512", -7),                        # over 511 words
    ("r2 = -4095\n r3 = 1", -14),                                   # unreadable
    ("r2 = -4095\n r3 = 4", -14),
])
def test_iter_bits_yields_the_indexes_of_set_bits(kernel, args, want):
    assert s32(run(kernel, program(sum_of(BITS, WORDS, args), maps=())).r0) == want
