"""The report buffer, attribution to check sites, the multishot gate, and the whole KASAN path:
real JIT (outline and inline) → emulated machine → native __asan_* → records → report."""
from __future__ import annotations

import re

import pytest

from checks import layout
from checks.asan_routine import InstalledAsan
from checks.errors import CheckError
from checks.kasan_records import (RECORD, AccessRecord, ReportGate, attribute, buffer_size,
                                  read_records, reset_buffer)
from checks.machine import Machine
from checks.report import ReportContext, build_finding, findings_of_run
from checks.shadow import ShadowMap, ShadowView
from checks.slab import Heap
from jit.compile import compile_program
from jit.image import CheckSite, FuncImage, Image
from jit.llvm_asm import assemble
from jit.program import Program


def test_buffer_round_trip_and_overflow_count():
    buf = bytearray(buffer_size(2))
    reset_buffer(buf, 2)
    assert read_records(buf).records == () and read_records(buf).dropped == 0
    RECORD.pack_into(buf, 16, 0xFFFF888000001000, 8, 1, 0xFFFFFFFFA0000040)
    buf[0:8] = (5).to_bytes(8, "little")            # five bad accesses, only the first recorded
    got = read_records(buf)
    assert got.records[0] == AccessRecord(0xFFFF888000001000, 8, True, 0xFFFFFFFFA0000040)
    assert len(got.records) == 2 and got.dropped == 3


def test_a_buffer_too_small_or_corrupt_is_an_error():
    with pytest.raises(CheckError, match="cannot hold 3 records"):
        reset_buffer(bytearray(buffer_size(2)), 3)
    buf = bytearray(buffer_size(1))
    buf[8:16] = (1000).to_bytes(8, "little")
    with pytest.raises(CheckError, match="corrupt"):
        read_records(buf)


def test_attribute_maps_return_addresses_to_sites_and_function_slots():
    base = layout.MODULES
    sites = (CheckSite(3, 0x40, 8, False, 1, 8), CheckSite(12, 0x90, 4, True, 2, 0))
    image = Image(bytes(0xC0), base, tuple(range(0, 0xC0, 8)) + (0xC0,),
                  (FuncImage("main", 0, 0, 0x60, 0), FuncImage("sub", 10, 0x60, 0x60, 0)), sites)
    records = [AccessRecord(1, 8, False, base + 0x40), AccessRecord(2, 4, True, base + 0x90),
               AccessRecord(3, 1, False, base + 0x44)]
    first, second, stray = attribute(image, records)
    assert (first.site, first.func.name, first.func_insn) == (sites[0], "main", 3)
    assert (second.func.name, second.func_insn) == ("sub", 2)       # slot 12 of a func at 10
    assert stray.site is None and stray.func_insn is None


def test_gate_multishot_reports_everything_first_only_reports_once():
    multi = ReportGate(multishot=True)
    assert multi.admit(["a", "b"]) == [(0, "a"), (1, "b")]
    assert multi.admit(["c"]) == [(2, "c")]          # numbers run on: report 2 shows taint B
    once = ReportGate(multishot=False)
    assert once.admit(["a", "b"]) == [(0, "a")]
    assert once.admit(["c"]) == []                 # a later run of the same invocation: silent


# -- end to end ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def machine():
    return Machine()       # not closed: Machine.close() fails on unicorn 2.1.4 (release_handle)


@pytest.fixture(scope="module")
def asan(machine):
    return InstalledAsan(machine, capacity=8)


@pytest.fixture(scope="module")
def heap(machine):
    # The upper half of the direct map: the machine's own bump allocator uses the lower half.
    half = layout.DIRECT_MAP_SIZE // 2
    return Heap(ShadowView(layout.DIRECT_MAP + half, machine.heap_shadow.view[half >> 3:]))


PROGRAM = """
    r0 = *(u64 *)(r1 + 56)
    r2 = *(u64 *)(r1 + 60)
    *(u8 *)(r1 + 64) = r2
    exit
"""


def run_program(machine, asan, heap, mode):
    program = Program("oob_read", tuple(assemble(PROGRAM).insns), prog_type="sched_cls")
    image = compile_program(program, machine.target(kasan=mode, asan_address=asan.address))
    machine.reset()
    heap.reset()
    obj = heap.kmalloc(60, "map value of map_hash_8b key 0")
    asan.begin_run()
    result = machine.run(image, (obj.addr,))
    assert result.ok, result
    return program, image, obj, asan.records()


@pytest.mark.parametrize("mode", ["outline", "inline"])
def test_bad_accesses_of_a_jited_program_are_recorded_and_reported(machine, asan, heap, mode):
    program, image, obj, records = run_program(machine, asan, heap, mode)
    # Slot 0 reads bytes 56..63 (only 56..59 are allocated), slot 1 reads 60..67, slot 2 writes 64.
    assert [(r.addr - obj.addr, r.size, r.is_write) for r in records.records] == \
        [(56, 8, False), (60, 8, False), (64, 1, True)]
    items = attribute(image, records.records)
    assert [i.func_insn for i in items] == [0, 1, 2]
    ctx = ReportContext(image, program, ShadowMap([heap.shadow]), heap.find)
    finding = build_finding(ctx, items[1], test="e2e", variant=mode)
    site = items[1].site
    assert re.search(rf"BUG: KASAN: slab-out-of-bounds in bpf_prog_[0-9a-f]{{16}}_oob_read"
                     rf"\+0x{site.ret_offset - image.funcs[0].offset:x}/0x{image.funcs[0].length:x}\n",
                     finding.report)
    assert f"Read of size 8 at addr {obj.addr + 60:016x}" in finding.report
    assert "located 0 bytes to the right of\n allocated 60-byte region" in finding.report
    assert "bpf-kasan: insn 1 of" in finding.report and "r2 = *(u64 *)(r1 + 0x3c)" in finding.report
    assert re.search(r"bpf-kasan: x86 [0-9a-f]{16}: mov rsi, qword ptr \[rdi \+ 0x3c\]", finding.report)
    assert finding.to_json()["insn"] == 1 and finding.object == "map value of map_hash_8b key 0"
    assert finding.title == "KASAN: slab-out-of-bounds Read in bpf_prog_ADDR_oob_read"


def test_clean_accesses_leave_no_records(machine, asan, heap):
    program = Program("clean", tuple(assemble("r0 = *(u32 *)(r1 + 56)\nexit").insns))
    for mode in ("outline", "inline"):
        image = compile_program(program, machine.target(kasan=mode, asan_address=asan.address))
        machine.reset()
        heap.reset()
        obj = heap.kmalloc(60, "x")
        asan.begin_run()
        assert machine.run(image, (obj.addr,)).ok
        assert asan.records().records == ()


def test_first_only_gate_reports_one_finding_per_invocation(machine, asan, heap):
    gate = ReportGate(multishot=False)
    for run in range(2):
        program, image, obj, records = run_program(machine, asan, heap, "outline")
        ctx = ReportContext(image, program, ShadowMap([heap.shadow]), heap.find)
        found = findings_of_run(ctx, records.records, gate, test="e2e")
        assert [f.insn for f in found] == ([0] if run == 0 else [])
    multi = findings_of_run(ctx, records.records, ReportGate(), test="e2e", variant="outline")
    assert [("Not tainted" in f.report, f.variant) for f in multi] == \
        [(True, "outline"), (False, "outline"), (False, "outline")]
    assert len({f.id for f in multi}) == 3
