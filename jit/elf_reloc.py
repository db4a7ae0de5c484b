"""What each relocated instruction of a BPF object's functions refers to, the way libbpf reads
relocations (facts, re-expressed):

- `call` with src 1 (bpf2bpf) and an R_BPF_64_32 relocation: the callee must be in `.text`,
  at slot `symbol value / 8 + imm + 1` (global symbols carry imm -1, section symbols the
  callee's position). Without a relocation the call targets its own section at
  `pc + imm + 1`; a target inside the calling function is a call by label and stays as is.
- `ld_imm64` with R_BPF_64_64: a symbol in `.maps` is a map; in `.data*`, `.bss*`,
  `.rodata*` a global variable at `symbol value + imm` of that section; in `.text` a
  function's address (callbacks); an undefined symbol is a kernel extern (ksym, kconfig).
- `call` against an undefined symbol is a kfunc.

Owns: classifying relocations. Must not import unicorn, capstone, anything from checks/ or bot/.
"""
from __future__ import annotations

from dataclasses import dataclass

from jit import isa
from jit.elf_file import ElfFile, Reloc, Section, Symbol
from jit.errors import JitError
from jit.isa import Insn

R_BPF_64_64, R_BPF_64_32 = 1, 10
DATA_PREFIXES = (".data", ".bss", ".rodata")

FuncKey = tuple[int, int]          # (section index, first slot in the section)


@dataclass(frozen=True)
class Ref:
    """What one instruction refers to. `target` is a FuncKey for "call"/"func", the map's
    offset in `.maps` for "map", (section name, byte offset) for "data", and the symbol name
    for "extern"."""
    kind: str
    target: object


@dataclass(frozen=True)
class Function:
    name: str
    section: Section
    start: int                     # first slot in the section
    insns: tuple[Insn, ...]
    is_global: bool
    labels: tuple[tuple[int, str], ...] = ()       # (slot in the function, asm label) for naming

    @property
    def key(self) -> FuncKey:
        return (self.section.index, self.start)

    def holds(self, slot: int) -> bool:
        """Whether section slot `slot` is inside this function."""
        return self.start <= slot < self.start + len(self.insns)


def is_data_section(sec: Section) -> bool:
    """A section libbpf turns into a global-data array map."""
    return not sec.executable and any(sec.name == p or sec.name.startswith(p + ".") for p in DATA_PREFIXES)


class Resolver:
    """Turns the relocations of executable sections into `Ref`s per function slot."""

    def __init__(self, elf: ElfFile, functions: dict[FuncKey, Function], map_offsets: set[int]):
        self.elf = elf
        self.functions = functions
        self.map_offsets = map_offsets
        text = elf.named(".text")
        self.text = text.index if text is not None else None

    def error(self, sec: Section, byte_off: int, message: str) -> JitError:
        return JitError(f"section '{sec.name}' offset 0x{byte_off:x}: {message}", file=self.elf.file)

    def refs(self, fn: Function) -> tuple[tuple[int, Ref], ...]:
        """(slot in the function, Ref) for every instruction of `fn` that refers to something."""
        sec = fn.section
        by_slot = {}
        for r in self.elf.relocs.get(sec.index, ()):
            if r.offset % 8 or not fn.holds(r.offset // 8):
                continue
            by_slot[r.offset // 8 - fn.start] = self.relocated(fn, r)
        for i, insn in enumerate(fn.insns):
            if i not in by_slot and insn.is_pseudo_call:
                found = self.local_call(fn, i)
                if found is not None:
                    by_slot[i] = found
        return tuple(sorted(by_slot.items()))

    def check_coverage(self, sec: Section) -> None:
        """Every relocation of an executable section must patch a slot of some function."""
        for r in self.elf.relocs.get(sec.index, ()):
            if r.offset % 8 or not any(f.section.index == sec.index and f.holds(r.offset // 8)
                                       for f in self.functions.values()):
                raise self.error(sec, r.offset, "relocation outside every function")

    def relocated(self, fn: Function, r: Reloc) -> Ref:
        insn, sym = fn.insns[r.offset // 8 - fn.start], self.elf.symbols[r.symbol]
        if r.type not in (R_BPF_64_64, R_BPF_64_32):
            raise self.error(fn.section, r.offset, f"unsupported relocation type {r.type}")
        if not sym.defined:
            if not (insn.is_call or insn.is_ld_imm64):
                raise self.error(fn.section, r.offset, f"extern '{sym.name}' used by opcode 0x{insn.code:02x}")
            return Ref("extern", sym.name)
        if insn.is_call:
            return self.call(fn, r, insn, sym)
        if insn.is_ld_imm64:
            if r.offset // 8 - fn.start + 1 >= len(fn.insns):
                raise self.error(fn.section, r.offset, "ld_imm64 without its second slot")
            return self.load(fn, r, insn, sym)
        raise self.error(fn.section, r.offset,
                         f"relocation against '{sym.name}' patches opcode 0x{insn.code:02x}, "
                         "not a call or ld_imm64")

    def call(self, fn: Function, r: Reloc, insn: Insn, sym: Symbol) -> Ref:
        if insn.src != isa.PSEUDO_CALL:
            raise self.error(fn.section, r.offset, f"relocated call with src {insn.src} (want 1, bpf2bpf)")
        if sym.section != self.text:
            where = self.elf.sections[sym.section].name
            raise self.error(fn.section, r.offset, f"call into section '{where}': subprograms must be in .text")
        if sym.value % 8:
            raise self.error(fn.section, r.offset, f"call target symbol '{sym.name}' is not slot-aligned")
        return Ref("call", self.function_at(fn, r.offset, self.text, sym.value // 8 + insn.imm + 1))

    def load(self, fn: Function, r: Reloc, insn: Insn, sym: Symbol) -> Ref:
        target = self.elf.sections[sym.section]
        if target.name == ".maps":
            if sym.value not in self.map_offsets:
                raise self.error(fn.section, r.offset, f"'{sym.name}' is not a map of .maps")
            return Ref("map", sym.value)
        if is_data_section(target):
            return Ref("data", (target.name, sym.value + insn.imm))
        if target.index == self.text:
            return Ref("func", self.function_at(fn, r.offset, self.text, (sym.value + insn.imm) // 8))
        raise self.error(fn.section, r.offset,
                         f"ld_imm64 of '{sym.name}' in section '{target.name}' (not a map, global or function)")

    def local_call(self, fn: Function, i: int) -> Ref | None:
        """A bpf2bpf call without relocation: within its own section."""
        slot = fn.start + i + fn.insns[i].imm + 1
        if fn.holds(slot):
            return None
        return Ref("call", self.function_at(fn, (fn.start + i) * 8, fn.section.index, slot))

    def function_at(self, fn: Function, byte_off: int, section: int, slot: int) -> FuncKey:
        if (section, slot) not in self.functions:
            name = self.elf.sections[section].name
            raise self.error(fn.section, byte_off, f"call target {name}+0x{slot * 8:x} is not the start of a function")
        return (section, slot)
