"""Input exploration: the variant list, its order, finding tags and dedup, and the runner's use of it."""
from __future__ import annotations

import pytest

from checks import explore, runner
from checks.explore import Outcome, Surface, Variant
from jit import isa
from jit.isa import Insn
from jit.program import MapDef, Program

from _explore_support import FakeCase, finding as _finding

PRANDOM = "get_prandom_u32"


def _call(helper: int) -> Insn:
    return Insn(isa.JMP | isa.CALL, imm=helper)


def _program(*helpers: int, maps=()) -> Program:
    insns = [_call(h) for h in helpers]
    insns += [Insn(isa.ALU64 | isa.MOV | isa.K, 0), Insn(isa.JMP | isa.EXIT)]
    return Program("p", tuple(insns), maps=tuple(maps))


HASH = MapDef("map_hash_8b", "hash", 8, 8, 1)


def test_surface_sees_edge_helpers_map_use_and_packet():
    assert explore.surface_of(_program(), packet=False) == Surface()
    assert explore.surface_of(_program(7, 5, 1, maps=[HASH]), packet=True) == \
        Surface(helpers=("get_prandom_u32", "ktime_get_ns"), maps=True, packet=True)
    # A map declared but never passed to a map helper, or a map helper without a map: no map axis.
    assert not explore.surface_of(_program(7, maps=[HASH]), packet=False).maps
    assert not explore.surface_of(_program(1), packet=False).maps


def test_a_program_that_sees_nothing_variable_has_no_variants():
    assert explore.variants(Surface()) == []


def test_variants_move_every_axis_first_then_cover_the_product():
    found = explore.variants(Surface(helpers=(PRANDOM,), maps=True, packet=True))
    assert len(found) == 4 * 5 * 3 == len(set(found))
    assert [v.name for v in found[:4]] == [
        "prefill, prandom=0xffffffff, packet=64x0xff",
        "prefill, map=0xff, prandom=0x80000000, packet=14",
        "prefill, map=0x80, prandom=0x7fffffff, packet=1514x0xff",
        "prefill, map=0x7f, prandom=0x0, packet=64x0xff"]
    first = found[0]
    assert (first.prefill, first.map_fill, first.packet) == (True, None, b"\xff" * 64)
    assert first.kernel_options() == {"variant": first.name, "prefill": True, "map_fill": None,
                                      "helper_values": {PRANDOM: [0xFFFFFFFF] * explore.EDGE_CALLS}}
    assert found[1].map_fill == 0xFF and found[1].packet == bytes(14)
    # Deterministic: the same surface always gives the same list.
    assert found == explore.variants(Surface(helpers=(PRANDOM,), maps=True, packet=True))


def test_two_helpers_get_their_edges_together():
    found = explore.variants(Surface(helpers=(PRANDOM, "ktime_get_ns")))
    assert [v.name for v in found[:2]] == ["prandom=0xffffffff, ktime=0xffffffff",
                                            "prandom=0x80000000, ktime=0x80000000"]
    edge = (0xFFFFFFFF,) * explore.EDGE_CALLS
    assert dict(found[0].helper_values) == {PRANDOM: edge, "ktime_get_ns": edge}
    assert len(found) == 25


def test_only_the_first_n_variants_run_in_order():
    seen = []
    candidates = [Variant(f"v{i}") for i in range(6)]
    runs = explore.explore(lambda v: seen.append(v.name) or Outcome(), candidates, 4)
    assert seen == ["v0", "v1", "v2", "v3"] and [v.name for v, _ in runs] == seen
    assert explore.explore(lambda v: Outcome(), candidates, 0) == []


def test_findings_are_tagged_and_deduplicated_by_title_and_insn_first_run_wins():
    faithful = [_finding("A", 3)]
    runs = [(Variant("v1"), Outcome(findings=(_finding("A", 3, ident="x"), _finding("B", 3)))),
            (Variant("v2"), Outcome(findings=(_finding("B", 3, ident="y"),
                                              _finding("B", 4, stricter="packed elements"))))]
    out = explore.explored_findings(faithful, runs)
    assert [(f["title"], f["insn"], f["mode"], f.get("variant")) for f in out] == [
        ("A", 3, "faithful", None), ("B", 3, "explore", "v1"), ("B", 4, "explore", "v2")]
    assert out[2]["stricter"] == "packed elements" and out[1]["stricter"] is None


