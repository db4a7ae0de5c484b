"""`bpf-kasan merge`: shards combined, summary recomputed, malformed or overlapping shards refused."""
from __future__ import annotations

import json
import re

import pytest

from bot.cli import main


def _shard(tmp_path, name, tests, findings=(), summary=None):
    doc = {"tests": [{"id": i, "file": f"{i}.data", "name": i, "status": s, "findings": list(refs), "engine": "jit"}
                     for i, s, refs in tests],
           "findings": [{"id": f, "title": f"KASAN: t {f}"} for f in findings],
           "summary": summary or {"tests": 999}}                      # a shard's own summary is ignored
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def test_merge_recomputes_the_summary(tmp_path):
    a = _shard(tmp_path, "results-a.json", [("t1", "pass", ()), ("t2", "fail", ("f1",))], ["f1"])
    b = _shard(tmp_path, "results-b.json", [("t3", "skip", ()), ("t4", "error", ())])
    out = tmp_path / "all.json"
    assert main(["merge", a, b, "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [t["id"] for t in doc["tests"]] == ["t1", "t2", "t3", "t4"]
    assert doc["tests"][0]["engine"] == "jit" and doc["findings"] == [{"id": "f1", "title": "KASAN: t f1"}]
    assert doc["summary"] == {"tests": 4, "passed": 1, "failed": 1, "errors": 1, "skipped": 1, "findings": 1}


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    ("[]", "not a results document"),
    ('{"tests": [], "findings": {}}', "not a results document"),
    ('{"tests": [{"id": "t", "status": "weird"}], "findings": []}', r"tests\[0\] \(t\): status must be one of"),
    ('{"tests": [{"id": "t", "status": "pass"}, {"id": "t", "status": "pass"}], "findings": []}',
     r"tests\[1\]: needs a unique string 'id'"),
    ('{"tests": [{"id": "t", "status": "fail", "findings": ["nope"]}], "findings": []}',
     r"'findings' must list ids of this shard's findings"),
    ('{"tests": [], "findings": [{"title": "x"}]}', r"findings\[0\]: needs a unique string 'id'"),
])
def test_malformed_shard_is_a_one_line_error(tmp_path, capsys, content, message):
    bad = tmp_path / "results-bad.json"
    bad.write_text(content)
    good = _shard(tmp_path, "results-good.json", [("t9", "pass", ())])
    assert main(["merge", good, str(bad), "-o", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bpf-kasan: error: {bad}: ") and err.count("\n") == 1
    assert re.search(message, err)
    assert not (tmp_path / "out.json").exists()


def test_overlapping_shards_are_refused(tmp_path, capsys):
    a = _shard(tmp_path, "results-a.json", [("t1", "pass", ())])
    b = _shard(tmp_path, "results-b.json", [("t2", "pass", ()), ("t1", "fail", ())])
    assert main(["merge", a, b]) == 2
    assert f"{b}: test 't1' is also in {a}: shards overlap" in capsys.readouterr().err
    c = _shard(tmp_path, "results-c.json", [("t5", "fail", ("f1",))], ["f1"])
    d = _shard(tmp_path, "results-d.json", [("t6", "fail", ("f1",))], ["f1"])
    assert main(["merge", c, d]) == 2
    assert "finding 'f1' is also in" in capsys.readouterr().err


def test_missing_shard(tmp_path, capsys):
    assert main(["merge", str(tmp_path / "nope.json")]) == 2
    assert "cannot read results: No such file or directory" in capsys.readouterr().err
