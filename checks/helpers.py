"""The emulated kernel's BPF helpers and the KASAN selftest kfuncs, one small function each.

Each helper is `fn(kernel, r1, r2, r3, r4, r5) -> r0` (checks.kernel.Kernel). Ids are those of
include/uapi/linux/bpf.h; names (for messages) come from checks.kselftest.uapi_facts. Memory the
program points a helper at is read and written through `kernel.helper_access`, as the kernel's
KASAN-instrumented C does: a bad range is a KASAN report in the helper, unmapped memory an oops.
A helper that meets an argument it cannot make sense of (no map at a map pointer) raises
`HelperError`, which ends the run with a per-test error naming the helper and the calling
instruction.

Deliberate choices:
- probe_read{,_kernel,_user}: a source that cannot be read gives -EFAULT and a zeroed
  destination, never a report (the kernel's copy_from_kernel_nofault); the destination is
  written like any other (checked).
- ktime_get_ns counts 1000 ns a call from a fixed start, and get_prandom_u32 draws from a
  generator seeded per run: runs are reproducible. Both take exploration overrides first
  (`Kernel.helper_result`).
- bpf_tail_call is compiled inline by the JIT; bpf_loop and bpf_for_each_map_elem are native
  code (checks/native_helpers.py); only for_each's element table is built here.

Kfuncs (src 2) of the kernel's KASAN selftest (bpf_testmod), with BTF ids we chose, for LLVM asm
`call kfunc(N)`: see KFUNCS. bpf_testmod_oob_alloc returns a 1-byte object whose type
(`struct { u8 data; union { u8..u64 redzone_N; }; }`) is 16 bytes, so reading `redzone_N` at
offset 8 is a slab-out-of-bounds read; the selftest's own allocation size is unverified.

Must not import unicorn or bot/.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from checks.machine import HelperError
from checks.maps import ArrayMap, HashMap, LocalStorage, RingBuf
from checks.shadow import SLAB_FREE

MASK64 = 0xFFFFFFFFFFFFFFFF
EFAULT, EINVAL, ENOENT = 14, 22, 2
TASK_COMM = b"test_progs"
KTIME_START, KTIME_STEP = 1_000_000_000, 1000
# Room for any field a program reads through a task pointer (the kernel's task_struct is some
# 9-10 KiB; its layout comes from vmlinux BTF, which the emulator does not have): all zero.
TASK_STRUCT_SIZE = 12 * 1024
CURRENT_TASK = "current task"            # Kernel.run_state key


@dataclass(frozen=True)
class Kfunc:
    id: int                     # the BTF id we chose
    name: str
    fn: Callable


def neg_errno(errno: int) -> int:
    """-errno as the u64 a helper returns in r0."""
    return -errno & MASK64


def _map(kernel, addr: int, helper: str):
    """The map at `addr`. The kernel's helper first loads map->ops from there: a pointer to no
    memory is a report and an oops in the helper; memory that holds no map is our error."""
    m = kernel.map_at(addr)
    if m is None:
        kernel.helper_access.read(addr, 8)
        raise HelperError(f"bpf_{helper}: r1 = {addr:#x} is not a map")
    return m


# -- maps ---------------------------------------------------------------------------------------

def map_lookup_elem(kernel, map_addr, key_ptr, *_):
    m = _map(kernel, map_addr, "map_lookup_elem")
    key = kernel.helper_access.read(key_ptr, m.definition.key_size)
    kernel.lookups.append((m.index, key))
    return m.value_address(key) or 0


def map_update_elem(kernel, map_addr, key_ptr, value_ptr, flags, _):
    m = _map(kernel, map_addr, "map_update_elem")
    key = kernel.helper_access.read(key_ptr, m.definition.key_size)
    kernel.lookups.append((m.index, key))
    value = kernel.helper_access.read(value_ptr, m.definition.value_size)
    return m.update(key, value, flags) & MASK64


def map_delete_elem(kernel, map_addr, key_ptr, *_):
    m = _map(kernel, map_addr, "map_delete_elem")
    key = kernel.helper_access.read(key_ptr, m.definition.key_size)
    kernel.lookups.append((m.index, key))
    return m.delete(key) & MASK64


def get_local_storage(kernel, map_addr, flags, *_):
    m = _map(kernel, map_addr, "get_local_storage")
    if not isinstance(m, ArrayMap):
        raise HelperError(f"bpf_get_local_storage: map {m.name} is not a cgroup storage map")
    return m.element(0)


def for_each_table(kernel, map_addr, callback, ctx, flags, _):
    """for_each's element table: {u64 count; {u64 key, u64 value}[count]}, in kernel memory."""
    if flags:
        return neg_errno(EINVAL)
    m = _map(kernel, map_addr, "for_each_map_elem")
    if isinstance(m, ArrayMap):
        pairs = [(i.to_bytes(4, "little"), m.element(i)) for i in range(m.definition.max_entries)]
    elif isinstance(m, HashMap):
        pairs = list(m.values.items())
    else:
        raise HelperError(f"bpf_for_each_map_elem: map {m.name} ({m.definition.type}) cannot be "
                          "iterated")
    table = kernel.kmalloc(8 + 16 * max(len(pairs), 1), f"for_each table of {m.name}")
    keys = kernel.kmalloc(max(len(pairs), 1) * m.definition.key_size, f"for_each keys of {m.name}")
    entries = [struct.pack("<Q", len(pairs))]
    for i, (key, value) in enumerate(pairs):
        kernel.write(keys + i * len(key), key)
        entries.append(struct.pack("<QQ", keys + i * len(key), value))
    kernel.write(table, b"".join(entries))
    return table


