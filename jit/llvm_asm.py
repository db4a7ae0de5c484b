"""The LLVM / kernel pseudo-C BPF assembly dialect (`r0 = *(u32 *)(r1 + 4)`): text -> slots.

This is the syntax of the kernel selftests' inline asm (`progs/verifier_*.c`) as clang's BPF
assembler reads it, after the importer has substituted `%%`, `%[name]` and `%=`. Statements end
with `;` or a newline; `/* */`, `//` and `#` start comments; `name:` and numeric `1:` labels
(referenced as `1f`/`1b`) may share a line with a statement. `.byte/.short/.long/.8byte` emit
raw little-endian data that must fill whole 8-byte slots; `.rept N` ... `.endr` repeats.

Where clang-19 / llvm-mc agree, we follow them:
- a non-`ll` immediate keeps its low 32 bits as an s32: `r0 = 0xffffffff` is imm -1 and
  `r1 = 4294967296` silently becomes 0 (write `ll` for 64-bit constants);
- `0x`, `0b` and leading-`0` octal literals; uppercase `U`/`L`/`LL`/`ULL` suffixes are ignored,
  while a lowercase `ll` straight after a number is the ld_imm64 marker (`1ll` == `1 ll`);
- adjacent constants are summed, so a substituted `r0 = 8 - 1` reads as 7.
We are stricter than LLVM where it hides mistakes: an immediate may not start with `+`
(`r0 =+ 1` is refused, LLVM reads +1), and offsets outside s16 are errors (LLVM wraps them).

Extensions, so that every slot `jit.isa.check` accepts has a spelling the disassembler can
print and we read back: `rX = *(u32 *)skb[rY + K]` (LD_IND with imm), `call pc+N` (bpf2bpf
call by displacement), `call kfunc(N)` (kfunc by BTF id), `rX = map_fd(N) ll`, `map_value`,
`btf_id`, `func`, `map_idx`, `map_idx_value` (ld_imm64 pseudo sources; `(N) + K` puts K in
the second slot), and the prefixes `probe_mem`, `probe_mem32`, `probe_atomic` for the
kernel's internal PROBE_* modes of a memory statement.

Owns: parsing this dialect. Must not import unicorn, capstone, checks/ or bot/.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, NamedTuple

from jit import isa
from jit.errors import JitError
from jit.isa import Insn

Resolver = Callable[[str], tuple[int, int]]


@dataclass(frozen=True)
class Assembled:
    """Slots (ld_imm64 takes two), the source line of each slot, and named labels -> slot.
    Numeric local labels (`1:`) are not unique and are left out of `labels`."""
    insns: list[Insn]
    lines: list[int]
    labels: dict[str, int]


class Reg(NamedTuple):
    is64: bool
    n: int


class Num(NamedTuple):
    value: int
    sign: str          # "" (none written), "+" or "-": the first sign character written


class Size(NamedTuple):
    code: int          # isa.B / H / W / DW
    signed: bool


# Names the printer shares with the parser.
PSEUDO_NAMES = {isa.PSEUDO_MAP_FD: "map_fd", isa.PSEUDO_MAP_VALUE: "map_value",
                isa.PSEUDO_BTF_ID: "btf_id", isa.PSEUDO_FUNC: "func",
                isa.PSEUDO_MAP_IDX: "map_idx", isa.PSEUDO_MAP_IDX_VALUE: "map_idx_value"}
ALU_ASSIGN = {isa.ADD: "+=", isa.SUB: "-=", isa.MUL: "*=", isa.DIV: "/=", isa.OR: "|=",
              isa.AND: "&=", isa.LSH: "<<=", isa.RSH: ">>=", isa.MOD: "%=", isa.XOR: "^=",
              isa.ARSH: "s>>="}
SIGNED_ASSIGN = {isa.DIV: "s/=", isa.MOD: "s%="}
JMP_OPS = {isa.JEQ: "==", isa.JNE: "!=", isa.JGT: ">", isa.JGE: ">=", isa.JLT: "<",
           isa.JLE: "<=", isa.JSGT: "s>", isa.JSGE: "s>=", isa.JSLT: "s<", isa.JSLE: "s<=",
           isa.JSET: "&"}
_PSEUDO_SRC = {v: k for k, v in PSEUDO_NAMES.items()}
ENDIAN = {(isa.ALU, isa.TO_BE): "be", (isa.ALU, isa.TO_LE): "le", (isa.ALU64, isa.TO_LE): "bswap"}
ATOMIC_FETCH = {isa.ADD | isa.FETCH: "atomic_fetch_add", isa.AND | isa.FETCH: "atomic_fetch_and",
                isa.OR | isa.FETCH: "atomic_fetch_or", isa.XOR | isa.FETCH: "atomic_fetch_xor"}
ATOMIC_SWAP = {isa.ATOMIC_XCHG: "xchg", isa.ATOMIC_CMPXCHG: "cmpxchg"}
# (class, plain mode, prefix) -> the kernel-internal PROBE_* mode the prefix selects.
PROBE_MODES = {(isa.LDX, isa.MEM, "probe_mem"): isa.PROBE_MEM,
               (isa.LDX, isa.MEMSX, "probe_mem"): isa.PROBE_MEMSX,
               (isa.LDX, isa.MEM, "probe_mem32"): isa.PROBE_MEM32,
               (isa.ST, isa.MEM, "probe_mem32"): isa.PROBE_MEM32,
               (isa.STX, isa.MEM, "probe_mem32"): isa.PROBE_MEM32,
               (isa.STX, isa.ATOMIC, "probe_atomic"): isa.PROBE_ATOMIC}
_PROBE_PREFIXES = frozenset(prefix for _, _, prefix in PROBE_MODES)

_REGS = {f"{p}{n}": Reg(p == "r", n) for p in "rw" for n in range(isa.MAX_REG + 1)}
_SIZES = {f"{s}{8 * b}": Size(isa.BYTES_SIZE[b], s == "s") for s in "us" for b in (1, 2, 4, 8)}
_ENDIANS = {f"{name}{w}": (cls, src, w) for (cls, src), name in ENDIAN.items() for w in (16, 32, 64)}
_ASSIGN_OPS = {v: (k, 0) for k, v in ALU_ASSIGN.items()} | {v: (k, 1) for k, v in SIGNED_ASSIGN.items()}
_CMP_OPS = {v: k for k, v in JMP_OPS.items()}
# Function-style atomics: name -> (imm, whether the name says 64-bit; None: the type says).
_FUNCS = {name: (imm, None) for imm, name in ATOMIC_FETCH.items()} | {
    f"{name}{suffix}": (imm, suffix == "_64")
    for imm, name in ATOMIC_SWAP.items() for suffix in ("_64", "32_32")}
_KEYWORDS = frozenset(("if", "goto", "gotol", "call", "callx", "exit", "ll", "lock", "skb",
                       "may_goto", "load_acquire", "store_release", "addr_space_cast",
                       ".rept", ".endr", *_PROBE_PREFIXES))
_DATA_WIDTH = {".byte": 1, ".short": 2, ".2byte": 2, ".long": 4, ".4byte": 4, ".8byte": 8, ".quad": 8}
MAX_REPEAT = 1 << 20          # above the kernel's 1M-instruction limit; stops a typo eating memory

_TOKEN = re.compile(r"""\s*(?:
    (?P<num>(?P<sign>[+-](?:\s*[+-])*)?\s*
        (?P<digits>0[xX][0-9a-fA-F]+|0[bB][01]+|\d+)U?L{0,2}(?:(?![\w.])|(?=ll(?![\w.]))))
  | (?P<ref>\d+[fb](?![\w.]))
  | (?P<op>s>>=|s/=|s%=|s>=|s<=|s>|s<|<<=|>>=|[-+*/%|&^]=|==|!=|>=|<=|[<>&=])
  | (?P<word>[A-Za-z_.][\w.]*(?:%=(?=\s*$))?)
  | (?P<punct>[-+*()\[\],])
)""", re.X)
_LABEL_DEF = re.compile(r"\s*([A-Za-z_.][\w.]*(?:%=)?|\d+)\s*:")
_NUMERIC_REF = re.compile(r"(\d+)([fb])")
# Statement separators and comments; newlines are counted for line numbers.
_SPLIT = re.compile(r"/\*.*?\*/|//[^\n]*|#[^\n]*|[;\n]", re.S)


class _Refused(Exception):
    """A statement of a known shape with a bad operand; the caller adds file, line and text."""


def _number(m: re.Match) -> Num:
    digits, sign = m.group("digits"), m.group("sign") or ""
    if digits[:2] in ("0x", "0X"):
        value = int(digits, 16)
    elif digits[:2] in ("0b", "0B"):
        value = int(digits[2:], 2)
    elif len(digits) > 1 and digits[0] == "0":
        value = int(digits, 8)            # ValueError for 08: the caller refuses the statement
    else:
        value = int(digits)
    if sign.count("-") % 2:
        value = -value
    return Num(value, sign[:1])


def _classify(m: re.Match) -> tuple[str, object]:
    """(shape letter or literal, operand value or None) of one token."""
    kind, text = m.lastgroup, m.group(m.lastgroup)
    if kind == "num":
        return "N", _number(m)
    if kind == "ref":
        return "I", text
    if kind == "op":
        if text in _CMP_OPS:
            return "C", _CMP_OPS[text]
        return ("A", _ASSIGN_OPS[text]) if text in _ASSIGN_OPS else (text, None)
    if kind == "punct":
        return text, None
    for letter, table in (("R", _REGS), ("T", _SIZES), ("E", _ENDIANS), ("F", _FUNCS)):
        if text in table:
            return letter, table[text]
    if text in _KEYWORDS or text in _DATA_WIDTH:
        return text, None
    return "I", text


@lru_cache(maxsize=16384)
def _parse(stmt: str) -> tuple[tuple[str, ...], str | None, tuple]:
    """Label names, the shape key ("R = N"), and the operand values of one statement.
    The shape is None when the text does not tokenize."""
    labels, pos = [], 0
    while m := _LABEL_DEF.match(stmt, pos):
        labels.append(m.group(1))
        pos = m.end()
    shape: list[str] = []
    operands: list = []
    end = len(stmt)           # statements arrive stripped, so no trailing blanks
    while pos < end:
        m = _TOKEN.match(stmt, pos)
        if not m:
            return tuple(labels), None, ()
        try:
            letter, value = _classify(m)
        except ValueError:
            return tuple(labels), None, ()
        if letter == "N" and shape and shape[-1] == "N" and value.sign:
            operands[-1] = Num(operands[-1].value + value.value, operands[-1].sign)
        else:
            shape.append(letter)
            if value is not None:
                operands.append(value)
        pos = m.end()
    return tuple(labels), " ".join(shape), tuple(operands)


def _statements(text: str, first_line: int) -> list[tuple[int, str]]:
    """(line, statement text) pairs, comments removed."""
    out, parts = [], []
    line, stmt_line, pos = first_line, None, 0
    for m in _SPLIT.finditer(text):
        chunk = text[pos:m.start()]
        if chunk.strip() and stmt_line is None:
            stmt_line = line
        parts.append(chunk)
        sep, pos = m.group(), m.end()
        if sep in ";\n":
            if stmt_line is not None:
                out.append((stmt_line, "".join(parts).strip()))
            parts, stmt_line = [], None
            line += sep == "\n"
        elif sep.startswith("/*"):
            parts.append(" ")
            line += sep.count("\n")
    chunk = text[pos:]
    if chunk.strip():
        out.append((stmt_line if stmt_line is not None else line, ("".join(parts) + chunk).strip()))
    return out


# ---------------------------------------------------------------- operand checks

def _reg64(r: Reg, what: str = "register") -> int:
    if not r.is64:
        raise _Refused(f"{what} must be an r register")
    return r.n


def _same_width(*regs: Reg) -> bool:
    if any(r.is64 != regs[0].is64 for r in regs):
        raise _Refused("r and w registers mixed")
    return regs[0].is64


def _imm32(n: Num) -> int:
    """A non-ll immediate: no leading '+', low 32 bits kept as s32 (what clang does)."""
    if n.sign == "+":
        raise _Refused("an immediate may not start with '+'")
    if not -(1 << 63) <= n.value < (1 << 64):
        raise _Refused(f"immediate {n.value} does not fit 64 bits")
    return isa.s32(n.value)


def _imm_range(n: Num, lo: int, hi: int, what: str) -> int:
    if n.sign == "+" or not lo <= n.value <= hi:
        raise _Refused(f"{what} {n.value} out of range {lo}..{hi}")
    return n.value


def _signed_off(n: Num, bits: int, what: str = "offset") -> int:
    """`+ K` or `- K` (a sign is required) that fits s16 or s32."""
    if not n.sign:
        raise _Refused(f"{what} needs '+' or '-'")
    if not -(1 << (bits - 1)) <= n.value < (1 << (bits - 1)):
        raise _Refused(f"{what} {n.value} out of s{bits} range")
    return n.value


def _off16(n: Num) -> int:
    return _signed_off(n, 16)


def _alu_class(r: Reg) -> int:
    return isa.ALU64 if r.is64 else isa.ALU


# ---------------------------------------------------------------- the builder

class _Builder:
    """Slots, lines, labels and pending fixups of one `assemble` call."""

    def __init__(self, file: str | None, resolve: Resolver | None):
        self.file, self.resolve = file, resolve
        self.insns: list[Insn] = []
        self.lines: list[int] = []
        self.labels: dict[str, int] = {}
        self.numeric: dict[str, list[int]] = {}
        self.fixups: list[tuple] = []     # (slot, kind, target, line, stmt)
        self.raw = bytearray()
        self.raw_line = 0
        self.line, self.stmt = 0, ""
        self.probe: str | None = None    # a probe_* prefix not yet applied to an access

    def error(self, message: str, line: int | None = None) -> JitError:
        return JitError(message, file=self.file, line=self.line if line is None else line)

    def define(self, name: str) -> None:
        if self.raw:
            raise _Refused(f"label '{name}' inside a partly filled raw slot")
        if name.isdigit():
            self.numeric.setdefault(name, []).append(len(self.insns))
        elif name in self.labels:
            raise _Refused(f"label '{name}' defined twice")
        else:
            self.labels[name] = len(self.insns)

    def emit(self, *insns: Insn) -> None:
        if self.raw:
            raise _Refused("instruction inside a partly filled raw slot")
        self.insns.extend(insns)
        self.lines.extend([self.line] * len(insns))

    def emit_raw(self, data: bytes) -> None:
        if not self.raw:
            self.raw_line = self.line
        self.raw += data
        while len(self.raw) >= 8:
            self.insns.append(Insn.from_bytes(bytes(self.raw[:8])))
            self.lines.append(self.raw_line)
            del self.raw[:8]
            self.raw_line = self.line

    def mode(self, cls: int, plain: int) -> int:
        """The access mode: `plain`, or its PROBE_* rewrite when the statement had a prefix."""
        if self.probe is None:
            return plain
        prefix, self.probe = self.probe, None
        probed = PROBE_MODES.get((cls, plain, prefix))
        if probed is None:
            raise _Refused(f"{prefix} does not apply to this access")
        return probed

    def jump(self, insn: Insn, target, field: str) -> None:
        """Emit a jump whose displacement (`off` or `imm`) is a Num or a label to fix up later."""
        if isinstance(target, Num):
            if not target.sign:
                raise _Refused("jump displacement needs '+' or '-'")
            self.emit(dataclasses.replace(insn, **{field: self._disp(target.value, field)}))
            return
        self.emit(insn)
        self.fixups.append((len(self.insns) - 1, field, self._label_ref(target), self.line, self.stmt))

    def symbol(self, insn: Insn, name: str, kind: str, extra: int = 0) -> None:
        """Emit a call or ld_imm64 naming `name`: a label here, else what `resolve` says."""
        if kind == "ld":
            self.emit(insn, Insn(0, imm=extra))
        else:
            self.emit(insn)
        slot = len(self.insns) - (2 if kind == "ld" else 1)
        self.fixups.append((slot, kind, name, self.line, self.stmt))

    def _label_ref(self, name: str):
        m = _NUMERIC_REF.fullmatch(name)
        if not m:
            return name
        defs = self.numeric.get(m.group(1), [])
        if m.group(2) == "b":
            if not defs:
                raise _Refused(f"no label '{m.group(1)}' before '{name}'")
            return defs[-1]
        return (m.group(1), len(defs))   # the next definition of this number

    @staticmethod
    def _disp(value: int, field: str) -> int:
        return _signed_off(Num(value, "+"), 16 if field == "off" else 32, "jump displacement")

    def finish(self) -> Assembled:
        if self.raw:
            raise self.error(f"raw data leaves {len(self.raw)} bytes short of a whole slot",
                             self.raw_line)
        for slot, kind, target, line, stmt in self.fixups:
            try:
                self.insns[slot] = self._fix(slot, kind, target)
            except _Refused as e:
                raise self.error(f"{e} in '{stmt}'", line) from None
            except JitError as e:                # the resolver's own refusal
                raise e.located(file=self.file, line=line)
        return Assembled(self.insns, self.lines, self.labels)

    def _fix(self, slot: int, kind: str, target) -> Insn:
        insn = self.insns[slot]
        if kind in ("off", "imm"):
            dest = self._dest(target)
            return dataclasses.replace(insn, **{kind: self._disp(dest - slot - 1, kind)})
        if target in self.labels:
            src = isa.PSEUDO_CALL if kind == "call" else isa.PSEUDO_FUNC
            return dataclasses.replace(insn, src=src, imm=self._disp(self.labels[target] - slot - 1, "imm"))
        src, imm = self._resolve(target)
        if not 0 <= src <= (isa.PSEUDO_KFUNC_CALL if kind == "call" else isa.PSEUDO_MAP_IDX_VALUE):
            raise _Refused(f"resolver gave '{target}' the invalid source {src}")
        return dataclasses.replace(insn, src=src, imm=imm)

    def _dest(self, target) -> int:
        if isinstance(target, int):
            return target
        if isinstance(target, tuple):
            number, index = target
            defs = self.numeric.get(number, [])
            if index >= len(defs):
                raise _Refused(f"no label '{number}' after '{number}f'")
            return defs[index]
        if target not in self.labels:
            raise _Refused(f"undefined label '{target}'")
        return self.labels[target]

    def _resolve(self, name: str) -> tuple[int, int]:
        if self.resolve is None:
            raise _Refused(f"undefined symbol '{name}' (no resolver given)")
        try:
            src, imm = self.resolve(name)
        except (LookupError, ValueError) as e:
            raise _Refused(f"cannot resolve symbol '{name}': {e}") from None
        return src, isa.s32(imm)


# ---------------------------------------------------------------- statement handlers
# Each handler gets the builder and the statement's operands (literal tokens dropped),
# in the order of its shape in _SHAPES.

def _mov_imm(b: _Builder, dst: Reg, imm: Num) -> None:
    b.emit(Insn(_alu_class(dst) | isa.MOV | isa.K, dst.n, imm=_imm32(imm)))


def _mov_reg(b: _Builder, dst: Reg, src: Reg) -> None:
    _same_width(dst, src)
    b.emit(Insn(_alu_class(dst) | isa.MOV | isa.X, dst.n, src.n))


def _alu(b: _Builder, dst: Reg, op: tuple[int, int], src) -> None:
    code, off = op
    if isinstance(src, Reg):
        _same_width(dst, src)
        b.emit(Insn(_alu_class(dst) | code | isa.X, dst.n, src.n, off))
    else:
        b.emit(Insn(_alu_class(dst) | code | isa.K, dst.n, 0, off, _imm32(src)))


def _neg(b: _Builder, dst: Reg, src: Reg) -> None:
    if dst != src:
        raise _Refused("negation is in place: write rX = -rX")
    b.emit(Insn(_alu_class(dst) | isa.NEG, dst.n))


def _movsx(b: _Builder, dst: Reg, size: Size, src: Reg) -> None:
    bits = 8 * isa.SIZE_BYTES[size.code]
    if not size.signed or bits == 64 or (bits == 32 and not dst.is64):
        raise _Refused(f"no sign-extending move from {'s' if size.signed else 'u'}{bits}")
    _same_width(dst, src)
    b.emit(Insn(_alu_class(dst) | isa.MOV | isa.X, dst.n, src.n, bits))


def _endian(b: _Builder, dst: Reg, kind: tuple[int, int, int], src: Reg) -> None:
    cls, source, width = kind
    if dst != src or not dst.is64:
        raise _Refused("byte swaps are in place on an r register: write rX = be16 rX")
    b.emit(Insn(cls | isa.END | source, dst.n, imm=width))


def _ld_imm64(b: _Builder, dst: Reg, value: Num) -> None:
    if value.sign == "+" or not -(1 << 63) <= value.value < (1 << 64):
        raise _Refused(f"{value.value} does not fit 64 bits")
    b.emit(*isa.ld_imm64(_reg64(dst, "ld_imm64 destination"), value.value))


def _ld_symbol(b: _Builder, dst: Reg, name: str, off: Num | None = None) -> None:
    """`rX = name ll`, `rX = name + K ll`: K goes to the second slot's imm."""
    extra = _signed_off(off, 32) if off else 0
    b.symbol(Insn(isa.LD_IMM64, _reg64(dst, "ld_imm64 destination")), name, "ld", extra)


