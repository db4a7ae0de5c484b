"""The eBPF instruction set as the kernel accepts it at cpu v4: opcodes, `Insn`, and the
8-byte slot encoding with the kernel's reserved-field rules.

A program is a sequence of *slots*. `ld_imm64` takes two slots: the first holds the low
32 bits in `imm`, the second (opcode 0) holds the high 32 bits. Jump offsets, instruction
indices in reports and the interpreter's pc all count slots, exactly as the kernel does.

Owns: numbers and validation. Must not import unicorn, capstone or anything from checks/ or bot/.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from jit.errors import JitError

# Instruction classes (low 3 bits of the opcode).
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)
CLASS_NAMES = ("ld", "ldx", "st", "stx", "alu", "jmp", "jmp32", "alu64")

# Source operand bit for ALU/JMP.
K, X = 0x00, 0x08

# ALU operations (high 4 bits).
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR, MOV, ARSH, END = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)
ALU_OPS = {ADD: "add", SUB: "sub", MUL: "mul", DIV: "div", OR: "or", AND: "and", LSH: "lsh",
           RSH: "rsh", NEG: "neg", MOD: "mod", XOR: "xor", MOV: "mov", ARSH: "arsh", END: "end"}
TO_LE, TO_BE = 0x00, 0x08          # END source bit for the ALU class

# Jump operations (high 4 bits).
JA, JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE, CALL, EXIT, JLT, JLE, JSLT, JSLE, JCOND = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0, 0xE0)
JMP_CONDS = {JEQ: "jeq", JGT: "jgt", JGE: "jge", JSET: "jset", JNE: "jne", JSGT: "jsgt",
             JSGE: "jsge", JLT: "jlt", JLE: "jle", JSLT: "jslt", JSLE: "jsle"}

# Load/store sizes (bits 3-4) and their byte widths.
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
SIZE_BYTES = {B: 1, H: 2, W: 4, DW: 8}
BYTES_SIZE = {v: k for k, v in SIZE_BYTES.items()}

# Load/store modes (bits 5-7). PROBE_* are the kernel's internal rewrites of LDX/ST/STX/ATOMIC
# for BTF pointers and arenas; they reuse the numeric values of modes other classes use.
IMM, ABS, IND, MEM, MEMSX, ATOMIC = 0x00, 0x20, 0x40, 0x60, 0x80, 0xC0
PROBE_MEM, PROBE_MEMSX, PROBE_MEM32, PROBE_ATOMIC = 0x20, 0x40, 0xA0, 0xE0

# Atomic operations (imm of STX|ATOMIC).
FETCH = 0x01
ATOMIC_XCHG = 0xE0 | FETCH
ATOMIC_CMPXCHG = 0xF0 | FETCH
LOAD_ACQ, STORE_REL = 0x100, 0x110
ATOMIC_RMW = {ADD: "add", OR: "or", AND: "and", XOR: "xor"}
ATOMIC_OPS = frozenset(list(ATOMIC_RMW) + [op | FETCH for op in ATOMIC_RMW]
                       + [ATOMIC_XCHG, ATOMIC_CMPXCHG])

# ld_imm64 pseudo sources (src_reg of the first slot).
PSEUDO_MAP_FD, PSEUDO_MAP_VALUE, PSEUDO_BTF_ID, PSEUDO_FUNC, PSEUDO_MAP_IDX, PSEUDO_MAP_IDX_VALUE = range(1, 7)
# call sources.
CALL_HELPER, PSEUDO_CALL, PSEUDO_KFUNC_CALL = 0, 1, 2

LD_IMM64 = LD | IMM | DW           # 0x18
MAX_REG = 10                       # r0..r10; r10 is the read-only frame pointer
FP = 10


def s16(v: int) -> int:
    """`v` truncated to 16 bits and read as signed."""
    return (v & 0xFFFF) - ((v & 0x8000) << 1)


def s32(v: int) -> int:
    """`v` truncated to 32 bits and read as signed."""
    return (v & 0xFFFFFFFF) - ((v & 0x80000000) << 1)


@dataclass(frozen=True, slots=True)
class Insn:
    """One 8-byte instruction slot: opcode, dst/src registers (4 bits each), s16 off, s32 imm."""
    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    @property
    def cls(self) -> int:
        return self.code & 0x07

    @property
    def op(self) -> int:
        """ALU/JMP operation (high 4 bits)."""
        return self.code & 0xF0

    @property
    def source(self) -> int:
        """K or X for ALU/JMP; TO_LE or TO_BE for ALU END."""
        return self.code & 0x08

    @property
    def size(self) -> int:
        """Load/store size field (W/H/B/DW)."""
        return self.code & 0x18

    @property
    def nbytes(self) -> int:
        return SIZE_BYTES[self.code & 0x18]

    @property
    def mode(self) -> int:
        return self.code & 0xE0

    @property
    def is_ld_imm64(self) -> bool:
        return self.code == LD_IMM64

    @property
    def is_alu(self) -> bool:
        return self.cls in (ALU, ALU64)

    @property
    def is_jump(self) -> bool:
        return self.cls in (JMP, JMP32)

    @property
    def is_call(self) -> bool:
        return self.cls == JMP and self.op == CALL

    @property
    def is_pseudo_call(self) -> bool:
        return self.code == (JMP | CALL) and self.src == PSEUDO_CALL

    @property
    def is_exit(self) -> bool:
        return self.code == (JMP | EXIT)

    @property
    def is_memory_access(self) -> bool:
        """LDX/ST/STX of any mode that touches memory (not LD_ABS/LD_IND, not ld_imm64)."""
        return self.cls in (LDX, ST, STX)

    def jump_target(self, pc: int) -> int:
        """Slot index a taken jump at slot `pc` lands on (gotol takes its displacement from imm)."""
        disp = self.imm if self.code == (JMP32 | JA) else self.off
        return pc + 1 + disp

    def to_bytes(self) -> bytes:
        return struct.pack("<BBhi", self.code, (self.src << 4) | self.dst, self.off, self.imm)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Insn":
        code, regs, off, imm = struct.unpack("<BBhi", raw)
        return cls(code, regs & 0x0F, regs >> 4, off, imm)

    @classmethod
    def from_u64(cls, value: int) -> "Insn":
        """An instruction from its little-endian 64-bit integer form (the conformance `raw` section)."""
        return cls.from_bytes((value & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"))

    def to_u64(self) -> int:
        return int.from_bytes(self.to_bytes(), "little")


def ld_imm64(dst: int, value: int, src: int = 0) -> tuple[Insn, Insn]:
    """The two slots of `dst = value ll` (value taken modulo 2**64)."""
    value &= 0xFFFFFFFFFFFFFFFF
    return (Insn(LD_IMM64, dst, src, 0, s32(value)), Insn(0, 0, 0, 0, s32(value >> 32)))


def imm64(first: Insn, second: Insn) -> int:
    """The unsigned 64-bit constant of an ld_imm64 pair."""
    return ((second.imm & 0xFFFFFFFF) << 32) | (first.imm & 0xFFFFFFFF)


def encode(insns) -> bytes:
    return b"".join(i.to_bytes() for i in insns)


def decode(data: bytes, *, file: str | None = None, validate: bool = True) -> list[Insn]:
    """Bytes → slots. Rejects a length that is not a whole number of slots and, unless
    `validate` is false, every encoding the kernel would refuse (see `check`)."""
    if len(data) % 8:
        raise JitError(f"truncated program: {len(data)} bytes is not a multiple of 8",
                       file=file, insn=len(data) // 8)
    insns = [Insn.from_bytes(data[i:i + 8]) for i in range(0, len(data), 8)]
    if validate:
        check(insns, file=file)
    return insns


def check(insns, *, file: str | None = None) -> None:
    """Raise JitError for the first slot the kernel's decoder would refuse: an unknown opcode,
    a register out of range, a reserved field that is not zero, or a truncated ld_imm64."""
    n = len(insns)
    pc = 0
    while pc < n:
        insn = insns[pc]
        why = _reserved_fields(insn)
        if why:
            raise JitError(why, file=file, insn=pc)
        if insn.is_ld_imm64:
            if pc + 1 >= n:
                raise JitError("truncated ld_imm64: the second slot is missing", file=file, insn=pc)
            second = insns[pc + 1]
            if second.code or second.dst or second.src or second.off:
                raise JitError("invalid ld_imm64: the second slot must be all zero except imm",
                               file=file, insn=pc + 1)
            pc += 2
            continue
        pc += 1


def _need_zero(insn: Insn, *fields: str) -> str | None:
    for f in fields:
        if getattr(insn, f):
            return f"opcode 0x{insn.code:02x}: reserved field {f}={getattr(insn, f)} must be 0"
    return None


def _reserved_fields(insn: Insn) -> str | None:
    """Why the kernel refuses this slot, or None. Mirrors the rules of the kernel's checks per class."""
    if not (0 <= insn.code <= 0xFF and 0 <= insn.dst <= 0xF and 0 <= insn.src <= 0xF
            and -0x8000 <= insn.off <= 0x7FFF and -0x80000000 <= insn.imm <= 0x7FFFFFFF):
        return (f"opcode 0x{insn.code & 0xFF:02x}: a field does not fit its width "
                f"(dst={insn.dst} src={insn.src} off={insn.off} imm={insn.imm})")
    if insn.dst > MAX_REG or insn.src > MAX_REG:
        return f"opcode 0x{insn.code:02x}: invalid register r{max(insn.dst, insn.src)}"
    cls, op = insn.cls, insn.op
    if cls in (ALU, ALU64):
        return _alu_fields(insn)
    if cls in (JMP, JMP32):
        return _jmp_fields(insn)
    if cls == LD:
        if insn.code == LD_IMM64:
            if insn.off:
                return _need_zero(insn, "off")
            if insn.src > PSEUDO_MAP_IDX_VALUE:
                return f"ld_imm64: unknown pseudo source {insn.src}"
            return None
        if insn.mode in (ABS, IND) and insn.size != DW:
            return _need_zero(insn, "dst", "off") or (_need_zero(insn, "src") if insn.mode == ABS else None)
        return f"unknown opcode 0x{insn.code:02x}"
    if cls == LDX:
        if insn.mode in (MEM, PROBE_MEM) or (insn.mode in (MEMSX, PROBE_MEMSX) and insn.size != DW) \
                or insn.mode == PROBE_MEM32:
            return _need_zero(insn, "imm")
        return f"unknown opcode 0x{insn.code:02x}"
    if cls == ST:
        if insn.mode in (MEM, PROBE_MEM32):
            return _need_zero(insn, "src")
        return f"unknown opcode 0x{insn.code:02x}"
    # STX
    if insn.mode in (MEM, PROBE_MEM32):
        return _need_zero(insn, "imm")
    if insn.mode in (ATOMIC, PROBE_ATOMIC):
        if insn.imm in (LOAD_ACQ, STORE_REL):
            return None
        if insn.size not in (W, DW):
            return f"opcode 0x{insn.code:02x}: atomic operations need size W or DW"
        if insn.imm not in ATOMIC_OPS:
            return f"opcode 0x{insn.code:02x}: unknown atomic operation 0x{insn.imm & 0xFFFFFFFF:x}"
        return None
    del op
    return f"unknown opcode 0x{insn.code:02x}"


