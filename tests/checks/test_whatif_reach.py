"""What-if and exploration reach: boundary values of the program's own compares, map byte patterns,
found sockets, the budget of expected rejections, and how these reach bugs the edges miss."""
from __future__ import annotations

import pathlib
import time

import pytest

from checks import boundary_values as bv
from checks import explore, runner, whatif
from checks.explore import Surface
from checks.kernel import Kernel
from checks.test_run import TEST_VAL_INIT
from jit.llvm_asm import assemble
from jit.program import MapDef, Program

from _kernel_fixtures import program, run, value_of

DATA = pathlib.Path(__file__).resolve().parent.parent / "data"
REACH = DATA / "kselftest_whatif" / "verifier_whatif_reach.c"
ARRAY_RO = DATA / "kselftest_run" / "verifier_array_access.c"


def _prog(text: str) -> Program:
    return Program("p", tuple(assemble(text).insns))


def test_constants_come_from_jump_immediates_and_registers_set_just_before():
    prog = _prog("""
        if r0 == 0 goto +0
        if r0 s> 24 goto +0
        w2 = 12
        if r1 >= r2 goto +0
        r3 = 7
        call 7
        if r0 > r3 goto +0
        r4 = 9
        r4 += 1
        if r0 < r4 goto +0
        r5 = 0x100000000 ll
        if w1 != -3 goto +0
        if r1 s> 24 goto +0
        r1 ^= 5
        if r1 == r1 goto +0
        exit
    """)
    # 0 is a NULL check; r3 died in the call, r4 was changed; 24 only once; x ^ 5 == 0 at 5.
    assert bv.comparison_constants(prog) == (24, 12, -3, 5)


def test_only_a_program_that_loads_from_its_ctx_gets_ctx_values():
    assert bv.reads_ctx(_prog("r6 = r1\nr0 = *(u32 *)(r6 + 8)\nexit\n"))
    assert not bv.reads_ctx(_prog("r1 = 0\nr0 = *(u32 *)(r1 + 8)\nexit\n"))
    assert not bv.reads_ctx(_prog("r6 = r1\ncall 7\nr0 = *(u32 *)(r1 + 0)\nexit\n"))
    assert explore.surface_of(_prog("r0 = *(u64 *)(r1 + 8)\nexit\n"), packet=False, ctx=True).ctx


def test_boundary_values_are_each_constant_and_its_neighbours_capped():
    assert bv.boundary_values((24, 12)) == (24, 23, 25, 12, 11, 13)
    assert bv.boundary_values((1, 2, 3, 4)) == (1, 0, 2, 3, 4, 5)
    assert bv.boundary_values(()) == ()


def test_map_fills_repeat_a_byte_or_a_pattern():
    assert bv.fill_bytes(0x7F, 3) == b"\x7f\x7f\x7f"
    assert bv.fill_bytes(bv.ascending(), 5) == bytes(range(5))
    assert bv.fill_bytes(bv.word(11), 12) == (11).to_bytes(8, "little") + (11).to_bytes(4, "little")
    kernel = Kernel()
    arr = MapDef("arr", "array", 4, 16, 1)
    body = value_of("arr") + "r0 = *(u64 *)(r6 + 8)\nexit\nmiss:\nexit\n"
    assert run(kernel, program(body, (arr,)), map_fill=bv.ascending()).r0 == 0x0F0E0D0C0B0A0908
    assert run(kernel, program(body, (arr,)), map_fill=bv.word(-2)).r0 == (1 << 64) - 2


def test_program_values_come_first_on_their_axes_and_add_to_the_budget():
    plain = Surface(helpers=("get_prandom_u32",), maps=True)
    own = Surface(helpers=("get_prandom_u32",), maps=True, constants=(41,))
    first = explore.variants(own)[0]
    assert first.name == "prefill, map=ascending, prandom=0x29"
    assert first.map_fill == bv.ascending()
    assert dict(first.helper_values)["get_prandom_u32"][0] == 41
    assert [v.name for v in explore.variants(own)[:4]][1:] == [
        "prefill, map=u64:0x29, prandom=0x28", "prefill, map=u64:0x28, prandom=0x2a",
        "prefill, map=u64:0x2a, prandom=0xffffffff"]
    assert explore.budget(plain, 4) == 4
    assert explore.budget(own, 4) == 4 + 3              # its longest axes have 8 settings, not 5
    assert explore.budget(own, 0) == 0
    assert explore.variants(Surface(sockets=True))[0].helper_values == \
        ((explore.SK_LOOKUP, (1,) * explore.EDGE_CALLS),)