def _ld_pseudo(b: _Builder, dst: Reg, name: str, imm: Num, off: Num | None = None) -> None:
    """`rX = map_value(N) + K ll`: an ld_imm64 with an explicit pseudo source."""
    src = _PSEUDO_SRC.get(name)
    if src is None:
        raise _Refused(f"unknown ld_imm64 source '{name}'")
    first = Insn(isa.LD_IMM64, _reg64(dst, "ld_imm64 destination"), src, imm=_imm32(imm))
    b.emit(first, Insn(0, imm=_signed_off(off, 32) if off else 0))


def _unsigned(size: Size, what: str) -> None:
    if size.signed:
        raise _Refused(f"{what} takes u8/u16/u32/u64")


def _fits(reg: Reg, size: Size) -> None:
    """w registers carry at most 32 bits."""
    if size.code == isa.DW and not reg.is64:
        raise _Refused("a 64-bit access needs an r register")


def _load(b: _Builder, dst: Reg, size: Size, base: Reg, off: Num) -> None:
    if size.signed and (size.code == isa.DW or not dst.is64):
        raise _Refused("sign-extending loads are s8/s16/s32 into an r register")
    _fits(dst, size)
    mode = b.mode(isa.LDX, isa.MEMSX if size.signed else isa.MEM)
    b.emit(Insn(isa.LDX | mode | size.code, dst.n, _reg64(base, "base"), _off16(off)))


