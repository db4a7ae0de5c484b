"""An mbox of patch mail → the series it carries: the newest version, patches in order, ready for `git am`.

Follows b4/lore habits: `[tags PATCH vN M/N]` subjects, a 0/N cover letter, partial rerolls filled
from the newest earlier version with the same N, duplicates skipped, replies ignored. A series is
corrupt when it has no patch, a patch number is missing, or M > N; that and unreadable mail are a
`BotError` naming the mbox and the line where the offending message starts.

Imports only the stdlib and `bot.errors` / `bot.triage_model`; never git, network or github.
"""
from __future__ import annotations

import gzip
import io
import re
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.parser import BytesParser

from bot.errors import BotError
from bot.triage_model import Patch, Series

MAX_MBOX_BYTES = 64 * 1024 * 1024

_BRACKETS = re.compile(r"^\s*((?:\[[^\]]*\]\s*)+)(.*)$", re.S)
_SEQ = re.compile(r"^(\d+)/(\d+)$")
_VERSION = re.compile(r"^[vV](\d+)$")
_DIFF = re.compile(rb"^(diff --git |--- \S.*\n\+\+\+ )", re.M)
_BASE = re.compile(rb"^base-commit: ([0-9a-f]{7,64})\s*$", re.M)
_REPLY = re.compile(r"^\s*(re|aw|fwd?)\s*:", re.I)
_FROM_LINE = re.compile(rb"^From \S+ .*\d:\d\d")


@dataclass(frozen=True)
class Mail:
    """One message of the mbox, with what the series logic needs from its subject."""
    raw: bytes            # as stored, without the mbox `From ` line
    line: int             # 1-based line of its `From ` line in the mbox
    subject: str          # without the bracket block
    subject_line: str     # the whole Subject: header, unfolded
    msgid: str | None
    author: str
    version: int
    seq: int              # 0 for a cover letter
    total: int
    tags: tuple[str, ...]
    has_diff: bool


@dataclass(frozen=True)
class SeriesMbox:
    """The chosen patches of a series plus the model describing them."""
    series: Series
    patches: tuple[Mail, ...]

    def as_mbox(self) -> bytes:
        """The patches in order as an mboxrd, the format `git am --patch-format=mboxrd` reads."""
        out = []
        for mail in self.patches:
            body = re.sub(rb"^(>*From )", rb">\1", mail.raw, flags=re.M)
            out.append(b"From mboxrd@z Thu Jan  1 00:00:00 1970\n" + body.rstrip(b"\n") + b"\n\n")
        return b"".join(out)


def parse_series(data: bytes, source: str, url: str | None = None) -> SeriesMbox:
    """Parse an mbox (optionally gzipped) and return its newest complete series."""
    mails = [m for m in read_mails(data, source) if m is not None]
    patches = [m for m in mails if m.seq > 0 and m.has_diff]
    if not patches:
        raise BotError("no patch found (no [PATCH] message with a diff)", file=source)
    newest = max(m.version for m in patches)
    chosen = _choose(patches, newest, source)
    cover = _cover(mails, newest, chosen[0].total)
    first = cover or chosen[0]
    series = Series(
        subject=first.subject, version=newest,
        patches=tuple(Patch(m.seq, m.total, m.subject, m.msgid, m.author, m.version, m.subject_line)
                      for m in chosen),
        cover_msgid=cover.msgid if cover else None, cover_subject=cover.subject if cover else None,
        cover_subject_line=cover.subject_line if cover else None,
        tags=_tags(m for m in mails if m.version == newest and (m.seq > 0 or m is cover)),
        base_commit=_base_commit([cover, *chosen]), url=url)
    return SeriesMbox(series, tuple(chosen))


def read_mails(data: bytes, source: str) -> list[Mail | None]:
    """Every message of the mbox; None for replies and mail that is not part of a series."""
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, source)
    if len(data) > MAX_MBOX_BYTES:
        raise BotError(f"mbox larger than {MAX_MBOX_BYTES >> 20} MiB", file=source)
    chunks = _split(data, source)
    return [_mail(raw, line, source) for raw, line in chunks]


def _gunzip(data: bytes, source: str) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
            out = gz.read(MAX_MBOX_BYTES + 1)
    except (OSError, EOFError) as e:
        raise BotError(f"corrupt gzip data: {e}", file=source) from None
    return out


