"""A slab-like kernel heap in the emulated direct map: kmalloc caches, redzones, quarantine.

Every object a BPF program can reach through a pointer (map values, ctx, packets, ringbuf
records) is allocated here, so that an overrun lands in poisoned shadow exactly as it would
under the kernel's generic KASAN with SLUB:

- `kmalloc(n)` picks the smallest kmalloc cache (8 ... 8k) and hands out the next free slot of
  that cache's slabs. Bytes past `n` up to the end of the slot are SLAB_REDZONE (0xFC); each slot
  also carries at least 64 redzone bytes past the cache's object size, so a small overrun of a
  full-size object is caught too. Larger requests get pages of their own, from page classes of
  16 KiB ... 1 MiB (PAGE_REDZONE 0xFE tail).
- A slab is a run of pages followed by one unmapped guard page; the arena begins with one too.
  Far overruns therefore fault instead of silently reaching another slab.
- `kfree` poisons the object SLAB_FREE (0xFB) and leaves it in quarantine: a slot is never
  handed out twice in one run, so a use-after-free keeps pointing at freed memory.
- `reset()` ends a run: every slot is free again and its shadow back to 0xFC.

Determinism: every size class owns a zone of the arena at a fixed place, and slab i of a zone
always sits at the same address. So the addresses a run gets, and the shadow and objects around
them, depend only on that run's own allocations, never on what ran before in the process (a test
gives the same report with -j 1 or -j 2, in any order). A slab not carved yet reads exactly like
an empty carved one; PRESET_SLABS of each cache (one of each page class) are carved at start-up.
The one trace of history left: a guard page exists only once its slab has been carved, so an
access that lands on the guard page of a later slab some earlier run needed faults where it
would otherwise be reported.

The heap owns addresses and shadow bytes only. The machine owns the bytes themselves: it maps
each new slab (`on_new_slab` callback, or `mapped_ranges()`), and writes object contents.

Must not import unicorn, capstone or bot/.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace
from typing import Callable

from checks import layout
from checks.errors import CheckError
from checks.shadow import PAGE_FREE, PAGE_REDZONE, SLAB_FREE, SLAB_REDZONE, ShadowView, round_up

PAGE = layout.PAGE
KMALLOC_SIZES = (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192)
PAGE_CLASSES = tuple(PAGE << k for k in range(2, 9))     # 16 KiB ... 1 MiB, one object a slab
MIN_REDZONE = 64          # redzone bytes past a full object; more than the kernel's smallest (16)
SLAB_MIN_BYTES = 4 * PAGE
PRESET_SLABS = 2          # slabs of each kmalloc cache carved (and guarded) at start-up
# How the arena is shared: a kmalloc cache's zone gets one share, a page class's zone three.
CACHE_SHARE, PAGE_SHARE = 1, 3


def cache_name(object_size: int) -> str:
    """`kmalloc-64`, `kmalloc-1k`: the kernel's kmalloc cache names."""
    if object_size >= 1024:
        return f"kmalloc-{object_size // 1024}k"
    return f"kmalloc-{object_size}"


def kmalloc_size(size: int) -> int | None:
    """Object size of the cache kmalloc(size) uses; None above 8 KiB (page allocation)."""
    return next((s for s in KMALLOC_SIZES if s >= size), None)


def page_class(size: int) -> int | None:
    """Bytes of the page-class slot a page allocation of `size` gets (its redzone included)."""
    need = round_up(size + MIN_REDZONE, PAGE)
    return next((c for c in PAGE_CLASSES if c >= need), None)


def kernel_redzone(object_size: int) -> int:
    """The redzone generic KASAN adds to a cache (optimal_redzone in mm/kasan/generic.c)."""
    for limit, redzone in ((64 - 16, 16), (128 - 32, 32), (512 - 64, 64), (4096 - 128, 128),
                           ((1 << 14) - 256, 256), ((1 << 15) - 512, 512), ((1 << 16) - 1024, 1024)):
        if object_size <= limit:
            return redzone
    return 2048


@dataclass
class SlabObject:
    """One allocation, as a report describes it."""
    addr: int
    size: int                    # bytes requested
    object_size: int             # the cache's object size ("of size 64")
    cache: str | None            # "kmalloc-64"; None for a page allocation
    label: str                   # what it is: "map value of map_hash_8b key 0", "packet", ...
    # Why real KASAN would stay silent on an overrun the emulator catches (e.g. array map elements
    # are packed without redzones). Empty when the emulator is exactly as strict as the kernel.
    stricter: str = ""
    freed: bool = False
    allocated: bool = True       # False for a slot nobody allocated in this run

    @property
    def end(self) -> int:
        return self.addr + self.size


