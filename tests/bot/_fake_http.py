"""A tiny routed HTTP server on 127.0.0.1 for the outlet tests: records every request, answers JSON
(or raw bytes, for an mbox).

Subclasses register routes as (method, path regex) → handler(request, match) → (status, body,
headers). Failures can be queued to prove retries and error translation. Nothing leaves loopback.
"""
from __future__ import annotations

import json
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: object                       # parsed JSON, a dict of form fields, or None

    def json(self) -> dict:
        assert isinstance(self.body, dict), self.body
        return self.body


@dataclass
class Reply:
    status: int
    body: object = None                # JSON-able, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)


class FakeServer:
    """Start with `with Sub() as server:`; `server.url` is the base URL, `server.requests` the log."""

    def __init__(self):
        self.routes: list[tuple[str, re.Pattern, callable]] = []
        self.requests: list[Request] = []
        self.queued_failures: list[tuple[str, re.Pattern, Reply]] = []
        self.lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def route(self, method: str, pattern: str, handler) -> None:
        self.routes.append((method, re.compile(pattern + r"/?"), handler))

    def fail_next(self, method: str, pattern: str, reply: Reply) -> None:
        """Answer the next matching request with `reply` instead of routing it."""
        self.queued_failures.append((method, re.compile(pattern + r"/?"), reply))

    def writes(self, method: str | None = None, pattern: str = ".*") -> list[Request]:
        regex = re.compile(pattern)
        return [r for r in self.requests if r.method != "GET" and (method is None or r.method == method)
                and regex.fullmatch(r.path)]

    def __enter__(self) -> "FakeServer":
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def dispatch(self, request: Request) -> Reply:
        with self.lock:
            self.requests.append(request)
            for i, (method, regex, reply) in enumerate(self.queued_failures):
                if method == request.method and regex.fullmatch(request.path):
                    del self.queued_failures[i]
                    return reply
            for method, regex, handler in self.routes:
                match = regex.fullmatch(request.path)
                if method == request.method and match:
                    return handler(request, match)
        return Reply(404, {"message": "Not Found"})

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                request = Request(self.command, url.path, dict(urllib.parse.parse_qsl(url.query)),
                                  {k.lower(): v for k, v in self.headers.items()}, _parse_body(self.headers, raw))
                reply = server.dispatch(request)
                raw = isinstance(reply.body, bytes)        # an mbox, say, rather than JSON
                payload = reply.body if raw else b"" if reply.body is None else json.dumps(reply.body).encode()
                headers = {"Content-Type": "application/octet-stream" if raw else "application/json; charset=utf-8",
                           **reply.headers, "Content-Length": str(len(payload))}
                self.send_response(reply.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

            def log_message(self, *args):        # keep test output clean
                pass

        return Handler


def _parse_body(headers, raw: bytes):
    if not raw:
        return None
    if headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
        return dict(urllib.parse.parse_qsl(raw.decode()))
    return json.loads(raw)