def _split(data: bytes, source: str) -> list[tuple[bytes, int]]:
    """Split at `From <sender> <date>` lines after a blank line, remembering where each mail starts.
    Stricter than mailbox.mbox and like git mailsplit (which wants the date's time), so a
    commit message line such as "From the spec:" does not split a mail."""
    lines = data.splitlines(keepends=True)
    if not lines or not lines[0].startswith(b"From "):
        raise BotError("not an mbox: the first line is not a 'From ' line", file=source, line=1)
    chunks, start = [], 0
    for i, text in enumerate(lines[1:], 1):
        if _FROM_LINE.match(text) and not lines[i - 1].strip():
            chunks.append((lines[start:i], start + 1))
            start = i
    chunks.append((lines[start:], start + 1))
    return [(b"".join(part), line) for part, line in chunks]


def _mail(raw: bytes, line: int, source: str) -> Mail | None:
    body = raw.split(b"\n", 1)[1] if b"\n" in raw else b""     # drop the mbox `From ` line
    try:
        parsed = BytesParser(policy=policy.default).parsebytes(body, headersonly=True)
        subject = " ".join(str(parsed.get("Subject", "")).split())
        author = _author(parsed.get("From"))
        msgid = str(parsed.get("Message-ID", "")).strip().strip("<>") or None
    except (ValueError, TypeError, IndexError) as e:
        raise BotError(f"unreadable mail headers: {e}", file=source, line=line) from None
    if not subject:
        raise BotError("message has no Subject", file=source, line=line)
    if _REPLY.match(subject):
        return None
    words, title = _subject_parts(subject)
    version, seq, total, tags = _prefix(words, subject, source, line)
    if seq is None and not words:
        return None                     # an unprefixed mail: not patch mail
    has_diff = bool(_DIFF.search(body))
    return Mail(body, line, title, subject, msgid, author, version, seq if seq is not None else 1,
                total if total is not None else 1, tags, has_diff)


def _author(value) -> str:
    text = " ".join(str(value or "").split())
    try:
        addresses = getattr(value, "addresses", ())
        if addresses and isinstance(addresses[0], Address):
            return str(addresses[0])
    except (IndexError, TypeError):
        pass
    return text


def _subject_parts(subject: str) -> tuple[list[str], str]:
    match = _BRACKETS.match(subject)
    if not match:
        return [], subject.strip()
    words = re.findall(r"[^\s\[\],]+", match.group(1))
    return words, match.group(2).strip()


def _prefix(words: list[str], subject: str, source: str, line: int):
    """[tags PATCH vN M/N] → (version, seq, total, tags); seq/total None when there is no M/N."""
    version, seq, total, tags = 1, None, None, []
    for word in words:
        if (m := _SEQ.match(word)):
            seq, total = int(m.group(1)), int(m.group(2))
            if total == 0 or seq > total:
                raise BotError(f"bad patch number {word} in subject {subject!r}", file=source, line=line)
        elif (m := _VERSION.match(word)):
            version = int(m.group(1))
            if version == 0:
                raise BotError(f"bad version v0 in subject {subject!r}", file=source, line=line)
        elif word.upper() != "PATCH":
            tags.append(word)
    return version, seq, total, tuple(tags)


def _choose(patches: list[Mail], newest: int, source: str) -> list[Mail]:
    """Patches 1..N of the newest version; a gap is filled from the newest older version with the same N."""
    totals = {m.total for m in patches if m.version == newest}
    if len(totals) != 1:
        where = min(m.line for m in patches if m.version == newest)
        raise BotError(f"corrupt series: v{newest} patches disagree on N ({sorted(totals)})",
                       file=source, line=where)
    total = totals.pop()
    best: dict[int, Mail] = {}
    for m in sorted(patches, key=lambda m: (-m.version, m.line)):   # newest first; first copy wins
        if m.total == total and m.seq not in best:
            best[m.seq] = m
    missing = [seq for seq in range(1, total + 1) if seq not in best]
    if missing:
        raise BotError(f"corrupt series: v{newest} is missing patch {missing[0]}/{total}", file=source)
    return [best[seq] for seq in range(1, total + 1)]


def _cover(mails: list[Mail | None], version: int, total: int) -> Mail | None:
    for m in mails:
        if m is not None and m.seq == 0 and m.version == version and m.total == total:
            return m
    return None


def _tags(mails) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for m in mails:
        seen.update(dict.fromkeys(m.tags))
    return tuple(seen)


def _base_commit(mails) -> str | None:
    for m in mails:
        if m is not None and (match := _BASE.search(m.raw)):
            return match.group(1).decode()
    return None
