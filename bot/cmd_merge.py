"""`bpf-kasan merge results-*.json -o OUT`: combine the results JSON of CI shards into one document.

Each shard is checked before anything is written: the runner's shape (`tests`, `findings`,
`summary`), test statuses, finding ids that each test's `findings` list points at, and no test id or
finding id present in two shards (overlapping shards mean the matrix ran something twice, and a
silent merge would double-count it). The summary is recomputed from the merged tests, never summed.
Fields the runner adds later are carried through untouched. Exit status 0, or 2 for bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", nargs="+", metavar="RESULTS.json", help="results JSON of `bpf-kasan run --json`")
    parser.add_argument("-o", "--output", metavar="OUT", help="write the merged JSON here (default: stdout)")


def main(args: argparse.Namespace) -> int:
    merged = merge([load_shard(path) for path in args.shards])
    text = json.dumps(merged, indent=2) + "\n"
    if args.output:
        from bot.cmd_triage import write_output
        write_output(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def load_shard(path: str) -> tuple[str, dict]:
    from bot.errors import BotError
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise BotError(f"cannot read results: {e.strerror}", file=path) from None
    except (ValueError, RecursionError) as e:
        raise BotError(f"not valid JSON: {e}", file=path) from None
    _check_shard(doc, path)
    return path, doc


def _check_shard(doc, path: str) -> None:
    from bot.errors import BotError
    from checks.results import STATUSES

    def fail(message: str):
        raise BotError(message, file=path)

    if not isinstance(doc, dict) or not isinstance(doc.get("tests"), list) or not isinstance(doc.get("findings"), list):
        fail("not a results document: expected an object with 'tests' and 'findings' lists")
    finding_ids = set()
    for i, f in enumerate(doc["findings"]):
        if not isinstance(f, dict) or not isinstance(f.get("id"), str) or f["id"] in finding_ids:
            fail(f"findings[{i}]: needs a unique string 'id'")
        finding_ids.add(f["id"])
    seen = set()
    for i, t in enumerate(doc["tests"]):
        if not isinstance(t, dict) or not isinstance(t.get("id"), str) or t["id"] in seen:
            fail(f"tests[{i}]: needs a unique string 'id'")
        seen.add(t["id"])
        if t.get("status") not in STATUSES:
            fail(f"tests[{i}] ({t['id']}): status must be one of {', '.join(STATUSES)}")
        refs = t.get("findings", [])
        if not isinstance(refs, list) or any(r not in finding_ids for r in refs):
            fail(f"tests[{i}] ({t['id']}): 'findings' must list ids of this shard's findings")


def merge(shards: list[tuple[str, dict]]) -> dict:
    """One document: tests and findings in shard order, overlaps refused, summary recomputed."""
    from bot.errors import BotError

    tests, findings = [], []
    owner: dict[tuple[str, str], str] = {}
    for path, doc in shards:
        for kind, items in (("test", doc["tests"]), ("finding", doc["findings"])):
            for item in items:
                first = owner.setdefault((kind, item["id"]), path)
                if first != path:
                    raise BotError(f"{kind} {item['id']!r} is also in {first}: shards overlap", file=path)
        tests.extend(doc["tests"])
        findings.extend(doc["findings"])
    return {"tests": tests, "findings": findings, "summary": summarise(tests, findings)}


def summarise(tests: list[dict], findings: list[dict]) -> dict:
    """The runner's own summary, computed over plain rows (checks.results.Summary counts statuses)."""
    from types import SimpleNamespace

    from checks.results import Summary
    return Summary.of([SimpleNamespace(status=t["status"]) for t in tests], findings).to_dict()