# -- the runner explores only executed tests of cases that can run variants ----------------------

def test_runner_explores_an_executed_test_and_keeps_its_status():
    case = FakeCase()
    result = runner.run_case(case, runner.InterpEngine(), runner.RunOptions(explore=3))
    assert case.ran == ["prandom=0xffffffff", "prandom=0x80000000", "prandom=0x7fffffff"]
    assert result.status == "pass"
    assert [f["variant"] for f in result.finding_records] == ["prandom=0xffffffff"]   # deduplicated
    assert result.findings == ("id-prandom=0xffffffff",)
    assert result.extra["explored"] == {"variants": 3, "oops": [], "errors": []}
    assert "finding_records" not in result.to_dict()


def test_runner_records_an_oops_found_by_exploration():
    case = FakeCase()
    result = runner.run_case(case, runner.InterpEngine(), runner.RunOptions(explore=4))
    assert result.extra["explored"]["oops"] == [{"variant": "prandom=0x0",
                                                 "fault": "BUG: unable to handle page fault"}]


@pytest.mark.parametrize("changes", [{"executed": False}, {"program_surface": None}])
def test_runner_does_not_explore_what_did_not_run(changes):
    case = FakeCase(**changes)
    result = runner.run_case(case, runner.InterpEngine(), runner.RunOptions(explore=4))
    assert case.ran == [] and result.findings == ()


def test_explore_zero_disables_exploration():
    case = FakeCase()
    runner.run_case(case, runner.InterpEngine(), runner.RunOptions(explore=0))
    assert case.ran == []


def test_a_crash_in_a_variant_run_makes_the_test_an_error_naming_the_phase():
    case = FakeCase()
    case.run_variant = lambda engine, variant, insn_limit: 1 / 0
    result = runner.run_case(case, runner.InterpEngine(), runner.RunOptions(explore=1))
    assert result.status == "error"
    assert result.reason.startswith("exploration run crashed: ZeroDivisionError: division by zero at ")


# -- end to end, on the emulated kernel ------------------------------------------------------------

@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from _explore_support import write_demo
    return write_demo(tmp_path_factory.mktemp("explore"))


def _run(path, **options):
    engine = runner.make_engine("jit", runner.EngineOptions())
    return {r.name: r for r in runner.run_tests([str(path)], engine=engine, **options)}


def test_faithful_runs_find_nothing_and_exploration_finds_both_bugs(demo):
    plain = _run(demo, explore=0)
    assert [(plain[n].status, plain[n].findings) for n in ("hash_overread", "random_overwrite")] == \
        [("pass", ()), ("pass", ())]
    explored = _run(demo, explore=4)
    [overread] = explored["hash_overread"].finding_records
    assert overread["mode"] == "explore" and overread["variant"].startswith("prefill")
    assert overread["title"] == "KASAN: slab-out-of-bounds Read in bpf_prog_ADDR_hash_overread"
    [overwrite] = explored["random_overwrite"].finding_records
    assert "prandom=0xffffffff" in overwrite["variant"] and overwrite["access"] == "write"
    assert explored["random_overwrite"].status == "pass"                # retval: faithful run only
    assert explored["hash_overread"].extra["explored"] == {"variants": 4, "oops": [], "errors": []}
    # The __failure tests are not run without --what-if.
    refused = explored["refused_overread"]
    assert refused.findings == () and "what_if" not in refused.extra


def test_exploration_is_deterministic_and_n_limits_it(demo):
    first, again = _run(demo, explore=4), _run(demo, explore=4)
    assert {n: r.findings for n, r in first.items()} == {n: r.findings for n, r in again.items()}
    one = _run(demo, explore=1)
    assert one["hash_overread"].extra["explored"]["variants"] == 1
    assert one["random_overwrite"].findings                  # variant 1 already has the edge value
