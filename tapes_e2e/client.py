"""The sync server's HTTP API as typed calls: challenge login, rotating tokens, sync, chain, keys.

:class:`ApiClient` wraps an injected :class:`httpx.Client` (Litestar's ``TestClient`` is one, so
tests run it against the real app in-process; ``httpx.MockTransport`` makes a hostile server).
It never creates a client of its own and sends every request with a timeout.

- **Login** (:meth:`ApiClient.login`): ``POST /auth/challenge``; the challenge's ``audience`` must
  be the ``api_url`` this client is configured with — a server relaying another server's
  challenge gets no signature; then ``POST /auth/login`` with the signature (and a ``handle`` to
  register), and ``GET /auth/me`` for the account's handle.
- **Tokens**: an authenticated call answered 401 refreshes once (``POST /auth/token/refresh``,
  which rotates the refresh token: the new :class:`Session` goes to ``on_session`` to be
  persisted) and retries once. Refreshes are serialised, so two threads never spend the same
  refresh token (the server would revoke the whole login). An ``api_key`` (``tapes_…``) is used
  instead of a session when given; it is never refreshed.
- **Teams**: create, keyrings, invites, join requests, shares and the shared lists
  (:meth:`ApiClient.create_team` … :meth:`ApiClient.team_sessions`); what they return is
  unverified until checked against the verified chain (``tapes_e2e.teams``).
- **Answers** are decoded with msgspec into the protocol structs, so a garbled or hostile answer
  is a :class:`~tapes_e2e.errors.ProtocolError`, never a ``KeyError`` later; errors map to
  the tree in :mod:`tapes_e2e.errors` and never carry a response body.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from keymgmt import Identity
from keymgmt.login import sign_login, sign_rekey
from tapes_e2e.errors import (
    AlreadySharedError,
    AudienceMismatchError,
    AuthError,
    ChainMovedError,
    ConfigError,
    ParentNotStoredError,
    PlanLimitError,
    ProtocolError,
    RemoteError,
    ServerUnreachableError,
    StaleEpochError,
    UnsupportedBodyError,
)
from tapes_e2e.protocol import (
    API_KEY_PREFIX,
    MSGPACK,
    AncestryPage,
    AnyPullPage,
    ApiKeyCreated,
    ApiKeyInfo,
    Challenge,
    DeviceOut,
    GithubBindOut,
    GithubDeviceOut,
    GithubUserOut,
    NodeOut,
    PackedPullPage,
    Problem,
    PullPage,
    PushResult,
    ResealResult,
    ResealStatus,
    SyncStatusOut,
    TokenPair,
    UserOut,
    VaultOut,
)
from tapes_e2e.protocol.dashboard import DashboardLinkOut
from tapes_e2e.protocol.teams import (
    AuditPage,
    ChainHeadOut,
    ChainPage,
    HoldOut,
    InviteOut,
    JoinRequestOut,
    JoinResult,
    KeyringOut,
    KeyringUploaded,
    MemberOut,
    RekeyOut,
    ServerKeyOut,
    ShareOut,
    SharePage,
    SignedWire,
    TeamCreated,
)
from tapes_e2e.protocol.usage import UsageReport
from tapes_e2e.protocol.vaults import GenesisCreated

__all__ = ["DEFAULT_TIMEOUT", "ApiClient", "Session", "Signed", "encode_push"]

log = logging.getLogger("tapes.client")

DEFAULT_TIMEOUT = 30.0
MAX_DETAIL = 300
MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""The largest answer read from a server. The largest an honest one sends is a page of
``MAX_PAGE_BYTES`` or one envelope of a batch's size in JSON (~22 MiB): a hostile server's
endless answer ends here instead of in this process's memory."""

# A signed keymgmt object: ``statement.to_dict()`` / ``keyring.to_dict()``, or the wire struct.
Signed = SignedWire | Mapping[str, str]
T = TypeVar("T")

_LOGIN_EXPIRED = "your login expired or was revoked"
_NOT_LOGGED_IN = "not logged in to {url}"
_KEY_REFUSED = "the server refused the API key (revoked, or not for this server)"
_KEY_HINT = "create a new key with `tapes auth api-key create` and put it in the config"


