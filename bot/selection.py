"""Which tests a series touches: selftest files changed under the configured globs, and within each
file the test functions whose extent (in the head tree) contains a changed line.

Function extents come from the selftest importer (`checks.kselftest`) when it offers case line
numbers, else from a small scan for `SEC("...")` heads: a test runs from its SEC line to the first
`}` in column 0 after its function head. `all_in_file` selects every test of a touched file.

Imports the stdlib, `bot.apply` (for git), `checks.kselftest` (lazily); never github or the network.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from bot.apply import git
from jit.errors import BpfKasanError

DEFAULT_GLOBS = ("tools/testing/selftests/bpf/progs/*.c", "**/verifier_*.c")

_SEC = re.compile(r'^\s*SEC\(\s*"')
_STRING = re.compile(r'"(?:\\.|[^"\\])*"')
_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(\s*(\w*)")
_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@", re.M)
_ARG_NAMED = {"BPF_PROG", "BPF_KPROBE", "BPF_KRETPROBE", "BPF_STRUCT_OPS", "BPF_PROG2"}


@dataclass(frozen=True)
class TestFunction:
    """One test in a selftest file: its name, where its head is, its extent, and what it expects."""
    __test__ = False                      # not a pytest class despite the name

    file: str             # path relative to the tree
    name: str
    line: int             # the function head
    start: int            # the SEC line
    end: int              # the closing brace
    expect: str           # "success" or "failure" (privileged load; none given means success)
    description: str | None = None


@dataclass(frozen=True)
class Selection:
    files: tuple[str, ...]
    tests: tuple[TestFunction, ...]


def glob_regex(pattern: str) -> re.Pattern:
    """`*` and `?` stay within one path component; `**/` spans any number of them (including none)."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append(r"(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(r".*")
            i += 2
        else:
            out.append({"*": r"[^/]*", "?": r"[^/]"}.get(pattern[i], re.escape(pattern[i])))
            i += 1
    return re.compile("".join(out))


def matches(path: str, globs) -> bool:
    return any(glob_regex(g).fullmatch(path) for g in globs)


def select_tests(head_dir: Path, base_rev: str, head_rev: str, globs=DEFAULT_GLOBS,
                 all_in_file: bool = False) -> Selection:
    """Tests of the head tree added or changed between base_rev and head_rev."""
    listing = git(head_dir, "diff", "--name-only", "--diff-filter=AMR", "-z", base_rev, head_rev)
    files = tuple(p for p in listing.stdout.decode().split("\0") if p and matches(p, globs))
    tests = []
    for rel in files:
        functions = functions_in(head_dir / rel, rel)
        if not all_in_file:
            changed = changed_lines(head_dir, base_rev, head_rev, rel)
            functions = [f for f in functions if any(f.start <= n <= f.end for n in changed)]
        tests.extend(functions)
    return Selection(files, tuple(tests))


def changed_lines(repo: Path, base_rev: str, head_rev: str, rel: str) -> set[int]:
    """Head-side line numbers added or changed; a pure deletion marks the line it follows."""
    diff = git(repo, "diff", "-U0", "--no-color", "--no-ext-diff", base_rev, head_rev, "--", rel)
    lines: set[int] = set()
    for m in _HUNK.finditer(diff.stdout.decode(errors="replace")):
        start, count = int(m.group(1)), int(m.group(2) or 1)
        lines.update(range(start, start + max(count, 1)) if count else (max(start, 1),))
    return lines


def functions_in(path: Path, rel: str) -> list[TestFunction]:
    """The tests of one selftest file, as the importer sees them when it can; [] if the file is absent."""
    if not path.is_file():
        return []
    found = scan_tests(path.read_text(errors="replace").splitlines(), rel)
    cases = _imported_cases(path)
    return found if cases is None else _as_imported(found, cases, rel)


def scan_tests(lines: list[str], rel: str) -> list[TestFunction]:
    """Every `SEC("...")`-headed function of a file's text, with its extent and expectation."""
    found, i = [], 0
    while i < len(lines):
        if _SEC.match(lines[i]) and (test := _scan_test(lines, i, rel)):
            found.append(test)
            i = test.end
        else:
            i += 1
    return found


def _imported_cases(path: Path) -> dict | None:
    """name → case from the selftest importer; None when it is not available or refuses the file."""
    try:
        from checks.kselftest import load_cases
        return {c.name: c for c in load_cases(str(path))}
    except (ImportError, NotImplementedError, BpfKasanError):
        return None                       # the scan alone still selects tests


def _as_imported(found: list[TestFunction], cases: dict, rel: str) -> list[TestFunction]:
    """The importer knows which programs are tests (not `__auxiliary`, not in a dead `#if` branch,
    including macro-generated ones) and what they expect; the scan knows their extents."""
    scanned = {t.name: t for t in found}
    out = []
    for case in cases.values():
        if case.auxiliary:
            continue
        t = scanned.get(case.name)
        if t is None:                     # e.g. generated by a macro: only its own line is known
            t = TestFunction(rel, case.name, case.line, case.line, case.line, case.expect)
        line = case.line if t.start <= case.line <= t.end else t.line
        out.append(replace(t, line=line, expect=case.expect, description=case.description))
    return sorted(out, key=lambda t: t.line)


def _scan_test(lines: list[str], sec: int, rel: str) -> TestFunction | None:
    """From a SEC line: annotations, then the function head, then the body up to `}` in column 0."""
    notes = [lines[sec]]
    for j in range(sec + 1, min(sec + 200, len(lines))):
        if lines[j].lstrip().startswith(("/*", "*", "//", "#")):
            continue                      # a comment or directive between the SEC line and the head
        if _SEC.match(lines[j]) or _STRING.sub('""', lines[j]).split("//")[0].rstrip().endswith(";"):
            return None                   # a variable placed in a section, e.g. SEC(".data.x") char x[4];
        name = _function_name(lines[j])
        if name is None:
            notes.append(lines[j])
            continue
        end = next((k for k in range(j, len(lines)) if lines[k].startswith("}")), len(lines) - 1)
        text = "\n".join(notes + [lines[j]])
        desc = re.search(r'__description\("((?:\\.|[^"\\])*)"\)', text)
        expect = "failure" if re.search(r"\b__failure\b", text) else "success"
        return TestFunction(rel, name, j + 1, sec + 1, end + 1, expect, desc.group(1) if desc else None)
    return None


def _function_name(line: str) -> str | None:
    """The function declared on `line`, or None when it holds only annotations (`__x(...)`)."""
    code = _STRING.sub('""', line.split("//")[0])
    if "(" not in code or _SEC.match(code):
        return None
    for m in _CALL.finditer(code):
        name, first_arg = m.groups()
        if name.startswith("__"):
            continue
        return first_arg if name in _ARG_NAMED and first_arg else name
    return None
