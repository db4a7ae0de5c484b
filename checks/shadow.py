"""KASAN shadow memory: the kernel's byte values, poisoning, and the generic check rules.

One shadow byte describes one 8-byte granule: 0 = all bytes usable, 1..7 = only the first k,
negative (0x80..0xFF) = none, the value saying why. `ShadowView` wraps a writable buffer of
shadow bytes (a memoryview of the machine's shadow mapping, or a bytearray in tests) together with
the memory address its first byte describes. `ShadowMap` joins the views of every region.

`check_region` is the pure-Python statement of the rules in the kernel's `check_region_inline`;
it is the oracle the native `__asan_*` routines are tested against, never the hot path.
`classify` is the report side: the first bad address and the bug type.

Owns: shadow byte values and rules. Must not import unicorn, capstone or bot/.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from checks import layout
from checks.errors import CheckError

GRANULE = 8
MASK64 = 0xFFFFFFFFFFFFFFFF

# Shadow byte values (mm/kasan/kasan.h, generic mode).
PAGE_FREE = 0xFF
PAGE_REDZONE = 0xFE
LAZY_MMU_PTE = 0xFD
SLAB_REDZONE = 0xFC
SLAB_FREE = 0xFB
SLAB_FREE_META = 0xFA
GLOBAL_REDZONE = 0xF9
VMALLOC_INVALID = 0xF8
STACK_LEFT, STACK_MID, STACK_RIGHT, STACK_PARTIAL = 0xF1, 0xF2, 0xF3, 0xF4
ALLOCA_LEFT, ALLOCA_RIGHT = 0xCA, 0xCB

# Bug type of a poisoned shadow byte (report_generic.c); anything else is "unknown-crash".
BUG_TYPES = {
    PAGE_FREE: "use-after-free",
    PAGE_REDZONE: "slab-out-of-bounds",
    SLAB_REDZONE: "slab-out-of-bounds",
    SLAB_FREE: "slab-use-after-free",
    SLAB_FREE_META: "slab-use-after-free",
    LAZY_MMU_PTE: "lazy-mmu-pte-access",
    GLOBAL_REDZONE: "global-out-of-bounds",
    VMALLOC_INVALID: "vmalloc-out-of-bounds",
    STACK_LEFT: "stack-out-of-bounds",
    STACK_MID: "stack-out-of-bounds",
    STACK_RIGHT: "stack-out-of-bounds",
    STACK_PARTIAL: "stack-out-of-bounds",
    ALLOCA_LEFT: "alloca-out-of-bounds",
    ALLOCA_RIGHT: "alloca-out-of-bounds",
}
UNKNOWN_CRASH = "unknown-crash"
OUT_OF_BOUNDS = "out-of-bounds"      # partial granules and wrapping ranges

PAGE_SIZE = layout.PAGE


def shadow_to_mem(shadow_addr: int) -> int:
    """kasan_shadow_to_mem(): the memory address a shadow byte describes."""
    return ((shadow_addr - layout.KASAN_SHADOW_OFFSET) << 3) & MASK64


# The lowest address with metadata: the memory whose shadow is the first byte of the shadow region
# (0xffff800000000000, the start of the kernel half). `layout.KASAN_SHADOW_START` is the shadow
# region itself, not this threshold.
METADATA_START = shadow_to_mem(layout.KASAN_SHADOW_START)


def _s8(byte: int) -> int:
    return byte - 256 if byte & 0x80 else byte


def wraps(addr: int, size: int) -> bool:
    """True when the kernel's `addr + size < addr` holds: the range reaches past 2**64 - 1."""
    return size > 0 and addr + size > MASK64


def has_metadata(addr: int) -> bool:
    """The kernel's addr_has_metadata(): only the kernel half has shadow."""
    return addr >= METADATA_START


def round_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


class ShadowView:
    """Shadow bytes for memory [base, base + 8 * len(shadow)). `base` must be 8-aligned."""

    def __init__(self, base: int, shadow):
        if base % GRANULE:
            raise CheckError(f"shadow view base {base:#x} is not {GRANULE}-aligned")
        self.base = base
        view = memoryview(shadow)
        self.shadow = view if view.format == "B" else view.cast("B")
        self.end = base + GRANULE * len(self.shadow)

    def covers(self, addr: int, size: int = 1) -> bool:
        return self.base <= addr and addr + size <= self.end

    def byte(self, addr: int) -> int:
        return self.shadow[(addr - self.base) >> 3]

    def _index_range(self, addr: int, size: int, what: str) -> tuple[int, int]:
        if not self.covers(addr, size):
            raise CheckError(f"{what} [{addr:#x}, {addr + size:#x}) is outside the shadow view "
                             f"[{self.base:#x}, {self.end:#x})")
        start = (addr - self.base) >> 3
        return start, start + (round_up(size, GRANULE) >> 3)

    def poison(self, addr: int, size: int, value: int) -> None:
        """kasan_poison(): mark [addr, addr + size) unusable. Both must be granule-aligned."""
        if addr % GRANULE or size % GRANULE:
            raise CheckError(f"kasan_poison({addr:#x}, {size}): address and size must be "
                             f"{GRANULE}-aligned")
        start, end = self._index_range(addr, size, "kasan_poison")
        self.shadow[start:end] = bytes([value]) * (end - start)

    def unpoison(self, addr: int, size: int) -> None:
        """kasan_unpoison(): zero round_up(size, 8) bytes of shadow; a partial tail keeps size & 7."""
        if addr % GRANULE:
            raise CheckError(f"kasan_unpoison({addr:#x}, {size}): address must be {GRANULE}-aligned")
        start, end = self._index_range(addr, size, "kasan_unpoison")
        self.shadow[start:end] = bytes(end - start)
        if size & 7:
            self.shadow[end - 1] = size & 7

    def fill(self, value: int) -> None:
        """Set every shadow byte of the view (e.g. PAGE_FREE for memory nobody owns yet)."""
        self.shadow[:] = bytes([value]) * len(self.shadow)


