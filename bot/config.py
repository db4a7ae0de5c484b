"""A repository's bpf-kasan policy, read from `.github/bpf-kasan.yml`, and the decisions it drives.

Owns: strict parsing of the file (every error names the file, line and key), the defaults used
when the file is absent, the ignore list (each entry with a reason and an expiry date; expired
entries stop applying and are reported), and the verdict `fail-on` turns a triage into.

Imports only the stdlib, pyyaml and `bot.triage_model`; never github, jinja2 or the checks layer.

File shape::

    tests: [glob, ...]        # test files to consider (default: the kernel's verifier selftests)
    explore: 16               # input variants explored per test (0..1000)
    fail-on: new              # new | any | never
    ignore:
      - title: "KASAN: * in bpf_prog_ADDR_foo"   # fnmatch glob on the finding title, and/or
        test: "verifier_foo/*"                   # fnmatch glob on the test id
        reason: "why this is not a bug"
        expires: 2026-12-31
        link: https://...                        # optional
"""
from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import pathlib
from dataclasses import dataclass

import yaml

from bot.errors import BotError
from bot.triage_model import Finding, Triage

DEFAULT_PATH = ".github/bpf-kasan.yml"
FAIL_ON = ("new", "any", "never")
DEFAULT_TESTS = ("tools/testing/selftests/bpf/progs/verifier_*.c",)
DEFAULT_EXPLORE = 16
MAX_EXPLORE = 1000

_TOP_KEYS = ("tests", "explore", "fail-on", "ignore")
_ENTRY_KEYS = ("title", "test", "reason", "expires", "link")


@dataclass(frozen=True)
class IgnoreEntry:
    """One waiver: findings matching `title` and/or `test` (fnmatch globs) are not held against a series."""
    reason: str
    expires: datetime.date
    title: str | None = None
    test: str | None = None
    link: str | None = None
    line: int | None = None               # where it is in the config file, for reports

    def matches(self, finding: Finding) -> bool:
        if self.title is not None and not fnmatch.fnmatchcase(finding_title(finding), self.title):
            return False
        return self.test is None or fnmatch.fnmatchcase(finding.test, self.test)

    def expired(self, today: datetime.date) -> bool:
        return today > self.expires

    @property
    def pattern(self) -> str:
        parts = [f"title {self.title!r}" if self.title is not None else "",
                 f"test {self.test!r}" if self.test is not None else ""]
        return " and ".join(p for p in parts if p)


@dataclass(frozen=True)
class Waivers:
    """What the ignore list did to one triage: findings it removed, and entries that no longer apply."""
    ignored: tuple[tuple[Finding, IgnoreEntry], ...] = ()
    expired: tuple[IgnoreEntry, ...] = ()


@dataclass(frozen=True)
class Config:
    tests: tuple[str, ...] = DEFAULT_TESTS
    explore: int = DEFAULT_EXPLORE
    fail_on: str = "new"
    ignore: tuple[IgnoreEntry, ...] = ()
    source: str = "<defaults>"

    def waive(self, triage: Triage, today: datetime.date) -> tuple[Triage, Waivers]:
        """Drop findings that an unexpired entry covers; list the expired entries so they get fixed."""
        active = [e for e in self.ignore if not e.expired(today)]
        kept, ignored = [], []
        for finding in triage.findings:
            entry = next((e for e in active if e.matches(finding)), None)
            if entry is None:
                kept.append(finding)
            else:
                ignored.append((finding, entry))
        expired = tuple(e for e in self.ignore if e.expired(today))
        return dataclasses.replace(triage, findings=tuple(kept)), Waivers(tuple(ignored), expired)

    def conclusion(self, triage: Triage) -> str:
        """A check-run conclusion: failure, neutral (something to look at, not blocking) or success."""
        new = bool(triage.findings_by_change("new"))
        persisting = bool(triage.findings_by_change("persisting"))
        failing = {"new": new, "any": new or persisting, "never": False}[self.fail_on]
        if failing or (not triage.apply.applied and self.fail_on != "never"):
            return "failure"
        if new or persisting or not triage.apply.applied:
            return "neutral"
        return "success"


def finding_title(finding: Finding) -> str:
    """The syzbot-style title, or one built the same way when the runner left it empty."""
    if finding.title:
        return finding.title
    return f"KASAN: {finding.bug_type} {finding.access.capitalize()} in {finding.function}"


def load_config(path: str | pathlib.Path | None = None) -> Config:
    """Read `path` (default `.github/bpf-kasan.yml`); the defaults when the default file is absent."""
    explicit = path is not None
    path = pathlib.Path(path if explicit else DEFAULT_PATH)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise BotError("config file not found", file=str(path)) from None
        return Config()
    except (OSError, UnicodeDecodeError) as e:
        raise BotError(f"cannot read config: {e}", file=str(path)) from None
    return parse_config(text, str(path))


