"""Summaries of a triage: Markdown (PR comment, check run, job summary), plain text (mail), JSON.

Owns: syzbot-style dedup of findings by title, the order things are shown in (new findings with
their reports folded under them, the tests the verifier now accepts, then fixed and persisting),
escaping of untrusted text (titles, reports,
names and URLs all come from strangers' patches and programs), and cutting a summary to a size
limit, least important first, saying what was cut.

Uses jinja2 and `bot/templates/`; never github, the network or the checks layer.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import textwrap
from dataclasses import dataclass
import jinja2
from markupsafe import Markup

from bot.config import Waivers, finding_title
from bot.errors import BotError
from bot.triage_model import CHANGES, Finding, TestComparison, Triage

FORMATS = ("markdown", "text", "json")
COMMENT_LIMIT = 60_000          # GitHub refuses a comment over 65,536 chars; keep a margin
JOB_SUMMARY_LIMIT = 1_000_000   # a step summary over 1 MiB is dropped whole, not truncated
REPORT_CHARS = 16_000           # one report shown inline; the artifact keeps it all
_TEMPLATES = {"markdown": "summary.md.j2", "text": "summary.txt.j2"}


@dataclass(frozen=True)
class Group:
    """Findings with one title and one change: one bullet, one details section (syzbot-style dedup)."""
    change: str
    title: str
    first: Finding
    tests: tuple[str, ...]          # distinct tests it was seen in, first one first
    count: int                      # occurrences, variants included

    @property
    def other_tests(self) -> tuple[str, ...]:
        return self.tests[1:]


@dataclass(frozen=True)
class Moved:
    """A test the series moved from __failure to __success, and what KASAN made of it in head."""
    test: TestComparison
    found: tuple[str, ...]          # titles of head findings in this test


@dataclass(frozen=True)
class Section:
    change: str
    groups: tuple[Group, ...]       # the listed ones
    more: int                       # how many were not listed


@dataclass(frozen=True)
class View:
    """What a template shows; `details` and `listed` are the knobs a size limit turns down."""
    triage: Triage
    groups: dict[str, tuple[Group, ...]]
    moved: tuple[Moved, ...]
    waivers: Waivers
    details: dict[str, int]         # per change: how many groups get a details section
    listed: dict[str, int]          # per change, "moved" and "ignored": how many bullets

    @property
    def counts(self) -> dict:
        return self.triage.summary()

    @property
    def sections(self) -> list[Section]:
        return [Section(c, self.groups[c][:self.listed[c]], len(self.groups[c]) - self.listed[c])
                for c in CHANGES if self.groups[c]]

    @property
    def detailed(self) -> list[Group]:
        return [g for c in CHANGES for g in self.detailed_in(c)]

    def detailed_in(self, change: str) -> tuple[Group, ...]:
        return self.groups[change][:self.details[change]]

    @property
    def omitted(self) -> int:
        return sum(len(self.groups[c]) - self.details[c] for c in CHANGES)

    @property
    def moved_listed(self) -> tuple[Moved, ...]:
        return self.moved[:self.listed["moved"]]

    @property
    def ignored_listed(self):
        return self.waivers.ignored[:self.listed["ignored"]]

    def turned(self, knob: str, key: str, value: int) -> "View":
        return dataclasses.replace(self, **{knob: {**getattr(self, knob), key: value}})


# What to cut first when a summary is too big, and how far: (knob, key, lowest value).
# Details of persisting and fixed findings go first, then new details beyond the first few,
# then the other bullet lists; the first few new findings' details and bullets go last.
CUTS = (("details", "persisting", 0), ("details", "fixed", 0), ("details", "new", 3),
        ("listed", "persisting", 0), ("listed", "fixed", 0), ("listed", "ignored", 0),
        ("listed", "moved", 0), ("listed", "new", 20), ("details", "new", 0), ("listed", "new", 0))


def render(triage: Triage, fmt: str, *, limit: int | None = None, waivers: Waivers | None = None) -> str:
    """The summary in `fmt`; with `limit`, its UTF-8 size is at most `limit` bytes and any cut is stated."""
    if fmt not in FORMATS:
        raise BotError(f"unknown summary format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if fmt == "json":
        return triage.to_json()
    template = _environment(fmt).get_template(_TEMPLATES[fmt])
    view = build_view(triage, waivers or Waivers())
    if limit is None:
        return template.render(view=view)
    return _Fitter(template, limit, fmt).cut(view)


def headline(triage: Triage, waivers: Waivers | None = None) -> str:
    """One line for a check-run title or a patchwork description (plain text, no untrusted parts)."""
    if not triage.apply.applied:
        return f"bpf-kasan: the series does not apply at patch {triage.apply.failed_seq}/{triage.apply.total}"
    counts = {c: len(group_findings(triage.findings_by_change(c))) for c in CHANGES}
    ignored = f", {len(waivers.ignored)} ignored" if waivers and waivers.ignored else ""
    return f"bpf-kasan: {counts['new']} new, {counts['fixed']} fixed, {counts['persisting']} persisting{ignored}"


def build_view(triage: Triage, waivers: Waivers) -> View:
    groups = {c: group_findings(triage.findings_by_change(c)) for c in CHANGES}
    moved = _moved_tests(triage)
    listed = {**{c: len(groups[c]) for c in CHANGES}, "moved": len(moved), "ignored": len(waivers.ignored)}
    return View(triage, groups, moved, waivers, {c: len(groups[c]) for c in CHANGES}, listed)


def group_findings(findings: tuple[Finding, ...]) -> tuple[Group, ...]:
    """One group per title, in order of first appearance."""
    by_title: dict[str, list[Finding]] = {}
    for f in findings:
        by_title.setdefault(finding_title(f), []).append(f)
    return tuple(Group(fs[0].change, title, fs[0], tuple(dict.fromkeys(f.test for f in fs)), len(fs))
                 for title, fs in by_title.items())


def _moved_tests(triage: Triage) -> tuple[Moved, ...]:
    in_head = [f for f in triage.findings if f.change in ("new", "persisting")]
    return tuple(Moved(t, tuple(dict.fromkeys(finding_title(f) for f in in_head if f.test == t.test_id)))
                 for t in triage.tests if t.moved_failure_to_success)


class _Fitter:
    """Turns the `CUTS` knobs down one at a time, each by bisection, until the rendered text fits."""

    def __init__(self, template: jinja2.Template, limit: int, fmt: str):
        self.template, self.limit, self.fmt = template, limit, fmt
        self.text = ""

    def fits(self, view: View) -> bool:
        if _lower_bound(view) > self.limit:
            return False                            # cannot fit: do not even render it
        text = self.template.render(view=view)
        if _size(text) > self.limit:
            return False
        self.text = text
        return True

    def cut(self, view: View) -> str:
        if self.fits(view):
            return self.text
        for knob, key, floor in CUTS:
            current = getattr(view, knob)[key]
            if current <= floor:
                continue
            if not self.fits(view.turned(knob, key, floor)):
                view = view.turned(knob, key, floor)
                continue
            low, high = floor, current              # fits at low, not at high
            while high - low > 1:
                mid = (low + high) // 2
                low, high = (mid, high) if self.fits(view.turned(knob, key, mid)) else (low, mid)
            self.fits(view.turned(knob, key, low))  # leave self.text at the best fit
            return self.text
        return _hard_cut(self.template.render(view=view), self.limit, self.fmt)


def _lower_bound(view: View) -> int:
    """Bytes a view needs at least (reports and listed titles), to skip hopeless renders cheaply."""
    reports = sum(min(len(g.first.report), REPORT_CHARS) for g in view.detailed)
    titles = sum(len(g.title) for s in view.sections for g in s.groups)
    return reports + titles


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _hard_cut(text: str, limit: int, fmt: str) -> str:
    """Last resort for a limit below the smallest view: whole lines that fit, then the note."""
    note = omitted_note(None, fmt) + "\n"
    room = limit - _size(note) - 1
    if room < 0:
        return note.encode("utf-8")[:limit].decode("utf-8", "ignore")
    head = text.encode("utf-8")[:room].decode("utf-8", "ignore")
    return head[:head.rfind("\n") + 1] + "\n" + note


def omitted_note(count: int | None, fmt: str) -> str:
    what = f"{count} more findings omitted" if count is not None else "The rest of this summary was omitted"
    text = f"{what}; see the artifact."
    return f"**{text}**" if fmt == "markdown" else text


# --- escaping: every value a template prints is escaped unless it is Markup (already made safe) ---

_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()!|~])")
_HTML_SPECIAL = re.compile(r"[&<>\"'\[\]()*_`\\]")
_MD_LINE_START = re.compile(r"^([-+#>=]|\d+[.)])")
_MENTION = re.compile(r"([@#])(?=[\w-])")         # @user, @org/team, #123 would notify or cross-link
_SAFE_URL = re.compile(r"https?://[A-Za-z0-9\-._~:/?#\[\]@!$&'*+,;=%]{1,2000}")


def clean(text: str) -> str:
    """Drop terminal escapes, control characters and bidi overrides (keeping newlines and tabs)."""
    return _CONTROL.sub("", text.replace("\r\n", "\n"))


def one_line(text: str) -> str:
    return " ".join(clean(text).split())


def neutralise_mentions(text: str) -> str:
    return _MENTION.sub("\\1\u200b", text)


def md_inline(value) -> Markup:
    """Untrusted text for Markdown prose: no markup, no HTML, no mentions, one line."""
    if isinstance(value, Markup):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Markup(str(value))
    text = _MD_SPECIAL.sub(r"\\\1", one_line(str(value)))
    text = _MD_LINE_START.sub(r"\\\1", text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return Markup(neutralise_mentions(text))


def html_text(value) -> Markup:
    """Untrusted text inside raw HTML (a <summary>). CommonMark leaves Markdown there alone, but
    entities for its punctuation keep links and emphasis dead on renderers that do not."""
    text = neutralise_mentions(one_line(str(value)))
    return Markup(_HTML_SPECIAL.sub(lambda m: f"&#{ord(m[0])};", text).replace("&#38;", "&amp;"))


def code_span(value) -> Markup:
    """Untrusted text as inline code: the backtick run is longer than any inside it."""
    text = one_line(str(value)) or " "
    ticks = "`" * (_longest_run(text, "`") + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return Markup(f"{ticks}{pad}{text}{pad}{ticks}")


def code_block(value) -> Markup:
    """Untrusted multi-line text as a fenced block no backtick run inside it can close."""
    text = clip_report(clean(str(value))).strip("\n")
    fence = "`" * max(3, _longest_run(text, "`") + 1)
    return Markup(f"{fence}text\n{text}\n{fence}")


def md_link(value) -> Markup:
    """An http(s) URL as an autolink; anything else is shown as code, never as a link."""
    url = str(value)
    return Markup(f"<{url}>") if _SAFE_URL.fullmatch(url) else code_span(url)


def text_inline(value) -> Markup:
    return value if isinstance(value, Markup) else Markup(one_line(str(value)))


def text_block(value) -> Markup:
    return Markup(clip_report(clean(str(value))).strip("\n"))


def clip_report(text: str) -> str:
    if len(text) <= REPORT_CHARS:
        return text
    head = text[:text.rfind("\n", 0, REPORT_CHARS) + 1 or REPORT_CHARS]
    return f"{head}[... {len(text) - len(head)} more characters: the full report is in the artifact]"


def _longest_run(text: str, char: str) -> int:
    runs = re.findall(f"{re.escape(char)}+", text)
    return max(map(len, runs), default=0)


def _wrap(value, width: int = 76, first: str = "* ", rest: str = "  ") -> Markup:
    return Markup(textwrap.fill(one_line(str(value)), width=width, initial_indent=first,
                                subsequent_indent=rest, break_long_words=False, break_on_hyphens=False))


@functools.lru_cache(maxsize=None)
def _environment(fmt: str) -> jinja2.Environment:
    markdown = fmt == "markdown"
    env = jinja2.Environment(
        # Markdown: autoescape makes macro output Markup, so only raw values meet `finalize`.
        loader=jinja2.PackageLoader("bot", "templates"), autoescape=markdown, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        finalize=md_inline if markdown else text_inline)
    env.filters.update(html=html_text, code=code_span, fence=code_block, link=md_link,
                       block=text_block, wrap=_wrap, one_line=text_inline)
    env.globals.update(note=lambda n: Markup(omitted_note(n, fmt)), title_of=finding_title)
    return env
