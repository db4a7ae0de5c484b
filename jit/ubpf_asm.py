"""The uBPF / bpf_conformance assembly dialect (`mov32 %r0, 1`, `ldxw %r1, [%r2+4]`): text <-> slots.

Syntax (facts from bpf_conformance's assembler, which uBPF's test files share):
- one instruction per line; `#` starts a comment; tokens are split on whitespace and one trailing
  `,` per token is dropped (so `mov %r0,1` is a bad line, as upstream);
- registers `%r0`..`%r10` (`%r11`..`%r15` are accepted so negative tests can encode them);
- a 32-bit immediate in hex is unsigned up to 0xffffffff, in decimal it must fit s32;
  `lddw` takes any 64-bit value; memory offsets are s16 (`[%r10-8]`);
- `name:` defines a label; `exit` is an implicit label for the first `exit`; a jump target
  starting with `+`/`-` is a slot displacement, anything else a label;
- a `32` suffix selects the 32-bit class; `sdiv`/`smod` set off=1; `movsxNM` sets off=N.

Extensions over upstream, documented here because upstream differs: an instruction may follow a
label on the same line (upstream ignores the rest of a label line); `ldabs{b,h,w} imm` and
`ldind{b,h,w} %rS, imm` (uBPF's classic packet loads); `.raw 0x<u64>` emits one slot verbatim, which is
how the disassembler prints a slot this dialect has no mnemonic for.

Owns: parsing and printing of this dialect. Must not import unicorn, capstone, checks/ or bot/.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from jit import isa
from jit.errors import JitError
from jit.isa import Insn
from jit.program import Program, SourceLine

_ALU = {"add": isa.ADD, "sub": isa.SUB, "mul": isa.MUL, "div": isa.DIV, "sdiv": isa.DIV,
        "or": isa.OR, "and": isa.AND, "lsh": isa.LSH, "rsh": isa.RSH, "mod": isa.MOD,
        "smod": isa.MOD, "xor": isa.XOR, "mov": isa.MOV, "arsh": isa.ARSH}
_ALU_NAMES = {op: name for name, op in _ALU.items() if name not in ("sdiv", "smod")}
_JMP = {name: op for op, name in isa.JMP_CONDS.items()}
_SIZES = {"b": isa.B, "h": isa.H, "w": isa.W, "dw": isa.DW}
_SIZE_NAMES = {v: k for k, v in _SIZES.items()}
_ATOMIC = {"add": isa.ADD, "and": isa.AND, "or": isa.OR, "xor": isa.XOR,
           "xchg": isa.ATOMIC_XCHG, "cmpxchg": isa.ATOMIC_CMPXCHG}
_ATOMIC_NAMES = {v: k for k, v in _ATOMIC.items()}
_MOVSX = {"movsx864": (isa.ALU64, 8), "movsx1664": (isa.ALU64, 16), "movsx3264": (isa.ALU64, 32),
          "movsx832": (isa.ALU, 8), "movsx1632": (isa.ALU, 16)}
_MOVSX_NAMES = {v: k for k, v in _MOVSX.items()}
_END = {"le": (isa.ALU, isa.TO_LE), "be": (isa.ALU, isa.TO_BE), "bswap": (isa.ALU64, isa.TO_LE)}
_END_WIDTHS = ("16", "32", "64")
_REG = re.compile(r"%r(1[0-5]|[0-9])")
_MEM = re.compile(r"\[(%r\d+)(?:([+-])([0-9a-fA-Fx]+))?\]")
_LABEL = re.compile(r"[A-Za-z_.$0-9][\w.$]*")


@dataclass(frozen=True)
class Assembled:
    """Slots plus the source line each one came from (slot index -> SourceLine)."""
    insns: tuple[Insn, ...]
    lines: dict[int, SourceLine] = field(default_factory=dict)


class _Line:
    """One source line being assembled: its tokens and where it is, for error messages."""

    def __init__(self, mnemonic: str, operands: list[str], file: str | None, line: int):
        self.mnemonic, self.operands, self.file, self.line = mnemonic, operands, file, line

    def fail(self, message: str) -> JitError:
        return JitError(message, file=self.file, line=self.line)

    def want(self, count: int) -> list[str]:
        if len(self.operands) != count:
            raise self.fail(f"Invalid number of operands for mnemonic: {self.mnemonic} "
                            f"(expected {count}, got {len(self.operands)})")
        return self.operands

    def reg(self, text: str) -> int:
        m = _REG.fullmatch(text)
        if not m:
            raise self.fail(f"Invalid register: {text}")
        return int(m.group(1))

    def imm32(self, text: str) -> int:
        value = self.number(text, "Immediate")
        if text.lstrip("+-").lower().startswith("0x") and not text.startswith("-"):
            ok = 0 <= value <= 0xFFFFFFFF         # hex is an unsigned bit pattern
        else:
            ok = -(1 << 31) <= value < (1 << 31)
        if not ok:
            raise self.fail(f"Immediate out of 32-bit range: {text}")
        return isa.s32(value)

    def imm64(self, text: str) -> int:
        value = self.number(text, "Immediate")
        if not -(1 << 63) <= value < (1 << 64):
            raise self.fail(f"Immediate out of 64-bit range: {text}")
        return value & 0xFFFFFFFFFFFFFFFF

    def offset(self, sign: str, digits: str) -> int:
        value = self.number(digits, "Offset")
        if digits.lower().startswith("0x") and sign == "+" and value <= 0xFFFF:
            return isa.s16(value)                # hex is a 16-bit pattern, as upstream
        value = -value if sign == "-" else value
        if not -(1 << 15) <= value < (1 << 15):
            raise self.fail(f"Offset out of 16-bit range: {sign}{digits}")
        return value

    def mem(self, text: str) -> tuple[int, int]:
        m = _MEM.fullmatch(text)
        if not m:
            raise self.fail(f"Failed to decode register and offset: {text}")
        reg = self.reg(m.group(1))
        return reg, (self.offset(m.group(2), m.group(3)) if m.group(2) else 0)

    def number(self, text: str, what: str) -> int:
        try:
            return int(text, 0) if text.lstrip("+-")[:2].lower() == "0x" else int(text, 10)
        except ValueError:
            raise self.fail(f"{what} is not a number: {text}") from None


class _Assembler:
    """Two passes in one: slots are emitted as lines are read, label references fixed up at the end."""

    def __init__(self, file: str | None):
        self.file = file
        self.slots: list[Insn] = []
        self.lines: dict[int, SourceLine] = {}
        self.labels: dict[str, int] = {}
        self.fixups: list[tuple[int, str, str, _Line]] = []   # (slot, label, field, line)

    def feed(self, text: str, line_no: int) -> None:
        code = text.split("#", 1)[0]
        tokens = [t[:-1] if t.endswith(",") else t for t in code.split()]
        if tokens and tokens[0].endswith(":"):
            self._define(tokens[0][:-1], line_no)
            tokens = tokens[1:]
        if not tokens:
            return
        line = _Line(tokens[0], tokens[1:], self.file, line_no)
        if line.mnemonic == "exit" and "exit" not in self.labels:
            self.labels["exit"] = len(self.slots)
        for insn in _encode(line, self):
            self.lines[len(self.slots)] = SourceLine(self.file or "", line_no, text.strip())
            self.slots.append(insn)

    def _define(self, label: str, line_no: int) -> None:
        if not _LABEL.fullmatch(label):
            raise JitError(f"Invalid label name: {label!r}", file=self.file, line=line_no)
        if label in self.labels and label != "exit":
            raise JitError(f"Duplicate label ({label})", file=self.file, line=line_no)
        self.labels[label] = len(self.slots)

    def target(self, line: _Line, text: str, field_name: str) -> int:
        """A jump/call displacement: numeric now, or 0 and a fixup for a label."""
        if text[:1] in "+-":
            value = line.number(text, "Jump target")
            limit = 1 << (15 if field_name == "off" else 31)
            if not -limit <= value < limit:
                raise line.fail(f"Jump target out of range: {text}")
            return value
        self.fixups.append((len(self.slots), text, field_name, line))
        return 0

    def finish(self) -> Assembled:
        for slot, label, field_name, line in self.fixups:
            if label not in self.labels:
                raise line.fail(f"Invalid label: {label}")
            disp = self.labels[label] - slot - 1
            if field_name == "off" and not -(1 << 15) <= disp < (1 << 15):
                raise line.fail(f"Jump to {label} is out of 16-bit range")
            old = self.slots[slot]
            self.slots[slot] = Insn(old.code, old.dst, old.src,
                                    disp if field_name == "off" else old.off,
                                    disp if field_name == "imm" else old.imm)
        return Assembled(tuple(self.slots), self.lines)


def assemble_source(text: str, *, file: str | None = None, first_line: int = 1) -> Assembled:
    """Assemble a whole listing; errors name `file:line`. `first_line` numbers the first text line."""
    asm = _Assembler(file)
    for i, line in enumerate(text.splitlines()):
        asm.feed(line, first_line + i)
    return asm.finish()


def assemble(text: str, *, file: str | None = None, first_line: int = 1) -> list[Insn]:
    return list(assemble_source(text, file=file, first_line=first_line).insns)


def assemble_program(text: str, *, name: str, file: str = "", first_line: int = 1) -> Program:
    """A `Program` whose slots carry their source lines, for located run-time errors."""
    out = assemble_source(text, file=file or None, first_line=first_line)
    return Program(name=name, insns=out.insns, lines=out.lines, file=file)


# --- encoding: one small function per instruction family -------------------------------------------

def _encode(line: _Line, asm: _Assembler) -> list[Insn]:
    m = line.mnemonic
    if m == "lock":
        return [_encode_lock(line)]
    if m == "lddw":
        dst, value = line.want(2)
        return list(isa.ld_imm64(line.reg(dst), line.imm64(value)))
    if m == ".raw":
        (value,) = line.want(1)
        return [Insn.from_u64(line.imm64(value))]
    for encoder in (_encode_alu, _encode_jump, _encode_memory):
        insn = encoder(line, asm)
        if insn is not None:
            return [insn]
    raise line.fail(f"Invalid mnemonic: {m}")


def _split32(mnemonic: str) -> tuple[str, bool]:
    return (mnemonic[:-2], True) if mnemonic.endswith("32") else (mnemonic, False)


def _encode_alu(line: _Line, asm: _Assembler) -> Insn | None:
    m = line.mnemonic
    if m in _MOVSX:
        cls, width = _MOVSX[m]
        dst, src = line.want(2)
        return Insn(cls | isa.MOV | isa.X, line.reg(dst), line.reg(src), width, 0)
    for prefix, (cls, source) in _END.items():
        if m.startswith(prefix) and m[len(prefix):] in _END_WIDTHS:
            (dst,) = line.want(1)
            return Insn(cls | isa.END | source, line.reg(dst), 0, 0, int(m[len(prefix):]))
    if m.startswith("swap") and m[4:] in _END_WIDTHS:          # older spelling of bswap
        (dst,) = line.want(1)
        return Insn(isa.ALU64 | isa.END, line.reg(dst), 0, 0, int(m[4:]))
    base, is32 = _split32(m)
    cls = isa.ALU if is32 else isa.ALU64
    if base == "neg":
        (dst,) = line.want(1)
        return Insn(cls | isa.NEG, line.reg(dst))
    if base not in _ALU:
        return None
    dst, src = line.want(2)
    off = 1 if base in ("sdiv", "smod") else 0
    if src.startswith("%"):
        return Insn(cls | _ALU[base] | isa.X, line.reg(dst), line.reg(src), off, 0)
    return Insn(cls | _ALU[base] | isa.K, line.reg(dst), 0, off, line.imm32(src))


def _encode_jump(line: _Line, asm: _Assembler) -> Insn | None:
    m = line.mnemonic
    if m == "exit":
        line.want(0)
        return Insn(isa.JMP | isa.EXIT)
    if m == "ja":
        (target,) = line.want(1)
        return Insn(isa.JMP | isa.JA, off=asm.target(line, target, "off"))
    if m == "ja32":
        (target,) = line.want(1)
        return Insn(isa.JMP32 | isa.JA, imm=asm.target(line, target, "imm"))
    if m == "call":
        return _encode_call(line, asm)
    base, is32 = _split32(m)
    if base not in _JMP:
        return None
    dst, src, target = line.want(3)
    cls = isa.JMP32 if is32 else isa.JMP
    if src.startswith("%"):
        return Insn(cls | _JMP[base] | isa.X, line.reg(dst), line.reg(src),
                    asm.target(line, target, "off"), 0)
    return Insn(cls | _JMP[base] | isa.K, line.reg(dst), 0, asm.target(line, target, "off"),
                line.imm32(src))


def _encode_call(line: _Line, asm: _Assembler) -> Insn:
    ops = line.operands
    if len(ops) == 1 and ops[0].startswith("%"):
        return Insn(isa.JMP | isa.CALL | isa.X, line.reg(ops[0]))
    if len(ops) == 1 or (len(ops) == 2 and ops[0] == "helper"):
        return Insn(isa.JMP | isa.CALL, imm=line.imm32(ops[-1]))
    if len(ops) == 2 and ops[0] == "local":
        return Insn(isa.JMP | isa.CALL, src=isa.PSEUDO_CALL, imm=asm.target(line, ops[1], "imm"))
    if len(ops) == 2 and ops[0] == "runtime":
        return Insn(isa.JMP | isa.CALL, src=isa.PSEUDO_KFUNC_CALL, imm=line.imm32(ops[1]))
    raise line.fail("Invalid call: expected `call IMM`, `call %rN`, `call local TARGET` "
                    "or `call runtime IMM`")


def _encode_memory(line: _Line, asm: _Assembler) -> Insn | None:
    m = line.mnemonic
    for prefix, cls, mode in (("ldxs", isa.LDX, isa.MEMSX), ("ldx", isa.LDX, isa.MEM),
                              ("stx", isa.STX, isa.MEM), ("st", isa.ST, isa.MEM),
                              ("ldabs", isa.LD, isa.ABS), ("ldind", isa.LD, isa.IND)):
        size = _SIZES.get(m[len(prefix):]) if m.startswith(prefix) else None
        if size is None or (mode in (isa.MEMSX, isa.ABS, isa.IND) and size == isa.DW):
            continue
        code = cls | mode | size
        if cls == isa.LDX:
            dst, src = line.want(2)
            src_reg, off = line.mem(src)
            return Insn(code, line.reg(dst), src_reg, off, 0)
        if cls == isa.STX:
            dst, src = line.want(2)
            dst_reg, off = line.mem(dst)
            return Insn(code, dst_reg, line.reg(src), off, 0)
        if cls == isa.ST:
            dst, imm = line.want(2)
            dst_reg, off = line.mem(dst)
            return Insn(code, dst_reg, 0, off, line.imm32(imm))
        if mode == isa.ABS:
            (imm,) = line.want(1)
            return Insn(code, imm=line.imm32(imm))
        src, imm = line.want(2)
        return Insn(code, src=line.reg(src), imm=line.imm32(imm))
    return None


def _encode_lock(line: _Line) -> Insn:
    ops = list(line.operands)
    fetch = bool(ops) and ops[0] == "fetch"
    if fetch:
        ops = ops[1:]
    if len(ops) != 3:
        raise line.fail("Invalid number of operands for lock")
    base, is32 = _split32(ops[0])
    if base not in _ATOMIC:
        raise line.fail(f"Invalid atomic operation: {ops[0]}")
    imm = _ATOMIC[base] | (isa.FETCH if fetch else 0)
    dst_reg, off = line.mem(ops[1])
    code = isa.STX | isa.ATOMIC | (isa.W if is32 else isa.DW)
    return Insn(code, dst_reg, line.reg(ops[2]), off, imm)


# --- printing ---------------------------------------------------------------------------------------

def disassemble(insns) -> str:
    """One line per instruction (an lddw pair is one line); `assemble` reads it back to the same slots."""
    insns = list(insns)
    out, pc = [], 0
    while pc < len(insns):
        insn = insns[pc]
        if insn.is_ld_imm64 and insn.src == 0 and not insn.off and insn.dst <= isa.MAX_REG \
                and pc + 1 < len(insns) \
                and _is_imm64_tail(insns[pc + 1]):
            out.append(f"lddw %r{insn.dst}, {isa.imm64(insn, insns[pc + 1]):#x}")
            pc += 2
            continue
        out.append(format_insn(insn))
        pc += 1
    return "\n".join(out) + ("\n" if out else "")


def _is_imm64_tail(second: Insn) -> bool:
    return not (second.code or second.dst or second.src or second.off)


def format_insn(insn: Insn) -> str:
    """One slot in this dialect, or `.raw 0x...` when the dialect has no spelling for it."""
    if insn.dst <= isa.MAX_REG and insn.src <= isa.MAX_REG:
        for printer in (_print_alu, _print_jump, _print_memory):
            text = printer(insn)
            if text is not None:
                return text
    return f".raw {insn.to_u64():#018x}"


def _sfx(insn: Insn, wide_cls: int) -> str:
    return "" if insn.cls == wide_cls else "32"


def _print_alu(insn: Insn) -> str | None:
    if not insn.is_alu:
        return None
    op, d = insn.op, f"%r{insn.dst}"
    if op == isa.END:
        if insn.src or insn.off or insn.imm not in (16, 32, 64) or (insn.cls == isa.ALU64 and insn.source):
            return None
        name = "bswap" if insn.cls == isa.ALU64 else ("be" if insn.source == isa.TO_BE else "le")
        return f"{name}{insn.imm} {d}"
    if op == isa.NEG:
        return None if (insn.source or insn.src or insn.off or insn.imm) else f"neg{_sfx(insn, isa.ALU64)} {d}"
    if op == isa.MOV and insn.source == isa.X and insn.off:
        name = _MOVSX_NAMES.get((insn.cls, insn.off))
        return f"{name} {d}, %r{insn.src}" if name and not insn.imm else None
    if op not in _ALU_NAMES:
        return None
    signed = op in (isa.DIV, isa.MOD) and insn.off == 1
    if insn.off and not signed:
        return None
    name = ("s" if signed else "") + _ALU_NAMES[op] + _sfx(insn, isa.ALU64)
    if insn.source == isa.X:
        return None if insn.imm else f"{name} {d}, %r{insn.src}"
    return None if insn.src else f"{name} {d}, {insn.imm}"


def _disp(value: int) -> str:
    return f"{value:+d}"


def _print_jump(insn: Insn) -> str | None:
    if not insn.is_jump:
        return None
    code, op = insn.code, insn.op
    if code == isa.JMP | isa.EXIT:
        return None if (insn.dst or insn.src or insn.off or insn.imm) else "exit"
    if code == isa.JMP | isa.JA:
        return None if (insn.dst or insn.src or insn.imm) else f"ja {_disp(insn.off)}"
    if code == isa.JMP32 | isa.JA:
        return None if (insn.dst or insn.src or insn.off) else f"ja32 {_disp(insn.imm)}"
    if code == isa.JMP | isa.CALL | isa.X:
        return None if (insn.src or insn.off or insn.imm) else f"call %r{insn.dst}"
    if code == isa.JMP | isa.CALL:
        if insn.dst or insn.off:
            return None
        return {isa.CALL_HELPER: f"call {insn.imm}", isa.PSEUDO_CALL: f"call local {_disp(insn.imm)}",
                isa.PSEUDO_KFUNC_CALL: f"call runtime {insn.imm}"}.get(insn.src)
    if op not in isa.JMP_CONDS:
        return None
    name = isa.JMP_CONDS[op] + _sfx(insn, isa.JMP)
    if insn.source == isa.X:
        return None if insn.imm else f"{name} %r{insn.dst}, %r{insn.src}, {_disp(insn.off)}"
    return None if insn.src else f"{name} %r{insn.dst}, {insn.imm}, {_disp(insn.off)}"


def _mem_operand(reg: int, off: int) -> str:
    return f"[%r{reg}{off:+d}]" if off else f"[%r{reg}]"


def _print_memory(insn: Insn) -> str | None:
    cls, mode, size = insn.cls, insn.mode, _SIZE_NAMES[insn.size]
    if cls == isa.LDX and mode in (isa.MEM, isa.MEMSX) and not insn.imm:
        if mode == isa.MEMSX and size == "dw":
            return None
        prefix = "ldxs" if mode == isa.MEMSX else "ldx"
        return f"{prefix}{size} %r{insn.dst}, {_mem_operand(insn.src, insn.off)}"
    if cls == isa.ST and mode == isa.MEM and not insn.src:
        return f"st{size} {_mem_operand(insn.dst, insn.off)}, {insn.imm}"
    if cls == isa.STX and mode == isa.MEM and not insn.imm:
        return f"stx{size} {_mem_operand(insn.dst, insn.off)}, %r{insn.src}"
    if cls == isa.STX and mode == isa.ATOMIC and size in ("w", "dw") and insn.imm in _atomic_spellings():
        return f"lock {_atomic_spellings()[insn.imm]}{'32' if size == 'w' else ''} " \
               f"{_mem_operand(insn.dst, insn.off)}, %r{insn.src}"
    if cls == isa.LD and mode == isa.ABS and size != "dw" and not (insn.dst or insn.src or insn.off):
        return f"ldabs{size} {insn.imm}"
    if cls == isa.LD and mode == isa.IND and size != "dw" and not (insn.dst or insn.off):
        return f"ldind{size} %r{insn.src}, {insn.imm}"
    return None


def _atomic_spellings() -> dict[int, str]:
    names = {}
    for imm, name in _ATOMIC_NAMES.items():
        names[imm] = name
        if not imm & isa.FETCH:
            names[imm | isa.FETCH] = f"fetch {name}"
    return names