def parse_config(text: str, source: str = DEFAULT_PATH) -> Config:
    """Validate the YAML text strictly; any problem is a `BotError` naming `source`, line and key."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise BotError(f"not valid YAML: {getattr(e, 'problem', e)}", file=source,
                       line=mark.line + 1 if mark else None) from None
    if root is None:
        return Config(source=source)
    reader = _Reader(source)
    top = reader.mapping(root, "", _TOP_KEYS)
    return Config(
        tests=tuple(reader.strings(top["tests"], "tests")) if "tests" in top else DEFAULT_TESTS,
        explore=reader.integer(top["explore"], "explore", 0, MAX_EXPLORE) if "explore" in top
        else DEFAULT_EXPLORE,
        fail_on=reader.choice(top["fail-on"], "fail-on", FAIL_ON) if "fail-on" in top else "new",
        ignore=tuple(_ignore_entries(reader, top["ignore"])) if "ignore" in top else (),
        source=source)


def _ignore_entries(reader: "_Reader", node: yaml.Node):
    for i, item in enumerate(reader.sequence(node, "ignore")):
        key = f"ignore[{i}]"
        fields = reader.mapping(item, key, _ENTRY_KEYS)
        for required in ("reason", "expires"):
            if required not in fields:
                reader.fail(item, key, f"'{required}' is required")
        if "title" not in fields and "test" not in fields:
            reader.fail(item, key, "needs 'title' or 'test' to say what it ignores")
        optional = {k: reader.string(fields[k], f"{key}.{k}") for k in ("title", "test", "link") if k in fields}
        yield IgnoreEntry(reason=reader.string(fields["reason"], f"{key}.reason"),
                          expires=reader.date(fields["expires"], f"{key}.expires"),
                          line=item.start_mark.line + 1, **optional)


class _Reader:
    """Typed accessors over YAML nodes; each failure names the file, the node's line and the key."""

    def __init__(self, source: str):
        self.source = source
        self._constructor = yaml.constructor.SafeConstructor()

    def fail(self, node: yaml.Node, key: str, problem: str):
        where = f"{key}: " if key else ""
        raise BotError(f"{where}{problem}", file=self.source, line=node.start_mark.line + 1)

    def mapping(self, node: yaml.Node, key: str, allowed: tuple[str, ...]) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, key, "expected a mapping" + ("" if key else " at the top level"))
        out: dict[str, yaml.Node] = {}
        for k_node, v_node in node.value:
            name = k_node.value if isinstance(k_node, yaml.ScalarNode) else None
            path = f"{key}.{name}" if key else str(name)
            if name not in allowed:
                self.fail(k_node, path, f"unknown key (expected one of: {', '.join(allowed)})")
            if name in out:
                self.fail(k_node, path, "duplicate key")
            out[name] = v_node
        return out

    def sequence(self, node: yaml.Node, key: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, key, "expected a list")
        return node.value

    def _scalar(self, node: yaml.Node, key: str, expected: str):
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, key, f"expected {expected}")
        try:
            return self._constructor.construct_object(node)
        except yaml.YAMLError as e:               # e.g. a !!python tag: SafeLoader refuses it
            self.fail(node, key, f"expected {expected}: {getattr(e, 'problem', e)}")

    def string(self, node: yaml.Node, key: str) -> str:
        value = self._scalar(node, key, "a string")
        if not isinstance(value, str) or not value.strip():
            self.fail(node, key, f"expected a non-empty string, got {node.value!r}")
        return value

    def strings(self, node: yaml.Node, key: str) -> list[str]:
        values = [self.string(item, f"{key}[{i}]") for i, item in enumerate(self.sequence(node, key))]
        if not values:
            self.fail(node, key, "expected at least one glob")
        return values

    def integer(self, node: yaml.Node, key: str, low: int, high: int) -> int:
        value = self._scalar(node, key, "an integer")
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            self.fail(node, key, f"expected an integer from {low} to {high}, got {node.value!r}")
        return value

    def choice(self, node: yaml.Node, key: str, allowed: tuple[str, ...]) -> str:
        value = self._scalar(node, key, "a string")
        if value not in allowed:
            self.fail(node, key, f"expected one of {', '.join(allowed)}, got {node.value!r}")
        return value

    def date(self, node: yaml.Node, key: str) -> datetime.date:
        value = self._scalar(node, key, "a date")
        if isinstance(value, str):
            try:
                value = datetime.date.fromisoformat(value)
            except ValueError:
                pass
        if not isinstance(value, datetime.date) or isinstance(value, datetime.datetime):
            self.fail(node, key, f"expected a date YYYY-MM-DD, got {node.value!r}")
        return value
