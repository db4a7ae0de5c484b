"""A crash of the emulated kernel as data, and its text in the x86-64 kernel's oops format.

The wording follows arch/x86/mm/fault.c, arch/x86/kernel/traps.c and dumpstack.c of Linux 6.12
(facts, re-expressed): the page-fault banner and `#PF:` lines with the hardware error code, the
`general protection fault, probably for non-canonical address` banner with KASAN's decoding of a
shadow address, the die header `<what>: <code> [#1] <flags>`, and the `RIP: 0010:` line.

Owns: classification and formatting only. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

from dataclasses import dataclass

from checks import layout
from jit.image import KASAN_SHADOW_OFFSET

# x86 page-fault error-code bits.
PF_PROT, PF_WRITE, PF_INSTR = 0x1, 0x2, 0x10
TRAP_NAMES = {0: "divide error", 3: "int3", 6: "invalid opcode", 13: "general protection fault"}


@dataclass(frozen=True)
class Location:
    symbol: str                 # `bpf_prog_<tag>_<func>+0x1c/0x50`, or a stub's name
    insn: int | None            # BPF slot that was running (for a stub: the slot that called it)


@dataclass(frozen=True)
class Fault:
    """What the emulated CPU raised: a page fault, #GP, #DE, #UD or int3."""
    kind: str                   # "page fault", "general protection fault", "divide error", ...
    rip: int
    where: Location
    address: int | None = None  # the faulting data or fetch address (None for traps)
    access: str | None = None   # "read", "write" or "fetch"
    size: int = 0
    lines: tuple[str, ...] = () # the oops text, first line first

    @property
    def insn(self) -> int | None:
        return self.where.insn

    @property
    def title(self) -> str:
        return self.lines[0] if self.lines else self.kind

    def __str__(self) -> str:
        return "\n".join(self.lines)


def is_canonical(addr: int) -> bool:
    """Bits 63..47 all equal (4-level paging)."""
    top = (addr & 0xFFFFFFFFFFFFFFFF) >> 47
    return top in (0, 0x1FFFF)


def _flags(kasan: bool) -> str:
    return "PREEMPT SMP KASAN NOPTI" if kasan else "PREEMPT SMP NOPTI"


def _die(what: str, code: int, kasan: bool) -> list[str]:
    return [f"{what}: {code:04x} [#1] {_flags(kasan)}"]


def _rip(where: Location) -> str:
    return f"RIP: 0010:{where.symbol}"


def kasan_decode(addr: int) -> str | None:
    """KASAN's note for a #GP on a non-canonical address that is the shadow of something
    (inline checks turn a wild pointer into a wild shadow load)."""
    if addr < KASAN_SHADOW_OFFSET:
        return None
    orig = ((addr - KASAN_SHADOW_OFFSET) << 3) & 0xFFFFFFFFFFFFFFFF
    if orig < layout.PAGE:
        kind = "null-ptr-deref"
    elif orig < layout.TASK_SIZE:
        kind = "probably user-memory-access"
    else:
        kind = "maybe wild-memory-access"
    return f"KASAN: {kind} in range [{orig:#018x}-{orig + 7:#018x}]"


def classify_fault(access: str, address: int, size: int, rip: int, where: Location, *,
                   present: bool, kasan: bool, stack: tuple[int, int]) -> Fault:
    """A bad memory access: #GP for a non-canonical address, else a page fault."""
    if not is_canonical(address):
        lines = [f"general protection fault, probably for non-canonical address {address:#x}: "
                 f"0000 [#1] {_flags(kasan)}"]
        note = kasan_decode(address) if kasan else None
        lines += [note] if note else []
        return Fault("general protection fault", rip, where, address, access, size,
                     tuple(lines + [_rip(where)]))
    code = (PF_PROT if present else 0) | {"write": PF_WRITE, "fetch": PF_INSTR}.get(access, 0)
    lines = []
    lo, hi = stack
    if lo - layout.PAGE <= address < lo or hi <= address < hi + layout.PAGE:
        lines.append(f"BUG: TASK stack guard page was hit at {address:016x} "
                     f"(stack is {lo:016x}..{hi - 1:016x})")
    if access == "fetch" and present:
        lines.append("kernel tried to execute NX-protected page - exploit attempt? (uid: 0)")
    if address < layout.PAGE:
        lines.append(f"BUG: kernel NULL pointer dereference, address: {address:016x}")
    else:
        lines.append(f"BUG: unable to handle page fault for address: {address:016x}")
    kind = {"fetch": "instruction fetch", "write": "write access"}.get(access, "read access")
    lines.append(f"#PF: supervisor {kind} in kernel mode")
    lines.append(f"#PF: error_code({code:#06x}) - "
                 f"{'permissions violation' if present else 'not-present page'}")
    lines += [f"Oops: {code:04x} [#1] {_flags(kasan)}", _rip(where)]
    return Fault("page fault", rip, where, address, access, size, tuple(lines))


def classify_trap(vector: int, rip: int, where: Location, *, kasan: bool, detail: str = "") -> Fault:
    """A CPU exception that is not a memory access: #DE, int3, #UD, or one Unicorn left vague."""
    what = TRAP_NAMES.get(vector, f"trap {vector}" if vector >= 0 else "unhandled exception")
    lines = _die(what, 0, kasan) + [_rip(where)]
    if detail and vector < 0:
        lines.append(f"(emulator: {detail})")
    return Fault(what, rip, where, lines=tuple(lines))
