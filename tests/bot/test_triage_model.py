"""bot.triage_model: the artifact round-trips, and from_json refuses anything off-schema."""
from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings, strategies as st

from bot.errors import BotError
from bot.triage_model import ApplyOutcome, Finding, Patch, Series, TestComparison, Triage


def sample() -> Triage:
    series = Series("selftests/bpf: example", 2, (Patch(1, 2, "add a", "a@x", "A <a@x>", 2),
                                                   Patch(2, 2, "add b", None, "A <a@x>", 1)),
                    cover_msgid="c@x", cover_subject="example", tags=("bpf-next",), base_commit="abc1234",
                    url="https://lore.kernel.org/all/c@x/")
    tests = (TestComparison("v.c::t", "progs/v.c", "t", 12, None, "pass", None, "success", 16),
             TestComparison("v.c::m", "progs/v.c", "m", 30, "pass", "pass", "failure", "success", 64, True))
    findings = (Finding("new", "f1", "v.c::t", "t", 7, "slab-out-of-bounds", "read", 8, 0xffff888000001000,
                        "map value", "KASAN: slab-out-of-bounds Read in bpf_prog_ADDR_t", "BUG: KASAN: ...",
                        "multishot", "default", "progs/v.c", 20),
                Finding("fixed", "f2", "v.c::m", "m", 3, "use-after-free", "write"))
    return Triage(series, ApplyOutcome(True), "abc1234", "def5678", tests, findings, ("a note",))


def test_round_trip_and_summary():
    t = sample()
    assert Triage.from_json(t.to_json()) == t
    assert t.to_dict()["summary"] == {"verdict": "fail", "tests": 2, "moved_failure_to_success": 1,
                                      "new": 1, "fixed": 1, "persisting": 0}
    assert t.findings[0].location == "progs/v.c:20" and t.findings[1].location is None


def test_apply_outcome_text_and_conflict_verdict():
    bad = ApplyOutcome(False, 2, 3, "CONFLICT (content): Merge conflict in x.c")
    assert bad.text == "does not apply at patch 2/3: CONFLICT (content): Merge conflict in x.c"
    assert Triage(sample().series, bad).verdict == "conflict"
    assert Triage(sample().series, ApplyOutcome(True)).verdict == "pass"


def _broken(edit):
    doc = json.loads(sample().to_json())
    edit(doc)
    return json.dumps(doc)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(schema=2), r"'schema' must be 1"),
    (lambda d: d.update(extra=1), r"\$ unknown key 'extra'"),
    (lambda d: d["series"].pop("subject"), r"\$\.series\.subject is missing"),
    (lambda d: d["series"]["patches"][0].update(seq=0), r"patches\[0\]\.seq must be >= 1"),
    (lambda d: d["series"]["patches"][0].update(seq=True), r"patches\[0\]\.seq must be an integer"),
    (lambda d: d["series"].update(version="2"), r"\$\.series\.version must be an integer"),
    (lambda d: d["series"].update(patches={}), r"patches must be a list"),
    (lambda d: d["series"].update(base_commit="main; rm -rf"), r"base_commit has an invalid format"),
    (lambda d: d["findings"][0].update(change="old"), r"change must be one of new, fixed, persisting"),
    (lambda d: d["findings"][0].update(access="READ"), r"access must be one of read, write"),
    (lambda d: d["findings"][0].update(title="x" * 600), r"title longer than 512 characters"),
    (lambda d: d["findings"][0].update(report=7), r"report must be a string"),
    (lambda d: d["tests"][0].update(head_status="<b>pass</b>"), r"head_status has an invalid format"),
    (lambda d: d["tests"][0].update(moved_failure_to_success=1), r"must be true or false"),
    (lambda d: d["apply"].update(applied="yes"), r"apply\.applied must be true or false"),
    (lambda d: d["summary"].update(new=0), r"'summary' does not match"),
    (lambda d: d.update(notes=["x"] * 10_001), r"notes must be a list of at most 10000 items"),
    (lambda d: d.update(findings=[1]), r"findings\[0\] must be an object"),
])
def test_from_json_refuses_off_schema_input(edit, message):
    with pytest.raises(BotError, match=message) as e:
        Triage.from_json(_broken(edit), "artifact.json")
    assert e.value.file == "artifact.json"


def test_not_json_and_not_object():
    for text, message in (("{", "not valid JSON"), ("[]", "top level must be an object"), ("[" * 100000, "not valid JSON")):
        with pytest.raises(BotError, match=message):
            Triage.from_json(text)


_leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=20))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_mutation_is_a_valid_triage_or_our_error(data):
    """Replace one value anywhere in a valid artifact with junk: never a traceback."""
    doc = json.loads(sample().to_json())
    paths = []

    def walk(node, path):
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            paths.append(path + [k])
            walk(v, path + [k])
    walk(doc, [])
    path = data.draw(st.sampled_from(paths))
    target = doc
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = data.draw(st.one_of(_leaves, st.lists(_leaves, max_size=3),
                                           st.dictionaries(st.text(max_size=5), _leaves, max_size=3)))
    try:
        Triage.from_dict(copy.deepcopy(doc), "fuzz.json")
    except BotError as e:
        assert e.file == "fuzz.json"
