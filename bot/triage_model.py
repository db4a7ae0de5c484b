"""The triage artifact: what `bpf-kasan triage` found for one patch series, as frozen dataclasses.

This module owns the JSON shape shared by the series-in half (which writes it) and the posting half
(which renders and posts it). The posting job runs with write tokens and treats the artifact as
untrusted, so `Triage.from_json` validates strictly: unknown or missing keys, wrong types, values
outside their enums, over-long strings and over-long lists are all refused with a `BotError`.

Imports only the stdlib and `bot.errors`; never git, github, jinja2 or the checks layer.

Shape (``schema`` = 1)::

    {"schema": 1, "series": Series, "apply": ApplyOutcome, "base_rev": str|null, "head_rev": str|null,
     "tests": [TestComparison], "findings": [Finding], "notes": [str], "summary": {...derived...}}
"""
from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass, field
from typing import Literal, Optional

from bot.errors import BotError

SCHEMA = 1
CHANGES = ("new", "fixed", "persisting")

# Size caps: a GitHub comment is at most 65,536 chars, so nothing legitimate comes near these.
_SHORT = 512          # names, subjects, ids, statuses
_LONG = 65_536        # a KASAN report or a git error
_MAX_ITEMS = 10_000


def _meta(max_len: int = _SHORT, pattern: str | None = None, minimum: int | None = None) -> dict:
    return {"max_len": max_len, "pattern": re.compile(pattern) if pattern else None, "minimum": minimum}


def _f(default=dataclasses.MISSING, **kw):
    """A dataclass field carrying its validation limits (see `_meta`)."""
    return field(default=default, metadata=_meta(**kw))


_STATUS = r"[a-z][a-z0-9_-]{0,31}"     # runner statuses: pass, fail, skip, error, ... (open set)


@dataclass(frozen=True)
class Patch:
    """One patch of a series: `[PATCH vV M/N] subject`, sent as message `msgid` by `author`."""
    seq: int = _f(minimum=1)               # M
    total: int = _f(minimum=1)             # N
    subject: str = _f()                    # without the [..] tag block
    msgid: Optional[str] = _f()            # without angle brackets; null if the mail had none
    author: str = _f()                     # "Name <addr>" as in From:
    version: int = _f(1, minimum=1)        # a partial reroll mixes versions
    subject_line: Optional[str] = _f(None)   # the Subject: header as sent (unfolded), for replies


@dataclass(frozen=True)
class Series:
    """The patch series: its subject (cover letter's, else patch 1's), newest version, and patches in order."""
    subject: str = _f()
    version: int = _f(minimum=1)
    patches: tuple[Patch, ...] = ()
    cover_msgid: Optional[str] = _f(None)
    cover_subject: Optional[str] = _f(None)
    cover_subject_line: Optional[str] = _f(None)   # the cover's Subject: header as sent
    tags: tuple[str, ...] = ()             # bracket words other than PATCH/vN/M/N, e.g. bpf-next
    base_commit: Optional[str] = _f(None, pattern=r"[0-9a-f]{7,64}")   # the `base-commit:` trailer
    url: Optional[str] = _f(None, max_len=2048)   # where it was fetched from (lore, patchwork, PR)


@dataclass(frozen=True)
class ApplyOutcome:
    """`git am --3way` of the series on the base: applied, or the first patch that did not apply and why."""
    applied: bool
    failed_seq: Optional[int] = _f(None, minimum=1)     # M of the patch git stopped at
    total: Optional[int] = _f(None, minimum=1)          # N
    reason: Optional[str] = _f(None, max_len=_LONG)      # first line of git's complaint

    @property
    def text(self) -> str:
        if self.applied:
            return "applied"
        return f"does not apply at patch {self.failed_seq}/{self.total}: {self.reason}"


@dataclass(frozen=True)
class TestComparison:
    """One selected test run on base and head. A status of None means the test does not exist there."""
    __test__ = False                                   # not a pytest class despite the name

    test_id: str = _f()
    file: str = _f(max_len=4096)
    function: str = _f()
    line: Optional[int] = _f(None, minimum=1)          # first line of the test function in head
    base_status: Optional[str] = _f(None, pattern=_STATUS)
    head_status: Optional[str] = _f(None, pattern=_STATUS)
    expect_base: Optional[str] = _f(None, pattern=_STATUS)   # __success / __failure → success / failure
    expect_head: Optional[str] = _f(None, pattern=_STATUS)
    variants_explored: int = _f(0, minimum=0)
    moved_failure_to_success: bool = False             # was __failure in base, __success in head
    base_reason: Optional[str] = _f(None, max_len=_LONG)
    head_reason: Optional[str] = _f(None, max_len=_LONG)