def _ld_packet(b: _Builder, dst: Reg, size: Size, index, off: Num | None = None) -> None:
    """LD_ABS `r0 = *(u8 *)skb[K]` and LD_IND `r0 = *(u8 *)skb[rX]` (`skb[rX + K]` is ours)."""
    if dst != Reg(True, 0) or size.signed or size.code == isa.DW:
        raise _Refused("packet loads are r0 = *(u8|u16|u32 *)skb[...]")
    if isinstance(index, Num):
        b.emit(Insn(isa.LD | isa.ABS | size.code, imm=_imm32(index)))
    else:
        imm = _signed_off(off, 32) if off else 0
        b.emit(Insn(isa.LD | isa.IND | size.code, 0, _reg64(index, "index"), imm=imm))


def _store(b: _Builder, size: Size, base: Reg, off: Num, src) -> None:
    _unsigned(size, "a store")
    if isinstance(src, Reg):
        _fits(src, size)
        code, reg, imm = isa.STX | b.mode(isa.STX, isa.MEM), src.n, 0
    else:
        code, reg, imm = isa.ST | b.mode(isa.ST, isa.MEM), 0, _imm32(src)
    b.emit(Insn(code | size.code, _reg64(base, "base"), reg, _off16(off), imm))


def _atomic(b: _Builder, size: Size, addr: tuple[Reg, Num], reg: Reg, imm: int) -> None:
    """STX|ATOMIC with the address register in dst, except load_acquire (see there)."""
    base, off = addr
    code = isa.STX | b.mode(isa.STX, isa.ATOMIC) | size.code
    b.emit(Insn(code, _reg64(base, "base"), reg.n, _off16(off), imm))


