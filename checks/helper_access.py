"""Memory a helper touches on the program's behalf, checked as the kernel's instrumented C does.

The kernel's helpers are C built with KASAN: a memcpy, memset or load through a pointer the
program passed (a map key or value, a probe_read destination, a printk format) first runs
kasan_check_range over the whole range and reports a bad one (non-fatal), then makes the access,
which page-faults where nothing is mapped. `HelperAccess` does the same for the Python helpers:
`read` / `write` / `fill` apply the generic KASAN rules (checks.shadow) to the shadow, append a
record to the run's report buffer (the one the native `__asan_*` routines fill, so reports keep
their order and the multishot gate sees them all), copy what is mapped, and raise `HelperFault`
(an oops inside the helper) at the first byte that is not. `read_nofault` is
copy_from_kernel_nofault (probe_read*, trace_printk's %s): never a report, None where it would
fault.

`findings_of_run` turns a run's records into Findings. A helper's record is reported as the
kernel prints it: the helper is the frame in the title (`BUG: KASAN: slab-out-of-bounds in
bpf_map_lookup_elem+0x4e/0x90`), kasan_check_range above it and the BPF program below it in the
call trace; our own lines attribute it to the program's `call` instruction.

Owns: helper memory checks and their reports. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from checks.asan_routine import routine_name
from checks.kasan_records import (HEADER, HEADER_SIZE, RECORD, RECORD_SIZE, Attributed,
                                  ReportGate, attribute)
from checks.machine import HelperFault
from checks.report import Finding, ReportContext, build_finding, code_symbol
from checks.shadow import MASK64, Verdict, check_region, has_metadata, wraps
from checks.titles import alt_title, kasan_title
from jit.image import CheckSite

HELPER_OFFSET = "+0x4e/0x90"      # made up but stable, like the runner frames of checks.report
CHECK_FRAME = "kasan_check_range+0x14e/0x1c0"
_EXACT_SIZES = 16                  # up to here checks.shadow applies the kernel's rules itself


@dataclass(frozen=True)
class HelperCall:
    """Which helper made a recorded access, and where the program called it."""
    helper: str                    # bpf_map_lookup_elem
    ret_ip: int                    # the return address of the program's `call`


class HelperAccess:
    """The checked memory accesses of one `checks.kernel.Kernel`'s helpers."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.calls: dict[int, HelperCall] = {}        # record index -> who made it

    def begin_run(self) -> None:
        self.calls.clear()

    # -- the accesses ----------------------------------------------------------------------------

    def read(self, addr: int, size: int) -> bytes:
        """memcpy from `addr`: checked, then read; a fault where it stops being mapped."""
        addr &= MASK64
        self._check(addr, size, is_write=False)
        self._fault_past(addr, size, "read", self.kernel.machine.accessible(addr, size))
        return self.kernel.machine.read(addr, size) if size else b""

    def write(self, addr: int, data: bytes) -> None:
        """memcpy to `addr`: checked, then as much written as is mapped, then a fault."""
        addr &= MASK64
        self._check(addr, len(data), is_write=True)
        done = self.kernel.machine.accessible(addr, len(data), write=True)
        if done:
            self.kernel.machine.write(addr, data[:done])
        self._fault_past(addr, len(data), "write", done)

    def fill(self, addr: int, size: int, byte: int = 0) -> None:
        """memset: like `write`, without building `size` bytes first (sizes come from the
        program and may be huge)."""
        addr &= MASK64
        self._check(addr, size, is_write=True)
        done = self.kernel.machine.accessible(addr, size, write=True)
        if done:
            self.kernel.machine.write(addr, bytes([byte]) * done)
        self._fault_past(addr, size, "write", done)

    def read_nofault(self, addr: int, size: int) -> bytes | None:
        """copy_from_kernel_nofault: the bytes, or None where reading would fault; no report."""
        addr &= MASK64
        if size and self.kernel.machine.accessible(addr, size) < size:
            return None
        return self.kernel.machine.read(addr, size) if size else b""

    def read_cstring_nofault(self, addr: int, limit: int = 256) -> bytes:
        """strncpy_from_kernel_nofault: up to the NUL, `limit` or the first unreadable byte."""
        addr &= MASK64
        data = self.read_nofault(addr, self.kernel.machine.accessible(addr, limit)) or b""
        return data.split(b"\0", 1)[0]

    # -- checking and recording ------------------------------------------------------------------

    def _check(self, addr: int, size: int, *, is_write: bool) -> None:
        if size and poisoned(self.kernel.machine.shadow, addr, size):
            self._record(addr, size, is_write)

    def _record(self, addr: int, size: int, is_write: bool) -> None:
        """Append to the report buffer as the native routines do (count every access, keep what
        fits), remembering which helper made it."""
        view = self.kernel.asan.view
        count, capacity = HEADER.unpack_from(view, 0)
        machine = self.kernel.machine
        if count < capacity:
            ret_ip = machine.caller_return()
            RECORD.pack_into(view, HEADER_SIZE + count * RECORD_SIZE, addr, size & 0xFFFFFFFF,
                             int(is_write), ret_ip)
            self.calls[count] = HelperCall(machine.serving(), ret_ip)
        HEADER.pack_into(view, 0, count + 1, capacity)

    def _fault_past(self, addr: int, size: int, access: str, done: int) -> None:
        if done < size:
            raise HelperFault(access, addr + done, 1, self.kernel.machine.serving() + HELPER_OFFSET)