def _local_storage(kernel, map_addr: int, helper: str) -> LocalStorage:
    m = _map(kernel, map_addr, helper)
    if not isinstance(m, LocalStorage):
        raise HelperError(f"bpf_{helper}: map {m.name} is not a local storage map")
    return m


def storage_get(kernel, map_addr, owner, value, flags, _):
    """bpf_{sk,inode,task,cgrp}_storage_get: the owner's value, created when flags has
    BPF_LOCAL_STORAGE_GET_F_CREATE (initialised from `value` when given)."""
    m = _local_storage(kernel, map_addr, "storage_get")
    if not owner or flags & ~1:
        return 0
    initial = kernel.helper_access.read(value, m.definition.value_size) if value else b""
    return m.storage(owner, create=bool(flags & 1), initial=initial) or 0


def storage_delete(kernel, map_addr, owner, *_):
    return _local_storage(kernel, map_addr, "storage_delete").delete_storage(owner) & MASK64


# -- ring buffers -------------------------------------------------------------------------------

def _ringbuf(kernel, addr: int, helper: str) -> RingBuf:
    m = _map(kernel, addr, helper)
    if not isinstance(m, RingBuf):
        raise HelperError(f"bpf_{helper}: map {m.name} is not a ring buffer")
    return m


def ringbuf_reserve(kernel, map_addr, size, flags, *_):
    return 0 if flags else _ringbuf(kernel, map_addr, "ringbuf_reserve").reserve(size)


def _commit(kernel, record: int, state: str, helper: str) -> int:
    """Submit or discard a record. The kernel finds the ring buffer from the record header
    just before it: a pointer to anything else is read there (checked), then is our error."""
    for m in kernel.maps:
        if isinstance(m, RingBuf) and m.commit(record, state):
            return 0
    kernel.helper_access.read(record - RingBuf.RECORD_HEADER, RingBuf.RECORD_HEADER)
    raise HelperError(f"bpf_{helper}: {record:#x} is not a reserved ring buffer record")


def ringbuf_submit(kernel, record, flags, *_):
    return _commit(kernel, record, "submitted", "ringbuf_submit")


def ringbuf_discard(kernel, record, flags, *_):
    return _commit(kernel, record, "discarded", "ringbuf_discard")


def ringbuf_output(kernel, map_addr, data, size, flags, _):
    rb = _ringbuf(kernel, map_addr, "ringbuf_output")
    record = rb.reserve(size)
    if not record:
        return neg_errno(11)                  # -EAGAIN: no room
    kernel.write(record, kernel.helper_access.read(data, size))
    rb.commit(record, "submitted")
    return 0


def ringbuf_query(kernel, map_addr, flags, *_):
    rb = _ringbuf(kernel, map_addr, "ringbuf_query")
    # BPF_RB_AVAIL_DATA, BPF_RB_RING_SIZE, BPF_RB_CONS_POS, BPF_RB_PROD_POS
    return {0: rb.used, 1: rb.definition.max_entries, 2: 0, 3: rb.used}.get(flags, 0)


# -- memory -------------------------------------------------------------------------------------

def probe_read(kernel, dst, size, src, *_):
    size &= 0xFFFFFFFF
    data = kernel.helper_access.read_nofault(src, size)
    if data is None:
        kernel.helper_access.fill(dst, size)
        return neg_errno(EFAULT)
    kernel.helper_access.write(dst, data)
    return 0


