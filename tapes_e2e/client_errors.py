"""Errors of talking to the sync server, written for the person at the terminal.

They join the tree of :mod:`tapes_e2e.errors` (every one is a :class:`TapesError` with a
``message`` and a ``hint``)::

    TapesError
    └── ServerError                 anything that went wrong talking to the sync server
        ├── ServerUnreachableError     no connection, or no answer in time (offline?)
        ├── AuthError                  not logged in, login expired or revoked, API key refused
        │   └── AudienceMismatchError     the server's challenge names another server: not signed
        ├── RemoteError                the server answered with an error (status and its detail)
        └── ProtocolError              the answer does not decode as this protocol

Nothing here ever carries a response body: a ``RemoteError`` keeps the server's one-line
``detail`` (control characters removed, length capped), a ``ProtocolError`` says which request's
answer was malformed, not what it held.
"""

from __future__ import annotations

from tapes_e2e.errors import TapesError

__all__ = [
    "AudienceMismatchError",
    "AuthError",
    "ProtocolError",
    "RemoteError",
    "ServerError",
    "ServerUnreachableError",
]

LOGIN_HINT = "run `tapes auth login`"


class ServerError(TapesError):
    """Base of the errors of a call to the sync server."""


class ServerUnreachableError(ServerError):
    default_hint = (
        "check your network and `api_url` in ~/.tapes/config.toml; with the hybrid provider "
        "sessions keep recording locally and sync when the server is back"
    )

    def __init__(self, url: str, reason: str = "") -> None:
        super().__init__(f"cannot reach {url}" + (f" ({reason})" if reason else ""))
        self.url = url


class AuthError(ServerError):
    default_hint = LOGIN_HINT


class AudienceMismatchError(AuthError):
    default_hint = (
        "check `api_url` in ~/.tapes/config.toml; a server that hands out another server's "
        "challenge may be trying to log in there as you"
    )

    def __init__(self, api_url: str, audience: str) -> None:
        super().__init__(
            f"the server at {api_url} asked to sign a login for {audience}; refused to sign"
        )
        self.api_url, self.audience = api_url, audience


_STATUS_HINTS = {
    402: "the vault's plan refuses this; see the plans with your server's administrator",
    403: "your role in this vault does not allow it",
    404: "check the vault or node id (`tapes storage status` lists your vaults)",
    409: "fetch the current state and try again",
    410: "ask for a new one",
    413: "the request is too large; sync in smaller batches",
    429: "too many requests; wait a minute and try again",
}


class RemoteError(ServerError):
    """The server refused or failed the request; ``detail`` is its one-line explanation."""

    def __init__(self, status: int, detail: str, *, hint: str | None = None) -> None:
        if hint is None:
            hint = _STATUS_HINTS.get(status)
            if status >= 500:
                hint = "the server failed; try again later, or tell its administrator"
        super().__init__(f"the server answered {status}: {detail}", hint=hint)
        self.status, self.detail = status, detail


class ProtocolError(ServerError):
    default_hint = "check that `api_url` points to a tapes-e2e sync server of a compatible version"
