"""syzbot-style titles for KASAN reports, so that findings dedup the way kernel developers expect.

A title reads `KASAN: <bug-type> <Read|Write> in <frame>`, with an alternative title
`bad-access in <frame>` that merges the variants of one bad access. Titles are normalised so
that nothing run-specific (program tag, offsets, addresses, pids) splits a bucket:
`bpf_prog_6deef7357e7b4530_foo+0x42/0x100` becomes `bpf_prog_ADDR_foo`.

`titles_in_log` finds every KASAN report in a log (multishot output holds several) and titles
each one, marking those it cannot read fully as corrupted rather than failing.

Owns: the title grammar and its normalisation tables. Must not import unicorn, capstone or bot/.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_TITLE = 120


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern
    replacement: str
    why: str


# Applied in order. Offsets go first so that a long offset is not mistaken for an address.
NORMALISATION = (
    Rule("offsets", re.compile(r"([A-Za-z_.][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+"), r"\1",
         "code offsets and function lengths change with every build"),
    Rule("executor", re.compile(r"syz-executor\.?\d+"), "syz-executor",
         "fuzzer process numbers are per-VM"),
    Rule("tags", re.compile(r"\bbpf_prog_[0-9a-f]{16}(?![0-9a-f])"), "bpf_prog_ADDR",
         "a program's tag changes with every change to its instructions"),
    Rule("addresses", re.compile(r"(?<![0-9A-Za-z])(?:0x[0-9a-f]{6,}|(?=[a-f]*\d)[0-9a-f]{6,})"
                                    r"(?![0-9A-Za-z])"),
         "ADDR", "addresses (0x and 6+ hex digits, or a bare run of 6+ with a decimal digit in it, so "
         "that words such as 'accede' stay) differ between runs"),
    Rule("ipv4", re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])"), "IP",
         "network addresses are test inputs, not the bug"),
    Rule("file-lines", re.compile(r"(\.\w+):\d+"), r"\1:LINE",
         "line numbers move with unrelated edits"),
    Rule("cpus", re.compile(r"CPU#\d+"), "CPU", "the CPU a report ran on is chance"),
    Rule("numbers", re.compile(r"(?<!\w)\d+(?!\w)"), "NUM",
         "any other stray decimal (sizes, pids) is run-specific"),
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SPACES = re.compile(r"\s+")

# Frames that are never the guilty one: the sanitizer, the report machinery, allocators and
# the memory/string routines that merely executed a bad access on a caller's behalf.
SKIP_FRAMES = tuple(re.compile(p) for p in (
    r"^__asan_", r"^__kasan", r"^kasan_", r"^__sanitizer", r"^check_memory_region",
    r"^print_address_description", r"^print_report", r"^dump_stack", r"^show_stack", r"^panic",
    r"^k?v?[mzc]alloc", r"^kmem_cache", r"^slab_", r"^kfree", r"^mem(cpy|move|set|cmp|chr)",
    r"^str(n?cpy|n?cmp|n?len|lcpy|scpy|n?cat)$", r"^copy_(to|from)_user",
))


def normalise(title: str) -> str:
    """Apply every NORMALISATION rule, drop control characters, collapse spaces, cut to 120."""
    for rule in NORMALISATION:
        title = rule.pattern.sub(rule.replacement, title)
    title = _CONTROL.sub("", _SPACES.sub(" ", title)).strip()
    return title[:MAX_TITLE].rstrip()


def kasan_title(bug_type: str, is_write: bool, frame: str) -> str:
    return normalise(f"KASAN: {bug_type} {'Write' if is_write else 'Read'} in {frame}")


def alt_title(frame: str) -> str:
    return normalise(f"bad-access in {frame}")


def crash_type(bug_type: str, is_write: bool) -> str:
    """The report's type: KASAN-READ, KASAN-WRITE, KASAN-USE-AFTER-FREE-{READ,WRITE}, ..."""
    if bug_type in ("invalid-free", "double-free"):
        return "KASAN-INVALID-FREE"
    kind = "USE-AFTER-FREE-" if bug_type.endswith("use-after-free") else ""
    return f"KASAN-{kind}{'WRITE' if is_write else 'READ'}"


def frame_name(symbol: str) -> str:
    """`func+0x1f/0x40` -> `func`; a leading `? ` (unreliable frame) is dropped too."""
    return symbol.removeprefix("? ").split("+", 1)[0].strip()


def guilty_frame(candidates) -> str | None:
    """The first candidate (header function, then the call trace) that is not infrastructure."""
    for symbol in candidates:
        name = frame_name(symbol)
        if name and not any(p.search(name) for p in SKIP_FRAMES):
            return name
    return None


@dataclass(frozen=True)
class Title:
    title: str
    alt_titles: tuple[str, ...]
    type: str
    frame: str | None
    corrupted: str = ""          # why the report could not be read fully; empty when it could


_HEADER = re.compile(r"BUG: KASAN: ([\w-]+) in (\S+)")
_ACCESS = re.compile(r"\b(Read|Write) (?:of size \d+ )?at addr")
_FRAME = re.compile(r"^\s*(?:\? )?([A-Za-z_.][\w.]*\+0x[0-9a-f]+/0x[0-9a-f]+)", re.M)
_RULER = "=" * 66
_TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\] ?", re.M)


def titles_in_log(text: str) -> list[Title]:
    """One Title per `BUG: KASAN:` header in `text`, in order. printk timestamps are ignored."""
    text = _TIMESTAMP.sub("", text)
    starts = [m.start() for m in _HEADER.finditer(text)]
    return [_title_of(text[a:b]) for a, b in zip(starts, starts[1:] + [len(text)])]


def _title_of(report: str) -> Title:
    header = _HEADER.match(report)
    bug_type, symbol = header.group(1), header.group(2)
    body = report.split(_RULER, 1)[0]
    access = _ACCESS.search("\n".join(body.splitlines()[1:4]))
    trace = body.split("Call Trace:", 1)[1] if "Call Trace:" in body else ""
    frame = guilty_frame([symbol] + _FRAME.findall(trace))
    if access is None or frame is None:
        why = "no Read/Write line after the header" if access is None else "no frame to blame"
        return Title(normalise(f"KASAN: {bug_type} in {frame_name(symbol)}"), (), "KASAN", frame, why)
    is_write = access.group(1) == "Write"
    return Title(kasan_title(bug_type, is_write, frame), (alt_title(frame),),
                 crash_type(bug_type, is_write), frame)