def poisoned(shadow, addr: int, size: int) -> bool:
    """Whether kasan_check_range(addr, size) reports: the kernel's rules (checks.shadow), with
    large ranges scanned a shadow view at a time. Memory whose shadow the emulator does not map
    reads as unpoisoned, as the kernel's early shadow page does."""
    if size <= _EXACT_SIZES:
        return check_region(shadow, addr, size) == Verdict.REPORT
    if wraps(addr, size) or not has_metadata(addr):
        return True
    last, p = addr + size - 1, addr & ~7
    while p <= last:
        view = shadow.view_for(p)
        if view is None:
            return False
        first, end = (p - view.base) >> 3, min(((last - view.base) >> 3) + 1, len(view.shadow))
        chunk = bytes(view.shadow[first:end])
        rest = chunk.lstrip(b"\0")
        if rest:
            granule = p + ((len(chunk) - len(rest)) << 3)
            value = rest[0] - 256 if rest[0] & 0x80 else rest[0]
            return granule != (last & ~7) or (last & 7) >= value
        p = view.base + (end << 3)
    return False


# -- reports -------------------------------------------------------------------------------------

def findings_of_run(ctx: ReportContext, records, gate: ReportGate, calls: dict[int, HelperCall], *,
                    test: str, variant: str = "") -> list[Finding]:
    """`checks.report.findings_of_run` for a run whose records include helpers' accesses
    (`calls`, by record index): each is reported with its helper as the guilty frame."""
    items = list(enumerate(attribute(ctx.image, records)))
    out = []
    for number, (index, item) in gate.admit(items):
        call = calls.get(index)
        if call is None:
            out.append(build_finding(ctx, item, test=test, variant=variant, tainted=number > 0))
        else:
            out.append(helper_finding(ctx, item, call, test=test, variant=variant,
                                      tainted=number > 0))
    return out


def helper_finding(ctx: ReportContext, item: Attributed, call: HelperCall, *, test: str,
                   variant: str = "", tainted: bool = False) -> Finding:
    """The report of a helper's bad access: checks.report's, with the helper as the frame the
    access happened in and the program's `call` as the instruction it is attributed to."""
    rec = item.record
    offset = rec.ret_ip - ctx.image.base
    site = CheckSite(ctx.image.insn_at(offset - 1), offset, rec.size, rec.is_write, 0, 0) \
        if 0 < offset <= len(ctx.image.code) else None
    base = build_finding(ctx, Attributed(rec, site, item.func), test=test, variant=variant,
                         tainted=tainted)
    _, prog_frame = code_symbol(ctx, rec.ret_ip)
    frame = call.helper + HELPER_OFFSET
    lines = base.report.split("\n")
    lines[1] = lines[1].replace(f" in {prog_frame}", f" in {frame}")
    at = lines.index(f" {prog_frame}") - 1
    if lines[at].startswith(f" {routine_name(rec.is_write, rec.size)}+"):
        lines[at:at + 1] = [f" {CHECK_FRAME}", f" {frame}"]
    lines.insert(len(lines) - 1, f"bpf-kasan: the access was made by {call.helper} for the "
                                 f"program's call at insn {base.insn}")
    title = kasan_title(base.bug_type, rec.is_write, call.helper)
    ident = hashlib.sha1("|".join(map(str, (test, variant, title, base.insn, rec.size)))
                         .encode()).hexdigest()[:12]
    return replace(base, id=ident, title=title, alt_titles=(alt_title(call.helper),),
                   report="\n".join(lines))