def skb_load_bytes(kernel, skb, offset, to, length, _):
    data, pkt_len = kernel.packet_of(skb)
    offset &= 0xFFFFFFFF
    length &= 0xFFFFFFFF
    if offset > 0x7FFFFFFF or offset + length > pkt_len or not length:
        kernel.helper_access.fill(to, length)
        return neg_errno(EFAULT)
    kernel.helper_access.write(to, kernel.read(data + offset, length))
    return 0


def _ones_sum32(data: bytes, seed: int) -> int:
    total = seed & 0xFFFFFFFF
    for (word,) in struct.iter_unpack("<I", data):
        total += word
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def csum_diff(kernel, from_ptr, from_size, to_ptr, to_size, seed):
    """The ones'-complement sum of ~from and to, plus seed, folded to 32 bits."""
    from_size &= 0xFFFFFFFF
    to_size &= 0xFFFFFFFF
    if from_size % 4 or to_size % 4 or from_size + to_size > 512:
        return neg_errno(EINVAL)
    old = bytes(b ^ 0xFF for b in kernel.helper_access.read(from_ptr, from_size))
    new = kernel.helper_access.read(to_ptr, to_size)
    return _ones_sum32(old + new, seed)


def spin_lock(kernel, lock, *_):
    """bpf_spin_lock / bpf_spin_unlock: one CPU, so nothing to wait for; the lock must be in a map
    value, as the verifier demands."""
    obj = kernel.find_object(lock)
    if obj is None or not obj.allocated or "map value" not in obj.label:
        raise HelperError(f"bpf_spin_lock/unlock: {lock:#x} is not inside a map value")
    return 0


# -- task and time ------------------------------------------------------------------------------

def ktime_get_ns(kernel, *_):
    return kernel.helper_result("ktime_get_ns", kernel.next_ktime)


def get_prandom_u32(kernel, *_):
    return kernel.helper_result("get_prandom_u32", lambda: kernel.rng.getrandbits(32))


def get_smp_processor_id(kernel, *_):
    return kernel.helper_result("get_smp_processor_id", lambda: 0)


def get_numa_node_id(kernel, *_):
    return 0


def get_current_pid_tgid(kernel, *_):
    pid = kernel.task.pid
    return (pid << 32) | pid


def get_current_uid_gid(kernel, *_):
    return 0


def get_current_task(kernel, *_):
    """bpf_get_current_task{,_btf}: the current task, one zeroed task_struct per run."""
    task = kernel.run_state.get(CURRENT_TASK)
    if task is None:
        task = kernel.run_state[CURRENT_TASK] = kernel.kmalloc(TASK_STRUCT_SIZE, "task_struct")
    return task


def copy_from_user(kernel, dst, size, user_ptr, *_):
    """The emulated task maps no user memory: -EFAULT, the destination zeroed (checked)."""
    kernel.helper_access.fill(dst, size & 0xFFFFFFFF)
    return neg_errno(EFAULT)


def copy_from_user_task(kernel, dst, size, user_ptr, task, flags):
    if flags:
        return neg_errno(EINVAL)
    return copy_from_user(kernel, dst, size, user_ptr) if size & 0xFFFFFFFF else 0


def get_current_comm(kernel, buf, size, *_):
    size &= 0xFFFFFFFF
    if not size:
        return neg_errno(EINVAL)
    kernel.helper_access.write(buf, (TASK_COMM[:size - 1] + bytes(size))[:size])
    return 0


_CONVERSION = re.compile(rb"%(-?\d*)(ll|l|h|hh|z)?([diuxXpcs%])")


def trace_printk(kernel, fmt, fmt_size, a1, a2, a3):
    """bpf_trace_printk: up to three arguments; the output is kept in `kernel.trace_output`."""
    raw = kernel.helper_access.read(fmt, fmt_size & 0xFFFFFFFF).split(b"\0", 1)[0]
    args = iter((a1, a2, a3))
    try:
        text = _CONVERSION.sub(lambda m: _convert(kernel, m, args), raw)
    except StopIteration:
        return neg_errno(EINVAL)                    # more conversions than arguments
    kernel.trace_output.append(text.decode("latin-1"))
    return len(text)


