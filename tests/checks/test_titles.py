"""syzbot-style titles: the grammar, each normalisation rule, and reading titles back from logs."""
from __future__ import annotations

import pytest

from checks.titles import (MAX_TITLE, NORMALISATION, alt_title, crash_type, guilty_frame, kasan_title,
                           normalise, titles_in_log)


@pytest.mark.parametrize("raw, expected", [
    ("in bpf_prog_6deef7357e7b4530_foo+0x42/0x100", "in bpf_prog_ADDR_foo"),
    ("at addr ffff888012345678", "at addr ADDR"),
    ("at 0xffffffffa0001234 now", "at ADDR now"),
    ("in accede", "in accede"),
    ("at 0xffffffff here", "at ADDR here"),                          # a word, not a hex run
    ("syz-executor.3 did it", "syz-executor did it"),
    ("from 10.0.2.15 port", "from IP port"),
    ("at report.c:482", "at report.c:LINE"),
    ("on CPU#3", "on CPU"),
    ("object of size 64 in kmalloc-64", "object of size NUM in kmalloc-NUM"),
    ("map_hash_8b and r10", "map_hash_8b and r10"),     # digits inside identifiers stay
    ("a\tb\x07  c", "a b c"),
])
def test_each_normalisation_rule(raw, expected):
    assert normalise(raw) == expected


def test_every_rule_has_a_reason():
    assert all(rule.why and rule.name for rule in NORMALISATION)


def test_titles_are_capped():
    assert len(normalise("KASAN: x in " + "f" * 200 + "g")) == MAX_TITLE


def test_title_grammar():
    frame = "bpf_prog_0b95dbe6b5c648f2_subprog_with_may_goto+0x49/0x57"
    assert kasan_title("slab-out-of-bounds", False, frame) == \
        "KASAN: slab-out-of-bounds Read in bpf_prog_ADDR_subprog_with_may_goto"
    assert alt_title(frame) == "bad-access in bpf_prog_ADDR_subprog_with_may_goto"


@pytest.mark.parametrize("bug_type, is_write, expected", [
    ("slab-out-of-bounds", False, "KASAN-READ"), ("null-ptr-deref", True, "KASAN-WRITE"),
    ("slab-use-after-free", True, "KASAN-USE-AFTER-FREE-WRITE"),
    ("use-after-free", False, "KASAN-USE-AFTER-FREE-READ"), ("double-free", False, "KASAN-INVALID-FREE"),
])
def test_crash_types(bug_type, is_write, expected):
    assert crash_type(bug_type, is_write) == expected


def test_guilty_frame_skips_sanitizer_and_library_frames():
    assert guilty_frame(["__asan_load8+0x7b/0xa0", "memcpy+0x10/0x40", "? kasan_report+0x1/0x2",
                         "bpf_prog_0123456789abcdef_f+0x1/0x2"]) == "bpf_prog_0123456789abcdef_f"
    assert guilty_frame(["kasan_report+0x1/0x2"]) is None


LOG = """\
[   12.345678] ==================================================================
[   12.345679] BUG: KASAN: slab-out-of-bounds in bpf_prog_1111111111111111_a+0x1e/0x31
[   12.345680] Read of size 8 at addr ffff88800000103c by task test_progs/99
[   12.345681] Call Trace:
[   12.345682]  <TASK>
[   12.345683]  kasan_report+0xd8/0x110
[   12.345684]  bpf_prog_1111111111111111_a+0x1e/0x31
[   12.345685] ==================================================================
[   12.400000] ==================================================================
[   12.400001] BUG: KASAN: slab-use-after-free in __asan_store4+0x7b/0xa0
[   12.400002] Write of size 4 at addr ffff888000002008 by task test_progs/99
[   12.400003] Call Trace:
[   12.400004]  kasan_report+0xd8/0x110
[   12.400005]  bpf_prog_2222222222222222_b+0x22/0x40
[   12.400006] ==================================================================
[   12.500000] BUG: KASAN: wild-memory-access in bpf_prog_3333333333333333_c+0x10/0x20
[   12.500001] some unrelated line
"""


def test_titles_in_a_multishot_log():
    first, second, third = titles_in_log(LOG)
    assert (first.title, first.alt_titles, first.type, first.corrupted) == (
        "KASAN: slab-out-of-bounds Read in bpf_prog_ADDR_a", ("bad-access in bpf_prog_ADDR_a",),
        "KASAN-READ", "")
    # The header names __asan_store4; the guilty frame is the first real one of the trace.
    assert second.title == "KASAN: slab-use-after-free Write in bpf_prog_ADDR_b"
    assert second.type == "KASAN-USE-AFTER-FREE-WRITE"
    assert third.corrupted == "no Read/Write line after the header"
    assert third.title == "KASAN: wild-memory-access in bpf_prog_ADDR_c" and third.alt_titles == ()


def test_no_report_no_titles():
    assert titles_in_log("nothing to see\n") == []
