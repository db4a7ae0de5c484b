"""The kernel's program tag (`bpf_prog_<tag>_<name>`), per function.

Facts from kernel/bpf/core.c (bpf_prog_calc_tag) and verifier.c (jit_subprogs): the tag is the
first 8 bytes of SHA-1 over the instruction array as the loader handed it in, with the immediates
of map references (ld_imm64 PSEUDO_MAP_FD / PSEUDO_MAP_VALUE, both slots) zeroed, so it does not
depend on fds or map addresses. In a multi-function program each function gets its own tag over
its own slice; kallsyms names the main function by its slice's tag too.

Compute it on the program as loaded (map references still indices), never after pseudo loads
are resolved to addresses.

Owns: the tag. Must not import unicorn, capstone, checks/ or bot/.
"""
from __future__ import annotations

import hashlib

from jit import isa
from jit.program import Program

_MAP_REFS = (isa.PSEUDO_MAP_FD, isa.PSEUDO_MAP_VALUE)


def insns_tag(insns) -> str:
    """16 hex digits: SHA-1 of the slots with map-reference immediates zeroed."""
    raw = bytearray(isa.encode(insns))
    for pc, insn in enumerate(insns):
        if insn.is_ld_imm64 and insn.src in _MAP_REFS:
            raw[pc * 8 + 4:pc * 8 + 8] = bytes(4)
            if pc + 1 < len(insns):
                raw[pc * 8 + 12:pc * 8 + 16] = bytes(4)
    return hashlib.sha1(raw).hexdigest()[:16]


def prog_tag(program: Program) -> str:
    """The tag over all of `program`'s slots (a single-function program's kallsyms tag)."""
    return insns_tag(program.insns)


def func_slices(program: Program) -> list[tuple[str, tuple]]:
    """(name, slots) of every function, each from its start to the next function's."""
    starts = [start for start, _ in program.funcs] + [len(program.insns)]
    return [(name, program.insns[start:starts[i + 1]])
            for i, (start, name) in enumerate(program.funcs)]


def func_tags(program: Program) -> tuple[str, ...]:
    """The tag of each function of `program`, in `program.funcs` order."""
    return tuple(insns_tag(slots) for _, slots in func_slices(program))