def _convert(kernel, m: re.Match, args) -> bytes:
    width, length, kind = m.group(1).decode(), m.group(2) or b"", m.group(3)
    if kind == b"%":
        return b"%"
    value = next(args)
    if kind == b"s":
        return kernel.helper_access.read_cstring_nofault(value)
    bits = 64 if length in (b"l", b"ll", b"z") or kind == b"p" else 32
    value &= (1 << bits) - 1
    if kind in b"di" and value >> (bits - 1):
        value -= 1 << bits
    spec = {b"x": "x", b"X": "X", b"p": "x", b"c": "c"}.get(kind, "d")
    text = format(value & 0xFF if spec == "c" else value, f"{width}{spec}")
    return (("0x" + text) if kind == b"p" else text).encode("latin-1")


# -- the KASAN selftest kfuncs ------------------------------------------------------------------

def _granules(addr: int, size: int) -> tuple[int, int]:
    start = addr & ~7
    return start, ((addr + size + 7) & ~7) - start


def kasan_poison(kernel, mem, size, *_):
    """bpf_kfunc_kasan_poison: mark the granules holding [mem, mem+size) freed (0xFB), so an
    access reads like a slab use-after-free."""
    kernel.poison(*_granules(mem, size & 0xFFFFFFFF), SLAB_FREE)
    return 0


def kasan_unpoison(kernel, mem, size, *_):
    kernel.unpoison(*_granules(mem, size & 0xFFFFFFFF))
    return 0


def oob_alloc(kernel, *_):
    return kernel.kmalloc(1, "bpf_testmod_oob_alloc object (1 of its type's 16 bytes)")


# -- the tables ---------------------------------------------------------------------------------

_IMPLEMENTED = {
    1: map_lookup_elem, 2: map_update_elem, 3: map_delete_elem, 4: probe_read, 5: ktime_get_ns,
    6: trace_printk, 7: get_prandom_u32, 8: get_smp_processor_id, 14: get_current_pid_tgid,
    15: get_current_uid_gid, 16: get_current_comm, 26: skb_load_bytes, 28: csum_diff,
    35: get_current_task, 42: get_numa_node_id, 81: get_local_storage, 93: spin_lock, 94: spin_lock,
    148: copy_from_user, 158: get_current_task, 191: copy_from_user_task,
    112: probe_read, 113: probe_read, 130: ringbuf_output, 131: ringbuf_reserve,
    132: ringbuf_submit, 133: ringbuf_discard, 134: ringbuf_query,
    107: storage_get, 108: storage_delete, 145: storage_get, 146: storage_delete,
    156: storage_get, 157: storage_delete, 210: storage_get, 211: storage_delete,
}
_EXTRA_NAMES = {"bpf_probe_read_user": 112, "bpf_get_current_uid_gid": 15,
                "bpf_sk_storage_delete": 108, "bpf_inode_storage_get": 145,
                "bpf_inode_storage_delete": 146, "bpf_task_storage_get": 156,
                "bpf_task_storage_delete": 157, "bpf_cgrp_storage_get": 210,
                "bpf_cgrp_storage_delete": 211,
                "bpf_get_current_comm": 16, "bpf_get_numa_node_id": 42, "bpf_ringbuf_query": 134,
                "bpf_for_each_map_elem": 164, "bpf_get_current_task": 35,
                "bpf_copy_from_user": 148, "bpf_get_current_task_btf": 158,
                "bpf_copy_from_user_task": 191}
# Native (checks/native_helpers.py), and compiled inline by the JIT.
LOOP, FOR_EACH_MAP_ELEM, TAIL_CALL = 181, 164, 12


@lru_cache(maxsize=1)
def helper_names() -> dict[int, str]:
    """Helper id -> name without `bpf_`. Imported late: the selftest package is heavy and imports
    the kernel's users."""
    from checks.kselftest.uapi_facts import FALLBACK_HELPERS
    return {hid: name.removeprefix("bpf_") for name, hid in {**FALLBACK_HELPERS, **_EXTRA_NAMES}.items()}


def helper_label(helper_id: int) -> str:
    """`bpf_map_lookup_elem`, or `helper #N` for an id we have no name for."""
    name = helper_names().get(helper_id)
    return f"bpf_{name}" if name else f"helper #{helper_id}"


HELPERS = dict(_IMPLEMENTED)              # helper id -> fn(kernel, r1..r5)

KFUNCS = {k.id: k for k in (Kfunc(0x7E0001, "bpf_kfunc_kasan_poison", kasan_poison),
                             Kfunc(0x7E0002, "bpf_kfunc_kasan_unpoison", kasan_unpoison),
                             Kfunc(0x7E0003, "bpf_testmod_oob_alloc", oob_alloc))}
KFUNC_IDS = {k.name: k.id for k in KFUNCS.values()}