def _rmw_size(size: Size, reg: Reg) -> None:
    if size.signed or size.code not in (isa.W, isa.DW):
        raise _Refused("atomic operations take u32 or u64")
    _fits(reg, size)


def _lock(b: _Builder, size: Size, base: Reg, off: Num, op: tuple[int, int], src: Reg) -> None:
    code, signed = op
    if signed or code not in isa.ATOMIC_RMW:
        raise _Refused("lock takes +=, &=, |= or ^=")
    _rmw_size(size, src)
    _atomic(b, size, (base, off), src, code)


def _fetch(b: _Builder, dst: Reg, func: tuple, size: Size, base: Reg, off: Num, src: Reg) -> None:
    """`rX = atomic_fetch_add((u64 *)(rY + K), rX)`: the old value lands in the source."""
    imm, _ = func
    if imm not in ATOMIC_FETCH or dst != src:
        raise _Refused("write rX = atomic_fetch_<op>((u64 *)(rY + K), rX)")
    _rmw_size(size, src)
    if dst.is64 != (size.code == isa.DW):
        raise _Refused("u32 goes with w registers, u64 with r registers")
    _atomic(b, size, (base, off), src, imm)


def _swap_size(func: tuple, imm: int, *regs: Reg) -> Size:
    """The width of xchg_64 / cmpxchg32_32 and friends, checked against the registers."""
    if func[0] != imm or func[1] != _same_width(*regs):
        raise _Refused(f"{ATOMIC_SWAP[imm]}_64 takes r registers, {ATOMIC_SWAP[imm]}32_32 w registers")
    return Size(isa.DW if func[1] else isa.W, False)


