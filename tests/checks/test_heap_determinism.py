"""Every run starts from the same heap: a test's addresses, shadow and reports do not depend on what
ran before it in the process, nor on -j."""
from __future__ import annotations

import json
import pathlib

from checks import layout, runner
from checks.kernel import Kernel
from checks.machine import Machine
from checks.shadow import ShadowView
from checks.slab import PAGE, PRESET_SLABS, Heap

from _kernel_fixtures import program, run

DATA = pathlib.Path(__file__).resolve().parent.parent / "data" / "kselftest_whatif"
REACH = DATA / "verifier_whatif_reach.c"
OTHER = DATA.parent / "kselftest_run" / "ctx_skb.c"
ARENA = 8 * 1024 * 1024

# Reads 64 KiB past the ctx-like object it is given: what is there depends only on the heap layout.
FAR_READ = """
    r1 += 0xfff8
    r0 = *(u64 *)(r1 + 0)
    r0 = 0
    exit
"""


def _sizes(heap: Heap) -> list[tuple[int, str | None, str]]:
    """A run's allocations: a few of several caches and a page allocation."""
    objs = [heap.kmalloc(n, f"obj{n}") for n in (192, 8, 48, 1514, 20000, 8)]
    return [(o.addr, o.cache, o.label) for o in objs]


def _noise(heap: Heap) -> None:
    """Another run: many objects of other sizes, more slabs than the preset ones, frees."""
    objs = [heap.kmalloc(n, "noise") for n in (8, 4096, 600) * 15 + (100000,) * 3]
    for obj in objs[::3]:
        heap.kfree(obj.addr)


def test_a_run_gets_the_same_addresses_and_shadow_whatever_ran_before():
    fresh = Heap(ShadowView(layout.DIRECT_MAP, bytearray(ARENA // 8)))
    used = Heap(ShadowView(layout.DIRECT_MAP, bytearray(ARENA // 8)))
    _noise(used)
    used.reset()
    assert len(used.mapped_ranges()) > len(fresh.mapped_ranges())     # noise carved more slabs
    assert _sizes(used) == _sizes(fresh)
    assert bytes(used.shadow.shadow) == bytes(fresh.shadow.shadow)
    for addr, _, _ in _sizes(fresh)[:3]:
        for probe in (addr - 8, addr + 4096, addr + 70000):           # neighbours, near and far
            a, b = used.find(probe), fresh.find(probe)
            assert (a and (a.addr, a.label, a.allocated)) == (b and (b.addr, b.label, b.allocated))


def test_each_size_class_owns_a_fixed_zone_with_preset_slabs():
    heap = Heap(ShadowView(layout.DIRECT_MAP, bytearray(ARENA // 8)))
    caches = {heap.find(heap.kmalloc(n, "x").addr).cache for n in (8, 16, 4096, 8192)}
    assert caches == {"kmalloc-8", "kmalloc-16", "kmalloc-4k", "kmalloc-8k"}
    ranges = heap.mapped_ranges()
    assert len(ranges) >= 13 * PRESET_SLABS                            # carved before any use
    big = heap.kmalloc(300000, "big")
    assert big.addr % PAGE == 0 and big.cache is None
    assert Heap(ShadowView(layout.DIRECT_MAP, bytearray(ARENA // 8))).kmalloc(300000, "big").addr \
        == big.addr                                                    # page classes too


def test_a_report_is_byte_identical_after_other_programs_and_on_a_fresh_machine():
    prog = program(FAR_READ, maps=(), name="far")
    shared = Kernel()

    def report(kernel: Kernel) -> str:
        kernel.begin(prog, test="far")
        ctx = kernel.kmalloc(192, "ctx")
        [finding] = kernel.execute(prog, args=(ctx,)).findings
        return finding.report

    first = report(shared)
    noisy = program("r1 = 1\nexit\n", maps=(), name="noisy")
    shared.begin(noisy)
    for n in (8, 64, 4096, 20000) * 30:                # a different heap history, and reports
        shared.kmalloc(n, "noise")
    run(shared, program("r0 = *(u64 *)(r1 + 8)\nexit\n", maps=(), name="other"),
        args=(shared.kmalloc(8, "small"),))
    assert report(shared) == first
    assert report(Kernel(machine=Machine())) == first
    assert "Not tainted" in first                      # an earlier run's report does not taint it


def _findings(doc: dict) -> dict:
    return {(f["test"], f["variant"], f["title"]): f["report"] for f in doc["findings"]}


def test_what_if_reports_are_the_same_with_one_or_two_workers_in_any_order(tmp_path):
    from bot.cli import main as cli

    docs = {}
    for jobs in ("1", "2"):       # -j 1: after the other file's programs; -j 2: in a fresh worker
        out = tmp_path / f"j{jobs}.json"
        assert cli(["run", str(OTHER), str(REACH), "--what-if", "-j", jobs, "--json",
                    str(out)]) in (0, 1)
        docs[jobs] = {k: v for k, v in _findings(json.loads(out.read_text())).items()
                      if k[0].startswith(REACH.name)}
    engine = runner.make_engine("jit", runner.EngineOptions())
    reversed_order = [r for r in runner.run_tests([str(REACH)], engine=engine, what_if=True)][::-1]
    alone = {}
    for result in reversed_order:                     # each test again, after all the others
        again = runner.run_tests([str(REACH)], engine=engine, what_if=True,
                                 pattern=result.id.split("::")[1])
        alone.update({(f["test"], f["variant"], f["title"]): f["report"]
                      for r in again for f in r.finding_records})
    assert len(docs["1"]) >= 8 and docs["1"] == docs["2"] == alone
    assert any("far_past_ctx" in test for test, _, _ in alone)
