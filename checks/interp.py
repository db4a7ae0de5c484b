"""The reference interpreter: plain, obviously correct Python for every instruction of `jit.isa`.

It is the oracle the JIT is judged by, so clarity beats speed: each instruction class has one
method, and the arithmetic lives in two pure functions (`alu_result`, `jump_taken`) that follow
the ISA text line by line.

Semantics worth knowing (from the ISA / kernel; the conformance suites encode them):
- div by 0 gives 0, mod by 0 leaves dst (32-bit forms then zero-extend); sdiv INT_MIN/-1 = INT_MIN,
  smod x/-1 = 0; shift counts are masked to the operand width; ALU32 results zero-extend.
- Immediates are sign-extended to 64 bits for 64-bit ops and compares, truncated for 32-bit ones.
- Every frame (main program and each bpf-to-bpf call) gets its own 512-byte stack region; r6-r9 and
  r10 are restored on return. At most 8 frames, as the kernel's MAX_CALL_FRAMES.
- Registers start at 0 except r1 = input buffer, r2 = its length, r10 = frame pointer.
- Helper calls keep r1-r5 as they were (the kernel calls them clobbered; programs may not read them).
- Memory is only what `checks.memory_regions` holds; any other access stops the run with an error
  naming the instruction and listing the regions.

Load-time refusals (reserved fields, jumps out of range or across functions, writes to r10) raise
`CheckError`/`JitError`; run-time faults (bad access, unknown helper, budget exhausted) are returned in
`InterpResult.error`, never raised.

Owns: execution semantics. Must not import unicorn, capstone or bot/.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, NamedTuple

from checks.errors import CheckError
from checks.memory_regions import (INPUT_BASE, MASK64, STACK_SIZE, Memory, MemoryFault, Region,
                                   frame_top)
from jit import isa
from jit.errors import BpfKasanError, JitError
from jit.flow_check import check_flow, imm64_tails
from jit.isa import Insn
from jit.program import Program

DEFAULT_INSN_LIMIT = 1_000_000
MAX_CALL_FRAMES = 8
MAX_LOOPS = 8 * 1024 * 1024        # may_goto budget, as the kernel's BPF_MAX_LOOPS
MASK32 = 0xFFFFFFFF

# A helper receives the run's memory and r1..r5 and returns r0. It may raise MemoryFault.
Helper = Callable[[Memory, int, int, int, int, int], int]
# Resolves an ld_imm64 whose src is a pseudo source: (first slot, second slot, pc) -> value.
PseudoResolver = Callable[[Insn, Insn, int], int]
# LD_ABS/LD_IND: (offset, size) -> the packet bytes, or None when out of bounds (r0 = 0, exit).
PacketLoader = Callable[[int, int], "bytes | None"]


@dataclass(frozen=True)
class InterpResult:
    r0: int                              # u64
    insns: int                           # instructions executed (an ld_imm64 pair counts once)
    mem: bytes                           # final contents of the input buffer
    error: str | None = None             # why the run stopped early, or None
    error_insn: int | None = None        # slot of the instruction that failed
    regs: tuple[int, ...] = ()           # r0..r10 at the end
    memory: Memory | None = field(default=None, compare=False, repr=False)   # every region, final

    @property
    def ok(self) -> bool:
        return self.error is None


class _Fault(Exception):
    """A run-time failure at one instruction; becomes `InterpResult.error`."""

    def __init__(self, message: str, pc: int):
        super().__init__(message)
        self.message, self.pc = message, pc


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _trunc_div(a: int, b: int) -> int:
    """C division: rounds toward zero (Python's // rounds toward minus infinity)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def alu_result(op: int, a: int, b: int, bits: int, signed: bool = False) -> int:
    """`a op b` on `bits`-wide unsigned operands, as the ISA defines it; the result is masked."""
    mask = (1 << bits) - 1
    a, b = a & mask, b & mask
    if op == isa.ADD:
        r = a + b
    elif op == isa.SUB:
        r = a - b
    elif op == isa.MUL:
        r = a * b
    elif op == isa.DIV:
        if b == 0:
            r = 0
        else:
            r = _trunc_div(_signed(a, bits), _signed(b, bits)) if signed else a // b
    elif op == isa.MOD:
        if b == 0:
            r = a
        elif signed:
            sa, sb = _signed(a, bits), _signed(b, bits)
            r = sa - _trunc_div(sa, sb) * sb
        else:
            r = a % b
    elif op == isa.OR:
        r = a | b
    elif op == isa.AND:
        r = a & b
    elif op == isa.XOR:
        r = a ^ b
    elif op == isa.LSH:
        r = a << (b & (bits - 1))
    elif op == isa.RSH:
        r = a >> (b & (bits - 1))
    elif op == isa.ARSH:
        r = _signed(a, bits) >> (b & (bits - 1))
    elif op == isa.NEG:
        r = -a
    elif op == isa.MOV:
        r = b
    else:
        raise ValueError(f"not an arithmetic ALU op: {op:#x}")
    return r & mask


def byte_swap(value: int, width: int) -> int:
    """The low `width` bits of `value` with their bytes reversed."""
    return int.from_bytes((value & ((1 << width) - 1)).to_bytes(width // 8, "little"), "big")


def jump_taken(op: int, a: int, b: int, bits: int) -> bool:
    """Whether a conditional jump is taken, comparing `bits`-wide operands."""
    mask = (1 << bits) - 1
    a, b = a & mask, b & mask
    sa, sb = _signed(a, bits), _signed(b, bits)
    return {isa.JEQ: a == b, isa.JNE: a != b, isa.JSET: (a & b) != 0,
            isa.JGT: a > b, isa.JGE: a >= b, isa.JLT: a < b, isa.JLE: a <= b,
            isa.JSGT: sa > sb, isa.JSGE: sa >= sb, isa.JSLT: sa < sb, isa.JSLE: sa <= sb}[op]


# --- load-time checks ----------------------------------------------------------------------------

def _writes_register(insn: Insn) -> int | None:
    """The register an instruction writes (besides r0 for calls), if any."""
    if insn.is_alu or insn.cls == isa.LDX or insn.is_ld_imm64:
        return insn.dst
    if insn.cls == isa.STX and insn.mode == isa.ATOMIC:
        if insn.imm == isa.LOAD_ACQ:
            return insn.dst
        if insn.imm & isa.FETCH and insn.imm != isa.ATOMIC_CMPXCHG:
            return insn.src
    return None


class _Span(NamedTuple):
    """The part of a function `jit.flow_check` reads: its name and slot range."""
    name: str
    start: int
    stop: int


def check_control_flow(program: Program) -> None:
    """Refuse what the kernel refuses before running: jumps outside their function or into the
    second slot of an ld_imm64, a function that can fall off its end (the JIT's own structural
    check, shared so both engines refuse alike), calls to a bad slot, writes to the read-only r10.
    Raises CheckError/JitError located at the slot."""
    insns = program.insns
    if not insns:
        raise CheckError("program has no instructions", file=program.file or None)
    tails = imm64_tails(insns)
    for pc, insn in enumerate(insns):
        if pc in tails:
            continue
        if _writes_register(insn) == isa.FP:
            raise _load_error(program, CheckError("frame pointer r10 is read only"), pc)
        target = pc + 1 + insn.imm
        if insn.is_pseudo_call and (not 0 <= target < len(insns) or target in tails):
            raise _load_error(program, CheckError(f"call to invalid destination #{target}"), pc)
    starts = [start for start, _ in program.funcs] + [len(insns)]
    spans = [_Span(name, start, stop) for (start, name), stop in zip(program.funcs, starts[1:])]
    try:
        check_flow(insns, spans, tails)
    except JitError as e:
        raise _load_error(program, e, e.insn) from None


def _load_error(program: Program, error: BpfKasanError, pc: int) -> BpfKasanError:
    """`error` located at slot `pc`: its source line when known, else the program's file."""
    where = program.lines.get(pc)
    error.file = (where.file if where else program.file) or error.file or None
    error.line = where.line if where else error.line
    error.insn = pc
    return error


# --- the machine ---------------------------------------------------------------------------------

@dataclass
class _Frame:
    return_pc: int
    saved: tuple[int, ...]               # r6..r10 of the caller
    stack: Region


class _Machine:
    """State of one run. Each `_<class>` method executes one slot and returns the next pc."""

    def __init__(self, program: Program, memory: Memory, regs: list[int], *,
                 helpers: Mapping[int, Helper], kfuncs: Mapping[int, Helper],
                 resolve_pseudo: PseudoResolver | None, packet: PacketLoader | None,
                 unwind_helper: int | None):
        self.program, self.insns, self.memory, self.regs = program, program.insns, memory, regs
        self.helpers, self.kfuncs = helpers, kfuncs
        self.resolve_pseudo, self.packet, self.unwind_helper = resolve_pseudo, packet, unwind_helper
        self.frames: list[_Frame] = []
        self.loops_left = MAX_LOOPS
        self.stopped = False
        self.count = 0
        self.by_class = (self._ld, self._ldx, self._st, self._stx, self._alu, self._jmp, self._jmp,
                         self._alu)

    def execute(self, limit: int) -> int:
        """Run until exit; returns the executed count. Raises _Fault."""
        insns, by_class, n = self.insns, self.by_class, len(self.insns)
        pc = count = 0
        try:
            while not self.stopped:
                if not 0 <= pc < n:
                    raise _Fault(f"execution left the program at slot {pc}", max(0, min(pc, n - 1)))
                if count >= limit:
                    raise _Fault(f"instruction limit of {limit} reached (raise it with --insn-limit)",
                                 pc)
                count += 1
                insn = insns[pc]
                pc = by_class[insn.code & 7](insn, pc)
        finally:
            self.count = count
        return count

    # ALU / ALU64
    def _alu(self, insn: Insn, pc: int) -> int:
        bits = 64 if insn.cls == isa.ALU64 else 32
        regs, op = self.regs, insn.op
        if op == isa.END:
            width = insn.imm
            if insn.cls == isa.ALU and insn.source == isa.TO_LE:
                regs[insn.dst] = regs[insn.dst] & ((1 << width) - 1)
            else:
                regs[insn.dst] = byte_swap(regs[insn.dst], width)
            return pc + 1
        if insn.source == isa.X:
            b = regs[insn.src]
            if op == isa.MOV and insn.off:
                if insn.off not in (8, 16, 32):
                    raise _Fault("addr_space_cast needs an arena, which the interpreter lacks", pc)
                b = _signed(b, insn.off)
        else:
            b = insn.imm
        signed = op in (isa.DIV, isa.MOD) and insn.off == 1
        regs[insn.dst] = alu_result(op, regs[insn.dst], b, bits, signed)
        return pc + 1

    # JMP / JMP32
    def _jmp(self, insn: Insn, pc: int) -> int:
        op = insn.op
        if op == isa.JA:
            return insn.jump_target(pc)
        if op == isa.EXIT:
            return self._exit(pc)
        if op == isa.CALL:
            return self._call(insn, pc)
        if op == isa.JCOND:                  # may_goto: jump once the loop budget is spent
            self.loops_left -= 1
            return pc + 1 + insn.off if self.loops_left <= 0 else pc + 1
        bits = 64 if insn.cls == isa.JMP else 32
        b = self.regs[insn.src] if insn.source == isa.X else insn.imm
        return pc + 1 + insn.off if jump_taken(op, self.regs[insn.dst], b, bits) else pc + 1

    def _exit(self, pc: int) -> int:
        if not self.frames:
            self.stopped = True
            return pc
        frame = self.frames.pop()
        self.regs[6:11] = frame.saved
        self.memory.remove(frame.stack)      # a pointer into a dead frame faults from now on
        return frame.return_pc

    def _call(self, insn: Insn, pc: int) -> int:
        if insn.src == isa.PSEUDO_CALL:
            return self._call_local(pc + 1 + insn.imm, pc)
        if insn.source == isa.X:             # callx: uBPF reads the helper id from dst
            return self._call_helper(self.helpers, self.regs[insn.dst] & MASK32, "helper", pc)
        if insn.src == isa.PSEUDO_KFUNC_CALL:
            return self._call_helper(self.kfuncs, insn.imm, "kfunc", pc)
        return self._call_helper(self.helpers, insn.imm & MASK32, "helper", pc)

    def _call_local(self, target: int, pc: int) -> int:
        depth = len(self.frames) + 1
        if depth >= MAX_CALL_FRAMES:
            raise _Fault(f"the call stack is too deep ({MAX_CALL_FRAMES} frames)", pc)
        top = frame_top(depth)
        name = self.program.func_of(target)[1]
        stack = self.memory.add(Region(f"stack of {name} (frame {depth})", top - STACK_SIZE,
                                       bytearray(STACK_SIZE)))
        self.frames.append(_Frame(pc + 1, tuple(self.regs[6:11]), stack))
        self.regs[isa.FP] = top
        return target

    def _call_helper(self, table: Mapping[int, Helper], number: int, kind: str, pc: int) -> int:
        fn = table.get(number)
        if fn is None:
            raise _Fault(f"call to unknown {kind} {number}", pc)
        r = self.regs
        try:
            r[0] = fn(self.memory, r[1], r[2], r[3], r[4], r[5]) & MASK64
        except MemoryFault as e:
            raise _Fault(f"{e} (in {kind} {number} called by insn #{pc})", pc) from None
        if number == self.unwind_helper and kind == "helper" and r[0] == 0:
            self.stopped = True              # uBPF's unwind: a zero return ends the program
        return pc + 1

    # LD: ld_imm64 and the legacy packet loads
    def _ld(self, insn: Insn, pc: int) -> int:
        if insn.is_ld_imm64:
            second = self.insns[pc + 1]
            if insn.src == 0:
                value = isa.imm64(insn, second)
            elif self.resolve_pseudo is None:
                raise _Fault(f"ld_imm64 with pseudo source {insn.src} needs a resolver", pc)
            else:
                value = self.resolve_pseudo(insn, second, pc)
            self.regs[insn.dst] = value & MASK64
            return pc + 2
        return self._ld_packet(insn, pc)

    def _ld_packet(self, insn: Insn, pc: int) -> int:
        if self.packet is None:
            raise _Fault("LD_ABS/LD_IND needs a packet, and this run has none", pc)
        offset = insn.imm if insn.mode == isa.ABS else _signed(self.regs[insn.src] + insn.imm, 32)
        data = self.packet(offset, insn.nbytes)
        if data is None:                     # the kernel ends the program with r0 = 0
            self.regs[0] = 0
            self.stopped = True
            return pc
        self.regs[0] = int.from_bytes(data, "big")
        return pc + 1

    # LDX / ST / STX
    def _address(self, reg: int, off: int) -> int:
        return (self.regs[reg] + off) & MASK64

    def _fault(self, e: MemoryFault, insn: Insn, reg: int, pc: int) -> _Fault:
        sign = "-" if insn.off < 0 else "+"
        return _Fault(f"invalid {e.kind} of size {e.size} at {e.addr:#x} by insn #{pc} "
                      f"(r{reg} {sign} {abs(insn.off)}): {e.why}", pc)

    def _ldx(self, insn: Insn, pc: int) -> int:
        mode = insn.mode
        signed = mode in (isa.MEMSX, isa.PROBE_MEMSX)
        if mode not in (isa.MEM, isa.MEMSX, isa.PROBE_MEM, isa.PROBE_MEMSX):
            raise _Fault(f"LDX mode {mode:#x} (arena) is not supported by the interpreter", pc)
        try:
            value = self.memory.load(self._address(insn.src, insn.off), insn.nbytes, signed)
        except MemoryFault as e:
            if mode in (isa.PROBE_MEM, isa.PROBE_MEMSX):
                value = 0                    # a probing load reads 0 instead of faulting
            else:
                raise self._fault(e, insn, insn.src, pc) from None
        self.regs[insn.dst] = value
        return pc + 1

    def _st(self, insn: Insn, pc: int) -> int:
        return self._store(insn, insn.imm, pc)

    def _stx(self, insn: Insn, pc: int) -> int:
        if insn.mode == isa.ATOMIC:
            return self._atomic(insn, pc)
        return self._store(insn, self.regs[insn.src], pc)

    def _store(self, insn: Insn, value: int, pc: int) -> int:
        if insn.mode != isa.MEM:
            raise _Fault(f"store mode {insn.mode:#x} (arena) is not supported by the interpreter", pc)
        try:
            self.memory.store(self._address(insn.dst, insn.off), insn.nbytes, value)
        except MemoryFault as e:
            raise self._fault(e, insn, insn.dst, pc) from None
        return pc + 1

    def _atomic(self, insn: Insn, pc: int) -> int:
        regs, size, op = self.regs, insn.nbytes, insn.imm
        if op == isa.LOAD_ACQ:               # dst = *(src + off), ordered
            return self._ldx(Insn(isa.LDX | isa.MEM | insn.size, insn.dst, insn.src, insn.off), pc)
        if op == isa.STORE_REL:              # *(dst + off) = src, ordered
            return self._store(Insn(isa.STX | isa.MEM | insn.size, insn.dst, insn.src, insn.off),
                               regs[insn.src], pc)
        addr = self._address(insn.dst, insn.off)
        bits = 8 * size
        try:
            old = self.memory.load(addr, size)
            if op == isa.ATOMIC_CMPXCHG:
                if old == regs[0] & ((1 << bits) - 1):
                    self.memory.store(addr, size, regs[insn.src])
                regs[0] = old
                return pc + 1
            new = regs[insn.src] if op == isa.ATOMIC_XCHG else \
                alu_result(op & ~isa.FETCH, old, regs[insn.src], bits)
            self.memory.store(addr, size, new)
        except MemoryFault as e:
            raise self._fault(e, insn, insn.dst, pc) from None
        if op & isa.FETCH:
            regs[insn.src] = old
        return pc + 1


def initial_registers(mem_base: int, mem_len: int, regs: Mapping[int, int] | None) -> list[int]:
    """r1 = input buffer, r2 = its length, r10 = top of the main frame; others 0; then `regs`."""
    values = [0] * (isa.MAX_REG + 1)
    values[1], values[2], values[isa.FP] = mem_base, mem_len, frame_top(0)
    for reg, value in (regs or {}).items():
        if not 0 <= reg < isa.FP:
            raise CheckError(f"cannot preset register r{reg}")
        values[reg] = value & MASK64
    return values


def run(program: Program, *, mem: bytes = b"", regs: Mapping[int, int] | None = None,
        helpers: Mapping[int, Helper] | None = None, insn_limit: int = DEFAULT_INSN_LIMIT,
        regions=(), kfuncs: Mapping[int, Helper] | None = None,
        resolve_pseudo: PseudoResolver | None = None, packet: PacketLoader | None = None,
        unwind_helper: int | None = None) -> InterpResult:
    """Run `program` on a copy of `mem`. Extra `regions` (ctx, map values...) join the memory map.
    Raises CheckError/JitError only for a program the kernel would not load."""
    isa.check(program.insns, file=program.file or None)
    check_control_flow(program)
    input_region = Region("mem", INPUT_BASE, bytearray(mem))
    memory = Memory([Region("stack", frame_top(0) - STACK_SIZE, bytearray(STACK_SIZE)),
                     input_region, *regions])
    # No input gives r1 = NULL, as uBPF and bpf_conformance's plugins pass it (mul-loop relies on it).
    values = initial_registers(INPUT_BASE if mem else 0, len(mem), regs)
    machine = _Machine(program, memory, values, helpers=helpers or {}, kfuncs=kfuncs or {},
                       resolve_pseudo=resolve_pseudo, packet=packet, unwind_helper=unwind_helper)
    error = error_insn = None
    try:
        machine.execute(insn_limit)
    except _Fault as f:
        error, error_insn = f.message, f.pc
    return InterpResult(r0=values[0], insns=machine.count, mem=bytes(input_region.data), error=error,
                        error_insn=error_insn, regs=tuple(values), memory=memory)