def _xchg(b: _Builder, dst: Reg, func: tuple, base: Reg, off: Num, src: Reg) -> None:
    size = _swap_size(func, isa.ATOMIC_XCHG, dst, src)
    if dst != src:
        raise _Refused("write rX = xchg_64(rY + K, rX)")
    _atomic(b, size, (base, off), src, isa.ATOMIC_XCHG)


def _cmpxchg(b: _Builder, dst: Reg, func: tuple, base: Reg, off: Num, old: Reg, src: Reg) -> None:
    size = _swap_size(func, isa.ATOMIC_CMPXCHG, dst, old, src)
    if dst.n or old.n:
        raise _Refused("cmpxchg compares with and returns in r0: r0 = cmpxchg_64(rY + K, r0, rZ)")
    _atomic(b, size, (base, off), src, isa.ATOMIC_CMPXCHG)


def _load_acquire(b: _Builder, dst: Reg, size: Size, base: Reg, off: Num) -> None:
    """Unlike the other atomics, the loaded register is dst and the address is src."""
    _unsigned(size, "load_acquire")
    _fits(dst, size)
    code = isa.STX | b.mode(isa.STX, isa.ATOMIC) | size.code
    b.emit(Insn(code, dst.n, _reg64(base, "base"), _off16(off), isa.LOAD_ACQ))


