"""Assemble a selftest's functions and link one program as libbpf would: the main function,
then each bpf-to-bpf callee appended the first time it is called (depth first), calls patched
to relative slots; map references become PSEUDO_MAP_FD with the map's index in
`Program.maps`, global variables PSEUDO_MAP_VALUE + offset into their section's map.

The assembler resolves only labels of one text, so every other name is handed a placeholder
(a `Symbols` id in the imm, with a non-zero src) and replaced here.

Owns: resolving names across functions. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from checks.errors import CheckError
from checks.kselftest.template import Statement
from jit import isa
from jit.errors import JitError
from jit.isa import Insn
from jit.llvm_asm import assemble
from jit.program import MapDef, Program, SourceLine

_BASE = -0x7F000000          # placeholder ids: far beyond any real displacement or map index
_LIMIT = 0x100000


class NeedsCompiler(Exception):
    """The program cannot be built without a C compiler (or kernel BTF); the text says why."""


@dataclass(frozen=True)
class FunctionCode:
    name: str
    insns: tuple[Insn, ...]
    lines: tuple[SourceLine, ...]
    labels: dict = dataclasses.field(default_factory=dict, compare=False)   # label -> slot
    statements: tuple[Statement, ...] = ()        # what was assembled, one statement a line


class Symbols:
    """Names the assembler could not resolve, by placeholder id. `kind_of(name)` says what a
    name is: "func" (asm function), "cfunc" (C function), "map", "var", or None (unknown)."""

    def __init__(self, helpers: dict[str, int], kind_of: Callable[[str], str | None]):
        self.helpers = helpers
        self.kind_of = kind_of
        self.ids: dict[str, int] = {}
        self.entries: list[tuple[str, str]] = []

    def resolve(self, name: str) -> tuple[int, int]:
        if name in self.helpers:
            return isa.CALL_HELPER, self.helpers[name]
        if name not in self.ids:
            self.ids[name] = len(self.entries)
            self.entries.append((self.kind_of(name) or "extern", name))
        kind = self.entries[self.ids[name]][0]
        src = isa.PSEUDO_MAP_VALUE if kind in ("var", "extern") else isa.PSEUDO_CALL
        return src, _BASE + self.ids[name]

    def of(self, insn: Insn) -> tuple[str, str] | None:
        """(kind, name) if `insn` is a call or ld_imm64 carrying a placeholder."""
        if insn.src == 0 or not (insn.is_call or insn.is_ld_imm64):
            return None
        index = insn.imm - _BASE
        return self.entries[index] if 0 <= index < min(len(self.entries), _LIMIT) else None


def assemble_function(name: str, statements: list[Statement], symbols: Symbols, *,
                      file: str | None) -> FunctionCode:
    """One function's asm → slots, each with its C line; assembler errors name the C line."""
    text = "\n".join(s.text for s in statements)
    try:
        out = assemble(text, file=file, first_line=1, resolve=symbols.resolve)
    except JitError as e:
        stmt = statements[e.line - 1] if e.line and 0 < e.line <= len(statements) else None
        raise CheckError(f"{name}: {e.message}", file=file, line=stmt.line if stmt else None) from None
    lines = tuple(SourceLine(file or "", statements[n - 1].line, statements[n - 1].text) for n in out.lines)
    return FunctionCode(name, tuple(out.insns), lines, dict(out.labels), tuple(statements))


@dataclass
class _Linking:
    symbols: Symbols
    code: Callable[[str], FunctionCode]              # raises NeedsCompiler / CheckError
    map_of: Callable[[str], MapDef]                   # BTF map by name
    variable: Callable[[str], tuple[MapDef, int]]     # global → (section map, offset)
    file: str | None
    insns: list[Insn] = dataclasses.field(default_factory=list)
    lines: list[SourceLine] = dataclasses.field(default_factory=list)
    funcs: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    placed: dict[str, int] = dataclasses.field(default_factory=dict)
    maps: list[MapDef] = dataclasses.field(default_factory=list)
    labels: dict[int, str] = dataclasses.field(default_factory=dict)     # slot -> label

    def place(self, name: str) -> int:
        """Append a function's code and resolve its references (callees placed depth first)."""
        code = self.code(name)
        base = self.placed[name] = len(self.insns)
        self.funcs.append((base, name))
        self.insns.extend(code.insns)
        self.lines.extend(code.lines)
        self.labels.update({base + slot: label for label, slot in code.labels.items()})
        for pc in range(base, base + len(code.insns)):
            found = self.symbols.of(self.insns[pc])
            if found is not None:
                self.relocate(pc, *found)
        return base

    def relocate(self, pc: int, kind: str, name: str) -> None:
        insn = self.insns[pc]
        line = self.lines[pc].line if pc < len(self.lines) else None
        if kind == "func":
            target = self.placed[name] if name in self.placed else self.place(name)
            src = isa.PSEUDO_CALL if insn.is_call else isa.PSEUDO_FUNC
            self.insns[pc] = dataclasses.replace(insn, src=src, imm=target - pc - 1)
        elif kind == "cfunc":
            raise NeedsCompiler(f"needs a compiler: calls C function {name}")
        elif insn.is_call:
            if kind == "extern":
                raise NeedsCompiler(f"calls kfunc {name}: needs kernel BTF")
            raise CheckError(f"call of {kind} '{name}'", file=self.file, line=line)
        elif kind == "map":
            index = self.index(self.map_of(name))
            self.insns[pc] = dataclasses.replace(insn, src=isa.PSEUDO_MAP_FD, imm=index)
        elif kind == "var":
            mapdef, offset = self.variable(name)
            self.insns[pc] = dataclasses.replace(insn, imm=self.index(mapdef))
            extra = self.insns[pc + 1]
            self.insns[pc + 1] = dataclasses.replace(extra, imm=extra.imm + offset)
        else:
            raise CheckError(f"unknown symbol '{name}'", file=self.file, line=line)

    def functions(self) -> tuple[tuple[int, str], ...]:
        """Placed functions, plus subprogs called by label inside one asm body (named by
        their label when they have one)."""
        named = dict((start, name) for start, name in self.funcs)
        for i, start in enumerate(isa.subprog_starts(self.insns)):
            named.setdefault(start, self.labels.get(start, f"F{i}"))
        return tuple(sorted(named.items()))

    def index(self, mapdef: MapDef) -> int:
        for i, m in enumerate(self.maps):
            if m.name == mapdef.name:
                return i
        self.maps.append(mapdef)
        return len(self.maps) - 1


def link(main: str, *, symbols: Symbols, code, map_of, variable, prog_type: str,
         file: str | None) -> Program:
    """The program of function `main` with everything it calls and refers to."""
    state = _Linking(symbols, code, map_of, variable, file)
    state.place(main)
    return Program(main, tuple(state.insns), tuple(state.maps), prog_type, state.functions(),
                   dict(enumerate(state.lines)), file or "")
