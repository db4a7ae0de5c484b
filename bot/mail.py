"""The mailing-list reply: an RFC 2822 message that threads under the series, as KPD sends them.

Owns: the reply's headers (`Subject: Re: <subject>`, reusing the Subject: line as sent;
`In-Reply-To` and `References` set to the cover letter's Message-ID, else the last patch's that
has one) and writing it to a file for the sender of the operator's choice. The body is the
plain-text summary from `bot.summary`; sending is not done here.

Uses the stdlib `email` package; never github, jinja2 or the checks layer.
"""
from __future__ import annotations

import datetime
import email.policy
import email.utils
import pathlib
import re
from email.message import EmailMessage

from bot.errors import BotError
from bot.triage_model import Series

DEFAULT_FROM = "bpf-kasan <bpf-kasan@localhost>"
_MSGID = re.compile(r"[!-;=?-~]+")              # printable ASCII without '<', '>' and spaces
_HEADER_TEXT = re.compile(r"[\x00-\x1f\x7f]+")


def reply_message(series: Series, body: str, *, sender: str = DEFAULT_FROM, to: list[str] | None = None,
                  cc: list[str] | None = None, date: datetime.datetime | None = None,
                  msgid_domain: str = "bpf-kasan.localhost") -> EmailMessage:
    """A reply to the cover letter (else the last patch) carrying `body` as plain text."""
    parent, subject = reply_parent(series)
    if not _MSGID.fullmatch(parent):
        raise BotError(f"mail: the Message-ID {parent!r} cannot be used in a header")
    msg = EmailMessage(policy=email.policy.default)
    msg["From"] = sender
    recipients = to if to is not None else [series.patches[0].author] if series.patches else []
    if recipients:
        msg["To"] = ", ".join(_header_text(r) for r in recipients)
    if cc:
        msg["Cc"] = ", ".join(_header_text(c) for c in cc)
    msg["Subject"] = "Re: " + _header_text(subject).removeprefix("Re: ")
    msg["Date"] = email.utils.format_datetime(date or datetime.datetime.now(datetime.timezone.utc))
    msg["Message-ID"] = email.utils.make_msgid("bpf-kasan", domain=msgid_domain)
    msg["In-Reply-To"] = f"<{parent}>"
    msg["References"] = f"<{parent}>"
    long_lines = any(len(line) > 998 for line in body.splitlines())
    msg.set_content(body, cte="quoted-printable" if long_lines else ("7bit" if body.isascii() else "8bit"))
    return msg


def reply_parent(series: Series) -> tuple[str, str]:
    """(Message-ID, Subject: line) of the message to reply to: the cover letter, else the last
    patch that has a Message-ID. The subject is the header as sent when the model kept it."""
    if series.cover_msgid:
        line = series.cover_subject_line
        return series.cover_msgid, line or _rebuilt_subject(series, series.cover_subject or series.subject,
                                                            0, len(series.patches), series.version)
    patch = next((p for p in reversed(series.patches) if p.msgid), None)
    if patch is None:
        raise BotError("mail: no message of the series has a Message-ID to reply to")
    return patch.msgid, patch.subject_line or _rebuilt_subject(series, patch.subject, patch.seq,
                                                               patch.total, patch.version)


def _rebuilt_subject(series: Series, subject: str, seq: int, total: int, version: int) -> str:
    """A `[PATCH ...]` subject rebuilt from the model (triage JSON written before it kept the line)."""
    if subject.startswith("["):
        return subject
    words = ["PATCH", *series.tags, *([f"v{version}"] if version > 1 else []), f"{seq}/{total}"]
    return f"[{' '.join(words)}] {subject}"


def write_reply(path: str | pathlib.Path, message: EmailMessage) -> None:
    try:
        pathlib.Path(path).write_bytes(message.as_bytes(policy=message.policy.clone(linesep="\n")))
    except OSError as e:
        raise BotError(f"cannot write the mail reply: {e}", file=str(path)) from None


def _header_text(value: str) -> str:
    """Untrusted text for a header: no line breaks or control characters (no header injection)."""
    return " ".join(_HEADER_TEXT.sub(" ", value).split())
