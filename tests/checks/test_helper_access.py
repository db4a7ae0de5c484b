"""Helpers touch the program's memory as the kernel's KASAN-instrumented C does: a bad range is a
report whose frame is the helper, unmapped memory an oops in the helper, never a tool error; a
smashed return address ends the run at once."""
from __future__ import annotations

from dataclasses import replace

import pytest

from checks import layout, test_run
from checks.helper_access import CHECK_FRAME, poisoned
from checks.kernel import Kernel
from checks.machine import STACK_BASE, STACK_TOP
from checks.shadow import ShadowMap, ShadowView, Verdict, check_region
from jit.program import MapDef

from _kernel_fixtures import MISS, program, run, value_of

ARR = MapDef("arr", "array", 4, 8, 1)
HASH = MapDef("h", "hash", 8, 8, 1)

VALUE = value_of("arr")                            # r6 = element 0 of arr (8 bytes)


@pytest.fixture(scope="module")
def kernel() -> Kernel:
    return Kernel()


def test_a_key_read_past_its_object_is_reported_in_the_helper_at_the_call(kernel):
    prog = program(VALUE + """
        r2 = r6
        r2 += 4
        r1 = h ll
        call 1
    """ + MISS, (ARR, HASH))
    r = run(kernel, prog)
    assert r.error is None and r.fault is None and r.r0 == 0
    [f] = r.findings
    assert (f.title, f.bug_type, f.access, f.size) == (
        "KASAN: slab-out-of-bounds Read in bpf_map_lookup_elem", "slab-out-of-bounds", "read", 8)
    assert f.insn == 13 and f.function.startswith("bpf_prog_") and f.object == "map value of arr[0]"
    lines = f.report.splitlines()
    assert lines[1] == "BUG: KASAN: slab-out-of-bounds in bpf_map_lookup_elem+0x4e/0x90"
    trace = lines[lines.index(" <TASK>") + 1:lines.index(" </TASK>")]
    assert trace[3:6] == [f" {CHECK_FRAME}", " bpf_map_lookup_elem+0x4e/0x90",
                          f" {f.function}+{trace[5].split('+')[1]}"]
    assert "bpf-kasan: insn 13 of bpf_prog_" in f.report and ": call 1" in f.report
    assert f.alt_titles == ("bad-access in bpf_map_lookup_elem",)


def test_a_null_key_is_a_report_then_an_oops_in_the_helper_not_a_tool_error(kernel):
    r = run(kernel, program("r2 = 0\nr1 = h ll\ncall 1\nr0 = 0\nexit\n", (HASH,)))
    assert r.error is None
    assert [f.title for f in r.findings] == ["KASAN: null-ptr-deref Read in bpf_map_lookup_elem"]
    assert r.fault.splitlines()[0] == \
        "BUG: kernel NULL pointer dereference, address: 0000000000000000"
    assert r.fault.splitlines()[-1] == "RIP: 0010:bpf_map_lookup_elem+0x4e/0x90"
    assert r.fault_insn == 3


def test_a_null_map_pointer_faults_in_the_helper_as_map_ops_is_loaded(kernel):
    r = run(kernel, program("r1 = 0\nr2 = r10\nr2 += -8\ncall 1\nr0 = 0\nexit\n", ()))
    assert [f.title for f in r.findings] == ["KASAN: null-ptr-deref Read in bpf_map_lookup_elem"]
    assert r.fault is not None and r.error is None


def test_reports_of_the_program_and_of_helpers_keep_their_order_and_taint(kernel):
    prog = program(VALUE + """
        r1 = *(u64 *)(r6 + 8)
        r1 = r6
        r2 = 16
        r3 = 0
        call 113
    """ + MISS, (ARR,))
    r = run(kernel, prog)
    assert [(f.access, f.title.split(" in ")[1]) for f in r.findings] == [
        ("read", "bpf_prog_ADDR_prog"), ("write", "bpf_probe_read_kernel")]
    assert "Not tainted" in r.findings[0].report and "Tainted: G    B" in r.findings[1].report
    assert (r.findings[1].size, r.findings[1].address) == (16, r.findings[0].address - 8)


def test_probe_read_copies_a_mapped_source_even_if_poisoned_and_never_reports_it(kernel):
    prog = program(VALUE + """
        r1 = r10
        r1 += -8
        r2 = 8
        r3 = r6
        r3 += 8
        call 113
        exit
    """ + MISS, (ARR,))
    r = run(kernel, prog)
    assert r.findings == [] and r.r0 == 0              # nofault: redzone bytes copied, no report


def test_a_huge_length_reports_past_the_stack_then_faults_on_its_guard_page():
    prog = replace(program("""
        r2 = 0
        r3 = r10
        r3 += -8
        r4 = -1
        call 26
        r0 = 0
        exit
    """, ()), prog_type="sched_cls")
    done = test_run.run(test_run.new_kernel(), prog, test="huge")
    [f] = done.run.findings
    assert f.title == "KASAN: vmalloc-out-of-bounds Write in bpf_skb_load_bytes"
    assert f.size == 0xFFFFFFFF
    assert done.run.fault.splitlines()[0] == (
        f"BUG: TASK stack guard page was hit at {STACK_TOP:016x} "
        f"(stack is {STACK_BASE:016x}..{STACK_TOP - 1:016x})")
    assert done.run.error is None and done.run.duration_s < 1.0


def test_a_helper_that_smashes_the_return_address_ends_in_an_oops_at_once(kernel):
    prog = program("""
        r1 = r10
        r1 += -16
        r2 = 26
        r3 = 0
        call 113
        r0 = 0
        exit
    """, ())
    r = run(kernel, prog)
    assert r.error is None and r.duration_s < 1.0      # was: reruns until the 3 s time limit
    assert r.fault.splitlines() == ["invalid opcode: 0000 [#1] PREEMPT SMP KASAN NOPTI",
                                    "RIP: 0010:corrupted_return_address+0x0/0x2"]
    assert run(kernel, program("r0 = 7\nexit\n", ())).r0 == 7     # the next run is clean


def test_vmalloc_outside_the_stack_is_invalid_shadow(kernel):
    shadow = kernel.machine.shadow
    assert shadow.byte(STACK_BASE) == 0 and shadow.byte(STACK_TOP - 8) == 0
    assert shadow.byte(STACK_BASE - 8) == shadow.byte(STACK_TOP) == 0xF8
    assert shadow.byte(layout.VMALLOC) == 0xF8


@pytest.mark.parametrize("offset, size", [(0, 24), (0, 20), (0, 21), (4, 17), (8, 16),
                                          (0, 4000), (16, 100000), (-8, 40), (24, 100)])
def test_large_range_check_follows_the_kernel_rules(offset, size):
    base = layout.DIRECT_MAP
    view = ShadowView(base, bytearray(4096))
    view.poison(base, 4096 * 8, 0xFC)
    view.poison(base, 64, 0xFC)
    view.unpoison(base + 8, 20)                        # 20 usable bytes at +8: 00 00 04
    shadow = ShadowMap([view])
    addr = base + 8 + offset
    expected = check_region(shadow, addr, size) == Verdict.REPORT
    assert poisoned(shadow, addr, size) == expected
