"""A BPF object built by `clang -target bpf` → `jit.program.Program`s, as libbpf would load them.

- Programs: every FUNC symbol of an executable section other than `.text` is one program;
  the programs of one SEC share its section and are split by symbol. `.text` holds the
  subprograms they call (`jit.elf_reloc`, `jit.elf_link`).
- Maps: BTF-defined ones from the `.maps` DATASEC (`jit.btf_maps`), with the `.values`
  initialisers of prog arrays and map-in-maps read from the `.maps` relocations; and one
  array map per global-data section (`.data*`, `.bss*`, `.rodata*`), named after the
  section, value 0 holding its bytes (`.rodata` read-only for programs), as libbpf makes them.
- Annotations: the decl tags on each program's BTF FUNC (what test_loader reads).
- Lines: BTF.ext line_info; every slot gets the last record at or before it in its function,
  so `Program.lines` names a C file:line (for inline asm: the line of the asm statement).

Every refusal is a one-line JitError naming the file and the section/offset.

Owns: the object model and its public entry points. Must not import unicorn, capstone,
anything from checks/ or bot/.
"""
from __future__ import annotations

import dataclasses
import pathlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

from jit import btf as B
from jit import isa
from jit.btf import Btf, BtfExt, parse_btf, parse_btf_ext
from jit.btf_maps import BtfMap, map_defs
from jit.elf_file import ElfFile, Section, read_elf
from jit.elf_header import is_bpf_elf, is_bpf_object
from jit.elf_link import Linker, NeedsKernel, link
from jit.elf_reloc import FuncKey, Function, Resolver
from jit.errors import JitError
from jit.program import MapDef, Program, SourceLine

__all__ = ["BpfObject", "Entry", "NeedsKernel", "is_bpf_elf", "is_bpf_object", "load_object", "read_object"]

BPF_F_RDONLY_PROG = 1 << 7


@dataclass(frozen=True)
class Entry:
    """A program libbpf would load (not a `.text` subprogram)."""
    name: str
    section: str              # the SEC() name, a leading '?' included
    btf_id: int | None        # its BTF FUNC, whose decl tags are the test annotations
    line: int | None          # the first source line BTF line info gives for it ...
    source: str | None = None  # ... and the file it is in


class BpfObject:
    """One object file. Reading it validates every relocation, so a bad object is refused
    whole, as libbpf refuses it; `program()` only links."""

    def __init__(self, elf: ElfFile):
        self.file = elf.file
        self.elf = elf
        self.btf, self.ext = _btf_sections(elf)
        self.functions = _functions(elf)
        self.maps = _maps(elf, self.btf)
        self._map_named = {m.name: m for m in self.maps.values()}
        resolver = Resolver(elf, self.functions, set(self.maps))
        for sec in elf.sections:
            if sec.executable:
                resolver.check_coverage(sec)
        self.refs = {key: resolver.refs(fn) for key, fn in self.functions.items()}
        self._keys = {fn.name: key for key, fn in self.functions.items() if fn.section.name != ".text"}
        self.entries = tuple(self._entry(fn) for fn in self.functions.values() if fn.section.name != ".text")
        self.data_map = lru_cache(maxsize=None)(self._data_map)

    def tags(self, entry: Entry) -> list[str]:
        """The decl tags of a program's BTF FUNC, in BTF order."""
        return self.btf.decl_tags(entry.btf_id) if self.btf is not None and entry.btf_id else []

    def program(self, name: str, *, prog_type: str, kfuncs: Mapping[str, int] | None = None) -> Program:
        """Program `name` with every function it reaches appended. A call of a kfunc named in
        `kfuncs` becomes a kfunc call (src 2) with the id given there; any other kfunc or kernel
        extern raises NeedsKernel."""
        if name not in self._keys:
            raise JitError(f"no program '{name}' in this object", file=self.file)
        linker = Linker(self.functions, lambda fn: self.refs[fn.key], self.maps.__getitem__,
                        self.data_map, self.lines_of, self.file, dict(kfuncs or {}),
                        self._map_named.get)
        return link(linker, self._keys[name], prog_type)

    def lines_of(self, fn: Function) -> list[SourceLine | None]:
        """Each slot's line: the last line_info record at or before it within the function."""
        out: list[SourceLine | None] = [None] * len(fn.insns)
        records = self.ext.line_info.get(fn.section.name, ()) if self.ext is not None else ()
        for rec in records:
            slot = rec.insn_off // 8 - fn.start
            if 0 <= slot < len(out):
                line = SourceLine(rec.file, rec.line, rec.text)
                out[slot:] = [line] * (len(out) - slot)
        return out

    def _entry(self, fn: Function) -> Entry:
        func = self.btf.find(B.FUNC, fn.name) if self.btf is not None else None
        first = next((li for li in self.lines_of(fn) if li is not None), None)
        return Entry(fn.name, fn.section.name, func.id if func else None,
                     first.line if first else None, first.file if first else None)

    def _data_map(self, section: str) -> MapDef:
        data = self.elf.named(section).data
        flags = BPF_F_RDONLY_PROG if section.startswith(".rodata") else 0
        return MapDef(section, "array", 4, max(len(data), 1), 1, flags,
                      initial=((0, data),) if any(data) else ())


