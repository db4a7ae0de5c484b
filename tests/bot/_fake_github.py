"""A small fake of GitHub's REST API (pulls, issue comments, check runs) for real pygithub to talk to.

It keeps GitHub's rules that matter to the outlet: a token is required, comments over 65,536
characters are refused with 422 "Body is too long", a check-run request carrying more than 50
annotations is refused, annotations sent in later PATCHes are appended, and lists are paginated
with `Link` headers. Comments are authored by the token's login. A `public` fake also answers
anonymous GETs (a public repository) and serves each PR's `.patch` from the web host.
"""
from __future__ import annotations

import itertools

from _fake_http import FakeServer, Reply, Request

COMMENT_MAX = 65_536
ANNOTATIONS_MAX = 50
_REPO = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"


class FakeGitHub(FakeServer):
    def __init__(self, *, token: str = "ghs_test", login: str = "github-actions[bot]", public: bool = False):
        super().__init__()
        self.tokens = {token: login}
        self.public = public                   # a public repository: anyone may GET without a token
        self.pulls: dict[int, dict] = {}
        self.patches: dict[int, bytes] = {}
        self.comments: dict[int, list[dict]] = {}
        self.check_runs: dict[int, dict] = {}
        self._ids = itertools.count(1001)
        for method, pattern, handler in (
                ("GET", _REPO, self._get_repo),
                ("GET", _REPO + r"/pulls", self._list_pulls),
                ("GET", _REPO + r"/pulls/(?P<n>\d+)", self._get_pull),
                ("GET", _REPO + r"/issues/(?P<n>\d+)/comments", self._list_comments),
                ("POST", _REPO + r"/issues/(?P<n>\d+)/comments", self._create_comment),
                ("PATCH", _REPO + r"/issues/comments/(?P<id>\d+)", self._edit_comment),
                ("POST", _REPO + r"/check-runs", self._create_check_run),
                ("PATCH", _REPO + r"/check-runs/(?P<id>\d+)", self._edit_check_run)):
            self.route(method, pattern, self._authenticated(handler))
        # The web host's `.patch` of a PR (`patch_url`): a format-patch mbox of its commits.
        self.route("GET", r"/(?P<owner>[^/]+)/(?P<repo>[^/]+)/pull/(?P<n>\d+)\.patch", self._pull_patch)

    # --- seeding ---

    def add_pull(self, number: int, head_sha: str, *, state: str = "open", owner: str = "o",
                 repo: str = "r", title: str | None = None, patch: bytes | None = None) -> dict:
        base = f"{self.url}/repos/{owner}/{repo}"
        self.pulls[number] = {"number": number, "state": state, "url": f"{base}/pulls/{number}",
                              "issue_url": f"{base}/issues/{number}", "title": title or f"PR {number}",
                              "html_url": f"{self.url}/{owner}/{repo}/pull/{number}",
                              "patch_url": f"{self.url}/{owner}/{repo}/pull/{number}.patch",
                              "head": {"sha": head_sha, "ref": f"series/{number}"}, "base": {"ref": "main"}}
        if patch is not None:
            self.patches[number] = patch
        self.comments.setdefault(number, [])
        return self.pulls[number]

    def add_comment(self, number: int, body: str, login: str, owner: str = "o", repo: str = "r") -> dict:
        comment_id = next(self._ids)
        comment = {"id": comment_id, "body": body, "user": {"login": login, "type": "User"},
                   "url": f"{self.url}/repos/{owner}/{repo}/issues/comments/{comment_id}"}
        self.comments[number].append(comment)
        return comment

    # --- routes ---

    def _authenticated(self, handler):
        def check(request: Request, match) -> Reply:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if self.public and request.method == "GET" and not scheme:
                return handler(request, match, None)
            if scheme.lower() not in ("token", "bearer") or token not in self.tokens:
                return Reply(401, {"message": "Bad credentials"})
            return handler(request, match, self.tokens[token])
        return check

    def _get_repo(self, request, match, login):
        owner, repo = match["owner"], match["repo"]
        return Reply(200, {"id": 1, "name": repo, "full_name": f"{owner}/{repo}",
                           "url": f"{self.url}/repos/{owner}/{repo}"})

    def _pull_patch(self, request, match):
        patch = self.patches.get(int(match["n"]))
        return Reply(200, patch, {"Content-Type": "text/plain"}) if patch else Reply(404, {"message": "Not Found"})

    def _list_pulls(self, request, match, login):
        state = request.query.get("state", "open")
        pulls = [p for p in self.pulls.values() if state == "all" or p["state"] == state]
        return self._page(request, pulls)

    def _get_pull(self, request, match, login):
        pull = self.pulls.get(int(match["n"]))
        return Reply(200, pull) if pull else Reply(404, {"message": "Not Found"})

    def _list_comments(self, request, match, login):
        return self._page(request, self.comments.get(int(match["n"]), []))

    def _create_comment(self, request, match, login):
        body = request.json().get("body", "")
        if len(body) > COMMENT_MAX:
            return Reply(422, {"message": "Validation Failed", "errors": [{"message": "Body is too long"}]})
        number = int(match["n"])
        if number not in self.comments:
            return Reply(404, {"message": "Not Found"})
        comment = self.add_comment(number, body, login, match["owner"], match["repo"])
        comment["user"]["type"] = "Bot"
        return Reply(201, comment)

    def _edit_comment(self, request, match, login):
        body = request.json().get("body", "")
        if len(body) > COMMENT_MAX:
            return Reply(422, {"message": "Validation Failed", "errors": [{"message": "Body is too long"}]})
        for comment in itertools.chain.from_iterable(self.comments.values()):
            if comment["id"] == int(match["id"]):
                comment["body"] = body
                return Reply(200, comment)
        return Reply(404, {"message": "Not Found"})

    def _create_check_run(self, request, match, login):
        fields = request.json()
        run_id = next(self._ids)
        run = {"id": run_id, "name": fields["name"], "head_sha": fields["head_sha"],
               "status": fields.get("status", "queued"), "conclusion": None, "annotations": [],
               "output": {}, "url": f"{self.url}/repos/{match['owner']}/{match['repo']}/check-runs/{run_id}"}
        self.check_runs[run_id] = run
        return self._update_run(run, fields, 201)

    def _edit_check_run(self, request, match, login):
        run = self.check_runs.get(int(match["id"]))
        return self._update_run(run, request.json(), 200) if run else Reply(404, {"message": "Not Found"})

    def _update_run(self, run: dict, fields: dict, status: int) -> Reply:
        output = fields.get("output") or {}
        annotations = output.get("annotations", [])
        if len(annotations) > ANNOTATIONS_MAX:
            return Reply(422, {"message": "Only 50 annotations are allowed per request"})
        run["annotations"].extend(annotations)         # GitHub appends annotations across updates
        run["output"] = {k: v for k, v in output.items() if k != "annotations"} or run["output"]
        for key in ("status", "conclusion", "details_url"):
            if key in fields:
                run[key] = fields[key]
        return Reply(status, {k: v for k, v in run.items() if k != "annotations"})

    def _page(self, request: Request, items: list) -> Reply:
        per_page, page = int(request.query.get("per_page", 30)), int(request.query.get("page", 1))
        chunk = items[(page - 1) * per_page:page * per_page]
        headers = {}
        if page * per_page < len(items):
            query = "&".join(f"{k}={v}" for k, v in {**request.query, "page": page + 1}.items())
            headers["Link"] = f'<{self.url}{request.path}?{query}>; rel="next"'
        return Reply(200, chunk, headers)
