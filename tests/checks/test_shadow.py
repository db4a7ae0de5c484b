"""Shadow poisoning and the generic KASAN check rules (reference kasan-jit.md §3.2-3.4)."""
from __future__ import annotations

import pytest
from hypothesis import example, given, settings, strategies as st

from checks import layout
from checks.errors import CheckError
from checks.shadow import (METADATA_START, PAGE_FREE, SLAB_FREE, SLAB_REDZONE, ShadowMap, ShadowView, Verdict,
                           bug_type, check_region, classify, first_bad_addr)

BASE = layout.DIRECT_MAP            # memory the test shadow describes
GRANULES = 16                       # 128 bytes of memory


def make(*shadow_bytes: int) -> ShadowMap:
    """A shadow map whose first granules carry `shadow_bytes`, the rest zero."""
    buf = bytearray(GRANULES)
    buf[:len(shadow_bytes)] = bytes(shadow_bytes)
    return ShadowMap([ShadowView(BASE, buf)])


# -- poison / unpoison -----------------------------------------------------------------------

def test_unpoison_zeroes_whole_granules_and_keeps_the_partial_tail():
    buf = bytearray([0xFC]) * GRANULES
    ShadowView(BASE, buf).unpoison(BASE + 8, 13)          # 13 bytes: one full granule + 5
    assert list(buf[:4]) == [0xFC, 0x00, 0x05, 0xFC]


def test_unpoison_of_a_multiple_of_eight_leaves_no_partial_byte():
    buf = bytearray([0xFB]) * GRANULES
    ShadowView(BASE, buf).unpoison(BASE, 16)
    assert list(buf[:3]) == [0, 0, 0xFB]


def test_poison_fills_whole_granules():
    buf = bytearray(GRANULES)
    ShadowView(BASE, buf).poison(BASE + 16, 24, SLAB_FREE)
    assert list(buf[:6]) == [0, 0, 0xFB, 0xFB, 0xFB, 0]


@pytest.mark.parametrize("addr, size", [(BASE + 4, 8), (BASE, 12)])
def test_poison_needs_aligned_address_and_size(addr, size):
    with pytest.raises(CheckError, match="8-aligned"):
        ShadowView(BASE, bytearray(GRANULES)).poison(addr, size, SLAB_REDZONE)


def test_poison_outside_the_view_is_refused():
    with pytest.raises(CheckError, match="outside the shadow view"):
        ShadowView(BASE, bytearray(GRANULES)).poison(BASE + 8 * GRANULES, 8, SLAB_REDZONE)


# -- check_region: one case per rule of §3.3, computed by hand -------------------------------

CASES = [
    # (shadow bytes from BASE, offset, size, expected verdict, why)
    ((0xFC,), 0, 0, Verdict.OK, "size 0 is never checked"),
    ((0x00,), 7, 1, Verdict.OK, "1 byte in a whole granule"),
    ((0x03,), 2, 1, Verdict.OK, "1 byte inside the 3-byte prefix"),
    ((0x03,), 3, 1, Verdict.REPORT, "1 byte just past the prefix"),
    ((0xFB,), 0, 1, Verdict.REPORT, "negative shadow is always poisoned"),
    ((0x00, 0xFC), 6, 2, Verdict.OK, "2 bytes ending at the granule's last byte"),
    ((0x00, 0xFC), 7, 2, Verdict.REPORT, "2 bytes crossing into a redzone"),
    ((0x00, 0x01), 7, 2, Verdict.OK, "crossing into a partial granule's first byte"),
    ((0x07, 0x00), 6, 4, Verdict.REPORT, "crossing out of a partial granule: shadow(addr) != 0"),
    ((0x04,), 0, 4, Verdict.OK, "4 bytes filling a 4-byte prefix"),
    ((0x04,), 1, 4, Verdict.REPORT, "4 bytes, last one past the prefix"),
    ((0x00,), 0, 8, Verdict.OK, "aligned 8 in a whole granule"),
    ((0x07,), 0, 8, Verdict.REPORT, "aligned 8, last byte past a 7-byte prefix"),
    ((0x00, 0x00), 3, 8, Verdict.OK, "unaligned 8 across two whole granules"),
    ((0x00, 0x03), 3, 8, Verdict.OK, "unaligned 8 ending inside the next prefix"),
    ((0x00, 0x02), 3, 8, Verdict.REPORT, "unaligned 8 ending past the next prefix"),
    ((0x00, 0x00), 0, 16, Verdict.OK, "aligned 16: the u16 of two shadow bytes is 0"),
    ((0x00, 0x07), 0, 16, Verdict.REPORT, "aligned 16: any non-zero byte of the pair"),
    ((0x00, 0x00, 0x01), 1, 16, Verdict.OK, "unaligned 16 ends in the third granule's prefix"),
    ((0x00, 0x00, 0xFC), 1, 16, Verdict.REPORT, "unaligned 16 into a redzone"),
    ((0x00, 0x00, 0x05), 4, 13, Verdict.OK, "n bytes: non-zero only in the last granule, inside"),
    ((0x00, 0x00, 0x05), 4, 18, Verdict.REPORT, "n bytes: last byte past the last prefix"),
    ((0x00, 0x05, 0x00), 0, 20, Verdict.REPORT, "n bytes: a partial granule before the last"),
]