def read_object(path: str | pathlib.Path) -> BpfObject:
    try:
        data = pathlib.Path(path).read_bytes()
    except OSError as e:
        raise JitError(f"cannot read BPF object: {e.strerror}", file=str(path)) from None
    return load_object(data, file=str(path))


def load_object(data: bytes, *, file: str) -> BpfObject:
    return BpfObject(read_elf(data, file=file))


def _btf_sections(elf: ElfFile) -> tuple[Btf | None, BtfExt | None]:
    btf_sec, ext_sec = elf.named(".BTF"), elf.named(".BTF.ext")
    btf = parse_btf(btf_sec.data, file=elf.file) if btf_sec is not None else None
    ext = parse_btf_ext(ext_sec.data, btf_sec.data, file=elf.file) if ext_sec is not None and btf else None
    return btf, ext


def _functions(elf: ElfFile) -> dict[FuncKey, Function]:
    """Every FUNC symbol of an executable section, in section and address order."""
    out = {}
    for sym in sorted(elf.symbols, key=lambda s: (s.section or 0, s.value)):
        if sym.type != "STT_FUNC" or not sym.defined or not elf.sections[sym.section].executable:
            continue
        sec = elf.sections[sym.section]
        where = f"function '{sym.name}' in section '{sec.name}'"
        if sym.value % 8 or sym.size % 8 or not sym.size or sym.value + sym.size > len(sec.data):
            raise JitError(f"{where}: bad extent {sym.size} bytes at 0x{sym.value:x} "
                           f"(the section has {len(sec.data)})", file=elf.file)
        if sec.name != ".text" and sym.bind == "STB_LOCAL":
            raise JitError(f"{where} is static: libbpf loads only global programs", file=elf.file)
        insns = tuple(isa.decode(sec.data[sym.value:sym.value + sym.size], validate=False))
        labels = tuple(((s.value - sym.value) // 8, s.name) for s in elf.symbols
                       if s.section == sec.index and s.type == "STT_NOTYPE" and s.name
                       and sym.value < s.value < sym.value + sym.size and not s.value % 8)
        fn = Function(sym.name, sec, sym.value // 8, insns, sym.bind != "STB_LOCAL", labels)
        out[fn.key] = fn
    return out


def _maps(elf: ElfFile, btf: Btf | None) -> dict[int, MapDef]:
    """BTF-defined maps by their offset in `.maps`, with `.values` filled in."""
    if elf.named("maps") is not None:
        raise JitError("legacy 'maps' section: only BTF-defined maps (SEC(\".maps\")) are supported",
                       file=elf.file)
    sec = elf.named(".maps")
    if sec is None:
        return {}
    if btf is None:
        raise JitError("section '.maps' needs the .BTF section (compile with -g)", file=elf.file)
    placed = {s.name: (s.value, s.size) for s in elf.symbols if s.section == sec.index and s.type == "STT_OBJECT"}
    found = map_defs(btf, placed)
    values = _initial_values(elf, sec, found)
    return {m.offset: dataclasses.replace(m.map, values=tuple(sorted(values.get(m.offset, ()))))
            for m in found}


def _initial_values(elf: ElfFile, sec: Section, found: list[BtfMap]) -> dict[int, list[tuple[int, str]]]:
    """`.values = { [i] = &prog_or_map }`: one relocation per initialised slot."""
    out: dict[int, list[tuple[int, str]]] = {}
    for r in elf.relocs.get(sec.index, ()):
        m = next((m for m in found if m.offset <= r.offset < m.offset + m.size), None)
        at = r.offset - (m.offset + m.values_at) if m is not None and m.values_at >= 0 else -1
        if at < 0 or at % 8:
            raise JitError(f"section '.maps' offset 0x{r.offset:x}: relocation outside a map's 'values'",
                           file=elf.file)
        out.setdefault(m.offset, []).append((at // 8, elf.symbols[r.symbol].name))
    return out