def _alu_fields(insn: Insn) -> str | None:
    op, is64 = insn.op, insn.cls == ALU64
    if op not in ALU_OPS:
        return f"unknown opcode 0x{insn.code:02x}"
    if op == END:
        if is64 and insn.source:
            return f"unknown opcode 0x{insn.code:02x}"
        if insn.imm not in (16, 32, 64):
            return f"opcode 0x{insn.code:02x}: invalid byte-swap width {insn.imm}"
        return _need_zero(insn, "src", "off")
    if op == NEG:
        if insn.source:
            return f"unknown opcode 0x{insn.code:02x}"
        return _need_zero(insn, "src", "off", "imm")
    if insn.source == X:
        if op == MOV:
            if is64 and insn.off == 1:       # addr_space_cast: imm holds the address-space pair
                return None
            if insn.off not in ((0, 8, 16, 32) if is64 else (0, 8, 16)):
                return f"opcode 0x{insn.code:02x}: invalid movsx width {insn.off}"
            return _need_zero(insn, "imm")
        if op in (DIV, MOD) and insn.off in (0, 1):
            return _need_zero(insn, "imm")
        return _need_zero(insn, "off", "imm")
    if op in (DIV, MOD) and insn.off in (0, 1):
        return _need_zero(insn, "src")
    return _need_zero(insn, "src", "off")


