"""The slab-like heap: size classes, redzones, guard pages, quarantine and reset."""
from __future__ import annotations

import pytest

from checks import layout
from checks.errors import CheckError
from checks.shadow import (PAGE_FREE, PAGE_REDZONE, SLAB_FREE, SLAB_REDZONE, ShadowMap, ShadowView,
                           Verdict, bug_type, check_region)
from checks.slab import MIN_REDZONE, PAGE, Heap, cache_name, kmalloc_size

ARENA = 4 * 1024 * 1024             # a 4 MiB slice of the direct map is plenty for these tests


@pytest.fixture
def heap():
    mapped = []
    h = Heap(ShadowView(layout.DIRECT_MAP, bytearray(ARENA // 8)),
             on_new_slab=lambda addr, size: mapped.append((addr, size)))
    h.mapped_log = mapped
    return h


def shadow_of(heap: Heap) -> ShadowMap:
    return ShadowMap([heap.shadow])


@pytest.mark.parametrize("size, cache", [(1, "kmalloc-8"), (8, "kmalloc-8"), (9, "kmalloc-16"),
                                         (60, "kmalloc-64"), (65, "kmalloc-96"), (97, "kmalloc-128"),
                                         (129, "kmalloc-192"), (200, "kmalloc-256"),
                                         (257, "kmalloc-512"), (1000, "kmalloc-1k"),
                                         (1025, "kmalloc-2k"), (4096, "kmalloc-4k"),
                                         (8192, "kmalloc-8k")])
def test_size_classes(heap, size, cache):
    obj = heap.kmalloc(size, "thing")
    assert (obj.cache, cache_name(kmalloc_size(size))) == (cache, cache)
    assert obj.object_size == kmalloc_size(size)


def test_object_bytes_are_usable_and_everything_after_is_slab_redzone(heap):
    obj = heap.kmalloc(60, "map value of arr key 0")
    shadow = shadow_of(heap)
    assert check_region(shadow, obj.addr, 60) == Verdict.OK
    assert [heap.shadow.byte(obj.addr + 8 * i) for i in range(7, 9)] == [4, SLAB_REDZONE]
    # At least MIN_REDZONE poisoned bytes past the whole 64-byte object, not just past 60.
    for off in range(60, 64 + MIN_REDZONE):
        assert check_region(shadow, obj.addr + off, 1) == Verdict.REPORT, off
    assert bug_type(shadow, obj.addr + 56, 8) == "slab-out-of-bounds"


def test_neighbours_never_touch(heap):
    a, b = heap.kmalloc(64, "a"), heap.kmalloc(64, "b")
    assert b.addr - a.end >= MIN_REDZONE
    assert a.addr % 8 == 0 and b.addr % 8 == 0


def test_slabs_are_separated_by_unmapped_guard_pages(heap):
    objs = [heap.kmalloc(4096, f"o{i}") for i in range(6)]    # several slabs of kmalloc-4k
    ranges = heap.mapped_ranges()
    assert len(ranges) >= 2 and ranges == heap.mapped_log
    assert ranges[0][0] >= layout.DIRECT_MAP + PAGE           # the arena opens with a guard page
    for (a, n), (b, _) in zip(ranges, ranges[1:]):
        assert b - (a + n) >= PAGE and a % PAGE == 0 and n % PAGE == 0
    for obj in objs:
        assert any(a <= obj.addr and obj.end + MIN_REDZONE <= a + n for a, n in ranges)
    guard = ranges[0][0] + ranges[0][1]
    assert heap.shadow.byte(guard) == PAGE_FREE and heap.find(guard) is None
    guards = heap.guard_ranges()
    assert guards[0] == (layout.DIRECT_MAP, PAGE) and (guard, PAGE) in guards
    assert len(guards) == len(ranges) + 1
    for g, n in guards:                                        # no guard overlaps a slab
        assert all(g + n <= a or a + m <= g for a, m in ranges)


def test_kfree_poisons_and_quarantines(heap):
    a = heap.kmalloc(24, "ringbuf record")
    assert heap.kfree(a.addr) is None
    assert a.freed and heap.shadow.byte(a.addr) == SLAB_FREE
    assert bug_type(shadow_of(heap), a.addr, 8) == "slab-use-after-free"
    b = heap.kmalloc(24, "other")
    assert b.addr != a.addr                                   # quarantine: no reuse in this run
    assert heap.find(a.addr) is a and heap.find(a.addr + 30) is a


@pytest.mark.parametrize("action, expected", [("twice", "double-free"), ("inside", "invalid-free"),
                                              ("nowhere", "invalid-free")])
def test_bad_frees_are_findings_not_exceptions(heap, action, expected):
    obj = heap.kmalloc(32, "x")
    addr = {"twice": obj.addr, "inside": obj.addr + 8, "nowhere": layout.DIRECT_MAP}[action]
    if action == "twice":
        heap.kfree(addr)
    assert heap.kfree(addr) == expected


def test_find_names_the_object_of_a_redzone_address(heap):
    obj = heap.kmalloc(100, "ctx (struct __sk_buff)")
    found = heap.find(obj.addr + 128 + 10)                     # past kmalloc-128, in its redzone
    assert found is obj and found.label == "ctx (struct __sk_buff)"
    spare = heap.find(obj.addr + 4 * 256)
    assert spare is not None and not spare.allocated and spare.cache == "kmalloc-128"


def test_reset_frees_everything_and_reuses_the_same_slabs(heap):
    first = [heap.kmalloc(64, "x").addr for _ in range(3)]
    heap.kfree(first[1])
    before = heap.mapped_ranges()
    heap.reset()
    assert heap.objects() == []
    assert all(heap.shadow.byte(a) == SLAB_REDZONE for a in first)
    again = [heap.kmalloc(64, "y").addr for _ in range(3)]
    assert again == first and heap.mapped_ranges() == before  # deterministic from run to run


def test_large_allocations_get_their_own_pages(heap):
    obj = heap.kmalloc(10000, "map value of big_array key 0")
    assert obj.cache is None and obj.addr % PAGE == 0
    assert heap.shadow.byte(obj.addr + 10000) == PAGE_REDZONE
    assert bug_type(shadow_of(heap), obj.addr + 10000, 1) == "slab-out-of-bounds"
    assert heap.kfree(obj.addr) is None
    assert bug_type(shadow_of(heap), obj.addr, 1) == "use-after-free"


def test_bad_sizes_and_a_full_arena_are_clear_errors():
    heap = Heap(ShadowView(layout.DIRECT_MAP, bytearray(64 * 1024 // 8)))
    with pytest.raises(CheckError, match=r"kmalloc\(0\) for ctx"):
        heap.kmalloc(0, "ctx")
    with pytest.raises(CheckError, match="heap .* is full"):
        for _ in range(100):
            heap.kmalloc(8000, "big")


def test_labels_and_stricter_notes_travel_with_the_object(heap):
    obj = heap.kmalloc(8, "map value of map_array key 3",
                       stricter="array map elements have no redzones between them")
    assert heap.find(obj.addr).stricter.startswith("array map elements")