def _store_release(b: _Builder, size: Size, base: Reg, off: Num, src: Reg) -> None:
    _unsigned(size, "store_release")
    _fits(src, size)
    _atomic(b, size, (base, off), src, isa.STORE_REL)


def _addr_space_cast(b: _Builder, dst: Reg, src: Reg, dst_as: Num, src_as: Num) -> None:
    """MOV64 X with off 1; imm holds the destination space in the high half."""
    hi = _imm_range(dst_as, 0, 0xFFFF, "address space")
    lo = _imm_range(src_as, 0, 0xFFFF, "address space")
    b.emit(Insn(isa.ALU64 | isa.MOV | isa.X, _reg64(dst), _reg64(src), 1, isa.s32((hi << 16) | lo)))


def _cond_jump(b: _Builder, dst: Reg, op: int, src, target) -> None:
    cls = isa.JMP if dst.is64 else isa.JMP32
    if isinstance(src, Reg):
        _same_width(dst, src)
        b.jump(Insn(cls | op | isa.X, dst.n, src.n), target, "off")
    else:
        b.jump(Insn(cls | op | isa.K, dst.n, imm=_imm32(src)), target, "off")


def _goto(b: _Builder, target) -> None:
    b.jump(Insn(isa.JMP | isa.JA), target, "off")