def encode_push(
    vault: str, envelopes: Sequence[Mapping[str, object] | msgspec.Raw], *, packed: bool = False
) -> bytes:
    """The body of a push of ``envelopes`` to ``vault``: each a wire dict, or already encoded
    (as a worker process that sealed it sends it back) in the body's form: JSON, or with
    ``packed`` MessagePack (each envelope a packed ``keymgmt.PackedEnvelope``)."""
    return (_encode_packed if packed else _encode)({"vault": vault, "envelopes": envelopes})


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _bounded(response: httpx.Response) -> httpx.Response:
    """``response`` (sent with ``stream=True``) read whole, if it is at most
    ``MAX_ANSWER_BYTES`` once decoded; else closed unread and a :class:`ProtocolError`."""
    what = f"{response.request.method} {response.request.url.path}"
    too_large = ProtocolError(
        f"the server's answer to {what} is larger than {MAX_ANSWER_BYTES // 2**20} MiB"
    )
    declared = response.headers.get("content-length", "")
    try:
        if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
            raise too_large
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise too_large
            chunks.append(chunk)
    finally:
        response.close()
    # What was read, decoded already: the new answer must not decode it a second time.
    headers = [
        (name, value)
        for name, value in response.headers.multi_items()
        if name.lower() not in {"content-encoding", "content-length", "transfer-encoding"}
    ]
    return httpx.Response(
        response.status_code, headers=headers, content=b"".join(chunks), request=response.request
    )


def _media_type(response: httpx.Response) -> str:
    """The answer's media type, without parameters, lowercased."""
    value: str = response.headers.get("content-type", "")
    return value.partition(";")[0].strip().lower()


def _printable(text: str, limit: int = MAX_DETAIL) -> str:
    """Server-supplied text made safe for a terminal: one line, no control characters, capped."""
    clean = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def _origin(url: str) -> tuple[str, str, int | None, str]:
    """``url`` compared the way a login audience is: scheme, host, port, path without ``/``."""
    parsed = httpx.URL(url)
    return parsed.scheme.lower(), parsed.host.lower(), parsed.port, parsed.path.rstrip("/")


def _seg(value: str) -> str:
    return quote(value, safe="")


def _wire(signed: Signed) -> dict[str, str]:
    if isinstance(signed, SignedWire):
        return {"body": signed.body, "signature": signed.signature}
    return dict(signed)


# --- the session ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    """One login to one server, as ``session.json`` keeps it. The tokens are bearer secrets and
    never appear in ``repr``."""

    server: str
    user_id: str
    handle: str
    fingerprint: str
    personal_vault: str
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    access_expires_at: datetime

    def to_dict(self) -> dict[str, str]:
        """The JSON-able form (``access_expires_at`` as ISO 8601)."""
        out = {name: getattr(self, name) for name in _SESSION_FIELDS}
        out["access_expires_at"] = self.access_expires_at.isoformat()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Session:
        """Read :meth:`to_dict`'s form; anything malformed is an :class:`AuthError`."""
        try:
            wire = msgspec.convert(data, _SessionWire)
        except msgspec.ValidationError:
            raise AuthError("the saved login is unreadable") from None
        moment = wire.access_expires_at
        return cls(
            server=wire.server,
            user_id=wire.user_id,
            handle=wire.handle,
            fingerprint=wire.fingerprint,
            personal_vault=wire.personal_vault,
            access_token=wire.access_token,
            refresh_token=wire.refresh_token,
            access_expires_at=moment if moment.tzinfo else moment.replace(tzinfo=UTC),
        )


_SESSION_FIELDS = (
    "server", "user_id", "handle", "fingerprint", "personal_vault", "access_token",
    "refresh_token",
)  # fmt: skip


class _SessionWire(msgspec.Struct, frozen=True):
    server: str
    user_id: str
    handle: str
    fingerprint: str
    personal_vault: str
    access_token: str
    refresh_token: str
    access_expires_at: datetime


PROBLEM_ERRORS: Mapping[str, type[RemoteError]] = {
    Problem.STALE_EPOCH: StaleEpochError,
    Problem.CHAIN_MOVED: ChainMovedError,
    Problem.ALREADY_SHARED: AlreadySharedError,
    Problem.MISSING_PARENT: ParentNotStoredError,
    Problem.PLAN_LIMIT: PlanLimitError,
}
"""The one table from a refusal's RFC 9457 ``type`` to the error the client raises for it."""


class _Problem(msgspec.Struct, frozen=True):
    """The part of an RFC 9457 problem body this client uses: the one-line ``detail`` it shows
    and the ``type`` it acts on (``PROBLEM_ERRORS``)."""

    detail: str
    type: str = "about:blank"


_Decoder = msgspec.json.Decoder[T] | msgspec.msgpack.Decoder[T]

