"""The README stays true: its first commands are the main job and the test command `.ci/run` runs,
the output it shows is what the main job prints now, and every flag it names exists."""
from __future__ import annotations

import re
import subprocess

from _cli_help import flags_in, help_flags
from _git_fixtures import ROOT

README = (ROOT / "README.md").read_text()
MAIN_JOB = "bpf-kasan triage --mbox bot/examples/oob-map-value.mbox --tree bot/examples/tree"
TEST_COMMAND = "python -m pytest"
_OUTPUT = re.compile(r"<!-- triage output: begin -->\n(.*?)<!-- triage output: end -->", re.S)
_FENCED = re.compile(r"^```[^\n]*\n.*?^```\n", re.S | re.M)
_COMMANDS = ("run", "jit", "triage", "post", "merge")


def first_commands(text: str, count: int) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.startswith("    ")][:count]


def test_the_first_lines_set_up_and_run_the_main_job_then_the_tests():
    main_job, tests = first_commands(README, 2)
    head = "\n".join(README.splitlines()[:12])
    assert main_job in head and tests in head
    for command in (main_job, tests):
        assert "python3 -m venv .venv" in command and "pip install -e '.[test]'" in command
    assert main_job.endswith("&& " + MAIN_JOB) and tests.endswith("&& " + TEST_COMMAND)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install --quiet -e '.[test]'" in ci and f"\n{TEST_COMMAND} " in ci


def without_reports(markdown: str) -> str:
    """The summary without its fenced kernel reports, whose addresses follow the emulator's layout."""
    return _FENCED.sub("```\n(report)\n```\n", markdown)


def test_the_output_shown_is_what_the_main_job_prints():
    done = subprocess.run(MAIN_JOB.split(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr == ""          # 1: a new finding
    (shown,) = _OUTPUT.findall(README)
    assert without_reports(shown) == without_reports(done.stdout.rstrip("\n") + "\n")
    assert _FENCED.search(shown), "the report is shown, folded"


def documented_flags(text: str) -> dict[str, set[str]]:
    """command → flags after each `bpf-kasan CMD` in the text: up to the closing backtick of an inline
    span, or to the end of the line (or `&&`) in an indented command line."""
    found: dict[str, set[str]] = {}
    for m in re.finditer(rf"\bbpf-kasan ({'|'.join(_COMMANDS)})\b", text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        in_block = text.startswith("    ", line_start)
        stop = text.find("\n", m.end()) if in_block else text.find("`", m.end())
        rest = text[m.end():stop if stop >= 0 else None].split("&&")[0]
        found.setdefault(m.group(1), set()).update(flags_in(rest))
    return found


def commands_section_flags(text: str) -> dict[str, set[str]]:
    """command → every flag in the Commands section's paragraph for it, bullets included (each
    paragraph starts with a line "`bpf-kasan CMD ...")."""
    section = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    found: dict[str, set[str]] = {}
    for chunk in re.split(r"\n(?=`bpf-kasan )", section)[1:]:
        command = re.match(r"`bpf-kasan (\w+)", chunk).group(1)
        found.setdefault(command, set()).update(flags_in(chunk))
    return found


def test_every_flag_the_readme_names_exists():
    documented = documented_flags(README)
    for command, flags in commands_section_flags(README).items():
        documented.setdefault(command, set()).update(flags)
    assert set(documented) == set(_COMMANDS)
    assert {"--base", "--tests", "--all-in-file", "--format", "--reply", "--post-patchwork"} <= documented["triage"]
    assert {"--shard", "--explore", "--what-if", "--json"} <= documented["run"]
    for command, flags in documented.items():
        assert flags - help_flags(command) == set(), f"README: bpf-kasan {command} has no such flag"
    assert documented_flags("`bpf-kasan merge --shards 2`") == {"merge": {"--shards"}}