def _gotol(b: _Builder, target) -> None:
    b.jump(Insn(isa.JMP32 | isa.JA), target, "imm")


def _may_goto(b: _Builder, target) -> None:
    b.jump(Insn(isa.JMP | isa.JCOND), target, "off")


def _call_imm(b: _Builder, imm: Num) -> None:
    b.emit(Insn(isa.JMP | isa.CALL, imm=_imm32(imm)))


def _call_name(b: _Builder, name: str) -> None:
    b.symbol(Insn(isa.JMP | isa.CALL), name, "call")


def _call_pc(b: _Builder, name: str, disp: Num) -> None:
    if name != "pc" or not disp.sign:
        raise _Refused("a call by displacement is written call pc+N")
    b.emit(Insn(isa.JMP | isa.CALL, src=isa.PSEUDO_CALL, imm=b._disp(disp.value, "imm")))


def _call_kfunc(b: _Builder, name: str, btf_id: Num) -> None:
    if name != "kfunc":
        raise _Refused("a call by BTF id is written call kfunc(N)")
    b.emit(Insn(isa.JMP | isa.CALL, src=isa.PSEUDO_KFUNC_CALL, imm=_imm32(btf_id)))


def _callx(b: _Builder, reg: Reg) -> None:
    b.emit(Insn(isa.JMP | isa.CALL | isa.X, _reg64(reg)))


def _exit(b: _Builder) -> None:
    b.emit(Insn(isa.JMP | isa.EXIT))