# One decoder per answer type, built once.
_CHALLENGE = msgspec.json.Decoder(Challenge)
_TOKENS = msgspec.json.Decoder(TokenPair)
_USER = msgspec.json.Decoder(UserOut)
_USAGE = msgspec.json.Decoder(UsageReport)
_VAULTS = msgspec.json.Decoder(list[VaultOut])
_PUSHED = msgspec.json.Decoder(PushResult)
_PAGE = msgspec.json.Decoder(PullPage)
_PACKED_PAGE = msgspec.msgpack.Decoder(PackedPullPage)
_PULL_ACCEPT = f"{MSGPACK}, application/json;q=0.5"
_encode_packed = msgspec.msgpack.Encoder().encode
_JSON = "application/json"
_STATUS = msgspec.json.Decoder(SyncStatusOut)
_NODE = msgspec.json.Decoder(NodeOut)
_ANCESTRY = msgspec.json.Decoder(AncestryPage)
_CHAIN = msgspec.json.Decoder(ChainPage)
_HEAD = msgspec.json.Decoder(ChainHeadOut)
_KEYRINGS = msgspec.json.Decoder(list[KeyringOut])
_GENESIS = msgspec.json.Decoder(GenesisCreated)
_VAULT = msgspec.json.Decoder(VaultOut)
_TEAM_CREATED = msgspec.json.Decoder(TeamCreated)
_KEYRING_UPLOADED = msgspec.json.Decoder(KeyringUploaded)
_INVITE = msgspec.json.Decoder(InviteOut)
_JOINED = msgspec.json.Decoder(JoinResult)
_JOIN_REQUESTS = msgspec.json.Decoder(list[JoinRequestOut])
_MEMBERS = msgspec.json.Decoder(list[MemberOut])
_SHARE = msgspec.json.Decoder(ShareOut)
_SHARES = msgspec.json.Decoder(list[ShareOut])
_SHARE_PAGE = msgspec.json.Decoder(SharePage)
_KEY_CREATED = msgspec.json.Decoder(ApiKeyCreated)
_KEYS = msgspec.json.Decoder(list[ApiKeyInfo])
_DEVICES = msgspec.json.Decoder(list[DeviceOut])
_REKEY = msgspec.json.Decoder(RekeyOut)
_HOLD = msgspec.json.Decoder(HoldOut)
_AUDIT = msgspec.json.Decoder(AuditPage)
_SERVER_KEY = msgspec.json.Decoder(ServerKeyOut)
_RESEAL_STATUS = msgspec.json.Decoder(ResealStatus)
_RESEALED = msgspec.json.Decoder(ResealResult)
_GITHUB_DEVICE = msgspec.json.Decoder(GithubDeviceOut)
_GITHUB_BIND = msgspec.json.Decoder(GithubBindOut)
_GITHUB_USER = msgspec.json.Decoder(GithubUserOut)
_DASHBOARD_LINK = msgspec.json.Decoder(DashboardLinkOut)
_PROBLEM = msgspec.json.Decoder(_Problem)
_encode = msgspec.json.Encoder().encode


# --- the client ----------------------------------------------------------------------------


