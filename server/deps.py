"""Request-scoped dependencies (the database transaction, the clock, the caller) and the guard
that authenticates the caller before anything of a request is parsed."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias, TypeVar, cast
from weakref import WeakKeyDictionary

import anyio.to_thread
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.handlers import BaseRouteHandler
from sqlalchemy import Connection, Engine, bindparam, event, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from server import audit
from server.db.engine import READ_ONLY
from server.db.models import AccessToken, ApiKey
from server.errors import Unauthorized
from server.plans import PlansMode
from server.settings import Settings
from tapes_e2e.protocol import API_KEY_PREFIX

__all__ = [
    "AUTHENTICATED",
    "WRITES",
    "Clock",
    "NowDep",
    "PlansDep",
    "Principal",
    "PrincipalDep",
    "SessionDep",
    "authenticate",
    "aware",
    "connection_slots",
    "in_write_transaction",
    "principal_of",
    "provide_db",
    "provide_now",
    "provide_plans",
    "provide_principal",
    "request_transaction",
    "require_credentials",
    "token_hash",
]

Clock = Callable[[], datetime]
_T = TypeVar("_T")


def utc_now() -> datetime:
    return datetime.now(UTC)


WRITES = "writes"
"""Route option: this ``GET`` writes (an audit row), so it takes the write path."""
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def writes(request: Request[object, object, State]) -> bool:
    """Whether the request may write: every method but GET/HEAD/OPTIONS, a GET whose route says
    so, and any request made with an API key (its ``last_used_at`` is recorded)."""
    if request.method not in _READ_METHODS or request.route_handler.opt.get(WRITES):
        return True
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and token.startswith(API_KEY_PREFIX)


def _refuse_writes(session: Session, _context: object, _instances: object) -> None:
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("a request on the read path wrote: give its route opt={'writes': True}")


class _ReadSession(Session):
    """The read path's sessions: the guard against writing is listened for on the class, once
    (a listener added to each session cost ~23 µs a request)."""


event.listen(_ReadSession, "before_flush", _refuse_writes)


def read_session(engine: Engine) -> Session:
    """A session whose transactions only read (SQLite: a deferred ``BEGIN``, a WAL snapshot);
    adding, changing or deleting a row in it raises instead of waiting for the write lock."""
    return _ReadSession(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)


def _per_loop(state: State, key: str, make: Callable[[], _T]) -> _T:
    """One ``make()`` per event loop, kept in the app state (asyncio primitives are bound to
    the loop they were first used on; tests run several loops in one process)."""
    made: WeakKeyDictionary[asyncio.AbstractEventLoop, _T] | None = state.get(key)
    if made is None:
        made = state[key] = WeakKeyDictionary()
    loop = asyncio.get_running_loop()
    if loop not in made:
        made[loop] = make()
    return made[loop]


def _write_lock(state: State) -> asyncio.Lock:
    """The process's queue for SQLite's write lock."""
    return _per_loop(state, "write_locks", asyncio.Lock)


def connection_slots(engine: Engine) -> int:
    """How many connections the engine's pool hands out at most (no overflow is configured)."""
    return engine.pool.size() if isinstance(engine.pool, QueuePool) else 1


@asynccontextmanager
async def _connection(state: State) -> AsyncIterator[None]:
    """A turn at one of the pool's connections, waited for on the event loop.

    Every database session of a request (and of the credentials guard) runs inside one, so no
    more sessions exist than connections and a checkout in a worker thread never waits. Before,
    the request threads blocked in the pool's checkout while the requests holding every
    connection waited for a thread to run or commit in, until the 30 s pool timeout."""
    slots = _per_loop(state, "connection_slots", lambda: asyncio.Semaphore(state.db_slots))
    async with slots:
        yield


