"""A BPF ELF object's sections, symbols and relocations as plain records, read with pyelftools.

This is the only module that touches pyelftools: everything is read eagerly here, each
section's extent is checked against the file before its contents are read (so a corrupt size
cannot make a loop run for ever), and pyelftools' failures become one-line `JitError`s that
name the file and the section.

Owns: the ELF container. Must not import unicorn, capstone, anything from checks/ or bot/.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from jit.elf_header import HEAD_SIZE, is_bpf_elf
from jit.errors import JitError

SHF_EXECINSTR = 0x4
MAX_NOBITS = 1 << 24           # a larger .bss is a corrupt header, not a global data map
_EHDR_SIZE = 64
# pyelftools' own error, and ValueError (UnicodeDecodeError among them) from its lazy readers.
# 17,000 fuzzed objects raised nothing else once section extents are checked first.
_PARSE_FAILURES = (ELFError, ValueError)


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: str                 # "SHT_PROGBITS", "SHT_NOBITS", ...
    flags: int
    data: bytes               # NOBITS sections read as zeros

    @property
    def executable(self) -> bool:
        return self.type == "SHT_PROGBITS" and bool(self.flags & SHF_EXECINSTR)


@dataclass(frozen=True)
class Symbol:
    index: int
    name: str
    value: int
    size: int
    type: str                 # "STT_FUNC", "STT_OBJECT", "STT_SECTION", "STT_NOTYPE", ...
    bind: str                 # "STB_GLOBAL", "STB_LOCAL", "STB_WEAK"
    section: int | None       # index of the section it is defined in; None when undefined

    @property
    def defined(self) -> bool:
        return self.section is not None


@dataclass(frozen=True)
class Reloc:
    offset: int               # bytes into the section it patches
    type: int                 # R_BPF_*
    symbol: int               # index into ElfFile.symbols


@dataclass(frozen=True)
class ElfFile:
    file: str
    sections: tuple[Section, ...]
    symbols: tuple[Symbol, ...]
    relocs: dict[int, tuple[Reloc, ...]]     # patched section index -> its relocations

    def named(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)


class _Progress:
    """What `read_elf` is reading, for the message when pyelftools fails."""

    def __init__(self):
        self.now = "the ELF header"


def read_elf(data: bytes, *, file: str) -> ElfFile:
    """Sections, symbols and relocations of a relocatable BPF object."""
    if not is_bpf_elf(data[:HEAD_SIZE]):
        raise JitError("not a BPF object: want a little-endian 64-bit ELF with machine EM_BPF (247)",
                       file=file)
    if len(data) < _EHDR_SIZE:
        raise JitError(f"truncated: the ELF header needs {_EHDR_SIZE} bytes, the file has {len(data)}",
                       file=file)
    where = _Progress()
    try:
        elf = ELFFile(io.BytesIO(data))
        _check_header(elf, len(data), file)
        sections = tuple(_section(elf, i, len(data), file, where) for i in range(elf.num_sections()))
        where.now = "the symbol table"
        symbols = _symbols(elf, len(sections))
        relocs = _relocations(elf, sections, len(symbols), file, where)
    except _PARSE_FAILURES as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise JitError(f"corrupt ELF in {where.now}: {detail}", file=file) from None
    return ElfFile(file, sections, symbols, relocs)


def _check_header(elf: ELFFile, file_size: int, file: str) -> None:
    if elf["e_type"] != "ET_REL":
        raise JitError(f"not a relocatable object (e_type {elf['e_type']})", file=file)
    table = elf["e_shoff"] + elf["e_shnum"] * elf["e_shentsize"]
    if table > file_size:
        raise JitError(f"truncated: the section header table ends at 0x{table:x}, the file at "
                       f"0x{file_size:x}", file=file)


def _section(elf: ELFFile, index: int, file_size: int, file: str, where: _Progress) -> Section:
    where.now = f"section #{index}"
    sec = elf.get_section(index)
    where.now = f"section #{index} '{sec.name}'"
    size = sec["sh_size"]
    if sec["sh_type"] == "SHT_NOBITS":
        if size > MAX_NOBITS:
            raise JitError(f"section #{index} '{sec.name}': {size} bytes of zeros is too large", file=file)
        return Section(index, sec.name, sec["sh_type"], sec["sh_flags"], bytes(size))
    if sec["sh_type"] != "SHT_NULL" and sec["sh_offset"] + size > file_size:
        raise JitError(f"section #{index} '{sec.name}' ({size} bytes at offset 0x{sec['sh_offset']:x}) "
                       "runs past the end of the file", file=file)
    data = sec.data() if sec["sh_type"] != "SHT_NULL" else b""
    return Section(index, sec.name, sec["sh_type"], sec["sh_flags"], data)


def _symbols(elf: ELFFile, nsections: int) -> tuple[Symbol, ...]:
    table = elf.get_section_by_name(".symtab")
    if table is None:
        return ()
    if not isinstance(table, SymbolTableSection):
        raise ELFError(f".symtab has type {table['sh_type']}, not SHT_SYMTAB")
    out = []
    for i, sym in enumerate(table.iter_symbols()):
        shndx = sym["st_shndx"]
        section = shndx if isinstance(shndx, int) and 0 < shndx < nsections else None
        out.append(Symbol(i, sym.name, sym["st_value"], sym["st_size"], sym["st_info"]["type"],
                          sym["st_info"]["bind"], section))
    return tuple(out)


def _relocations(elf: ELFFile, sections: tuple[Section, ...], nsymbols: int, file: str,
                 where: _Progress) -> dict[int, tuple[Reloc, ...]]:
    """Relocations of code and `.maps`, the only ones libbpf applies (debug info has its own)."""
    out: dict[int, tuple[Reloc, ...]] = {}
    for sec in sections:
        if sec.type not in ("SHT_REL", "SHT_RELA"):
            continue
        where.now = f"relocation section '{sec.name}'"
        target = elf.get_section(sec.index)["sh_info"]
        if not 0 < target < len(sections):
            raise JitError(f"relocation section '{sec.name}' patches section #{target}, which "
                           "does not exist", file=file)
        if not (sections[target].executable or sections[target].name == ".maps"):
            continue
        if sec.type == "SHT_RELA":
            raise JitError(f"section '{sec.name}': RELA relocations are not used by BPF objects", file=file)
        relocs = tuple(Reloc(r["r_offset"], r["r_info_type"], r["r_info_sym"])
                       for r in elf.get_section(sec.index).iter_relocations())
        bad = next((r for r in relocs if r.symbol >= nsymbols), None)
        if bad is not None:
            raise JitError(f"relocation section '{sec.name}' at offset 0x{bad.offset:x}: symbol "
                           f"#{bad.symbol} does not exist", file=file)
        out[target] = out.get(target, ()) + relocs
    return out