class ShadowMap:
    """Every shadow view of a machine, looked up by memory address."""

    def __init__(self, views=()):
        self.views: list[ShadowView] = list(views)

    def add(self, view: ShadowView) -> ShadowView:
        self.views.append(view)
        return view

    def view_for(self, addr: int) -> ShadowView | None:
        for view in self.views:
            if view.covers(addr):
                return view
        return None

    def byte(self, addr: int) -> int | None:
        """The shadow byte of `addr`, or None where no shadow is mapped (the shadow load would fault)."""
        view = self.view_for(addr)
        return None if view is None else view.byte(addr)


class Verdict(enum.IntEnum):
    """What a generic KASAN check does with one access."""
    OK = 0
    REPORT = 1
    FAULT = 2          # the address has metadata but its shadow is not mapped in the emulator


class _Unmapped(Exception):
    """Internal: a shadow byte the emulator has no mapping for."""


def _shadow(shadow: ShadowMap, addr: int) -> int:
    value = shadow.byte(addr)
    if value is None:
        raise _Unmapped(addr)
    return value


def _poisoned_1(shadow: ShadowMap, addr: int) -> bool:
    value = _s8(_shadow(shadow, addr))
    return value != 0 and (addr & 7) >= value


def _poisoned_2_4_8(shadow: ShadowMap, addr: int, size: int) -> bool:
    last = addr + size - 1
    if (last & 7) < size - 1:          # the access crosses into a second granule
        return _shadow(shadow, addr) != 0 or _poisoned_1(shadow, last)
    return _poisoned_1(shadow, last)


def _poisoned_16(shadow: ShadowMap, addr: int) -> bool:
    # The kernel reads the two shadow bytes as one u16; an unaligned access touches a third.
    pair = _shadow(shadow, addr) | _shadow(shadow, addr + 8)
    if addr & 7:
        return pair != 0 or _poisoned_1(shadow, addr + 15)
    return pair != 0


def _poisoned_n(shadow: ShadowMap, addr: int, size: int) -> bool:
    last = addr + size - 1
    granule = addr & ~7
    while granule <= last:                 # the first non-zero shadow byte in the range
        value = _shadow(shadow, granule)
        if value:
            # Only tolerable in the last granule, when the last byte is inside its usable prefix.
            return granule != (last & ~7) or (last & 7) >= _s8(value)
        granule += GRANULE
    return False


def memory_is_poisoned(shadow: ShadowMap, addr: int, size: int) -> bool:
    """The size-specialised rule the kernel applies (1, 2/4/8, 16, any other n)."""
    if size == 1:
        return _poisoned_1(shadow, addr)
    if size in (2, 4, 8):
        return _poisoned_2_4_8(shadow, addr, size)
    if size == 16:
        return _poisoned_16(shadow, addr)
    return _poisoned_n(shadow, addr, size)


def check_region(shadow: ShadowMap, addr: int, size: int) -> Verdict:
    """check_region_inline(): size 0 is fine; a wrapping range or an address without metadata is
    reported without reading shadow; otherwise report iff the rule for `size` says poisoned."""
    if size == 0:
        return Verdict.OK
    if wraps(addr, size) or not has_metadata(addr):
        return Verdict.REPORT
    try:
        return Verdict.REPORT if memory_is_poisoned(shadow, addr, size) else Verdict.OK
    except _Unmapped:
        return Verdict.FAULT


def first_bad_addr(shadow: ShadowMap, addr: int, size: int) -> int:
    """kasan_find_first_bad_addr(): walk from `addr` in granule steps to the first non-zero shadow
    byte; `addr + size` when there is none (or `addr` for an address without shadow)."""
    if not has_metadata(addr):
        return addr
    p = addr
    while p < addr + size and shadow.byte(p) == 0:
        p += GRANULE
    return p


def bug_type(shadow: ShadowMap, addr: int, size: int) -> str:
    """The report's bug type, in the kernel's order: wrap, wild address, then the shadow byte."""
    if wraps(addr, size):
        return OUT_OF_BOUNDS
    if not has_metadata(addr):
        return _wild_bug_type(addr)
    bad = first_bad_addr(shadow, addr, size)
    value = shadow.byte(bad)
    if value is not None and 0 < value < GRANULE:
        value = shadow.byte(bad + GRANULE)    # a partial granule: its next byte says why
    if value is None:
        return UNKNOWN_CRASH
    if value < GRANULE:
        return OUT_OF_BOUNDS
    return BUG_TYPES.get(value, UNKNOWN_CRASH)


def _wild_bug_type(addr: int) -> str:
    if addr < PAGE_SIZE:
        return "null-ptr-deref"
    if addr < layout.TASK_SIZE:
        return "user-memory-access"
    return "wild-memory-access"


@dataclass(frozen=True)
class Classified:
    """What the report needs from the shadow: the bug type and where the bad bytes start."""
    bug_type: str
    first_bad: int
    has_metadata: bool


def classify(shadow: ShadowMap, addr: int, size: int) -> Classified:
    meta = has_metadata(addr)
    bad = first_bad_addr(shadow, addr, size) if meta and not wraps(addr, size) else addr
    return Classified(bug_type(shadow, addr, size), bad, meta)
