"""The KASAN report buffer: its layout, and turning its records into attributed bad accesses.

The native `__asan_*` routines (checks/asan_routine.py) append one record per bad access to a
buffer in kernel data, with no Python on the way. This module owns that buffer's layout:

    u64 count       every bad access seen, including those that did not fit
    u64 capacity    how many records fit after the header
    records[capacity], each { u64 addr; u32 size; u32 is_write; u64 ret_ip }   (24 bytes)

After a run, `read_records` decodes it, `attribute` maps each record's return address to the
JIT's CheckSite (and so to a BPF instruction), and `ReportGate` applies the kernel's
multishot / first-report-only rule across one invocation of the tool.

Must not import unicorn, capstone or bot/.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from checks.errors import CheckError
from jit.image import CheckSite, FuncImage, Image

HEADER = struct.Struct("<QQ")
RECORD = struct.Struct("<QIIQ")
HEADER_SIZE = HEADER.size          # 16
RECORD_SIZE = RECORD.size          # 24
# Field offsets inside a record, for the native writer.
REC_ADDR, REC_SIZE, REC_IS_WRITE, REC_RET_IP = 0, 8, 12, 16


def buffer_size(capacity: int) -> int:
    return HEADER_SIZE + capacity * RECORD_SIZE


@dataclass(frozen=True)
class AccessRecord:
    """One bad access as the native routine saw it."""
    addr: int
    size: int
    is_write: bool
    ret_ip: int          # the return address of `call __asan_*`: the kernel's _RET_IP_


@dataclass(frozen=True)
class Records:
    records: tuple[AccessRecord, ...]
    dropped: int         # bad accesses counted but not recorded because the buffer was full


def reset_buffer(buf, capacity: int) -> None:
    """Empty the buffer and set its capacity (how many records fit in `buf`)."""
    view = memoryview(buf).cast("B")
    if buffer_size(capacity) > len(view):
        raise CheckError(f"KASAN report buffer of {len(view)} bytes cannot hold {capacity} records")
    HEADER.pack_into(view, 0, 0, capacity)


def read_records(buf) -> Records:
    view = memoryview(buf).cast("B")
    count, capacity = HEADER.unpack_from(view, 0)
    if buffer_size(capacity) > len(view):
        raise CheckError(f"KASAN report buffer is corrupt: capacity {capacity} in {len(view)} bytes")
    kept = min(count, capacity)
    records = tuple(AccessRecord(addr, size, bool(is_write), ret_ip)
                    for addr, size, is_write, ret_ip in
                    (RECORD.unpack_from(view, HEADER_SIZE + i * RECORD_SIZE) for i in range(kept)))
    return Records(records, count - kept)


@dataclass(frozen=True)
class Attributed:
    """A record placed in the program: which function and BPF instruction made the access."""
    record: AccessRecord
    site: CheckSite | None       # None when the return address is not a known check site
    func: FuncImage | None

    @property
    def func_insn(self) -> int | None:
        """Slot index within its function (ld_imm64 counts 2), as the kernel's verifier log shows."""
        if self.site is None or self.func is None:
            return None
        return self.site.insn - self.func.start_insn


def attribute(image: Image, records) -> list[Attributed]:
    """Match each record's return address to the image's check sites."""
    sites = {image.base + s.ret_offset: s for s in image.check_sites}
    out = []
    for rec in records:
        offset = rec.ret_ip - image.base
        func = image.func_at(offset) if 0 <= offset < len(image.code) else None
        out.append(Attributed(rec, sites.get(rec.ret_ip), func))
    return out


class ReportGate:
    """The kernel's kasan_multi_shot switch. With multishot every bad access is reported; without
    it only the first one of the whole invocation is, and later ones pass silently, as after
    the kernel's first report since boot. One gate per invocation, shared by all its runs."""

    def __init__(self, multishot: bool = True):
        self.multishot = multishot
        self.reported = 0

    def admit(self, items: list) -> list[tuple[int, object]]:
        """(number, item) for each of this run's bad accesses that would print a report. The
        number counts reports across the invocation from 0; the kernel shows taint flag B from
        the second one on."""
        if not self.multishot:
            items = items[:1] if self.reported == 0 else []
        first = self.reported
        self.reported += len(items)
        return [(first + i, item) for i, item in enumerate(items)]
