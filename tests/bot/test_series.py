"""bot.series on real `git format-patch` output: ordering, versions, partial rerolls, corrupt series."""
from __future__ import annotations

import gzip
import re

import pytest

from _git_fixtures import EXAMPLE_MBOX, commit, format_patch, insert_test, make_repo, simple_test
from bot.errors import BotError
from bot.series import parse_series


@pytest.fixture(scope="module")
def three_patch_repo(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("series") / "repo")
    for name in ("t_one", "t_two", "t_three"):
        commit(repo, f"selftests/bpf: add {name}", insert_test(simple_test(name)))
    return repo


def _only(mbox: bytes, keep) -> bytes:
    """Keep the messages whose subject matches `keep` (a regex), as a resend of some patches would."""
    parts = re.split(rb"(?m)^(?=From [0-9a-f]{40} )", mbox)
    return b"".join(p for p in parts if p and re.search(keep, p))


def test_cover_letter_version_tags_and_order(three_patch_repo):
    mbox = format_patch(three_patch_repo, "HEAD~3", "--cover-letter", "-v2", "--subject-prefix=PATCH bpf-next",
                        "--base=HEAD~3")
    parsed = parse_series(mbox, "s.mbox", url="https://example.org/s")
    s = parsed.series
    assert s.version == 2 and s.tags == ("bpf-next",) and s.url == "https://example.org/s"
    assert [p.seq for p in s.patches] == [1, 2, 3] and {p.total for p in s.patches} == {3}
    assert [p.subject for p in s.patches] == [f"selftests/bpf: add {n}" for n in ("t_one", "t_two", "t_three")]
    assert s.cover_msgid and s.cover_msgid.startswith("cover.") and s.subject == "*** SUBJECT HERE ***"
    assert s.base_commit and len(s.base_commit) == 40
    assert all(p.author == "Test Author <author@example.org>" for p in s.patches)
    assert parsed.as_mbox().count(b"From mboxrd@z") == 3          # the cover letter is not for git am


def test_shuffled_mbox_is_put_in_order(three_patch_repo):
    mbox = format_patch(three_patch_repo, "HEAD~3", "-v3")
    parts = re.split(rb"(?m)^(?=From [0-9a-f]{40} )", mbox)[1:]
    s = parse_series(b"".join(reversed(parts)), "r.mbox").series
    assert [p.seq for p in s.patches] == [1, 2, 3] and s.version == 3 and s.cover_msgid is None
    assert s.subject == "selftests/bpf: add t_one"


def test_partial_reroll_fills_gaps_from_older_version(three_patch_repo):
    v1 = format_patch(three_patch_repo, "HEAD~3", "-v1")
    v2_only_2 = _only(format_patch(three_patch_repo, "HEAD~3", "-v2"), rb"v2 2/3")
    s = parse_series(v1 + v2_only_2, "reroll.mbox").series
    assert s.version == 2
    assert [(p.seq, p.version) for p in s.patches] == [(1, 1), (2, 2), (3, 1)]


def test_duplicates_and_replies_are_skipped(three_patch_repo):
    mbox = format_patch(three_patch_repo, "HEAD~3")
    reply = (b"From nobody Mon Sep 17 00:00:00 2001\nFrom: Rev <r@example.org>\n"
             b"Subject: Re: [PATCH 2/3] selftests/bpf: add t_two\n\nLooks good.\n")
    s = parse_series(mbox + reply + mbox, "dup.mbox").series
    assert [p.seq for p in s.patches] == [1, 2, 3]


def test_single_patch_without_numbers(three_patch_repo):
    s = parse_series(format_patch(three_patch_repo, "HEAD~1"), "one.mbox").series
    assert [(p.seq, p.total) for p in s.patches] == [(1, 1)] and s.version == 1


def test_gzipped_thread_mbox(three_patch_repo):
    s = parse_series(gzip.compress(format_patch(three_patch_repo, "HEAD~2")), "t.mbox.gz").series
    assert len(s.patches) == 2


def test_missing_patch_is_a_corrupt_series(three_patch_repo):
    mbox = _only(format_patch(three_patch_repo, "HEAD~3"), rb"PATCH [13]/3")
    with pytest.raises(BotError, match=r"gap\.mbox: corrupt series: v1 is missing patch 2/3"):
        parse_series(mbox, "gap.mbox")


def test_versions_disagreeing_on_n_are_corrupt(three_patch_repo):
    a = _only(format_patch(three_patch_repo, "HEAD~3", "-v2"), rb"2/3")
    b = format_patch(three_patch_repo, "HEAD~2", "-v2")
    with pytest.raises(BotError, match=r"disagree on N \(\[2, 3\]\)"):
        parse_series(a + b, "mixed.mbox")


@pytest.mark.parametrize("data, message, line", [
    (b"", "not an mbox", 1),
    (b"hello\nworld\n", "not an mbox", 1),
    (b"From x\nFrom: a@b\n\nbody\n", "message has no Subject", 1),
    (b"From x\nSubject: [PATCH 4/3] x\n\n", r"bad patch number 4/3", 1),
    (b"From x\nSubject: [PATCH 0/0] x\n\n", r"bad patch number 0/0", 1),
    (b"From x\nSubject: [PATCH v0 1/1] x\n\n", r"bad version v0", 1),
    (b"From x\nSubject: [PATCH] no diff\n\nhi\n", r"no patch found", None),
    (b"\x1f\x8b\x08\x00garbage", r"corrupt gzip", None),
])
def test_malformed_input_is_a_one_line_error(data, message, line):
    with pytest.raises(BotError, match=message) as e:
        parse_series(data, "bad.mbox")
    assert e.value.file == "bad.mbox" and e.value.line == line
    assert "\n" not in str(e.value)


def test_error_names_the_line_of_the_bad_message(three_patch_repo):
    good = format_patch(three_patch_repo, "HEAD~1")
    bad = b"From x Mon Sep 17 00:00:00 2001\nSubject: [PATCH 5/2] broken\n\n"
    with pytest.raises(BotError) as e:
        parse_series(good + bad, "bad.mbox")
    assert e.value.line == good.count(b"\n") + 1


def test_bundled_example_mbox():
    s = parse_series(EXAMPLE_MBOX.read_bytes(), str(EXAMPLE_MBOX)).series
    assert (s.version, len(s.patches), s.tags) == (2, 2, ("bpf-next",))
    assert s.cover_subject == "selftests/bpf: example series for bpf-kasan triage"
    assert s.patches[0].subject == "selftests/bpf: Add a test reading past a map value"   # folded subject


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 2000), st.binary(max_size=40))
def test_damaged_mbox_gives_a_result_or_our_error(noise, at, splice):
    """Random bytes, and the example mbox with bytes spliced in: never a traceback."""
    base = EXAMPLE_MBOX.read_bytes()
    for data in (noise, b"From x\n" + noise, base[:at] + splice + base[at + len(splice):]):
        try:
            parse_series(data, "fuzz.mbox")
        except BotError as e:
            assert e.file == "fuzz.mbox"


def test_from_at_the_start_of_a_commit_message_line_does_not_split(tmp_path):
    repo = make_repo(tmp_path / "repo")
    commit(repo, "selftests/bpf: add t\n\nFrom the spec: a map value is 8 bytes.\n\nFrom here on, all good.",
           insert_test(simple_test("t")))
    parsed = parse_series(format_patch(repo, "HEAD~1"), "from.mbox")
    assert len(parsed.patches) == 1 and b"From the spec" in parsed.patches[0].raw
