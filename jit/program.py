"""`Program`: what every importer produces and every engine consumes.

A program is its instruction slots plus what the kernel would know from the loader: the maps
its ld_imm64 instructions refer to, its program type, the names of its functions, and, when
the source is known, the file:line of each slot.

Map references follow libbpf after relocation, with our map *index* standing in for the fd:
`ld_imm64 src=PSEUDO_MAP_FD imm=<index into Program.maps>`, and for PSEUDO_MAP_VALUE the
second slot's imm is the byte offset into value 0.

Owns: plain data. Must not import unicorn, capstone, or anything from checks/ or bot/.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from jit.isa import Insn, subprog_starts


@dataclass(frozen=True)
class MapDef:
    """A map as declared by the program's source (BTF-style or legacy)."""
    name: str
    type: str                     # "array", "hash", "percpu_array", "lru_hash", "ringbuf", "prog_array", ...
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    # Programs a prog_array slot is initialised with (index -> function name), for tail calls.
    values: tuple[tuple[int, str], ...] = ()
    # Initial contents of value slots (index -> bytes), e.g. .data/.rodata sections.
    initial: tuple[tuple[int, bytes], ...] = ()
    # The template of the inner maps of an array_of_maps / hash_of_maps.
    inner: "MapDef | None" = None


@dataclass(frozen=True)
class SourceLine:
    file: str
    line: int
    text: str = ""


@dataclass(frozen=True)
class Program:
    name: str
    insns: tuple[Insn, ...]
    maps: tuple[MapDef, ...] = ()
    prog_type: str = "socket_filter"
    # (slot index, name) for every function; the main program is the first entry.
    funcs: tuple[tuple[int, str], ...] = ()
    # Slot index -> where it came from, when known.
    lines: dict[int, SourceLine] = field(default_factory=dict, compare=False, hash=False)
    file: str = ""
    # Bytes of stack each function declares (the kernel's per-subprog stack_depth); None = compute.
    stack_depth: int | None = None

    def __post_init__(self):
        if not self.funcs:
            starts = subprog_starts(self.insns)
            names = [(s, self.name if s == 0 else f"F{i}") for i, s in enumerate(starts)]
            object.__setattr__(self, "funcs", tuple(names))

    def func_of(self, pc: int) -> tuple[int, str]:
        """(start slot, name) of the function containing slot `pc`."""
        best = self.funcs[0]
        for start, name in self.funcs:
            if start <= pc:
                best = (start, name)
        return best