@dataclass(frozen=True)
class Finding:
    """A KASAN finding as `bpf-kasan run` reports it, plus how it changed from base to head."""
    change: Literal["new", "fixed", "persisting"]
    id: str = _f()
    test: str = _f()
    function: str = _f()
    insn: Optional[int] = _f(minimum=0)                # slot in its function; null when unattributed
    bug_type: str = _f(pattern=r"[a-z][a-z0-9-]{0,63}")     # slab-out-of-bounds, use-after-free, ...
    access: Literal["read", "write"] = "read"
    size: int = _f(0, minimum=0)
    address: int = _f(0, minimum=0)
    object: Optional[str] = _f(None, max_len=4096)     # what the address belongs to, when known
    title: str = _f("")                                # syzbot-style, normalised
    report: str = _f("", max_len=_LONG)                # the kernel-format report text
    mode: str = _f("", pattern=r"[a-z0-9_-]{0,32}")
    variant: str = _f("")
    file: Optional[str] = _f(None, max_len=4096)
    line: Optional[int] = _f(None, minimum=1)
    alt_titles: tuple[str, ...] = ()                   # e.g. "bad-access in <frame>" (syzbot's AltTitles)
    stricter: Optional[str] = _f(None, max_len=_LONG)  # why the kernel's own KASAN would stay silent

    @property
    def location(self) -> str | None:
        if not self.file:
            return None
        return f"{self.file}:{self.line}" if self.line is not None else self.file


@dataclass(frozen=True)
class Triage:
    """Everything the posting half renders: the series, whether it applied, tests compared, findings."""
    series: Series
    apply: ApplyOutcome
    base_rev: Optional[str] = _f(None, pattern=r"[0-9a-f]{7,64}")
    head_rev: Optional[str] = _f(None, pattern=r"[0-9a-f]{7,64}")
    tests: tuple[TestComparison, ...] = ()
    findings: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()                        # e.g. "no selftest touched by this series"

    def findings_by_change(self, change: str) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.change == change)

    @property
    def verdict(self) -> str:
        """conflict (did not apply) > fail (a new finding) > pass."""
        if not self.apply.applied:
            return "conflict"
        return "fail" if self.findings_by_change("new") else "pass"

    def summary(self) -> dict:
        counts = {c: len(self.findings_by_change(c)) for c in CHANGES}
        return {"verdict": self.verdict, "tests": len(self.tests),
                "moved_failure_to_success": sum(t.moved_failure_to_success for t in self.tests), **counts}

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, **_to_plain(self), "summary": self.summary()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: object, source: str = "<triage>") -> "Triage":
        if not isinstance(data, dict):
            raise BotError("triage JSON: top level must be an object", file=source)
        data = dict(data)
        if data.pop("schema", None) != SCHEMA:
            raise BotError(f"triage JSON: 'schema' must be {SCHEMA}", file=source)
        claimed = data.pop("summary", None)
        triage = _build(cls, data, "$", source)
        if claimed is not None and claimed != triage.summary():
            raise BotError("triage JSON: 'summary' does not match the findings and tests", file=source)
        return triage

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "<triage>") -> "Triage":
        if len(text) > 64 * 1024 * 1024:
            raise BotError("triage JSON: larger than 64 MiB", file=source)
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise BotError(f"triage JSON: not valid JSON: {e}", file=source) from None
        return cls.from_dict(data, source)


# --- (de)serialisation: one generic walker over the dataclass fields, so each class stays declarative ---

def parse_record(cls, data: object, source: str, path: str = "$"):
    """Validate one record (e.g. a `Finding` from a runner's results) exactly as `from_json` does."""
    return _build(cls, data, path, source)


def _to_plain(obj):
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [_to_plain(x) for x in obj]
    return obj


def _build(cls, data: object, path: str, source: str):
    if not isinstance(data, dict):
        _fail(path, "must be an object", source)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        _fail(path, f"unknown key {unknown[0]!r}", source)
    values = {}
    for f in dataclasses.fields(cls):
        where = f"{path}.{f.name}"
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                _fail(where, "is missing", source)
            continue
        values[f.name] = _value(hints[f.name], data[f.name], where, source, f.metadata)
    return cls(**values)


def _value(hint, value, path: str, source: str, meta):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:                         # Optional[X]
        if value is None:
            return None
        return _value(args[0], value, path, source, meta)
    if origin is Literal:
        if value not in args:
            _fail(path, f"must be one of {', '.join(map(str, args))}", source)
        return value
    if origin is tuple:
        if not isinstance(value, list) or len(value) > _MAX_ITEMS:
            _fail(path, f"must be a list of at most {_MAX_ITEMS} items", source)
        return tuple(_value(args[0], v, f"{path}[{i}]", source, {}) for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path, source)
    return _scalar(hint, value, path, source, meta or _meta())


def _scalar(hint, value, path: str, source: str, meta):
    # bool is an int subclass in Python; keep them apart so `true` is never a line number.
    if hint is bool:
        if not isinstance(value, bool):
            _fail(path, "must be true or false", source)
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool) or not -2**64 < value < 2**64:
            _fail(path, "must be an integer", source)
        if meta["minimum"] is not None and value < meta["minimum"]:
            _fail(path, f"must be >= {meta['minimum']}", source)
        return value
    if hint is str:
        if not isinstance(value, str):
            _fail(path, "must be a string", source)
        if len(value) > meta["max_len"]:
            _fail(path, f"longer than {meta['max_len']} characters", source)
        if meta["pattern"] is not None and not meta["pattern"].fullmatch(value):
            _fail(path, "has an invalid format", source)
        return value
    raise TypeError(f"triage_model: unsupported field type {hint!r}")   # a bug in this module


def _fail(path: str, problem: str, source: str):
    raise BotError(f"triage JSON: {path} {problem}", file=source)
