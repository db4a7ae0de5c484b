"""Link one program of a BPF object the way libbpf does: the program's function, then each
function it calls or takes the address of, appended the first time it is reached (depth
first); calls and ld_imm64 function addresses get the displacement to the appended copy; map
and global references become PSEUDO_MAP_FD / PSEUDO_MAP_VALUE with an index into
`Program.maps` (in order of first use, then the maps that used map-in-maps hold) for the
map fd; calls of the kfuncs the caller names become PSEUDO_KFUNC_CALL with the caller's id
for them (libbpf puts the kernel's BTF id there).

Owns: placing functions and patching references. Must not import unicorn, capstone, anything
from checks/ or bot/.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

from jit import isa
from jit.elf_reloc import FuncKey, Function, Ref
from jit.errors import JitError
from jit.program import MapDef, Program, SourceLine


class NeedsKernel(JitError):
    """The program refers to kernel symbols (a kfunc, a ksym or kconfig extern) that only the
    kernel's BTF could resolve."""


@dataclasses.dataclass
class Linker:
    functions: dict[FuncKey, Function]
    refs: Callable[[Function], tuple[tuple[int, Ref], ...]]
    map_at: Callable[[int], MapDef]                    # `.maps` offset -> map
    data_map: Callable[[str], MapDef]                  # data section name -> its array map
    lines_of: Callable[[Function], list[SourceLine | None]]
    file: str
    kfuncs: dict[str, int] = dataclasses.field(default_factory=dict)   # kfunc name -> the id to call
    map_named: Callable[[str], MapDef | None] = lambda name: None      # any map of the object
    insns: list = dataclasses.field(default_factory=list)
    lines: dict[int, SourceLine] = dataclasses.field(default_factory=dict)
    funcs: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    placed: dict[FuncKey, int] = dataclasses.field(default_factory=dict)
    maps: dict[str, tuple[int, MapDef]] = dataclasses.field(default_factory=dict)   # name -> (index, map)
    labels: dict[int, str] = dataclasses.field(default_factory=dict)       # slot -> asm label

    def place(self, main: FuncKey) -> None:
        """Append `main` and, depth first, everything it reaches. An explicit stack instead of
        recursion, so a long chain of callees cannot exhaust Python's stack."""
        pending = [self.append(main)]
        while pending:
            item = next(pending[-1], None)
            if item is None:
                pending.pop()
                continue
            pc, ref = item
            if ref.kind in ("call", "func") and ref.target not in self.placed:
                pending.append(self.append(ref.target))
            self.patch(pc, ref)

    def append(self, key: FuncKey) -> Iterator[tuple[int, Ref]]:
        """Copy a function to the end of the program; its references, still to patch."""
        fn = self.functions[key]
        base = self.placed[key] = len(self.insns)
        self.funcs.append((base, fn.name))
        self.insns.extend(fn.insns)
        self.labels.update((base + i, label) for i, label in fn.labels)
        for i, where in enumerate(self.lines_of(fn)):
            if where is not None:
                self.lines[base + i] = where
        return iter([(base + i, ref) for i, ref in self.refs(fn)])

    def patch(self, pc: int, ref: Ref) -> None:
        insn = self.insns[pc]
        if ref.kind in ("call", "func"):
            target = self.placed[ref.target]
            src = isa.PSEUDO_CALL if ref.kind == "call" else isa.PSEUDO_FUNC
            self.insns[pc] = dataclasses.replace(insn, src=src, imm=target - pc - 1)
        elif ref.kind == "map":
            self.insns[pc] = dataclasses.replace(insn, src=isa.PSEUDO_MAP_FD, imm=self.index(self.map_at(ref.target)))
        elif ref.kind == "data":
            section, offset = ref.target
            self.insns[pc] = dataclasses.replace(insn, src=isa.PSEUDO_MAP_VALUE, imm=self.index(self.data_map(section)))
            self.insns[pc + 1] = dataclasses.replace(self.insns[pc + 1], imm=isa.s32(offset))
        elif insn.is_call and ref.target in self.kfuncs:
            self.insns[pc] = dataclasses.replace(insn, src=isa.PSEUDO_KFUNC_CALL, off=0,
                                                 imm=self.kfuncs[ref.target])
        else:
            what = "calls kfunc" if insn.is_call else "refers to extern"
            raise NeedsKernel(f"{what} {ref.target}: needs kernel BTF", file=self.file, insn=pc)

    def index(self, mapdef: MapDef) -> int:
        """The map's index in Program.maps: maps are numbered in order of first use."""
        return self.maps.setdefault(mapdef.name, (len(self.maps), mapdef))[0]

    def add_inner_maps(self) -> None:
        """The maps a used map-in-map's `.values` names, after the used ones: libbpf creates
        every map of the object, so those slots hold them (a prog array's `.values` names
        programs, not maps)."""
        for _, mapdef in list(self.maps.values()):
            for _, name in mapdef.values if mapdef.type.endswith("_of_maps") else ():
                inner = self.map_named(name)
                if inner is not None:
                    self.index(inner)

    def functions_named(self) -> tuple[tuple[int, str], ...]:
        """Placed functions, plus subprograms called by label inside one function (named by
        their label)."""
        named = dict(self.funcs)
        for i, start in enumerate(isa.subprog_starts(self.insns)):
            named.setdefault(start, self.labels.get(start, f"F{i}"))
        return tuple(sorted(named.items()))


def link(linker: Linker, main: FuncKey, prog_type: str) -> Program:
    linker.place(main)
    linker.add_inner_maps()
    name = linker.functions[main].name
    maps = tuple(m for _, m in linker.maps.values())
    return Program(name, tuple(linker.insns), maps, prog_type, linker.functions_named(),
                   linker.lines, linker.file)