@pytest.mark.parametrize("shadow, offset, size, verdict, why", CASES, ids=[c[-1] for c in CASES])
def test_check_region_rules(shadow, offset, size, verdict, why):
    assert check_region(make(*shadow), BASE + offset, size) == verdict


@pytest.mark.parametrize("addr, size", [(0xFFFFFFFFFFFFFFF8, 8), (0xFFFFFFFFFFFFFFFF, 1),
                                        (0xFFFFFFFFFFFFFFFC, 8)])
def test_a_wrapping_range_is_reported_without_shadow(addr, size):
    assert check_region(ShadowMap(), addr, size) == Verdict.REPORT
    assert bug_type(ShadowMap(), addr, size) == "out-of-bounds"


@pytest.mark.parametrize("addr, expected", [
    (0x0, "null-ptr-deref"), (0xFF8, "null-ptr-deref"), (0x1000, "user-memory-access"),
    (layout.TASK_SIZE - 8, "user-memory-access"), (layout.TASK_SIZE, "wild-memory-access"),
    (0xDEAD000000000000, "wild-memory-access"), (METADATA_START - 8, "wild-memory-access"),
])
def test_wild_addresses_are_reported_and_typed_by_range(addr, expected):
    assert check_region(ShadowMap(), addr, 8) == Verdict.REPORT
    assert bug_type(ShadowMap(), addr, 8) == expected
    assert classify(ShadowMap(), addr, 8).first_bad == addr


def test_metadata_address_with_no_mapped_shadow_is_a_fault():
    assert check_region(make(), BASE + 8 * GRANULES, 1) == Verdict.FAULT


# -- first_bad_addr and bug types (§3.4) -----------------------------------------------------

def test_first_bad_addr_steps_in_granules_from_the_access():
    shadow = make(0x00, 0x00, 0xFC)
    assert first_bad_addr(shadow, BASE + 3, 20) == BASE + 19      # 3, 11, 19: the third granule
    assert first_bad_addr(shadow, BASE, 8) == BASE + 8            # none bad: the range's end


@pytest.mark.parametrize("shadow, offset, size, expected", [
    ((0x00, 0xFC), 4, 8, "slab-out-of-bounds"),
    ((0xFB,), 0, 8, "slab-use-after-free"),
    ((0xFA,), 0, 8, "slab-use-after-free"),
    ((0xFF,), 0, 1, "use-after-free"),
    ((0xFE,), 0, 1, "slab-out-of-bounds"),
    ((0xF9,), 0, 1, "global-out-of-bounds"),
    ((0xF2,), 0, 1, "stack-out-of-bounds"),
    ((0xF8,), 0, 1, "vmalloc-out-of-bounds"),
    ((0xCB,), 0, 1, "alloca-out-of-bounds"),
    ((0xFD,), 0, 1, "lazy-mmu-pte-access"),
    ((0x80,), 0, 1, "unknown-crash"),
    ((0x04, 0xFC), 0, 8, "slab-out-of-bounds"),       # partial: the next byte says why
    ((0x04, 0xFB), 0, 8, "slab-use-after-free"),
    ((0x04, 0x00), 0, 8, "out-of-bounds"),
])
def test_bug_type_from_the_shadow(shadow, offset, size, expected):
    assert bug_type(make(*shadow), BASE + offset, size) == expected


# -- differential: the kernel's rules equal a byte-by-byte model -----------------------------

def brute_force(shadow: bytes, offset: int, size: int) -> bool:
    """Poisoned iff some byte of the access is unusable: granule shadow s allows the first s bytes
    (all 8 when s == 0, none when s is negative)."""
    for off in range(offset, offset + size):
        s = shadow[off // 8]
        usable = 8 if s == 0 else (s if s < 8 else 0)
        if off % 8 >= usable:
            return True
    return False


SHADOW_BYTE = st.sampled_from([0, 0, 0, 1, 2, 3, 4, 5, 6, 7, SLAB_REDZONE, SLAB_FREE, PAGE_FREE])


@settings(max_examples=400, deadline=None)
@given(shadow=st.lists(SHADOW_BYTE, min_size=GRANULES, max_size=GRANULES),
       offset=st.integers(0, 8 * GRANULES - 40),
       size=st.sampled_from([1, 2, 4, 8, 16]) | st.integers(1, 40))
@example(shadow=[0, 7] + [0] * 14, offset=7, size=2)
@example(shadow=[0, 0, 1] + [0] * 13, offset=1, size=16)
def test_check_region_equals_the_byte_model(shadow, offset, size):
    expected = Verdict.REPORT if brute_force(bytes(shadow), offset, size) else Verdict.OK
    assert check_region(make(*shadow), BASE + offset, size) == expected


def test_metadata_starts_where_the_shadow_region_begins():
    assert METADATA_START == 0xFFFF800000000000
    assert layout.shadow(METADATA_START) == layout.KASAN_SHADOW_START
    assert check_region(make(), METADATA_START - 1, 1) == Verdict.REPORT