async def provide_db(
    request: Request[object, object, State], state: State
) -> AsyncIterator[Session]:
    """One transaction per request: committed when the handler returns, rolled back on error.

    The commit runs before the response is sent (Litestar closes dependencies first), so a client
    never sees a success that was not stored; commit, rollback and close run in a worker thread
    so that the event loop never waits on the database.

    On SQLite a request that writes first reads its whole body, then waits for this process's
    write queue on the event loop (holding no thread), and only then begins ``BEGIN IMMEDIATE``;
    it leaves the queue after its commit. So at most one thread of a process ever waits for the
    database's write lock, and the holder always finds a thread to commit in: a burst queues
    instead of deadlocking the thread pool until the busy timeout. A request that only reads
    takes a deferred transaction: a WAL snapshot, no lock, never queued behind writers.
    """
    async with request_transaction(request, state) as session:
        yield session


@asynccontextmanager
async def request_transaction(
    request: Request[object, object, State], state: State
) -> AsyncIterator[Session]:
    """The transaction :func:`provide_db` gives a request (for a route's own provider that
    must resolve something first, the push's decoded body say)."""
    engine: Engine = state.engine
    if not writes(request):
        async with _transaction(state, read_session(engine)) as session:
            yield session
        return
    if engine.dialect.name == "sqlite":
        await request.body()  # a slow upload must not hold the queue
    async with _write_transaction(state) as session:
        yield session


@asynccontextmanager
async def _write_transaction(state: State) -> AsyncIterator[Session]:
    """A transaction that may write; on SQLite, taken in this process's write queue."""
    engine: Engine = state.engine
    if engine.dialect.name != "sqlite":
        async with _transaction(state, Session(engine, expire_on_commit=False)) as session:
            yield session
        return
    async with (
        _write_lock(state),
        _transaction(state, Session(engine, expire_on_commit=False)) as session,
    ):
        yield session


async def in_write_transaction(state: State, work: Callable[[Session], _T]) -> _T:
    """Run ``work`` in a write transaction of its own, committed before this returns (rolled
    back if it raises), in a worker thread; on SQLite behind this process's write queue, as
    :func:`provide_db` does."""
    async with _write_transaction(state) as session:
        return await anyio.to_thread.run_sync(work, session)


@asynccontextmanager
async def _transaction(state: State, session: Session) -> AsyncIterator[Session]:
    async with _connection(state):
        try:
            yield session
        except BaseException:
            await anyio.to_thread.run_sync(_end, session, False)
            raise
        await anyio.to_thread.run_sync(_end, session, True)


def _end(session: Session, commit: bool) -> None:
    """Commit (or roll back) and close, in one trip to a worker thread: each trip costs a
    request about 0.1 ms on the event loop, and every request makes one."""
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


def provide_now(state: State) -> datetime:
    clock: Clock = state.clock
    return clock()


def provide_plans(state: State) -> PlansMode:
    """This server's plans mode (``TAPES_SERVER_PLANS``): what the plan checks enforce."""
    settings: Settings = state.settings
    return settings.plans


def token_hash(token: str) -> str:
    """Tokens and API keys are high-entropy, so one SHA-256 is the right stored form."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user, and for an API key the one vault and the permissions it grants."""

    user_id: str
    api_key_id: str | None = None
    family_id: str | None = None  # an interactive login's device (its token family)
    key_vault: str | None = None
    key_permissions: frozenset[str] = frozenset()

    def key_allows(self, vault: str, permission: str) -> bool:
        if self.api_key_id is None:
            return True
        return vault == self.key_vault and (
            permission in self.key_permissions or "admin" in self.key_permissions
        )


# Handler parameters injected by name (Litestar 3 no longer infers it from the dependency map):
# declare ``db: SessionDep``, ``now: NowDep``, ``principal: PrincipalDep`` and
# ``plans_mode: PlansDep``.
SessionDep: TypeAlias = NamedDependency[Session]
NowDep: TypeAlias = NamedDependency[datetime]
PrincipalDep: TypeAlias = NamedDependency[Principal]
PlansDep: TypeAlias = NamedDependency[PlansMode]

_CREDENTIALS = "missing, expired or revoked credentials"
_PRINCIPAL = "tapes_principal"  # the scope key require_credentials leaves its finding under


def _bearer(header: str) -> str:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token or len(token) > 200:
        raise Unauthorized(_CREDENTIALS)
    return token


