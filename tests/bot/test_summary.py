"""Summaries: golden Markdown and text, dedup by title, escaping of hostile text, size limits.

Golden files live in tests/data/summaries/<case>.md and .txt; rerun with BPF_KASAN_UPDATE_GOLDEN=1
to rewrite them, then review the diff.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import re

import pytest
from hypothesis import given, settings, strategies as st

from _triage_cases import CASES, SUMMARIES, huge, load
from bot import summary
from bot.config import parse_config
from bot.errors import BotError
from bot.triage_model import Triage

UPDATE = os.environ.get("BPF_KASAN_UPDATE_GOLDEN") == "1"
_OPEN = re.compile(r"^ {0,3}(`{3,})([^`]*)$")


def fenced_blocks(markdown: str) -> list[str]:
    """The contents of fenced code blocks, by CommonMark's rule: a fence closes on a line of at
    least as many backticks and nothing else."""
    blocks, lines, i = [], markdown.split("\n"), 0
    while i < len(lines):
        opened = _OPEN.match(lines[i])
        i += 1
        if not opened:
            continue
        body = []
        while i < len(lines) and not re.fullmatch(rf" {{0,3}}`{{{len(opened[1])},}}\s*", lines[i]):
            body.append(lines[i])
            i += 1
        i += 1
        blocks.append("\n".join(body))
    return blocks


def prose(markdown: str) -> str:
    """The Markdown with fenced blocks and inline code removed: where mentions and HTML would act."""
    without_blocks = re.sub(r"(?ms)^(`{3,})[^`\n]*\n.*?^\1`*\s*$", "", markdown)
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", without_blocks)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fmt, ext", [("markdown", "md"), ("text", "txt")])
def test_golden(case, fmt, ext):
    rendered = summary.render(load(case), fmt)
    golden = SUMMARIES / f"{case}.{ext}"
    if UPDATE:
        golden.write_text(rendered)
    assert rendered == golden.read_text()


@pytest.mark.parametrize("case", CASES)
def test_json_is_the_model_and_round_trips(case):
    triage = load(case)
    assert Triage.from_json(summary.render(triage, "json")) == triage


def test_an_unknown_format_is_refused():
    with pytest.raises(BotError, match="unknown summary format 'html'"):
        summary.render(load("mixed"), "html")


def test_findings_are_deduplicated_by_title_and_ordered_new_fixed_persisting():
    md = summary.render(load("mixed"), "markdown")
    bullets = [line for line in md.splitlines() if line.startswith("- `KASAN:")]
    assert len(bullets) == 3                      # three new findings share one title
    assert bullets[0] == ("- `KASAN: slab-out-of-bounds Read in bpf_prog_ADDR_narrow_load` at "
                          "`progs/verifier_map_value.c:49` in `verifier_map_value/narrow_load` and 1 more test "
                          "(3 times)")
    assert md.index("New in this series") < md.index("Fixed by this series") < md.index("Persisting")
    summaries = re.findall(r"<summary>(\w+):", md)
    assert summaries == ["new", "fixed", "persisting"]


def test_tests_that_moved_to_success_say_what_kasan_found():
    md = summary.render(load("mixed"), "markdown")
    assert ("`verifier_map_value/narrow_load` (`progs/verifier_map_value.c:42`): the verifier now accepts "
            "this; KASAN found `KASAN: slab-out-of-bounds Read in bpf_prog_ADDR_narrow_load`") in md
    assert "the verifier now accepts this; KASAN found nothing in 16 variants" in md
    # New findings come first, then the tests the verifier now accepts, then fixed and persisting.
    assert md.index("New in this series") < md.index("now accepts (2)") < md.index("Fixed by this series")


def test_each_report_is_folded_under_its_own_section():
    md = summary.render(load("mixed"), "markdown")
    new, rest = md.split("#### Tests the verifier now accepts")
    assert re.findall(r"<summary>(\w+):", new) == ["new"]
    assert re.findall(r"<summary>(\w+):", rest) == ["fixed", "persisting"]


def test_an_unattributed_finding_never_shows_instruction_none():
    triage = load("mixed")
    unplaced = dataclasses.replace(triage.findings[0], insn=None, file=None, line=None)
    only = dataclasses.replace(triage, findings=(unplaced,))
    md, text = summary.render(only, "markdown"), summary.render(only, "text")
    assert "None" not in md and "None" not in text
    assert "function `narrow_load`; read of size 4" in md and "insn:" not in text


def test_details_carry_the_report_instruction_and_source_line():
    md = summary.render(load("mixed"), "markdown")
    first = load("mixed").findings[0]
    assert first.report.strip("\n") in fenced_blocks(md)
    assert "instruction 7 at `progs/verifier_map_value.c:49`" in md


def test_hostile_text_cannot_break_out_of_code_blocks():
    triage = load("hostile")
    md = summary.render(triage, "markdown")
    assert triage.findings[0].report.strip("\n") in fenced_blocks(md)
    outside = prose(md)                            # the report's own </details> stays inside its block
    assert outside.count("<details>") == outside.count("</details>") == 3


def test_hostile_text_cannot_mention_link_or_inject_html():
    md = prose(summary.render(load("hostile"), "markdown"))
    assert not re.search(r"@\w", md), "an @mention survived outside code"
    assert not re.search(r"(?<!&)#\d", md), "an issue reference survived outside code"
    assert "<img" not in md and "<script" not in md and "<b>" not in md
    assert "](javascript" not in md and "<javascript" not in md
    assert "bpf-kasan:sticky" not in md.replace("&lt;\\!-- bpf-kasan:sticky --&gt;", "")
    assert "\u202e" not in md and "\x1b" not in md


def test_text_lines_other_than_reports_fit_78_columns():
    triage = load("mixed")
    text = summary.render(triage, "text")
    report_lines = {line for f in triage.findings for line in f.report.splitlines()}
    long = [line for line in text.splitlines() if len(line) > 78 and line not in report_lines]
    assert long == []
    assert text.startswith("bpf-kasan has tested the following series\n\n[v2] bpf: Allow narrow loads")


def test_waivers_and_expired_entries_are_reported():
    config = parse_config("ignore:\n  - test: 'verifier_spill/*'\n    reason: flaky\n    expires: 2030-01-01\n"
                          "  - title: 'KASAN: gone*'\n    reason: old\n    expires: 2020-01-01\n", "cfg.yml")
    triage, waivers = config.waive(load("mixed"), datetime.date(2026, 11, 2))
    md = summary.render(triage, "markdown", waivers=waivers)
    assert "#### Ignored by the config (1)" in md and "flaky (until 2030-01-01)" in md
    assert "line 5: title 'KASAN: gone\\*', expired 2020-01-01 (old)" in md
    assert "Persisting (also in the base)" not in md
    text = summary.render(triage, "text", waivers=waivers)
    assert "Expired ignore entries (they no longer apply):" in text


def test_a_comment_of_a_huge_triage_fits_and_says_what_was_cut():
    triage = huge(400)                             # 1,200 distinct titles, ~11 KB reports each
    md = summary.render(triage, "markdown", limit=summary.COMMENT_LIMIT)
    assert len(md.encode()) <= summary.COMMENT_LIMIT
    assert re.search(r"\*\*\d+ more findings omitted; see the artifact\.\*\*", md)
    details = re.findall(r"<summary>(\w+):", md)
    assert details and set(details) == {"new"}    # persisting and fixed details were cut first
    assert md.count("<details>") == md.count("</details>")
    assert md.startswith("### bpf-kasan: 400 new KASAN issues")


def test_cuts_go_persisting_details_then_fixed_then_bullets_before_the_first_new_details():
    triage = load("mixed")
    text = summary.render(triage, "markdown")
    for kept in (["new", "fixed"], ["new"], ["new"]):
        text = summary.render(triage, "markdown", limit=len(text.encode()) - 1)
        assert re.findall(r"<summary>(\w+):", text) == kept
        assert f"{3 - len(kept)} more findings omitted; see the artifact." in text
    assert "#### Persisting (also in the base) (1)\n- and 1 more\n" in text


def test_a_tiny_limit_still_states_the_cut():
    for limit in (400, 120, 30):
        md = summary.render(huge(5), "markdown", limit=limit)
        assert len(md.encode()) <= limit
    assert summary.render(huge(5), "markdown", limit=120).endswith(
        "**The rest of this summary was omitted; see the artifact.**\n")


def test_a_job_summary_of_a_huge_triage_stays_under_one_mib():
    md = summary.render(huge(300, report_repeat=40), "markdown", limit=summary.JOB_SUMMARY_LIMIT)
    assert 0.9 * summary.JOB_SUMMARY_LIMIT < len(md.encode()) <= summary.JOB_SUMMARY_LIMIT


def test_one_overlong_report_is_clipped_inline():
    triage = load("mixed")
    big = dataclasses.replace(triage.findings[0], report="x" * 80 + "\n" + "line\n" * 10_000)
    md = summary.render(dataclasses.replace(triage, findings=(big,)), "markdown")
    assert "more characters: the full report is in the artifact]" in md
    assert len(md) < summary.REPORT_CHARS + 4000


def test_headline_is_one_plain_line():
    assert summary.headline(load("mixed")) == "bpf-kasan: 1 new, 1 fixed, 1 persisting"
    assert summary.headline(load("conflict")) == "bpf-kasan: the series does not apply at patch 2/3"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("`~ \n@#<>&*_[]()!\\ab1\u202e\x1b"), max_size=60))
def test_escapes_hold_for_any_text(text):
    block = str(summary.code_block(text))
    assert fenced_blocks(block) == [summary.clean(text).strip("\n")]
    inline = str(summary.md_inline(text))
    assert not re.search(r"@\w|#\d|<|(?<!\\)`", inline)
    span = str(summary.code_span(text))
    ticks = re.match(r"`+", span)[0]
    inner = span[len(ticks):-len(ticks)]
    assert span.endswith(ticks) and all(len(run) != len(ticks) for run in re.findall(r"`+", inner))
