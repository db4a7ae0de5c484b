"""A slab-like kernel heap in the emulated direct map: kmalloc caches, redzones, quarantine.

Every object a BPF program can reach through a pointer (map values, ctx, packets, ringbuf
records) is allocated here, so that an overrun lands in poisoned shadow exactly as it would
under the kernel's generic KASAN with SLUB:

- `kmalloc(n)` picks the smallest kmalloc cache (8 ... 8k) and hands out the next free slot of
  that cache's slabs. Bytes past `n` up to the end of the slot are SLAB_REDZONE (0xFC); each slot
  also carries at least 64 redzone bytes past the cache's object size, so a small overrun of a
  full-size object is caught too. Larger requests get their own pages (PAGE_REDZONE 0xFE tail).
- A slab is a run of pages followed by one unmapped guard page; the arena begins with one too.
  Far overruns therefore fault instead of silently reaching another slab.
- `kfree` poisons the object SLAB_FREE (0xFB) and leaves it in quarantine: a slot is never
  handed out twice in one run, so a use-after-free keeps pointing at freed memory.
- `reset()` ends a run: every slot is free again and its shadow back to 0xFC. Slabs (and so the
  memory the machine mapped for them) are kept and reused by the next run.

The heap owns addresses and shadow bytes only. The machine owns the bytes themselves: it maps
each new slab (`on_new_slab` callback, or `mapped_ranges()`), and writes object contents.

Must not import unicorn, capstone or bot/.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from checks import layout
from checks.errors import CheckError
from checks.shadow import PAGE_FREE, PAGE_REDZONE, SLAB_FREE, SLAB_REDZONE, ShadowView, round_up

PAGE = layout.PAGE
KMALLOC_SIZES = (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192)
MIN_REDZONE = 64          # redzone bytes past a full object; more than the kernel's smallest (16)
SLAB_MIN_BYTES = 4 * PAGE


def cache_name(object_size: int) -> str:
    """`kmalloc-64`, `kmalloc-1k`: the kernel's kmalloc cache names."""
    if object_size >= 1024:
        return f"kmalloc-{object_size // 1024}k"
    return f"kmalloc-{object_size}"


def kmalloc_size(size: int) -> int | None:
    """Object size of the cache kmalloc(size) uses; None above 8 KiB (page allocation)."""
    return next((s for s in KMALLOC_SIZES if s >= size), None)


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


@dataclass
class _Slab:
    """Pages holding equal slots of one cache (or one page allocation), a guard page after."""
    base: int
    size: int
    stride: int
    object_size: int
    cache: str | None
    slots: list[SlabObject | None] = field(default_factory=list)

    @property
    def capacity(self) -> int:
        return self.size // self.stride

    @property
    def full(self) -> bool:
        return len(self.slots) >= self.capacity

    def contains(self, addr: int) -> bool:
        return self.base <= addr < self.base + self.size

    def slot_of(self, addr: int) -> int:
        return min((addr - self.base) // self.stride, self.capacity - 1)

    @property
    def fresh_value(self) -> int:
        """Shadow of a slot nobody holds: slab redzone, or page redzone for page allocations."""
        return SLAB_REDZONE if self.cache else PAGE_REDZONE


class Heap:
    """kmalloc/kfree over the memory a ShadowView covers (normally the whole direct map)."""

    def __init__(self, shadow: ShadowView, *, on_new_slab: Callable[[int, int], None] | None = None):
        self.shadow = shadow
        self.base, self.end = shadow.base, shadow.end
        self.on_new_slab = on_new_slab
        self._slabs: dict[int | str, list[_Slab]] = {}     # cache key -> its slabs, in order
        self._next = self.base + PAGE                      # the arena opens with a guard page
        shadow.fill(PAGE_FREE)

    # -- allocation ---------------------------------------------------------------------------

    def kmalloc(self, size: int, label: str, *, stricter: str = "") -> SlabObject:
        """Allocate `size` bytes; the object's bytes are unpoisoned, the rest of its slot is redzone."""
        if size <= 0:
            raise CheckError(f"kmalloc({size}) for {label}: size must be positive")
        object_size = kmalloc_size(size)
        if object_size is None:
            slab = self._page_slab(size)
            obj = SlabObject(slab.base, size, size, None, label, stricter)
        else:
            slab = self._cache_slab(object_size)
            addr = slab.base + len(slab.slots) * slab.stride
            obj = SlabObject(addr, size, object_size, slab.cache, label, stricter)
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
        if slab.cache:
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
                    self.shadow.poison(slab.base, slab.size, slab.fresh_value)

    # -- lookup -------------------------------------------------------------------------------

    def find(self, addr: int) -> SlabObject | None:
        """The object whose slot holds `addr` (the kernel's nearest_obj), or None outside slabs.
        A slot nobody allocated this run comes back with `allocated=False`."""
        slab = self._slab_at(addr)
        if slab is None:
            return None
        index = slab.slot_of(addr)
        if index < len(slab.slots):
            return slab.slots[index]
        return SlabObject(slab.base + index * slab.stride, 0, slab.object_size, slab.cache,
                          f"unallocated {slab.cache or 'page'} slot", allocated=False)

    def objects(self) -> list[SlabObject]:
        """Every object allocated in this run, freed ones included."""
        return [o for slabs in self._slabs.values() for s in slabs for o in s.slots if o]

    def mapped_ranges(self) -> list[tuple[int, int]]:
        """(address, size) of every slab: the memory that must be mapped. Everything else in the
        arena (the guard pages) stays unmapped."""
        return sorted((s.base, s.size) for slabs in self._slabs.values() for s in slabs)

    def guard_ranges(self) -> list[tuple[int, int]]:
        """(address, size) of the guard pages carved so far: the one opening the arena and the
        one after every slab. A machine that maps the whole arena should make these fault."""
        return [(self.base, PAGE)] + [(base + size, PAGE) for base, size in self.mapped_ranges()]

    # -- slabs --------------------------------------------------------------------------------

    def _slab_at(self, addr: int) -> _Slab | None:
        for slabs in self._slabs.values():
            for slab in slabs:
                if slab.contains(addr):
                    return slab
        return None

    def _cache_slab(self, object_size: int) -> _Slab:
        slabs = self._slabs.setdefault(object_size, [])
        for slab in slabs:
            if not slab.full:
                return slab
        stride = round_up(object_size + max(MIN_REDZONE, kernel_redzone(object_size)), 16)
        return self._carve(object_size, max(SLAB_MIN_BYTES, round_up(stride, PAGE)), stride,
                           object_size, cache_name(object_size))

    def _page_slab(self, size: int) -> _Slab:
        nbytes = round_up(size + MIN_REDZONE, PAGE)
        key = f"pages-{nbytes}"
        for slab in self._slabs.get(key, []):
            if not slab.slots:
                return slab
        return self._carve(key, nbytes, nbytes, size, None)

    def _carve(self, key: int | str, nbytes: int, stride: int, object_size: int,
               cache: str | None) -> _Slab:
        if self._next + nbytes + PAGE > self.end:
            raise CheckError(f"kmalloc: the emulated heap [{self.base:#x}, {self.end:#x}) is full "
                             f"({nbytes} more bytes for {cache or 'a page allocation'})")
        slab = _Slab(self._next, nbytes, stride, object_size, cache)
        self._next += nbytes + PAGE                        # one guard page after every slab
        self._slabs.setdefault(key, []).append(slab)
        self.shadow.poison(slab.base, slab.size, slab.fresh_value)
        if self.on_new_slab:
            self.on_new_slab(slab.base, slab.size)
        return slab