@pytest.fixture(scope="module")
def reach() -> dict:
    engine = runner.make_engine("jit", runner.EngineOptions())
    started = time.perf_counter()
    results = {r.name: r for r in runner.run_tests([str(REACH)], engine=engine, what_if=True)}
    results["_seconds"] = time.perf_counter() - started
    return results


@pytest.mark.parametrize("name, variant", [
    ("random_bound_off_by_one", "prefill, map=ascending, prandom=0x29"),
    ("map_index_register_bound", "prefill, map=u64:0xb"),
    ("map_byte_difference", "prefill, map=ascending"),
    ("socket_after_release", "sk_lookup=found, packet=64x0xff"),
    ("ctx_length_off_by_one", "prefill, map=ascending, ctx=u64:0x31"),
])
def test_what_if_reaches_bugs_only_the_program_own_inputs_trigger(reach, name, variant):
    entry = reach[name].extra[whatif.WHAT_IF]
    assert entry["memory"] and "" not in entry["kasan"]      # the plain run is silent
    [finding] = reach[name].finding_records
    assert finding["variant"] == variant and finding["mode"] == whatif.MODE_WHAT_IF
    expected = "slab-use-after-free" if name == "socket_after_release" else "slab-out-of-bounds"
    assert finding["bug_type"] == expected
    assert finding["access"] == ("write" if name == "ctx_length_off_by_one" else "read")


def test_helper_misuse_is_caught_on_the_plain_run(reach):
    titles = {n: [f["title"] for f in reach[n].finding_records if f["variant"] == ""]
              for n in ("helper_key_overread", "helper_null_key", "helper_huge_length")}
    assert titles == {
        "helper_key_overread": ["KASAN: slab-out-of-bounds Read in bpf_map_lookup_elem"],
        "helper_null_key": ["KASAN: null-ptr-deref Read in bpf_map_lookup_elem"],
        "helper_huge_length": ["KASAN: vmalloc-out-of-bounds Write in bpf_skb_load_bytes"]}
    assert reach["helper_smashes_return"].extra[whatif.WHAT_IF]["oops"] == [""]
    assert all(not r.extra[whatif.WHAT_IF]["errors"] for n, r in reach.items()
               if n not in ("_seconds", "endless_loop"))


def test_an_expected_rejection_runs_on_the_runner_budget_not_the_verified_one(reach):
    assert reach["endless_loop"].extra[whatif.WHAT_IF]["errors"] == \
        ["instruction limit exceeded (1000000)"]
    assert reach["_seconds"] < 10                    # 64M slots would take far longer


def test_a_variant_map_fill_replaces_the_pre_execution_contents():
    from checks.kselftest.run import c_file_cases
    from checks.explore import FAITHFUL, Variant

    [case] = [c for c in c_file_cases(str(ARRAY_RO), ARRAY_RO.name) if c.name == "prefilled_value"]
    engine = runner.make_engine("jit", runner.EngineOptions())
    faithful = case.run_variant(engine, FAITHFUL, insn_limit=100_000)
    filled = case.run_variant(engine, Variant("prefill, map=0x11", prefill=True, map_fill=0x11),
                              insn_limit=100_000)
    assert faithful.r0 == int.from_bytes(TEST_VAL_INIT[28:32], "little")
    assert filled.r0 == (1 << 64) - 1                   # index 0x11111111 != 28


def test_the_kernel_suite_stack_smash_ends_in_an_oops_not_the_time_limit(kernel_selftests):
    engine = runner.make_engine("jit", runner.EngineOptions())
    path = kernel_selftests / "progs" / "verifier_const_or.c"
    results = {r.name: r for r in runner.run_tests([str(path)], engine=engine, what_if=True)}
    for name in ("not_bypass_stack_boundary_checks_1", "not_bypass_stack_boundary_checks_2"):
        entry = results[name].extra[whatif.WHAT_IF]
        assert entry["oops"] and entry["errors"] == []
