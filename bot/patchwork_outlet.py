"""Patchwork checks for a series, as KPD posts them: one context, on every patch of the series.

Owns: the REST calls (`/api/1.2/patches/?msgid=`, `/api/1.2/patches/<id>/checks/`, token auth),
the context slug (`^[-a-zA-Z0-9_]+$`), target URLs cut to patchwork's 200 characters, and the two
posting rules: a conclusive check is never downgraded to pending, and a check identical to the
newest one for that context is not posted again (checks are append-only).

Uses urllib from the stdlib; never github, jinja2 or the checks layer.
"""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from bot.errors import BotError
from bot.triage_model import Series

API = "/api/1.2"
STATES = ("pending", "success", "warning", "fail")
CONCLUSIVE = ("success", "warning", "fail")
TARGET_URL_MAX = 200
CONTEXT_MAX = 255
_STATE_OF = {"success": "success", "neutral": "warning", "failure": "fail", None: "pending"}


@dataclass(frozen=True)
class Check:
    state: str
    context: str
    description: str
    target_url: str | None = None

    def __post_init__(self):
        if self.state not in STATES:
            raise BotError(f"patchwork: unknown check state {self.state!r}")
        if not re.fullmatch(r"[-a-zA-Z0-9_]{1,255}", self.context):
            raise BotError(f"patchwork: context {self.context!r} must match ^[-a-zA-Z0-9_]+$")

    def fields(self) -> dict[str, str]:
        out = {"state": self.state, "context": self.context, "description": self.description}
        if self.target_url:
            out["target_url"] = self.target_url
        return out


def context_slug(name: str) -> str:
    """KPD's rule: every character outside [-a-zA-Z0-9_] becomes '_'."""
    slug = re.sub(r"[^-a-zA-Z0-9_]", "_", name)[:CONTEXT_MAX]
    if not slug:
        raise BotError("patchwork: the check context is empty")
    return slug


def fit_target_url(url: str | None) -> str | None:
    """At most 200 characters: drop the fragment, then the query, then cut what is left."""
    if not url or len(url) <= TARGET_URL_MAX:
        return url or None
    parts = urllib.parse.urlsplit(url)
    for shorter in (parts._replace(fragment=""), parts._replace(fragment="", query="")):
        candidate = urllib.parse.urlunsplit(shorter)
        if len(candidate) <= TARGET_URL_MAX:
            return candidate
    return candidate[:TARGET_URL_MAX]


def state_for(conclusion: str | None) -> str:
    """A check-run conclusion (or None while running) as a patchwork state."""
    try:
        return _STATE_OF[conclusion]
    except KeyError:
        raise BotError(f"patchwork: no check state for conclusion {conclusion!r}") from None


def decide(latest: dict | None, check: Check) -> str:
    """"post", "same" (identical to the newest check) or "kept" (never downgrade to pending)."""
    if latest is None:
        return "post"
    if check.state == "pending" and latest.get("state") in CONCLUSIVE:
        return "kept"
    same = (latest.get("state") == check.state and (latest.get("target_url") or None) == check.target_url
            and (latest.get("description") or "") == check.description)
    return "same" if same else "post"


class PatchworkClient:
    """A patchwork server's REST API, authenticated with `Authorization: Token <token>`."""

    def __init__(self, server: str, token: str | None, *, timeout: float = 15):
        if not server.startswith(("https://", "http://")):
            raise BotError(f"patchwork: server must be an http(s) URL, got {server!r}")
        self.server, self.token, self.timeout = server.rstrip("/"), token, timeout

    def patch_ids(self, series: Series, project: str | None = None) -> list[int]:
        """Patchwork ids of the series' patches, found by Message-ID, in series order."""
        ids = []
        for patch in series.patches:
            if not patch.msgid:
                raise BotError(f"patchwork: patch {patch.seq}/{patch.total} has no Message-ID, "
                               "so it cannot be found on patchwork")
            query = {"msgid": patch.msgid, **({"project": project} if project else {})}
            found = self._get(f"{API}/patches/", query)
            if not isinstance(found, list) or len(found) != 1 or not isinstance(found[0].get("id"), int):
                raise BotError(f"patchwork: expected one patch with Message-ID <{patch.msgid}>, "
                               f"found {len(found) if isinstance(found, list) else 'no list'}")
            ids.append(found[0]["id"])
        return ids

    def latest_check(self, patch_id: int, context: str) -> dict | None:
        query = {"context": context, "order": "-date", "per_page": "1"}
        found = self._get(f"{API}/patches/{patch_id}/checks/", query)
        return found[0] if isinstance(found, list) and found and isinstance(found[0], dict) else None

    def create_check(self, patch_id: int, check: Check) -> None:
        if not self.token:
            raise BotError("PATCHWORK_TOKEN is not set: posting checks needs a token")
        body = urllib.parse.urlencode(check.fields()).encode()
        self._call("POST", f"{API}/patches/{patch_id}/checks/", None, body)

    def _get(self, path: str, query: dict):
        return self._call("GET", path, query, None)

    def _call(self, method: str, path: str, query: dict | None, body: bytes | None):
        url = self.server + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as e:
            detail = e.read(300).decode("utf-8", "replace").strip()
            raise BotError(f"patchwork: {method} {path}: HTTP {e.code} {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            raise BotError(f"patchwork: {method} {path}: {getattr(e, 'reason', e)}") from None
        try:
            return json.loads(payload) if payload else None
        except ValueError:
            raise BotError(f"patchwork: {method} {path}: the answer is not JSON") from None


def post_checks(client: PatchworkClient, patch_ids: list[int], check: Check) -> dict[int, str]:
    """Post `check` to every patch; returns what happened per patch ("post", "same" or "kept")."""
    outcome = {}
    for patch_id in patch_ids:
        outcome[patch_id] = decide(client.latest_check(patch_id, check.context), check)
        if outcome[patch_id] == "post":
            client.create_check(patch_id, check)
    return outcome
