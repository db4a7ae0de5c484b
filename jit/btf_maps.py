"""BTF-defined maps: the `.maps` DATASEC of an object → `jit.program.MapDef`s.

bpf_helpers.h encodes each attribute in the type of a struct member, and libbpf's
parse_btf_map_def reads it back (facts, re-expressed):
- `__uint(name, N)` is `int (*name)[N]`: a pointer to an array whose element count is N;
- `__ulong(name, N)` is an anonymous enum holding N;
- `__type(name, T)` is `T *name`: key/value sizes are the pointed-to type's size;
- `__array(values, T)` is `T *values[]`: a zero-length array of pointers, allowed only as the
  last member of a prog array (T a function prototype) or a map-in-map (T the inner map's
  struct); it makes the value size 4.

Owns: reading map definitions from types. Must not import unicorn, capstone, checks/ or bot/.
"""
from __future__ import annotations

from dataclasses import dataclass

from jit import btf as B
from jit.btf import Btf, BtfType
from jit.errors import JitError
from jit.program import MapDef

# enum bpf_map_type (uapi bpf.h, 6.12), by value; names as MapDef spells them.
MAP_TYPES = (
    "unspec", "hash", "array", "prog_array", "perf_event_array", "percpu_hash", "percpu_array",
    "stack_trace", "cgroup_array", "lru_hash", "lru_percpu_hash", "lpm_trie", "array_of_maps",
    "hash_of_maps", "devmap", "sockmap", "cpumap", "xskmap", "sockhash", "cgroup_storage",
    "reuseport_sockarray", "percpu_cgroup_storage", "queue", "stack", "sk_storage", "devmap_hash",
    "struct_ops", "ringbuf", "inode_storage", "task_storage", "bloom_filter", "user_ringbuf",
    "cgrp_storage", "arena")
MAP_IN_MAP = ("array_of_maps", "hash_of_maps")
# Attributes that change nothing a program can observe.
IGNORED_ATTRIBUTES = frozenset(("numa_node", "pinning", "map_extra"))


@dataclass(frozen=True)
class BtfMap:
    """A map variable of the `.maps` section."""
    map: MapDef
    offset: int               # where its variable starts in the section
    size: int
    values_at: int            # byte offset of its `values` member in the variable, or -1


def map_defs(btf: Btf, placed: dict[str, tuple[int, int]]) -> list[BtfMap]:
    """Every map of the `.maps` DATASEC. clang leaves the DATASEC offsets at 0 in an object
    file; as libbpf does, each variable's place comes from its symbol: `placed` maps a
    symbol name to (offset, size) in `.maps`."""
    sec = btf.find(B.DATASEC, ".maps")
    if sec is None:
        return []
    out = []
    for entry in sec.members:
        var = btf[entry.type]
        if var.kind != B.VAR:
            raise btf.error(f".maps entry [{entry.type}] is a {var.kind_name}, not a variable")
        if var.name not in placed:
            raise btf.error(f"map '{var.name}' has no symbol in section '.maps'")
        mapdef, values_at = _map(btf, var.name, btf.resolve(var.ref), inner=False)
        out.append(BtfMap(mapdef, *placed[var.name], values_at))
    return out


def _map(btf: Btf, name: str, t: BtfType, *, inner: bool) -> tuple[MapDef, int]:
    if t.kind != B.STRUCT:
        raise _error(btf, name, f"definition is a {t.kind_name}, not a struct")
    attrs = dict(type=0, key_size=0, value_size=0, max_entries=0, map_flags=0)
    inner_def, values_at = None, -1
    for i, m in enumerate(t.members):
        if m.name in ("type", "max_entries", "map_flags", "key_size", "value_size") or m.name in IGNORED_ATTRIBUTES:
            attrs[m.name] = _number(btf, name, m)
        elif m.name in ("key", "value"):
            attrs[f"{m.name}_size"] = _pointee_size(btf, name, m)
        elif m.name == "values":
            if inner or i != len(t.members) - 1:
                raise _error(btf, name, "'values' must be the last member of an outer map")
            inner_def = _values(btf, name, m, _type_name(btf, name, attrs["type"]))
            attrs["value_size"], values_at = 4, m.offset // 8
        else:
            raise _error(btf, name, f"unknown attribute '{m.name}'")
    if attrs["type"] == 0:
        raise _error(btf, name, "map type isn't specified")
    too_big = next((k for k in ("key_size", "value_size", "max_entries", "map_flags") if attrs[k] >> 32), None)
    if too_big:
        raise _error(btf, name, f"{too_big} {attrs[too_big]} does not fit in 32 bits")
    mapdef = MapDef(name, _type_name(btf, name, attrs["type"]), attrs["key_size"], attrs["value_size"],
                    attrs["max_entries"], attrs["map_flags"], inner=inner_def)
    return mapdef, values_at


def _error(btf: Btf, name: str, message: str) -> JitError:
    return btf.error(f"map '{name}': {message}")


def _type_name(btf: Btf, name: str, value: int) -> str:
    if not 0 < value < len(MAP_TYPES):
        raise _error(btf, name, f"unknown map type {value}")
    return MAP_TYPES[value]


def _number(btf: Btf, name: str, m: B.Member) -> int:
    """The N of `__uint(field, N)` (pointer to an N-element array) or `__ulong` (an enum)."""
    t = btf.resolve(m.type)
    if t.kind == B.PTR:
        target = btf.resolve(t.ref)
        if target.kind == B.ARRAY:
            return target.array[2]
    if t.kind in (B.ENUM, B.ENUM64) and len(t.members) == 1:
        return t.members[0].offset
    raise _error(btf, name, f"attribute '{m.name}' is not an __uint/__ulong encoding")


def _pointee_size(btf: Btf, name: str, m: B.Member) -> int:
    t = btf.resolve(m.type)
    if t.kind != B.PTR:
        raise _error(btf, name, f"{m.name} spec is a {t.kind_name}, not a pointer")
    return btf.size_of(t.ref)


def _values(btf: Btf, name: str, m: B.Member, map_type: str) -> MapDef | None:
    """The inner map template of a map-in-map (None for a prog array)."""
    t = btf.resolve(m.type)
    if t.kind != B.ARRAY or t.array[2] != 0:
        raise _error(btf, name, "'values' spec is not a zero-sized array")
    pointer = btf.resolve(t.array[0])
    if pointer.kind != B.PTR:
        raise _error(btf, name, f"'values' element is a {pointer.kind_name}, not a pointer")
    target = btf.resolve(pointer.ref)
    if map_type == "prog_array" and target.kind == B.FUNC_PROTO:
        return None
    if map_type in MAP_IN_MAP:
        return _map(btf, f"{name}.inner", target, inner=True)[0]
    raise _error(btf, name, f"'values' on a {map_type} map (needs a prog array or a map-in-map)")
