"""The emulated kernel's BPF maps, built from `MapDef`s for one run.

Every map value is its own slab object of exactly `value_size` bytes, so a one-byte overrun lands
in a redzone and is reported. That is stricter than the kernel for arrays (one allocation holds
every element, kasan-jit.md §4.1) and preallocated hash maps (elements at a fixed stride, §4.2):
those objects carry a `stricter` note the report prints. Values are allocated on first use.

Each map also has a kernel object of its own, whose address is what `r1 = map ll` loads and
what the map helpers receive. For a prog array it is jit/tail_call.py's inline layout
`{u32 max_entries; u32 pad; u64 ptrs[max_entries]}`; for the others a small header
`{u32 map_type; u32 key_size; u32 value_size; u32 max_entries}` nothing reads.

Semantics kept from kernel/bpf/{arraymap,hashtab,ringbuf}.c (facts): an array lookup past
max_entries is NULL, updates with BPF_NOEXIST/BPF_EXIST fail with -EEXIST/-ENOENT, a full hash
map refuses a new key with -E2BIG while an LRU one evicts its least recently used key, deleting
from an array is -EINVAL, a deleted hash value stays valid memory (the kernel recycles elements
through a free list without poisoning them). Per-CPU maps have one CPU.

`fill` (exploration) sets every new value's bytes: one byte value repeated, or a byte pattern
repeated (checks.boundary_values). `memory` is the emulated kernel (checks.kernel.Kernel):
kmalloc, read, write.
Owns: map semantics and layouts. Must not import unicorn or bot/.
"""
from __future__ import annotations

import struct
from collections import OrderedDict

from checks.boundary_values import fill_bytes
from checks.errors import CheckError
from jit.program import MapDef

EINVAL, ENOENT, E2BIG, EEXIST, ENOSPC = 22, 2, 7, 17, 28
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
MAP_TYPE_IDS = {"hash": 1, "array": 2, "prog_array": 3, "percpu_hash": 5, "percpu_array": 6,
                "lru_hash": 9, "lru_percpu_hash": 10, "array_of_maps": 12, "hash_of_maps": 13,
                "cgroup_storage": 19, "percpu_cgroup_storage": 21, "ringbuf": 27}
ARRAY_STRICTER = ("array map elements share one allocation in the kernel, without redzones "
                  "between them: this overrun would land in the next element or the padding there")
HASH_STRICTER = ("hash map elements are preallocated at a fixed stride in the kernel, without "
                 "redzones: this overrun would land in the next element there")
_HEADER = struct.Struct("<IIII")


class MapObject:
    """One map of the current run. `index` is its place in `Program.maps`."""

    def __init__(self, memory, index: int, definition: MapDef, fill: int | bytes | None = None):
        self.memory, self.index, self.definition, self.fill = memory, index, definition, fill
        self.addr = self._make_struct()

    # -- what a subclass decides --------------------------------------------------------------

    def _make_struct(self) -> int:
        d = self.definition
        addr = self.memory.kmalloc(_HEADER.size, f"struct bpf_map {d.name}")
        self.memory.write(addr, _HEADER.pack(MAP_TYPE_IDS.get(d.type, 0), d.key_size,
                                             d.value_size, d.max_entries))
        return addr

    def value_address(self, key: bytes, *, create: bool = False) -> int | None:
        """Where the value of `key` lives (the helper's lookup result), or None."""
        return None

    def update(self, key, value: bytes, flags: int = BPF_ANY) -> int:
        """0, or a negative errno as the helper returns it."""
        return -EINVAL

    def delete(self, key) -> int:
        return -EINVAL

    # -- shared -------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.definition.name

    def key(self, key) -> bytes:
        """`key` as key_size bytes (ints are little-endian)."""
        if isinstance(key, int):
            return key.to_bytes(self.definition.key_size, "little", signed=key < 0)
        if len(key) != self.definition.key_size:
            raise CheckError(f"map {self.name}: key of {len(key)} bytes, key_size is "
                             f"{self.definition.key_size}")
        return bytes(key)

    def lookup(self, key) -> bytes | None:
        """The value of `key` (bytes), or None when there is none."""
        addr = self.value_address(self.key(key))
        return None if addr is None else self.memory.read(addr, self.definition.value_size)

    def _new_value(self, label: str, stricter: str, initial: bytes = b"") -> int:
        size = self.definition.value_size
        if size <= 0:
            raise CheckError(f"map {self.name}: value_size {size} has no values to look up")
        addr = self.memory.kmalloc(size, label, stricter=stricter)
        if self.fill is not None:
            self.memory.write(addr, fill_bytes(self.fill, size))
        if initial:
            self.memory.write(addr, initial[:size])
        return addr

    def _value_bytes(self, value: bytes) -> bytes:
        size = self.definition.value_size
        if len(value) > size:
            raise CheckError(f"map {self.name}: value of {len(value)} bytes, value_size is {size}")
        return bytes(value) + bytes(size - len(value))