def _jmp_fields(insn: Insn) -> str | None:
    op, is32 = insn.op, insn.cls == JMP32
    if op == JA:
        if insn.source:
            return f"unknown opcode 0x{insn.code:02x}"
        return _need_zero(insn, "dst", "src", "off") if is32 else _need_zero(insn, "dst", "src", "imm")
    if op == CALL:
        if is32:
            return f"unknown opcode 0x{insn.code:02x}"
        if insn.source == X:                  # callx: target register in dst
            return _need_zero(insn, "src", "off", "imm")
        if insn.src > PSEUDO_KFUNC_CALL:
            return f"call: unknown source {insn.src}"
        return _need_zero(insn, "dst", "off")
    if op == EXIT:
        if is32 or insn.source:
            return f"unknown opcode 0x{insn.code:02x}"
        return _need_zero(insn, "dst", "src", "off", "imm")
    if op == JCOND:
        if is32 or insn.source:
            return f"unknown opcode 0x{insn.code:02x}"
        return _need_zero(insn, "dst", "src", "imm")
    if op not in JMP_CONDS:
        return f"unknown opcode 0x{insn.code:02x}"
    return _need_zero(insn, "src") if insn.source == K else _need_zero(insn, "imm")


def subprog_starts(insns) -> list[int]:
    """Slot indices where functions begin: 0 and every bpf-to-bpf call or PSEUDO_FUNC target."""
    starts = {0}
    for pc, insn in enumerate(insns):
        if insn.is_pseudo_call:
            starts.add(pc + 1 + insn.imm)
        elif insn.is_ld_imm64 and insn.src == PSEUDO_FUNC:
            starts.add(pc + 1 + insn.imm)
    return sorted(s for s in starts if 0 <= s < len(insns))
