"""The mailing-list reply: threading headers, subject, body = the text summary, no header injection."""
from __future__ import annotations

import dataclasses
import datetime
import email
import email.policy

import pytest

from _triage_cases import SUMMARIES, load
from bot import cli, mail, summary
from bot.errors import BotError

DATE = datetime.datetime(2026, 11, 2, 12, 0, tzinfo=datetime.timezone.utc)


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_a_reply_threads_under_the_cover_letter():
    triage = load("mixed")
    body = summary.render(triage, "text")
    msg = parse(mail.reply_message(triage.series, body, date=DATE).as_bytes())
    assert msg["Subject"] == "Re: [PATCH bpf-next v2 0/3] bpf: Allow narrow loads from map values"
    assert msg["In-Reply-To"] == msg["References"] == "<20261102.0-jdoe@example.org>"
    assert msg["To"] == '"J. Doe" <jdoe@example.org>'
    assert msg["Date"] == "Mon, 02 Nov 2026 12:00:00 +0000"
    assert msg["Message-ID"].endswith("@bpf-kasan.localhost>")
    assert msg.get_content_type() == "text/plain" and msg.get_content() == body
    assert msg.get_content().startswith("bpf-kasan has tested the following series\n")


def test_without_a_cover_letter_it_replies_to_the_last_patch():
    series = dataclasses.replace(load("mixed").series, cover_msgid=None, cover_subject=None)
    msg = mail.reply_message(series, "body\n", date=DATE)
    assert msg["In-Reply-To"] == msg["References"] == "<20261102.3-jdoe@example.org>"
    assert msg["Subject"] == "Re: [PATCH bpf-next v2 3/3] selftests/bpf: Move map value load tests to __success"


def test_a_version_1_series_has_no_version_in_its_subject():
    series = dataclasses.replace(load("mixed").series, version=1, tags=())
    assert mail.reply_parent(series)[1] == "[PATCH 0/3] bpf: Allow narrow loads from map values"


def test_untrusted_text_cannot_inject_headers():
    series = dataclasses.replace(load("mixed").series, cover_subject="hi\nBcc: everyone@example.org\r\nX: y")
    raw = mail.reply_message(series, "body\n", date=DATE, cc=["list@vger.example\nBcc: x@y"]).as_bytes()
    msg = parse(raw)
    assert msg["Bcc"] is None and msg["X"] is None
    assert msg["Subject"] == "Re: [PATCH bpf-next v2 0/3] hi Bcc: everyone@example.org X: y"


def test_a_message_id_that_cannot_be_a_header_is_refused():
    series = dataclasses.replace(load("mixed").series, cover_msgid="a b>\nBcc: x")
    with pytest.raises(BotError, match="cannot be used in a header"):
        mail.reply_message(series, "body\n")


def test_long_report_lines_are_encoded_safely():
    msg = mail.reply_message(load("mixed").series, "x" * 2000 + "\nünïcode\n", date=DATE)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert all(len(line) <= 998 for line in msg.as_bytes().splitlines())
    assert parse(msg.as_bytes()).get_content() == "x" * 2000 + "\nünïcode\n"


def test_post_reply_writes_an_rfc_2822_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    out = tmp_path / "reply.eml"
    assert cli.main(["post", "--reply", str(out), str(SUMMARIES / "mixed.json")]) == 0
    msg = parse(out.read_bytes())
    assert msg["Subject"].startswith("Re: [PATCH bpf-next v2 0/3]")
    assert msg.get_content() == summary.render(load("mixed"), "text")
    assert b"\r\n" not in out.read_bytes()


def test_post_with_no_outlet_is_refused(monkeypatch, capsys):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    assert cli.main(["post", str(SUMMARIES / "mixed.json")]) == 2
    assert capsys.readouterr().err == "bpf-kasan: error: nothing to post to: give --repo, --patchwork or --reply\n"


def test_the_subject_line_as_sent_is_reused():
    """A subject the model cannot rebuild (odd tags, RFC, spacing) is replied to exactly as sent."""
    from _git_fixtures import EXAMPLE_MBOX
    from bot.series import parse_series
    series = parse_series(EXAMPLE_MBOX.read_bytes(), "example").series
    assert series.cover_subject_line == "[PATCH bpf-next v2 0/2] selftests/bpf: example series for bpf-kasan triage"
    odd = dataclasses.replace(series, cover_subject_line="[RFC PATCH bpf-next v2 0/2]  odd   subject")
    assert parse(mail.reply_message(odd, "b\n").as_bytes())["Subject"] == "Re: [RFC PATCH bpf-next v2 0/2] odd subject"
    no_cover = dataclasses.replace(series, cover_msgid=None)
    msg = parse(mail.reply_message(no_cover, "b\n").as_bytes())
    assert msg["Subject"] == ("Re: [PATCH bpf-next v2 2/2] selftests/bpf: Initialise r2 in the "
                              "uninitialised-register example")


def test_patches_without_a_message_id_are_skipped_or_refused():
    series = dataclasses.replace(load("mixed").series, cover_msgid=None)
    last_unnamed = dataclasses.replace(series, patches=series.patches[:-1] + (
        dataclasses.replace(series.patches[-1], msgid=None),))
    assert mail.reply_message(last_unnamed, "b\n")["In-Reply-To"] == "<20261102.2-jdoe@example.org>"
    none = dataclasses.replace(series, patches=tuple(dataclasses.replace(p, msgid=None) for p in series.patches))
    with pytest.raises(BotError, match="no message of the series has a Message-ID"):
        mail.reply_message(none, "b\n")