_MEM = "* ( T * ) ( R N )"
_SHAPES: dict[str, Callable] = {
    "R = N": _mov_imm,
    "R = R": _mov_reg,
    "R A N": _alu,
    "R A R": _alu,
    "R = - R": _neg,
    "R = ( T ) R": _movsx,
    "R = E R": _endian,
    "R = N ll": _ld_imm64,
    "R = I ll": _ld_symbol,
    "R = I N ll": _ld_symbol,
    "R = I ( N ) ll": _ld_pseudo,
    "R = I ( N ) N ll": _ld_pseudo,
    f"R = {_MEM}": _load,
    "R = * ( T * ) skb [ N ]": _ld_packet,
    "R = * ( T * ) skb [ R ]": _ld_packet,
    "R = * ( T * ) skb [ R N ]": _ld_packet,
    f"{_MEM} = R": _store,
    f"{_MEM} = N": _store,
    f"lock {_MEM} A R": _lock,
    "R = F ( ( T * ) ( R N ) , R )": _fetch,
    "R = F ( R N , R )": _xchg,
    "R = F ( R N , R , R )": _cmpxchg,
    "R = load_acquire ( ( T * ) ( R N ) )": _load_acquire,
    "store_release ( ( T * ) ( R N ) , R )": _store_release,
    "R = addr_space_cast ( R , N , N )": _addr_space_cast,
    "if R C N goto N": _cond_jump,
    "if R C N goto I": _cond_jump,
    "if R C R goto N": _cond_jump,
    "if R C R goto I": _cond_jump,
    "goto N": _goto,
    "goto I": _goto,
    "gotol N": _gotol,
    "gotol I": _gotol,
    "may_goto N": _may_goto,
    "may_goto I": _may_goto,
    "call N": _call_imm,
    "call I": _call_name,
    "call I N": _call_pc,
    "call I ( N )": _call_kfunc,
    "callx R": _callx,
    "exit": _exit,
}


# ---------------------------------------------------------------- driver

def _data(b: _Builder, directive: str, shape: str, values: tuple) -> None:
    """`.byte 1, 2` and friends: each value little-endian in its width."""
    if not values or shape != " , ".join([directive + " N"] + ["N"] * (len(values) - 1)):
        raise _Refused(f"{directive} takes numbers separated by commas")
    bits = 8 * _DATA_WIDTH[directive]
    for v in values:
        value = _imm_range(v, -(1 << (bits - 1)), (1 << bits) - 1, directive)
        b.emit_raw((value % (1 << bits)).to_bytes(bits // 8, "little"))


def _statement(b: _Builder, shape: str, operands: tuple) -> None:
    head, _, rest = shape.partition(" ")
    if head in _DATA_WIDTH:
        _data(b, head, shape, operands)
        return
    if head in _PROBE_PREFIXES:
        b.probe, shape = head, rest
    handler = _SHAPES.get(shape)
    if handler is None:
        raise _Refused("")
    handler(b, *operands)
    if b.probe is not None:
        raise _Refused(f"{head} applies only to loads, stores and atomics")


def _rept_end(stmts: list[tuple[int, str]], start: int, stop: int) -> int:
    """Index of the `.endr` closing the `.rept` at `start`."""
    depth = 0
    for i in range(start, stop):
        shape = _parse(stmts[i][1])[1]
        depth += shape == ".rept N"
        depth -= shape == ".endr"
        if depth == 0:
            return i
    raise _Refused(".rept without .endr")


def _run(b: _Builder, stmts: list[tuple[int, str]], start: int, stop: int) -> None:
    i = start
    while i < stop:
        b.line, b.stmt = stmts[i]
        labels, shape, operands = _parse(b.stmt)
        b.probe = None
        try:
            for name in labels:
                b.define(name)
            if shape == ".rept N":
                end = _rept_end(stmts, i, stop)
                count = _imm_range(operands[0], 0, MAX_REPEAT, ".rept count")
                for _ in range(count):
                    _run(b, stmts, i + 1, end)
                i = end + 1
                continue
            if shape == ".endr":
                raise _Refused(".endr without .rept")
            if shape is None:
                raise _Refused("")
            if shape:
                _statement(b, shape, operands)
        except _Refused as e:
            raise b.error(f"cannot parse '{stmts[i][1]}'" + (f": {e}" if str(e) else ""),
                          stmts[i][0]) from None
        i += 1


def assemble(text: str, *, file: str | None = None, first_line: int = 1,
             resolve: Resolver | None = None) -> Assembled:
    """Assemble pseudo-C BPF text. `resolve(name) -> (src, imm)` answers for `call name` and
    `rX = name ll` when `name` is not a label in `text` (helper id with src 0, kfunc id with
    src 2, map index with PSEUDO_MAP_FD, ...); it may raise KeyError for an unknown name.
    Raises JitError naming file and line for the first statement it cannot assemble."""
    b = _Builder(file, resolve)
    stmts = _statements(text, first_line)
    _run(b, stmts, 0, len(stmts))
    return b.finish()