def authenticate(db: Connection, token: str, now: datetime) -> Principal:
    """The caller a bearer token or API key names, or :class:`Unauthorized`. Only reads, with
    Core statements: an ORM session for one lookup cost ~4x the select itself (~240 against
    ~60 µs a request here), and every authenticated request makes one."""
    digest = token_hash(token)
    if token.startswith(API_KEY_PREFIX):
        key = db.execute(_API_KEY_BY_HASH, {"digest": digest}).first()
        if key is None or key.revoked_at is not None:
            raise Unauthorized(_CREDENTIALS)
        return Principal(
            user_id=key.user_id,
            api_key_id=key.id,
            key_vault=key.team_id,
            key_permissions=frozenset(key.permissions.split(",")),
        )
    access = db.execute(_ACCESS_BY_HASH, {"digest": digest}).first()
    if access is None or aware(access.expires_at) <= now:
        raise Unauthorized(_CREDENTIALS)
    return Principal(user_id=access.user_id, family_id=access.family_id)


_API_KEY_BY_HASH = select(
    ApiKey.id, ApiKey.user_id, ApiKey.team_id, ApiKey.permissions, ApiKey.revoked_at
).where(ApiKey.key_hash == bindparam("digest"))
_ACCESS_BY_HASH = select(AccessToken.user_id, AccessToken.family_id, AccessToken.expires_at).where(
    AccessToken.token_hash == bindparam("digest")
)


def _needs_caller(handler: BaseRouteHandler) -> bool:
    return "principal" in handler.resolve_dependencies()


async def require_credentials(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """App guard: a route that needs a caller (its dependencies name ``principal``) refuses a
    request without valid credentials with 401 before its parameters or body are parsed, so an
    anonymous caller never reads a route's schema in a 400. Guards run before Litestar parses
    anything; the lookup reads the database, so it runs in a worker thread, in a read
    transaction of its own (no write lock). :func:`provide_principal` hands the finding to the
    handler."""
    if not _needs_caller(handler):
        return
    token = _bearer(connection.headers.get("authorization", ""))
    state = connection.app.state
    now = state.clock()

    def lookup() -> Principal:
        with state.engine.execution_options(**{READ_ONLY: True}).connect() as db, db.begin():
            return authenticate(db, token, now)

    scope = cast(dict[str, Any], connection.scope)
    async with _connection(state):
        scope[_PRINCIPAL] = await anyio.to_thread.run_sync(lookup)


def principal_of(scope: dict[str, Any]) -> Principal:
    """The caller :func:`require_credentials` authenticated, read without a database session
    (for a handler that calls another service before it opens one)."""
    principal = scope.get(_PRINCIPAL)
    if not isinstance(principal, Principal):  # pragma: no cover - the guard always ran
        raise Unauthorized(_CREDENTIALS)
    return principal


async def provide_principal(request: Request[object, object, State], db: SessionDep) -> Principal:
    """The caller :func:`require_credentials` authenticated. An API key is looked at again in
    the request's own transaction (a revocation since then wins) and its use recorded, in a
    worker thread; a login's token needs no second look, and no trip to a thread."""
    principal = principal_of(cast(dict[str, Any], request.scope))
    if principal.api_key_id is not None:
        await anyio.to_thread.run_sync(_key_in_use, db, principal, request.app.state.clock())
    return principal


def _key_in_use(db: Session, principal: Principal, now: datetime) -> None:
    key = db.get(ApiKey, principal.api_key_id, with_for_update=True)
    if key is None or key.revoked_at is not None:
        raise Unauthorized(_CREDENTIALS)
    audit.key_used(db, key, now)


def aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes for the UTC values we stored.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# The dependency map of every controller (or handler) that needs a logged-in caller. An API
# key's lookup reads the database, so it runs in a worker thread: on the event loop, a lookup
# waiting for SQLite's write lock (every server transaction takes it) stopped the loop, and with
# it the commit of the very request holding the lock, until the 30 s busy timeout failed one.
AUTHENTICATED = {"principal": Provide(provide_principal)}
