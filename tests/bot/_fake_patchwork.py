"""A small fake of patchwork's REST API 1.2: series and their mbox, patches by Message-ID, and
per-patch checks.

It keeps patchwork's rules: checks are append-only, a POST needs `Authorization: Token`, `state`
must be pending/success/warning/fail, `context` must match ^[-a-zA-Z0-9_]+$, and `target_url`
is at most 200 characters (400 Bad Request otherwise). Check lists honour context, order=-date
and per_page.
"""
from __future__ import annotations

import itertools
import re

from _fake_http import FakeServer, Reply

_API = r"/api/1\.2"


class FakePatchwork(FakeServer):
    def __init__(self, *, token: str = "pw-token"):
        super().__init__()
        self.token = token
        self.patches: dict[int, dict] = {}
        self.checks: dict[int, list[dict]] = {}
        self._clock = itertools.count(1)
        self.route("GET", _API + r"/patches", self._find_patches)
        self.route("GET", _API + r"/patches/(?P<id>\d+)/checks", self._list_checks)
        self.route("POST", _API + r"/patches/(?P<id>\d+)/checks", self._create_check)
        self.series: dict[int, bytes] = {}
        self.route("GET", r"/api/series/(?P<id>\d+)", self._get_series)
        self.route("GET", r"/series/(?P<id>\d+)/mbox", self._series_mbox)

    def add_series(self, series_id: int, mbox: bytes, msgids, first_patch_id: int = 100) -> list[int]:
        """A complete series, its mbox, and one patch per Message-ID; returns the patch ids."""
        self.series[series_id] = mbox
        ids = list(range(first_patch_id, first_patch_id + len(msgids)))
        for patch_id, msgid in zip(ids, msgids):
            self.add_patch(patch_id, msgid)
        return ids

    def add_patch(self, patch_id: int, msgid: str, project: str = "netdevbpf") -> None:
        self.patches[patch_id] = {"id": patch_id, "msgid": f"<{msgid}>", "project": {"link_name": project}}
        self.checks[patch_id] = []

    def posted(self) -> list:
        return self.writes("POST")

    def _find_patches(self, request, match):
        msgid = request.query.get("msgid", "").strip("<>")
        project = request.query.get("project")
        found = [p for p in self.patches.values() if p["msgid"] == f"<{msgid}>"
                 and (project is None or p["project"]["link_name"] == project)]
        return Reply(200, found)

    def _get_series(self, request, match):
        series_id = int(match["id"])
        if series_id not in self.series:
            return Reply(404, {"detail": "Not found."})
        total = sum(1 for p in self.patches.values())
        return Reply(200, {"id": series_id, "received_all": True, "total": total, "received_total": total,
                           "web_url": f"{self.url}/project/bpf/list/?series={series_id}",
                           "mbox": f"{self.url}/series/{series_id}/mbox/"})

    def _series_mbox(self, request, match):
        mbox = self.series.get(int(match["id"]))
        return Reply(200, mbox, {"Content-Type": "text/plain"}) if mbox else Reply(404, {"detail": "Not found."})

    def _list_checks(self, request, match):
        checks = self.checks.get(int(match["id"]))
        if checks is None:
            return Reply(404, {"detail": "Not found."})
        context = request.query.get("context")
        chosen = [c for c in checks if context is None or c["context"] == context]
        if request.query.get("order") == "-date":
            chosen = sorted(chosen, key=lambda c: c["date"], reverse=True)
        return Reply(200, chosen[:int(request.query.get("per_page", 30))])

    def _create_check(self, request, match):
        if request.headers.get("authorization") != f"Token {self.token}":
            return Reply(403, {"detail": "Authentication credentials were not provided."})
        checks = self.checks.get(int(match["id"]))
        if checks is None:
            return Reply(404, {"detail": "Not found."})
        fields = request.json()
        problem = _invalid(fields)
        if problem:
            return Reply(400, {problem: ["invalid"]})
        check = {"id": len(checks) + 1, "date": next(self._clock), **fields}
        checks.append(check)
        return Reply(201, check)


def _invalid(fields: dict) -> str | None:
    if fields.get("state") not in ("pending", "success", "warning", "fail"):
        return "state"
    if not re.fullmatch(r"[-a-zA-Z0-9_]{1,255}", fields.get("context", "")):
        return "context"
    if len(fields.get("target_url", "")) > 200:
        return "target_url"
    return None