class ArrayMap(MapObject):
    """array / percpu_array / cgroup storage: max_entries values, indexed by a u32 key."""

    def __init__(self, memory, index, definition, fill=None):
        super().__init__(memory, index, definition, fill)
        self.values: dict[int, int] = {}
        self.initial = dict(definition.initial)

    def _slot(self, key: bytes) -> int | None:
        i = int.from_bytes(key[:4], "little")
        return i if i < self.definition.max_entries else None

    def element(self, i: int) -> int:
        """The address of element i, allocated on first use."""
        if i not in self.values:
            self.values[i] = self._new_value(f"map value of {self.name}[{i}]", ARRAY_STRICTER,
                                             self.initial.get(i, b""))
        return self.values[i]

    def value_address(self, key: bytes, *, create: bool = False) -> int | None:
        i = self._slot(key)
        return None if i is None else self.element(i)

    def update(self, key, value: bytes, flags: int = BPF_ANY) -> int:
        i = self._slot(self.key(key))
        if i is None:
            return -E2BIG
        if flags == BPF_NOEXIST:
            return -EEXIST                      # every element of an array exists
        self.memory.write(self.element(i), self._value_bytes(value))
        return 0


class HashMap(MapObject):
    """hash / percpu_hash / lru_hash / lru_percpu_hash (`lru`: evict the least recently used)."""

    def __init__(self, memory, index, definition, fill=None, *, lru: bool = False):
        super().__init__(memory, index, definition, fill)
        self.lru = lru
        self.values: OrderedDict[bytes, int] = OrderedDict()

    def value_address(self, key: bytes, *, create: bool = False) -> int | None:
        addr = self.values.get(key)
        if addr is not None and self.lru:
            self.values.move_to_end(key)
        if addr is None and create:
            addr = self._insert(key)
        return addr

    def _insert(self, key: bytes) -> int | None:
        if len(self.values) >= self.definition.max_entries:
            if not self.lru or not self.values:
                return None
            self.values.popitem(last=False)       # its memory stays valid, as a recycled element
        addr = self._new_value(f"hash map value of {self.name} key {key.hex()}", HASH_STRICTER)
        self.values[key] = addr
        return addr

    def update(self, key, value: bytes, flags: int = BPF_ANY) -> int:
        key = self.key(key)
        exists = key in self.values
        if flags == BPF_NOEXIST and exists:
            return -EEXIST
        if flags == BPF_EXIST and not exists:
            return -ENOENT
        addr = self.value_address(key, create=True)
        if addr is None:
            return -E2BIG
        self.memory.write(addr, self._value_bytes(value))
        return 0

    def delete(self, key) -> int:
        return 0 if self.values.pop(self.key(key), None) is not None else -ENOENT


class ProgArray(MapObject):
    """prog_array: the JIT reads `ptrs[index]` inline (jit/tail_call.py); entries are filled
    with function entry addresses once the program is compiled (`link`)."""

    def _make_struct(self) -> int:
        n = self.definition.max_entries
        addr = self.memory.kmalloc(8 + 8 * n, f"prog array {self.definition.name}")
        self.memory.write(addr, struct.pack("<II", n, 0))
        return addr

    def link(self, entry_of) -> list[str]:
        """Point each slot of `MapDef.values` at `entry_of(function name)` (None: not in the
        program). Returns the names that could not be found (their slots stay empty)."""
        missing = []
        for i, name in self.definition.values:
            entry = entry_of(name)
            if entry is None or not 0 <= i < self.definition.max_entries:
                missing.append(name)
                continue
            self.memory.write(self.addr + 8 + 8 * i, struct.pack("<Q", entry))
        return missing


class RingBuf(MapObject):
    """ringbuf: max_entries bytes of records. Each reserved record is a slab object labelled
    "ringbuf record"; it stays allocated after submit/discard (user space would read it)."""

    RECORD_HEADER = 8                           # BPF_RINGBUF_HDR_SZ

    def __init__(self, memory, index, definition, fill=None):
        super().__init__(memory, index, definition, fill)
        self.used = 0
        self.records: dict[int, tuple[int, str]] = {}    # addr -> (size, "reserved"|"submitted"|...)

    def reserve(self, size: int) -> int:
        need = (size + self.RECORD_HEADER + 7) & ~7
        if size <= 0 or self.used + need > self.definition.max_entries:
            return 0
        self.used += need
        addr = self.memory.kmalloc(size, "ringbuf record")
        self.records[addr] = (size, "reserved")
        return addr

    def commit(self, addr: int, state: str) -> bool:
        """Mark a reserved record submitted or discarded; False if it is not a reserved record."""
        size, old = self.records.get(addr, (0, None))
        if old != "reserved":
            return False
        self.records[addr] = (size, state)
        if state == "discarded":
            self.used -= (size + self.RECORD_HEADER + 7) & ~7
        return True

    def submitted(self) -> list[bytes]:
        """The contents of every submitted record, in reservation order."""
        return [self.memory.read(a, n) for a, (n, s) in self.records.items() if s == "submitted"]


