"""`.github/bpf-kasan.yml`: defaults, strict validation with file:line errors, waivers, fail-on."""
from __future__ import annotations

import dataclasses
import datetime
import pathlib

import pytest

from _triage_cases import load
from bot.config import (DEFAULT_EXPLORE, DEFAULT_TESTS, Config, IgnoreEntry, finding_title, load_config,
                        parse_config)
from bot.errors import BotError
from bot.triage_model import ApplyOutcome

ROOT = pathlib.Path(__file__).resolve().parents[2]
TODAY = datetime.date(2026, 11, 2)

GOOD = """\
tests:
  - "progs/verifier_*.c"
explore: 4
fail-on: any
ignore:
  - title: "KASAN: slab-out-of-bounds Read in *"
    reason: known, fixed upstream in abc123
    expires: 2026-12-31
    link: https://lore.kernel.org/all/x@y/
  - test: "verifier_spill/*"
    reason: flaky spill test
    expires: 2026-01-01
"""


def test_defaults_when_the_default_file_is_absent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert (config.tests, config.explore, config.fail_on, config.ignore) == (DEFAULT_TESTS, DEFAULT_EXPLORE,
                                                                            "new", ())


def test_an_explicit_path_must_exist(tmp_path):
    with pytest.raises(BotError) as e:
        load_config(tmp_path / "nope.yml")
    assert str(e.value) == f"{tmp_path / 'nope.yml'}: config file not found"


def test_this_repositorys_own_config_is_valid():
    config = load_config(ROOT / ".github" / "bpf-kasan.yml")
    assert config.fail_on == "new" and config.tests and config.ignore == ()


def test_a_full_config_parses():
    config = parse_config(GOOD, "cfg.yml")
    assert config.tests == ("progs/verifier_*.c",) and config.explore == 4 and config.fail_on == "any"
    first, second = config.ignore
    assert first == IgnoreEntry(reason="known, fixed upstream in abc123", expires=datetime.date(2026, 12, 31),
                                title="KASAN: slab-out-of-bounds Read in *", link="https://lore.kernel.org/all/x@y/",
                                line=6)
    assert second.test == "verifier_spill/*" and second.title is None and second.line == 10


@pytest.mark.parametrize("text, where, problem", [
    ("explore: yes", "cfg.yml:1: explore:", "expected an integer from 0 to 1000, got 'yes'"),
    ("explore: 5000", "cfg.yml:1: explore:", "expected an integer from 0 to 1000"),
    ("fail-on: sometimes", "cfg.yml:1: fail-on:", "expected one of new, any, never, got 'sometimes'"),
    ("tests: []", "cfg.yml:1: tests:", "expected at least one glob"),
    ("tests: progs/*.c", "cfg.yml:1: tests:", "expected a list"),
    ("tests:\n  - {a: 1}", "cfg.yml:2: tests[0]:", "expected a string"),
    ("colour: blue", "cfg.yml:1: colour:", "unknown key"),
    ("explore: 1\nexplore: 2", "cfg.yml:2: explore:", "duplicate key"),
    ("- 1", "cfg.yml:1:", "expected a mapping at the top level"),
    ("tests: [", "cfg.yml:", "not valid YAML"),
    ("explore: !!python/object/apply:os.system [true]", "cfg.yml:1: explore:", "expected an integer"),
    ("ignore:\n  - title: x\n    reason: r\n    expires: soon", "cfg.yml:4: ignore[0].expires:",
     "expected a date YYYY-MM-DD, got 'soon'"),
    ("ignore:\n  - title: x\n    reason: r\n    expires: 2026-01-01T10:00:00", "cfg.yml:4: ignore[0].expires:",
     "expected a date"),
    ("ignore:\n  - title: x\n    expires: 2026-01-01", "cfg.yml:2: ignore[0]:", "'reason' is required"),
    ("ignore:\n  - reason: r\n    expires: 2026-01-01", "cfg.yml:2: ignore[0]:", "needs 'title' or 'test'"),
    ("ignore:\n  - title: x\n    reason: '  '\n    expires: 2026-01-01", "cfg.yml:3: ignore[0].reason:",
     "expected a non-empty string"),
    ("ignore:\n  - title: x\n    reason: r\n    expires: 2026-01-01\n    owner: me", "cfg.yml:5: ignore[0].owner:",
     "unknown key"),
])
def test_bad_configs_are_refused_naming_file_line_and_key(text, where, problem):
    with pytest.raises(BotError) as e:
        parse_config(text, "cfg.yml")
    message = str(e.value)
    assert message.startswith(where) and problem in message and "\n" not in message


def test_an_empty_file_means_defaults():
    assert parse_config("# nothing yet\n", "cfg.yml") == Config(source="cfg.yml")


def test_waivers_apply_until_they_expire():
    config = parse_config(GOOD, "cfg.yml")
    triage, waivers = config.waive(load("mixed"), TODAY)
    # The slab-out-of-bounds entry covers the three new findings; the spill entry expired in January.
    assert [f.change for f in triage.findings] == ["fixed", "persisting"]
    assert len(waivers.ignored) == 3 and {e.line for _, e in waivers.ignored} == {6}
    assert [e.line for e in waivers.expired] == [10]
    _, later = config.waive(load("mixed"), datetime.date(2027, 1, 1))
    assert later.ignored == () and len(later.expired) == 2


def test_an_entry_with_title_and_test_needs_both_to_match():
    finding = load("mixed").findings[0]
    entry = IgnoreEntry(reason="r", expires=TODAY, title="KASAN: slab-out-of-bounds *",
                        test="verifier_map_value/narrow_load")
    assert entry.matches(finding)
    assert not dataclasses.replace(entry, test="other/*").matches(finding)
    assert not dataclasses.replace(entry, title="KASAN: use-after-free*").matches(finding)


def test_a_finding_without_a_title_gets_a_syzbot_style_one():
    finding = dataclasses.replace(load("mixed").findings[3], title="")
    assert finding_title(finding) == "KASAN: use-after-free Write in reserve_oob"


@pytest.mark.parametrize("fail_on, case, expected", [
    ("new", "mixed", "failure"), ("any", "mixed", "failure"), ("never", "mixed", "neutral"),
    ("new", "persisting-only", "neutral"), ("any", "persisting-only", "failure"),
    ("new", "clean", "success"), ("never", "clean", "success"),
    ("new", "conflict", "failure"), ("never", "conflict", "neutral"),
])
def test_fail_on_decides_the_conclusion(fail_on, case, expected):
    triage = load("conflict" if case == "conflict" else "mixed" if case != "clean" else "clean")
    if case == "persisting-only":
        triage = dataclasses.replace(triage, findings=triage.findings_by_change("persisting"))
    assert Config(fail_on=fail_on).conclusion(triage) == expected


def test_a_conflict_is_a_failure_even_without_findings():
    triage = dataclasses.replace(load("clean"), apply=ApplyOutcome(False, 1, 2, "patch does not apply"))
    assert Config().conclusion(triage) == "failure"
