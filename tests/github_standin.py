"""A stand-in for GitHub's device flow and ``/user`` over real HTTP on a loopback port (no
machine here reaches GitHub): the endpoints, field names and error codes GitHub documents, and
a hand the test uses to approve, decline, expire or slow down a code.

https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps#device-flow
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs

CLIENT_ID, CLIENT_SECRET = "Iv1.standin", "standin-secret"


@dataclass
class Code:
    device_code: str
    user_code: str
    state: str = "pending"  # pending | approved | denied | expired | slow_down
    user: tuple[int, str] | None = None
    token: str = ""


@dataclass
class GithubStandIn:
    codes: dict[str, Code] = field(default_factory=dict)
    tokens: dict[str, tuple[int, str]] = field(default_factory=dict)
    polls: int = 0
    broken: bool = False  # answer garbage, like a proxy's error page
    answers: dict[str, tuple[int, object]] = field(default_factory=dict)  # path → what to say
    seen: list[dict[str, str]] = field(default_factory=list)  # every request's form or headers
    url: str = ""

    def code(self, user_code: str) -> Code:
        return next(c for c in self.codes.values() if c.user_code == user_code)

    def approve(self, user_code: str, github_id: int, login: str) -> None:
        found = self.code(user_code)
        found.state, found.user = "approved", (github_id, login)

    def set_state(self, user_code: str, state: str) -> None:
        self.code(user_code).state = state

    def __enter__(self) -> GithubStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def _answer(self, status: int, body: object) -> None:
                status, body = standin.answers.get(self.path, (status, body))
                data = b"<html>oops</html>" if standin.broken else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                standin.seen.append({"path": self.path, **form})
                if form.get("client_id") != CLIENT_ID:
                    self._answer(200, {"error": "incorrect_client_credentials"})
                elif self.path == "/login/device/code":
                    code = Code(secrets.token_hex(20), f"{secrets.randbelow(9000) + 1000}-WXYZ")
                    standin.codes[code.device_code] = code
                    self._answer(200, {
                        "device_code": code.device_code, "user_code": code.user_code,
                        "verification_uri": f"{standin.url}/login/device",
                        "expires_in": 900, "interval": 1,
                    })  # fmt: skip
                elif self.path == "/login/oauth/access_token":
                    standin.polls += 1
                    self._token(form)
                else:
                    self._answer(404, {"message": "Not Found"})

            def _token(self, form: dict[str, str]) -> None:
                code = standin.codes.get(form.get("device_code", ""))
                grant = "urn:ietf:params:oauth:grant-type:device_code"
                if form.get("client_secret") != CLIENT_SECRET or form.get("grant_type") != grant:
                    self._answer(200, {"error": "incorrect_client_credentials"})
                elif code is None or code.state == "expired":
                    self._answer(200, {"error": "expired_token"})
                elif code.state == "slow_down":
                    code.state = "pending"
                    self._answer(200, {"error": "slow_down", "interval": 10})
                elif code.state == "denied":
                    self._answer(200, {"error": "access_denied"})
                elif code.state == "pending" or code.user is None:
                    self._answer(200, {"error": "authorization_pending"})
                else:
                    token = "gho_" + secrets.token_hex(18)
                    standin.tokens[token] = code.user
                    self._answer(200, {"access_token": token, "token_type": "bearer",
                                       "scope": "read:user"})  # fmt: skip

            def do_GET(self) -> None:
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                standin.seen.append({"path": self.path, "authorization": token})
                if self.path != "/user" or token not in standin.tokens:
                    self._answer(401, {"message": "Bad credentials"})
                    return
                github_id, login = standin.tokens[token]
                self._answer(200, {"id": github_id, "login": login, "type": "User"})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