class ApiClient:
    """Typed calls to one sync server through an injected ``httpx.Client``.

    ``session`` is the saved login (or ``None`` before ``login``); ``on_session`` receives every
    new session (a login, each refresh) to persist it. ``api_key`` replaces the session's tokens
    for every authenticated call. ``now`` is the clock used for ``access_expires_at``.
    """

    def __init__(
        self,
        http: httpx.Client,
        *,
        api_url: str,
        session: Session | None = None,
        on_session: Callable[[Session], None] | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        if not api_url.startswith(("http://", "https://")):
            raise ConfigError(f"api_url must be an http:// or https:// URL, not {api_url!r}")
        if api_key is not None and not api_key.startswith(API_KEY_PREFIX):
            raise ConfigError(f"api_key must start with {API_KEY_PREFIX!r}")
        self._http = http
        self._api_url = api_url.rstrip("/")
        self._session = session
        self._on_session = on_session
        self._api_key = api_key
        self._timeout = timeout
        self._now = now
        self._lock = threading.Lock()
        self._push_forms: frozenset[str] | None = None  # what the server's Accept-Post lists

    @property
    def api_url(self) -> str:
        return self._api_url

    @property
    def session(self) -> Session | None:
        """The current login (rotated by refreshes), or ``None``."""
        return self._session

    # --- login and tokens --------------------------------------------------------------------

    def _challenge(self) -> Challenge:
        """A login challenge, refused before anything is signed when it is bound to another
        server than ``api_url``."""
        challenge = self._decode(self._send("POST", "/auth/challenge"), _CHALLENGE)
        try:
            same = _origin(challenge.audience) == _origin(self._api_url)
        except httpx.InvalidURL:
            same = False
        if not same:
            raise AudienceMismatchError(self._api_url, _printable(challenge.audience, 200))
        return challenge

    def rekey(
        self, old: Identity, new: Identity, vaults: Sequence[Mapping[str, object]]
    ) -> RekeyOut:
        """Hand the account from ``old`` to ``new``: both sign it for this server, and
        ``vaults`` carry each vault's ``rekey`` statement and the new key's keyrings. The
        server then ends every login of the account, this one too."""
        session = self._session
        if session is None:
            raise AuthError(_NOT_LOGGED_IN.format(url=self._api_url))
        audience = self._challenge().audience
        old_signature, new_signature = sign_rekey(
            old, new, server=audience, user_id=session.user_id
        )
        body = {
            "keys": {"x25519": new.public.x25519.hex(), "ed25519": new.public.ed25519.hex()},
            "old_signature": _b64(old_signature),
            "new_signature": _b64(new_signature),
            "vaults": list(vaults),
        }
        return self._call("POST", "/auth/rekey", _REKEY, body=_encode(body))

    def login(
        self, identity: Identity, *, handle: str | None = None, device: str | None = None
    ) -> Session:
        """Log in by signing a challenge; with ``handle`` an unknown identity is registered.
        ``device`` names this login in ``tapes auth devices`` (the server's default otherwise).

        Raises :class:`AudienceMismatchError` before signing anything when the challenge is
        bound to another server than ``api_url``.
        """
        challenge = self._challenge()
        signature = sign_login(
            identity,
            server=challenge.audience,
            challenge_id=challenge.challenge_id,
            nonce=_unb64(challenge.nonce),
        )
        body: dict[str, Any] = {
            "challenge_id": challenge.challenge_id,
            "keys": {
                "x25519": identity.public.x25519.hex(),
                "ed25519": identity.public.ed25519.hex(),
            },
            "signature": _b64(signature),
        }
        if handle is not None:
            body["handle"] = handle
        if device is not None:
            body["device"] = device
        response = self._send("POST", "/auth/login", body=_encode(body))
        if response.status_code == 401:
            raise AuthError(
                "login failed: the server did not accept this identity",
                hint="if this identity has no account on this server yet, "
                "log in with a handle to register it",
            )
        pair = self._decode(response, _TOKENS)
        if pair.fingerprint != identity.fingerprint:
            raise ProtocolError("the server logged in another identity than this one")
        me = self._decode(self._send("GET", "/auth/me", token=pair.access_token), _USER)
        if me.user_id != pair.user_id or me.fingerprint != identity.fingerprint:
            raise ProtocolError("the server's account details do not match the login")
        session = self._session_from(pair, handle=me.handle)
        with self._lock:  # not while another thread refreshes the previous login
            self._set_session(session)
        return session

    def check_server(self) -> str:
        """Check that ``api_url`` is a tapes sync server that logins will work with.

        Asks for a challenge (no login is made) and compares its audience with ``api_url``;
        returns the audience. Raises :class:`ServerUnreachableError`, :class:`ProtocolError`
        (not a tapes server) or :class:`AudienceMismatchError`.
        """
        challenge = self._decode(self._send("POST", "/auth/challenge"), _CHALLENGE)
        try:
            same = _origin(challenge.audience) == _origin(self._api_url)
        except httpx.InvalidURL:
            same = False
        if not same:
            raise AudienceMismatchError(self._api_url, _printable(challenge.audience, 200))
        return challenge.audience

    def refresh(self) -> Session:
        """Rotate the tokens now; the new session goes to ``on_session``."""
        with self._lock:
            session = self._session
            if session is None:
                raise AuthError(_NOT_LOGGED_IN.format(url=self._api_url))
            return self._refresh_locked(session)

    def logout(self) -> None:
        """Tell the server to end this login: its refresh token and access tokens stop
        working. The caller forgets the saved session either way."""
        session = self._session
        if session is None:
            raise AuthError(_NOT_LOGGED_IN.format(url=self._api_url))
        body = _encode({"refresh_token": session.refresh_token})
        self._check(self._send("POST", "/auth/logout", body=body))

    def _refresh_locked(self, session: Session) -> Session:
        response = self._send(
            "POST", "/auth/token/refresh", body=_encode({"refresh_token": session.refresh_token})
        )
        if response.status_code in {400, 401}:
            raise AuthError(_LOGIN_EXPIRED)
        pair = self._decode(response, _TOKENS)
        if (pair.user_id, pair.fingerprint) != (session.user_id, session.fingerprint):
            raise ProtocolError("the server refreshed the login of another account")
        fresh = self._session_from(pair, handle=session.handle)
        self._set_session(fresh)
        return fresh

    def _session_from(self, pair: TokenPair, *, handle: str) -> Session:
        return Session(
            server=self._api_url,
            user_id=pair.user_id,
            handle=handle,
            fingerprint=pair.fingerprint,
            personal_vault=pair.personal_vault,
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            access_expires_at=self._now() + timedelta(seconds=pair.expires_in),
        )

    def _set_session(self, session: Session) -> None:
        self._session = session
        if self._on_session is not None:
            self._on_session(session)

    # --- account and vaults ------------------------------------------------------------------

    def me(self) -> UserOut:
        """The logged-in account."""
        return self._call("GET", "/auth/me", _USER)

    def vaults(self) -> list[VaultOut]:
        """The caller's personal vault and team vaults."""
        return self._call("GET", "/api/v1/teams", _VAULTS)

    def usage(self, vault: str, query: Mapping[str, str]) -> UsageReport:
        """A vault's usage report (``from``, ``to``, ``tz``, ``group_by``: the API's text)."""
        return self._call("GET", f"/api/v1/teams/{_seg(vault)}/usage", _USAGE, params=query)

    # --- sync --------------------------------------------------------------------------------

    def push(self, vault: str, envelopes: Sequence[Mapping[str, object]]) -> PushResult:
        """Push one batch of sealed envelopes (``keymgmt.Envelope.to_dict()``), parents first."""
        return self.push_encoded(encode_push(vault, envelopes))

    def push_encoded(self, body: bytes, *, packed: bool = False) -> PushResult:
        """Push a batch already encoded by :func:`encode_push` (on another thread, say), in
        MessagePack if ``packed``. A server that refuses that form (415: it was replaced by an
        older one) is not sent it again by this client; the refusal is an
        :class:`UnsupportedBodyError`, for the caller to send the batch again in JSON."""
        content_type = MSGPACK if packed else _JSON
        response = self._authed("POST", "/api/v1/sync/push", body=body, content_type=content_type)
        if response.status_code == 415 and packed:
            with self._lock:
                self._push_forms = frozenset({_JSON})
        return self._decode(response, _PUSHED)

    def takes_packed_push(self) -> bool:
        """Whether the server takes a push in MessagePack: asked once (``OPTIONS`` on the push
        route lists the forms in ``Accept-Post``) and remembered by this client. A server that
        does not answer the question (an older one, an error) is sent JSON."""
        forms = self._push_forms
        if forms is None:
            try:
                answer = self._authed("OPTIONS", "/api/v1/sync/push")
            except ServerUnreachableError:  # not remembered: the push itself will say so
                return False
            listed = answer.headers.get("accept-post", "") if answer.is_success else ""
            forms = frozenset(
                part.split(";", 1)[0].strip().lower() for part in listed.split(",")
            ) - {""}
            with self._lock:
                self._push_forms = forms
        return MSGPACK in forms

    def pull(self, vault: str, after: int = 0, limit: int = 500) -> AnyPullPage:
        """One page of envelopes with a sequence number above ``after``."""
        return self.pull_with_bytes(vault, after, limit)[0]

    def pull_with_bytes(
        self, vault: str, after: int = 0, limit: int = 500
    ) -> tuple[AnyPullPage, bytes]:
        """:meth:`pull`, and the answer's bytes as they came (for a worker process to decode
        again: sending it those is cheaper than pickling the decoded page).

        Asks for the binary wire (MessagePack, ~0.72 of the bytes, no base64 to decode) and
        takes JSON from a server that answers only that: the answer's ``Content-Type`` says
        which it is."""
        params: dict[str, str | int] = {"vault": vault, "after": after, "limit": limit}
        response = self._authed("GET", "/api/v1/sync/pull", params=params, accept=_PULL_ACCEPT)
        if _media_type(response) == MSGPACK:
            return self._decode(response, _PACKED_PAGE), response.content
        return self._decode(response, _PAGE), response.content

    def reseal_status(self, vault: str) -> ResealStatus:
        """How many encrypted nodes of ``vault`` are under an older epoch (mine, others')."""
        return self._call("GET", "/api/v1/sync/reseal", _RESEAL_STATUS, params={"vault": vault})

    def reseal_nodes(self, vault: str, after: int = 0, limit: int = 200) -> PullPage:
        """A page of this account's own nodes of ``vault`` under an older epoch, parents first."""
        params: dict[str, str | int] = {"vault": vault, "after": after, "limit": limit}
        return self._call("GET", "/api/v1/sync/reseal/nodes", _PAGE, params=params)

    def reseal(self, vault: str, items: Sequence[Mapping[str, object]]) -> int:
        """Swap nodes for the same nodes sealed under the current epoch; how many it swapped."""
        body = _encode({"vault": vault, "items": list(items)})
        return self._call("POST", "/api/v1/sync/reseal", _RESEALED, body=body).resealed

    def status(self, vault: str, after: int = 0) -> SyncStatusOut:
        """The vault's head sequence and what is left to pull after ``after``."""
        params: dict[str, str | int] = {"vault": vault, "after": after}
        return self._call("GET", "/api/v1/sync/status", _STATUS, params=params)

    def node(self, node_id: str) -> NodeOut:
        """One envelope by its keyed node ID."""
        return self._call("GET", f"/api/v1/nodes/{_seg(node_id)}", _NODE)

    def ancestry_pages(self, node_id: str) -> Iterator[list[NodeOut]]:
        """The node and its ancestors, node first, a page (a bounded request) at a time. Each
        page must continue the path where the previous one ended (every item the parent of the
        one before, ``next`` the parent of the last): a server that answers otherwise, or walks
        back to a node it already gave, gets a :class:`ProtocolError` rather than an endless
        walk. The envelopes themselves are for the caller to verify, page by page."""
        seen: set[str] = set()
        expected: str | None = node_id
        while expected is not None:
            page = self._call("GET", f"/api/v1/nodes/{_seg(expected)}/ancestry", _ANCESTRY)
            for item in page.items:
                node_id = item.envelope.node_id
                named = {node_id, item.renamed_from}  # renamed: sealed again, see NodeOut
                if expected not in named or node_id in seen:
                    raise ProtocolError("the server's ancestry does not follow the parent links")
                seen.add(node_id)
                expected = item.envelope.parent_id
            if not page.items or (page.next is not None and page.next != expected):
                raise ProtocolError("the server's ancestry does not follow the parent links")
            yield page.items
            expected = page.next

    def ancestry(self, node_id: str) -> list[NodeOut]:
        """The node and its ancestors, node first, every page of them (see
        :meth:`ancestry_pages`)."""
        return [item for page in self.ancestry_pages(node_id) for item in page]

    # --- chain and keyrings ------------------------------------------------------------------

    def chain(self, vault: str, after: int = -1) -> ChainPage:
        """The signed statements of a personal or team vault after ``after`` (unverified)."""
        path = f"/api/v1/vaults/{_seg(vault)}/chain"
        return self._call("GET", path, _CHAIN, params={"after": after})

    def append_chain(
        self, vault: str, expected_head_seqno: int, statements: Sequence[Signed]
    ) -> ChainHeadOut:
        """Append signed statements to a team chain if its head is still the expected one."""
        body = _encode(
            {
                "expected_head_seqno": expected_head_seqno,
                "statements": [_wire(s) for s in statements],
            }
        )
        return self._call("POST", f"/api/v1/teams/{_seg(vault)}/chain", _HEAD, body=body)

    def keyrings(self, vault: str) -> list[KeyringOut]:
        """The keyrings sealed to the caller (unverified: open them against a verified chain)."""
        return self._call("GET", f"/api/v1/vaults/{_seg(vault)}/keyrings", _KEYRINGS)

    def genesis(self, vault: str, statement: Signed, keyring: Signed) -> GenesisCreated:
        """Upload a personal vault's genesis statement and epoch-1 keyring (once)."""
        body = _encode({"statement": _wire(statement), "keyring": _wire(keyring)})
        return self._call("POST", f"/api/v1/teams/{_seg(vault)}/genesis", _GENESIS, body=body)

    # --- teams, invites and shares --------------------------------------------------------------

    def vault(self, vault: str) -> VaultOut:
        """One of the caller's vaults (the caller's role, its tier and counts)."""
        return self._call("GET", f"/api/v1/teams/{_seg(vault)}", _VAULT)

    def create_team(
        self, team_id: str, name: str, slug: str, statement: Signed, keyring: Signed
    ) -> TeamCreated:
        """Create a team vault from the owner's signed genesis and epoch-1 keyring."""
        body = _encode(
            {
                "team_id": team_id,
                "name": name,
                "slug": slug,
                "statement": _wire(statement),
                "keyring": _wire(keyring),
            }
        )
        return self._call("POST", "/api/v1/teams", _TEAM_CREATED, body=body)

    def upload_keyring(self, team: str, keyring: Signed) -> KeyringUploaded:
        """Store one epoch's keyring, sealed to the team's readers (owners and admins)."""
        body = _encode({"keyring": _wire(keyring)})
        return self._call(
            "POST", f"/api/v1/teams/{_seg(team)}/keyrings", _KEYRING_UPLOADED, body=body
        )

    def create_invite(self, team: str, record: Mapping[str, object]) -> InviteOut:
        """Register an invite: ``keymgmt.Invite.server_record()``, which holds no secret."""
        path = f"/api/v1/teams/{_seg(team)}/invite"
        return self._call("POST", path, _INVITE, body=_encode(dict(record)))

    def join(self, invite_id: str, request: Mapping[str, object]) -> JoinResult:
        """Post a join request (``keymgmt.make_join_request(...).to_dict()``) for the admins."""
        path = f"/api/v1/invites/{_seg(invite_id)}/join"
        return self._call("POST", path, _JOINED, body=_encode(dict(request)))

    def members(self, team: str) -> list[MemberOut]:
        """The team's live members with their handles, on the server's word (unverified)."""
        return self._call("GET", f"/api/v1/teams/{_seg(team)}/members", _MEMBERS)

    def audit_page(self, team: str, after: int = 0, limit: int = 500) -> AuditPage:
        """A page of the team's audit log after entry ``after``, with the server-signed head."""
        params: dict[str, str | int] = {"after": after, "limit": limit}
        return self._call("GET", f"/api/v1/teams/{_seg(team)}/audit", _AUDIT, params=params)

    def server_key(self) -> ServerKeyOut:
        """The server's own Ed25519 public key (it signs audit heads)."""
        return self._call("GET", "/.well-known/tapes-server-key", _SERVER_KEY)

    def hold(self, team: str, *, on: bool) -> bool:
        """Put the vault on legal hold or take it off (owners); whether it is held now."""
        path = f"/api/v1/teams/{_seg(team)}/hold"
        return self._call("POST", path, _HOLD, body=_encode({"on": on})).legal_hold

    def leave(self, team: str) -> None:
        """Leave ``team``: the server stops serving it to this account at once."""
        self._check(self._authed("POST", f"/api/v1/teams/{_seg(team)}/leave"))

    def join_requests(self, team: str, status: str = "pending") -> list[JoinRequestOut]:
        """The team's join requests with ``status`` (owners and admins; unverified)."""
        path = f"/api/v1/teams/{_seg(team)}/join-requests"
        return self._call("GET", path, _JOIN_REQUESTS, params={"status": status})

    def share(
        self, leaf_id: str, team: str, statement: Signed, expires_at: datetime | None = None
    ) -> ShareOut:
        """Share the session ending at ``leaf_id`` (a node ID the caller pushed) with ``team``."""
        data: dict[str, Any] = {"team": team, "statement": _wire(statement)}
        if expires_at is not None:
            data["expires_at"] = expires_at.astimezone(UTC).isoformat()
        path = f"/api/v1/sessions/{_seg(leaf_id)}/share"
        return self._call("POST", path, _SHARE, body=_encode(data))

    def unshare(self, leaf_id: str, team: str) -> None:
        """Withdraw the live share of ``leaf_id`` with ``team``."""
        path = f"/api/v1/sessions/{_seg(leaf_id)}/share"
        self._check(self._authed("DELETE", path, params={"team": team}))

    def shared(self) -> list[ShareOut]:
        """Live shares of every team the caller reads content in (unverified)."""
        return self._call("GET", "/api/v1/shared", _SHARES)

    def team_sessions(self, team: str, after: int = 0, limit: int = 100) -> SharePage:
        """One page of the live shares of ``team`` after share sequence ``after`` (unverified)."""
        path = f"/api/v1/teams/{_seg(team)}/sessions"
        return self._call("GET", path, _SHARE_PAGE, params={"after": after, "limit": limit})

    # --- GitHub binding ----------------------------------------------------------------------

    def github_start(self) -> GithubDeviceOut:
        """Start binding this account to a GitHub login (GitHub's device flow, via the server)."""
        return self._call("POST", "/auth/github/device", _GITHUB_DEVICE, body=b"{}")

    def github_poll(self, bind_id: str) -> GithubBindOut:
        """Ask once whether the code was approved at GitHub."""
        body = _encode({"bind_id": bind_id})
        return self._call("POST", "/auth/github", _GITHUB_BIND, body=body)

    def user_by_github(self, login: str) -> GithubUserOut:
        """The account bound to a GitHub login (the server's pairing; compare fingerprints)."""
        return self._call("GET", "/api/v1/users", _GITHUB_USER, params={"github": login})

    # --- devices -----------------------------------------------------------------------------

    def devices(self) -> list[DeviceOut]:
        """The account's live logins, most recently seen first (``current`` is this one)."""
        return self._call("GET", "/auth/devices", _DEVICES)

    def revoke_device(self, device_id: str) -> None:
        """End one login at once (its refresh and access tokens)."""
        self._check(self._authed("DELETE", f"/auth/devices/{_seg(device_id)}"))

    # --- API keys ----------------------------------------------------------------------------

    def create_api_key(
        self, vault: str, permissions: Sequence[str], name: str = ""
    ) -> ApiKeyCreated:
        """A new ``tapes_…`` key for one vault; the secret is in the answer, shown this once."""
        body = _encode({"vault": vault, "permissions": list(permissions), "name": name})
        return self._call("POST", "/api/v1/api-keys/", _KEY_CREATED, body=body)

    def list_api_keys(self) -> list[ApiKeyInfo]:
        """The keys this account created."""
        return self._call("GET", "/api/v1/api-keys/", _KEYS)

    def revoke_api_key(self, key_id: str) -> None:
        """Revoke a key at once."""
        self._check(self._authed("DELETE", f"/api/v1/api-keys/{_seg(key_id)}"))

    def dashboard_link(self, team: str | None = None) -> DashboardLinkOut:
        """A one-time link that signs a browser in to the server's usage dashboard."""
        body = _encode({"team": team} if team else {})
        link = self._call("POST", "/api/v1/dashboard/links", _DASHBOARD_LINK, body=body)
        # The link is opened in a browser: it must be this server's dashboard, nothing else.
        scheme, host, port, path = _origin(self._api_url)
        try:
            theirs = _origin(link.url)
        except httpx.InvalidURL:
            theirs = ("", "", None, "")
        if theirs[:3] != (scheme, host, port) or not theirs[3].startswith(
            path + "/dashboard/link/"
        ):
            raise ProtocolError("the server's dashboard link does not point at the server itself")
        return link

    # --- transport ---------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        decoder: msgspec.json.Decoder[T],
        *,
        params: Mapping[str, str | int] | None = None,
        body: bytes | None = None,
    ) -> T:
        return self._decode(self._authed(method, path, params=params, body=body), decoder)

    def _credential(self) -> str:
        if self._api_key is not None:
            return self._api_key
        session = self._session
        if session is None:
            raise AuthError(_NOT_LOGGED_IN.format(url=self._api_url))
        return session.access_token

    def _authed(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: bytes | None = None,
        accept: str = "application/json",
        content_type: str = "application/json",
    ) -> httpx.Response:
        """Send with the credential; on 401 refresh the session once and send once more."""
        token = self._credential()
        response = self._send(
            method, path, params=params, body=body, token=token, accept=accept,
            content_type=content_type,
        )  # fmt: skip
        if response.status_code != 401:
            return response
        if self._api_key is not None:
            raise AuthError(_KEY_REFUSED, hint=_KEY_HINT)
        self._refresh_after(token)
        response = self._send(
            method, path, params=params, body=body, token=self._credential(), accept=accept,
            content_type=content_type,
        )  # fmt: skip
        if response.status_code == 401:
            raise AuthError(_LOGIN_EXPIRED)
        return response

    def _refresh_after(self, spent_access: str) -> None:
        """Refresh unless another thread already did since ``spent_access`` was refused."""
        with self._lock:
            session = self._session
            if session is None:
                raise AuthError(_NOT_LOGGED_IN.format(url=self._api_url))
            if session.access_token == spent_access:
                self._refresh_locked(session)

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: bytes | None = None,
        token: str | None = None,
        accept: str = "application/json",
        content_type: str = "application/json",
    ) -> httpx.Response:
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = self._http.build_request(
            method, self._api_url + path, params=params, content=body, headers=headers,
            timeout=self._timeout,
        )  # fmt: skip
        try:
            return _bounded(self._http.send(request, stream=True))
        except httpx.TimeoutException:
            raise ServerUnreachableError(
                self._api_url, f"no answer within {self._timeout:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise ServerUnreachableError(
                self._api_url, _printable(str(exc), 120) or type(exc).__name__
            ) from None

    def _check(self, response: httpx.Response) -> httpx.Response:
        """The response if it is a success; else the matching error, with the server's detail."""
        status = response.status_code
        if 200 <= status < 300:
            return response
        try:
            problem = _PROBLEM.decode(response.content)
            detail, kind = _printable(problem.detail), problem.type
        except (msgspec.DecodeError, RecursionError):  # RecursionError: nested past msgspec's depth
            detail, kind = "", "about:blank"
        detail = detail or httpx.codes.get_reason_phrase(status) or "no explanation"
        if status == 401:
            raise AuthError(f"{_LOGIN_EXPIRED} ({detail})")
        if status == 415:
            raise UnsupportedBodyError(status, detail)
        raise PROBLEM_ERRORS.get(kind, RemoteError)(status, detail)

    def _decode(
        self,
        response: httpx.Response,
        decoder: msgspec.json.Decoder[T] | msgspec.msgpack.Decoder[T],
    ) -> T:
        self._check(response)
        try:
            return decoder.decode(response.content)
        except (msgspec.DecodeError, RecursionError) as exc:  # an Any field nested too deeply
            what = f"{response.request.method} {response.request.url.path}"
            log.debug("malformed answer to %s: %s", what, exc)
            raise ProtocolError(f"the server's answer to {what} is malformed") from None
