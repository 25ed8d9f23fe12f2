"""Errors of the tapes client, written for the person at the terminal.

Every error carries a one-line ``message`` and, where there is something to do about it, a
``hint``. The CLI prints them as ``tapes: error: …`` / ``tapes: hint: …`` and exits non-zero.

::

    TapesError
    ├── ConfigError               config.toml or a command-line setting is invalid
    ├── StoreError                the local database
    │   ├── NotATapesDatabaseError   the file is not SQLite, or has no usable nodes table
    │   ├── NodeNotFoundError        no node with that hash
    │   ├── MissingParentError       a node's parent is not stored (parents go first)
    │   ├── CorruptStoreError        the stored DAG is inconsistent (cycle, bad row)
    │   └── StoreBusyError           another writer held the database for too long
    ├── InvalidNodeError          a node's fields are malformed or its hash does not match
    ├── ImportFormatError         an import file is malformed (names the line)
    ├── TeamError                 a team command cannot go on: unknown team, not an admin,
    │                             an invite that is not this client's, a join not yet approved
    ├── LockHeldError             another process on this machine holds the lock of this work
    │                             (a sync of the same store and vault, a re-encryption); names it
    ├── InterruptedWorkError      Ctrl-C in a command that kept part of its work (exit 130)
    └── ServerError               anything that went wrong talking to the sync server
        ├── ServerUnreachableError   no connection, or no answer in time (offline?)
        ├── AuthError                not logged in, login expired or revoked, API key refused
        │   └── AudienceMismatchError   the server's challenge names another server: not signed
        ├── RemoteError              the server answered with an error (status and its detail);
        │                            subclasses by the answer's problem type
        │                            (``tapes_e2e.client.PROBLEM_ERRORS``)
        └── ProtocolError            the answer does not decode as this protocol

Nothing in a ``ServerError`` ever carries a response body: a ``RemoteError`` keeps the server's
one-line ``detail`` (control characters removed, length capped), a ``ProtocolError`` says which
request's answer was malformed, not what it held.
"""

from __future__ import annotations

__all__ = [
    "AirGappedError",
    "AlreadySharedError",
    "AudienceMismatchError",
    "AuthError",
    "ChainMovedError",
    "ConfigError",
    "CorruptStoreError",
    "ImportFormatError",
    "InterruptedWorkError",
    "InvalidNodeError",
    "LockHeldError",
    "MissingParentError",
    "NodeNotFoundError",
    "NotATapesDatabaseError",
    "ParentNotStoredError",
    "PlanLimitError",
    "ProtocolError",
    "RemoteError",
    "ServerError",
    "ServerUnreachableError",
    "StaleEpochError",
    "StoreBusyError",
    "StoreError",
    "TapesError",
    "TeamError",
    "UnsupportedBodyError",
]


class TapesError(Exception):
    """Base of every error the client reports to a user."""

    default_hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint


class InterruptedWorkError(TapesError):
    """Ctrl-C in a command that kept part of its work: the message says what, and exits 130."""


class ConfigError(TapesError):
    default_hint = "check ~/.tapes/config.toml (or the file under --config-dir / TAPES_HOME)"


class AirGappedError(ConfigError):
    default_hint = (
        "this machine never connects (storage.air_gapped in config.toml, or TAPES_AIR_GAPPED); "
        "local commands, export, prove and verify still work"
    )


class StoreError(TapesError):
    pass


class NotATapesDatabaseError(StoreError):
    default_hint = "point --db (or TAPES_SQLITE) at a tapes SQLite database"


class NodeNotFoundError(StoreError):
    default_hint = "list what is stored with `tapes session list`"

    def __init__(self, node_hash: str) -> None:
        super().__init__(f"no node {node_hash} in the store")
        self.node_hash = node_hash


class MissingParentError(StoreError):
    default_hint = "store (or import) the parent node before its children"


class CorruptStoreError(StoreError):
    default_hint = "run `tapes verify` to list the damaged nodes"


class StoreBusyError(StoreError):
    default_hint = "another program is writing to the database; try again"


class InvalidNodeError(TapesError):
    pass


class ImportFormatError(TapesError):
    default_hint = "nothing was imported; fix the line and run the import again"

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line


class TeamError(TapesError):
    default_hint = "list your teams with `tapes team list`"


class LockHeldError(TapesError):
    """Another process holds the lock (``tapes_e2e.locks``); the message names it."""


LOGIN_HINT = "run `tapes auth login`"


class ServerError(TapesError):
    """Base of the errors of a call to the sync server."""


class ServerUnreachableError(ServerError):
    default_hint = (
        "check the URL (--server, or `tapes storage configure --api-url URL`) and your network; "
        "`tapes storage status` shows the configured server. With the hybrid provider sessions "
        "keep recording locally and sync when the server is back"
    )

    def __init__(self, url: str, reason: str = "") -> None:
        super().__init__(f"cannot reach {url}" + (f" ({reason})" if reason else ""))
        self.url = url


class AuthError(ServerError):
    default_hint = LOGIN_HINT


class AudienceMismatchError(AuthError):
    default_hint = (
        "check the server URL (`tapes storage status` shows it); a server that hands out another "
        "server's challenge may be trying to log in there as you"
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


class StaleEpochError(RemoteError):
    """409: the batch was sealed under a key epoch the vault has left (a removal this client
    had not seen); fetch and verify the chain, then seal again."""


class UnsupportedBodyError(RemoteError):
    """415: the server does not take a body in the form it was sent (MessagePack to a server
    replaced by an older one); the client sends it again in JSON."""


class ChainMovedError(RemoteError):
    """409: the chain's head moved under a compare-and-swap; fetch, verify, sign again."""


class AlreadySharedError(RemoteError):
    """409: the session is shared with the team already."""


class ParentNotStoredError(RemoteError):
    """400: a node's parent is not in the vault (push parents before children)."""


class PlanLimitError(RemoteError):
    """402: the vault's plan refuses it (sessions a month, bytes)."""


class ProtocolError(ServerError):
    default_hint = "check that `api_url` points to a tapes-e2e sync server of a compatible version"