class MapOfMaps(MapObject):
    """array_of_maps / hash_of_maps: a lookup returns the inner map itself (its kernel address),
    as the kernel's does, or NULL for an empty slot. Slots start empty, as in the kernel, except
    those `MapDef.values` names (index -> a map of the program, see `link`); `update` from
    Python fills a slot with a new map built from `MapDef.inner`."""

    def __init__(self, memory, index, definition, fill=None):
        super().__init__(memory, index, definition, fill)
        self.inner: dict[bytes, MapObject] = {}

    def link(self, map_named) -> list[str]:
        """Put `map_named(name)` in each slot of `MapDef.values`; the names not found."""
        missing = []
        for i, name in self.definition.values:
            target = map_named(name)
            if target is None:
                missing.append(name)
            else:
                self.inner[self.key(i)] = target
        return missing

    def value_address(self, key: bytes, *, create: bool = False) -> int | None:
        inner = self.inner.get(key)
        return None if inner is None else inner.addr

    def update(self, key, value: bytes = b"", flags: int = BPF_ANY) -> int:
        """Fill slot `key` with a fresh inner map (the value, a map fd, has no meaning here)."""
        key = self.key(key)
        if self.definition.inner is None:
            raise CheckError(f"map {self.name}: no inner map definition to create a map from")
        self.inner[key] = make_map(self.memory, self.index, self.definition.inner, self.fill)
        return 0

    def all_maps(self) -> list[MapObject]:
        return [self] + [m for inner in self.inner.values() for m in all_maps(inner)]


class LocalStorage(MapObject):
    """sk/inode/task/cgrp storage: one value per owner object (a socket, ...), created by the
    *_storage_get helpers with BPF_LOCAL_STORAGE_GET_F_CREATE; no map key of its own."""

    def __init__(self, memory, index, definition, fill=None):
        super().__init__(memory, index, definition, fill)
        self.values: dict[int, int] = {}

    def storage(self, owner: int, *, create: bool, initial: bytes = b"") -> int | None:
        if owner not in self.values and create:
            self.values[owner] = self._new_value(
                f"{self.definition.type} value of {self.name} for {owner:#x}", "", initial)
        return self.values.get(owner)

    def delete_storage(self, owner: int) -> int:
        return 0 if self.values.pop(owner, None) is not None else -ENOENT


class EmptyMap(MapObject):
    """A map type whose elements need objects the emulator does not have (sockets, devices,
    XDP sockets, perf buffers, storage owners). It exists, as in the kernel where user space has
    not filled it: lookups find nothing, BPF-side updates are refused."""


_KINDS = {"array": ArrayMap, "percpu_array": ArrayMap, "cgroup_storage": ArrayMap,
          "percpu_cgroup_storage": ArrayMap, "hash": HashMap, "percpu_hash": HashMap,
          "prog_array": ProgArray, "ringbuf": RingBuf, "array_of_maps": MapOfMaps,
          "hash_of_maps": MapOfMaps, "sk_storage": LocalStorage, "inode_storage": LocalStorage,
          "task_storage": LocalStorage, "cgrp_storage": LocalStorage}
_LRU = ("lru_hash", "lru_percpu_hash")
# Kernel map types (enum bpf_map_type) that exist here only as empty maps.
EMPTY_TYPES = ("perf_event_array", "stack_trace", "cgroup_array", "lpm_trie", "devmap", "sockmap",
               "cpumap", "xskmap", "sockhash", "reuseport_sockarray", "queue", "stack",
               "devmap_hash", "struct_ops", "bloom_filter", "user_ringbuf")


def make_map(memory, index: int, definition: MapDef, fill: int | bytes | None = None) -> MapObject:
    """The map object for `definition`; CheckError for a type the emulator does not have."""
    if definition.type in _LRU:
        return HashMap(memory, index, definition, fill, lru=True)
    if definition.type in EMPTY_TYPES:
        return EmptyMap(memory, index, definition, fill)
    kind = _KINDS.get(definition.type)
    if kind is None:
        known = ", ".join(sorted(set(_KINDS) | set(_LRU) | set(EMPTY_TYPES)))
        raise CheckError(f"map {definition.name}: unknown map type {definition.type!r} "
                         f"(known: {known})")
    return kind(memory, index, definition, fill)


def all_maps(m: MapObject) -> list[MapObject]:
    """`m` and, for a map of maps, every inner map it holds."""
    return m.all_maps() if isinstance(m, MapOfMaps) else [m]