@dataclass(frozen=True)
class _Zone:
    """The part of the arena one size class carves its slabs from, slab i at a fixed address."""
    start: int
    size: int
    slab_bytes: int
    stride: int                  # bytes from one slot to the next
    object_size: int
    cache: str | None            # None for a page class

    @property
    def step(self) -> int:
        return self.slab_bytes + PAGE                      # a guard page after every slab

    @property
    def max_slabs(self) -> int:
        return self.size // self.step

    def slab_base(self, index: int) -> int:
        return self.start + index * self.step

    def slab_index(self, addr: int) -> int | None:
        """The slab whose pages hold `addr` (None in a guard page or past the last slab)."""
        index, off = divmod(addr - self.start, self.step)
        return index if index < self.max_slabs and off < self.slab_bytes else None

    @property
    def fresh_value(self) -> int:
        """Shadow of a slot nobody holds: slab redzone, or page redzone for page allocations."""
        return SLAB_REDZONE if self.cache else PAGE_REDZONE


@dataclass
class _Slab:
    """Pages holding equal slots of one size class, a guard page after."""
    zone: _Zone
    base: int
    slots: list[SlabObject | None] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.zone.slab_bytes

    @property
    def capacity(self) -> int:
        return self.zone.slab_bytes // self.zone.stride

    @property
    def full(self) -> bool:
        return len(self.slots) >= self.capacity

    def slot_of(self, addr: int) -> int:
        return min((addr - self.base) // self.zone.stride, self.capacity - 1)


def _cache_zone(object_size: int) -> _Zone:
    """Its geometry; `_zones` places it."""
    stride = round_up(object_size + max(MIN_REDZONE, kernel_redzone(object_size)), 16)
    return _Zone(0, 0, max(SLAB_MIN_BYTES, round_up(stride, PAGE)), stride, object_size,
                 cache_name(object_size))


def _zones(base: int, end: int) -> list[_Zone]:
    """Every size class's zone, in address order after the arena's opening guard page: first
    one slab each (kmalloc caches first, then page classes by size) while the arena has room,
    then what is left shared out, one share a cache, PAGE_SHARE a page class."""
    specs = [(_cache_zone(size), CACHE_SHARE) for size in KMALLOC_SIZES]
    specs += [(_Zone(0, 0, n, n, n, None), PAGE_SHARE) for n in PAGE_CLASSES]
    room, kept = end - base - PAGE, []
    for zone, share in specs:
        if zone.step <= room:
            room -= zone.step
            kept.append((zone, share))
    unit = room // max(sum(share for _, share in kept), 1) // PAGE * PAGE
    zones, start = [], base + PAGE
    for zone, share in kept:
        size = zone.step + unit * share
        zones.append(replace(zone, start=start, size=size))
        start += size
    return zones


class Heap:
    """kmalloc/kfree over the memory a ShadowView covers (normally the whole direct map)."""

    def __init__(self, shadow: ShadowView, *, on_new_slab: Callable[[int, int], None] | None = None):
        self.shadow = shadow
        self.base, self.end = shadow.base, shadow.end
        self.on_new_slab = on_new_slab
        self._zones = _zones(self.base, self.end)
        self._starts = [z.start for z in self._zones]
        self._by_size = {z.object_size: z for z in self._zones}
        self._slabs: dict[_Zone, list[_Slab]] = {z: [] for z in self._zones}
        shadow.fill(PAGE_FREE)
        for zone in self._zones:
            for index in range(zone.max_slabs):            # uncarved slabs read as empty ones
                self.shadow.poison(zone.slab_base(index), zone.slab_bytes, zone.fresh_value)
            for _ in range(min(PRESET_SLABS if zone.cache else 1, zone.max_slabs)):
                self._carve(zone)

    # -- allocation ---------------------------------------------------------------------------

    def kmalloc(self, size: int, label: str, *, stricter: str = "") -> SlabObject:
        """Allocate `size` bytes; the object's bytes are unpoisoned, the rest of its slot is redzone."""
        if size <= 0:
            raise CheckError(f"kmalloc({size}) for {label}: size must be positive")
        object_size = kmalloc_size(size)
        zone = self._by_size.get(object_size or page_class(size))
        if zone is None:
            raise CheckError(f"kmalloc({size}) for {label}: the emulated heap [{self.base:#x}, "
                             f"{self.end:#x}) is full: it has no zone for this size (a page "
                             f"allocation holds at most {PAGE_CLASSES[-1] - MIN_REDZONE} bytes)")
        slab = next((s for s in self._slabs[zone] if not s.full), None) or self._carve(zone)
        addr = slab.base + len(slab.slots) * zone.stride
        obj = SlabObject(addr, size, object_size or size, zone.cache, label, stricter)
        slab.slots.append(obj)
        self.shadow.unpoison(obj.addr, size)
        return obj

    def kfree(self, addr: int) -> str | None:
        """Free the object at `addr`. Returns None, or the kernel's bug type for a bad free
        ("double-free", "invalid-free"): findings are data."""
        slab = self._slab_at(addr)
        obj = slab.slots[slab.slot_of(addr)] if slab and slab.slot_of(addr) < len(slab.slots) else None
        if obj is None or obj.addr != addr:
            return "invalid-free"
        if obj.freed:
            return "double-free"
        obj.freed = True
        if slab.zone.cache:
            self.shadow.poison(obj.addr, round_up(obj.object_size, 8), SLAB_FREE)
        else:
            self.shadow.poison(slab.base, slab.size, PAGE_FREE)
        return None

    def reset(self) -> None:
        """End of a run: empty every slab and restore its shadow; the slabs stay mapped."""
        for slabs in self._slabs.values():
            for slab in slabs:
                if slab.slots:
                    slab.slots.clear()
                    self.shadow.poison(slab.base, slab.size, slab.zone.fresh_value)

    # -- lookup -------------------------------------------------------------------------------

    def find(self, addr: int) -> SlabObject | None:
        """The object whose slot holds `addr` (the kernel's nearest_obj), or None outside slabs.
        A slot nobody allocated this run comes back with `allocated=False`."""
        zone = self._zone_at(addr)
        index = zone.slab_index(addr) if zone else None
        if index is None:
            return None
        slabs = self._slabs[zone]
        slab = slabs[index] if index < len(slabs) else _Slab(zone, zone.slab_base(index))
        slot = slab.slot_of(addr)
        if slot < len(slab.slots):
            return slab.slots[slot]
        return SlabObject(slab.base + slot * zone.stride, 0, zone.object_size, zone.cache,
                          f"unallocated {zone.cache or 'page'} slot", allocated=False)

    def objects(self) -> list[SlabObject]:
        """Every object allocated in this run, freed ones included."""
        return [o for slabs in self._slabs.values() for s in slabs for o in s.slots if o]

    def mapped_ranges(self) -> list[tuple[int, int]]:
        """(address, size) of every slab carved so far: the memory that must be mapped. Everything
        else in the arena (the guard pages) stays unmapped."""
        return sorted((s.base, s.size) for slabs in self._slabs.values() for s in slabs)

    def guard_ranges(self) -> list[tuple[int, int]]:
        """(address, size) of the guard pages carved so far: the one opening the arena and the
        one after every slab. A machine that maps the whole arena should make these fault."""
        return [(self.base, PAGE)] + [(base + size, PAGE) for base, size in self.mapped_ranges()]

    # -- zones and slabs ----------------------------------------------------------------------

    def _zone_at(self, addr: int) -> _Zone | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        zone = self._zones[i] if i >= 0 else None
        return zone if zone and addr < zone.start + zone.size else None

    def _slab_at(self, addr: int) -> _Slab | None:
        zone = self._zone_at(addr)
        index = zone.slab_index(addr) if zone else None
        slabs = self._slabs[zone] if index is not None else []
        return slabs[index] if index is not None and index < len(slabs) else None

    def _carve(self, zone: _Zone) -> _Slab:
        slabs = self._slabs[zone]
        if len(slabs) >= zone.max_slabs:
            what = zone.cache or "a page allocation"
            raise CheckError(f"kmalloc: the emulated heap [{self.base:#x}, {self.end:#x}) is full "
                             f"({zone.slab_bytes} more bytes for {what})")
        slab = _Slab(zone, zone.slab_base(len(slabs)))
        slabs.append(slab)
        if self.on_new_slab:
            self.on_new_slab(slab.base, slab.size)
        return slab
