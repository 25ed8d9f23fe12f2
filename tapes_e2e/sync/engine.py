"""The sync engine: a pure state machine, ``decide(state, event) -> (state, actions)``.

No I/O, no clock and no randomness in here (STYLE habit 6, after magic-wormhole's machines and
Atuin's sync): time arrives in the events (``now``), jitter arrives in ``Failed.jitter``, and the
caller performs the actions. The worker thread (``sync/worker.py``) and ``tapes storage sync`` in
the foreground drive the same engine.

A **round** pushes until there is nothing left to push, then pulls until the server says there
is no more. At most one request (``PushBatch`` or ``FetchPage``) is outstanding at any time; the
response to it is the next event (``PushAcked`` / ``NothingToPush`` / ``PulledPage`` /
``Failed``).

State diagram (``phase``)::

                    Tick(now >= next_round_at), SyncRequested
          +------+ -----------------------------------------> +---------+ PushAcked
          | idle |                                            | pushing | --> PushBatch again
          +------+ <-----+                                    +---------+
            ^  ^         | PulledPage(more=False)               |     |
            |  |         |   (round ok; SyncRequested           |     | NothingToPush
            |  |         |    during it: next round now)        |     v
            |  |      +---------+ <------------------------------+  +---------+
            |  +----- | pulling | <---------------------------------| pulling |
            |         +---------+ PulledPage(more=True): FetchPage   +---------+
            |              |
            |              | Failed("offline" | "server") from pushing or pulling
            |              v
            |  Tick(now >= until) +---------+    Backoff(until): delay doubles per failure,
            +-------------------- | backoff |    times a jitter factor in [0.5, 1], never
              (retry: a new round)+---------+    shorter than the last one, capped
                                                 (``max_backoff``); a success ends the streak

    Failed("auth"), first time:  RefreshLogin, then the same request again (still in flight)
    Failed("auth"), again:       round reported failed -> blocked (no automatic rounds; a
                                 SyncRequested, e.g. after `tapes auth login`, starts one)
    Failed("integrity"):         ReportIntegrity; the request's data was not stored and the
                                 cursor did not move; round reported failed -> idle
    PulledPage(rejected=...):    ReportIntegrity for each node refused in the page; the rest of
                                 the page is stored and the cursor is past it; pulling goes on
                                 with the next page, and the round is reported as failed

    Closing(now, deadline), from any phase:
        idle / backoff -> one more round now      pushing / pulling -> this round, then one more
        blocked, or now >= deadline -> Stop       then: round over or any failure -> Stop
        at most ``close_budget`` more requests; a Tick at or after the deadline -> Stop
    stopped: every event is ignored.

Events that make no sense in the current phase (a response with nothing in flight, say) are
ignored: the state comes back unchanged with no actions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal, TypeAlias

__all__ = [
    "Action",
    "Backoff",
    "Closing",
    "EngineConfig",
    "EngineState",
    "Event",
    "Failed",
    "FailureKind",
    "FetchPage",
    "NothingToPush",
    "Phase",
    "PulledPage",
    "PushAcked",
    "PushBatch",
    "RefreshLogin",
    "ReportIntegrity",
    "RoundFinished",
    "RoundResult",
    "Stop",
    "SyncRequested",
    "Tick",
    "backoff_delay",
    "decide",
    "in_flight",
    "next_wakeup",
]

FailureKind: TypeAlias = Literal["offline", "auth", "integrity", "server"]
RoundResult: TypeAlias = Literal["ok", "offline", "auth", "integrity", "server"]
Phase: TypeAlias = Literal["idle", "pushing", "pulling", "backoff", "blocked", "stopped"]

# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: the worker woke up (its interval, a backoff ending, a deadline)."""

    now: float


@dataclass(frozen=True, slots=True)
class SyncRequested:
    """Someone asked for a round now (``request_sync()``, ``tapes storage sync``)."""

    now: float


@dataclass(frozen=True, slots=True)
class PushAcked:
    """The server acknowledged a batch of ``count`` nodes up to rowid ``new_hwm``.

    ``cursor``, when set, is where the pull cursor moved because the batch was stored right
    after it (the server's sequence numbers of our own nodes: nothing to pull back).
    """

    count: int
    new_hwm: int
    cursor: int | None = None


@dataclass(frozen=True, slots=True)
class NothingToPush:
    """The store holds nothing above the push mark that the server lacks."""


@dataclass(frozen=True, slots=True)
class PulledPage:
    """A page was pulled and stored: ``count`` nodes, the cursor now at ``cursor``.

    ``rejected`` holds one message per envelope of the page that failed verification and was
    not stored (the rest of the page was, and the cursor is past the whole page).
    """

    count: int
    cursor: int
    more: bool
    rejected: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Failed:
    """The outstanding request failed; nothing of it was stored.

    ``jitter`` (in [0.5, 1], clamped) scales the backoff delay; the caller draws it from its
    random source so that ``decide`` stays deterministic.
    """

    kind: FailureKind
    message: str
    now: float
    jitter: float = 1.0


@dataclass(frozen=True, slots=True)
class Closing:
    """The provider is closing: finish within ``deadline`` (the same clock as ``now``)."""

    now: float
    deadline: float


Event: TypeAlias = Tick | SyncRequested | PushAcked | NothingToPush | PulledPage | Failed | Closing

# --- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PushBatch:
    """Push the next batch of nodes above rowid ``after_rowid``; answer with PushAcked,
    NothingToPush or Failed."""

    after_rowid: int


@dataclass(frozen=True, slots=True)
class FetchPage:
    """Pull and store the page after ``after_cursor``; answer with PulledPage or Failed."""

    after_cursor: int


@dataclass(frozen=True, slots=True)
class Backoff:
    """Make no request before ``until`` (the same clock as ``now``)."""

    until: float


@dataclass(frozen=True, slots=True)
class RefreshLogin:
    """Refresh the access token; the request after it in the same list is the retry.

    If the refresh fails, answer with Failed and skip the rest of the list.
    """


@dataclass(frozen=True, slots=True)
class ReportIntegrity:
    """Tell the user: ``tapes: error: integrity: <message>``."""

    message: str


@dataclass(frozen=True, slots=True)
class RoundFinished:
    """A round ended: record ``result`` (and ``message``) as the last sync result."""

    result: RoundResult
    message: str = ""


@dataclass(frozen=True, slots=True)
class Stop:
    """The engine is done (after Closing); the worker exits."""


Action: TypeAlias = (
    PushBatch | FetchPage | Backoff | RefreshLogin | ReportIntegrity | RoundFinished | Stop
)
Request: TypeAlias = PushBatch | FetchPage

# --- state ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Policy knobs, in seconds and counts."""

    interval: float = 300.0
    base_backoff: float = 1.0
    max_backoff: float = 300.0
    close_budget: int = 32  # requests allowed after Closing

    def __post_init__(self) -> None:
        if not (self.interval > 0 and 0 < self.base_backoff <= self.max_backoff):
            raise ValueError("interval and backoff must be positive, base <= max")
        if self.close_budget < 0:
            raise ValueError("close_budget must be >= 0")


@dataclass(frozen=True, slots=True)
class EngineState:
    """Everything ``decide`` knows. Build the first one with :meth:`EngineState.start`."""

    config: EngineConfig = field(default_factory=EngineConfig)
    phase: Phase = "idle"
    push_rowid: int = 0
    cursor: int = 0
    clock: float = 0.0  # the latest ``now`` seen
    next_round_at: float = 0.0
    round_started_at: float = 0.0
    again: bool = False  # a SyncRequested arrived during the round
    failures: int = 0  # the failure streak: failed rounds since the last success
    delay: float = 0.0  # the last backoff delay of the streak
    backoff_until: float = 0.0
    auth_refreshed: bool = False  # RefreshLogin was tried since the last success
    rejected: int = 0  # envelopes refused in this round
    first_rejection: str = ""
    closing: bool = False
    deadline: float = math.inf
    budget: int = 0  # requests still allowed while closing

    @classmethod
    def start(
        cls, config: EngineConfig, *, now: float, push_rowid: int = 0, cursor: int = 0
    ) -> EngineState:
        """A fresh engine whose first Tick at or after ``now`` starts a round."""
        return cls(
            config=config, push_rowid=push_rowid, cursor=cursor, clock=now, next_round_at=now
        )


def in_flight(state: EngineState) -> Request | None:
    """The request whose response the engine waits for, if any."""
    if state.phase == "pushing":
        return PushBatch(state.push_rowid)
    if state.phase == "pulling":
        return FetchPage(state.cursor)
    return None


def next_wakeup(state: EngineState) -> float | None:
    """When the caller should send a Tick, if nothing else happens first (None: never)."""
    if state.phase == "idle":
        return state.next_round_at
    if state.phase == "backoff":
        return min(state.backoff_until, state.deadline)
    if state.phase in ("pushing", "pulling") and state.closing:
        return state.deadline
    return None


def backoff_delay(config: EngineConfig, failures: int, jitter: float, previous: float) -> float:
    """The delay after the ``failures``-th failure in a row: exponential, jittered, monotone,
    capped."""
    jitter = min(1.0, max(0.5, jitter))
    raw = config.base_backoff * 2.0 ** min(failures - 1, 62) * jitter
    return min(config.max_backoff, max(previous, raw))


# --- the transition function ------------------------------------------------------------------


def decide(state: EngineState, event: Event) -> tuple[EngineState, list[Action]]:
    """The next state and the actions to perform, in order, for ``event``."""
    if state.phase == "stopped":
        return state, []
    if isinstance(event, Tick | SyncRequested | Closing | Failed) and event.now > state.clock:
        state = replace(state, clock=event.now)
    if isinstance(event, Tick):
        return _tick(state, event.now)
    if isinstance(event, SyncRequested):
        return _requested(state, event.now)
    if isinstance(event, Closing):
        return _closing(state, event.now, event.deadline)
    return _response(state, event)


def _response(
    state: EngineState, event: PushAcked | NothingToPush | PulledPage | Failed
) -> tuple[EngineState, list[Action]]:
    """The answer to the outstanding request; ignored when none is outstanding."""
    if isinstance(event, Failed):
        if state.phase not in ("pushing", "pulling"):
            return state, []
        return _failed(state, event)
    if isinstance(event, PulledPage):
        return _pulled(state, event) if state.phase == "pulling" else (state, [])
    if state.phase != "pushing":
        return state, []
    if isinstance(event, PushAcked):
        state = replace(state, push_rowid=max(state.push_rowid, event.new_hwm))
        if event.cursor is not None and event.cursor > state.cursor:
            state = replace(state, cursor=event.cursor)
        return _request(replace(state, auth_refreshed=False), PushBatch(state.push_rowid))
    state = replace(state, phase="pulling", auth_refreshed=False)
    return _request(state, FetchPage(state.cursor))


def _tick(state: EngineState, now: float) -> tuple[EngineState, list[Action]]:
    if state.closing and now >= state.deadline:
        return _stop(state)
    if state.phase == "idle" and now >= state.next_round_at:
        return _start_round(state, now)
    if state.phase == "backoff" and now >= state.backoff_until:
        return _start_round(state, now)
    return state, []


def _requested(state: EngineState, now: float) -> tuple[EngineState, list[Action]]:
    if state.closing:
        return state, []
    if state.phase in ("pushing", "pulling"):
        return replace(state, again=True), []
    if state.phase == "blocked":
        # The user asked: perhaps after logging in again. One refresh is allowed again.
        state = replace(state, auth_refreshed=False)
    return _start_round(state, now)


def _start_round(state: EngineState, now: float) -> tuple[EngineState, list[Action]]:
    state = replace(
        state,
        phase="pushing",
        round_started_at=now,
        again=False,
        rejected=0,
        first_rejection="",
    )
    return _request(state, PushBatch(state.push_rowid))


def _request(
    state: EngineState, request: Request, before: tuple[Action, ...] = ()
) -> tuple[EngineState, list[Action]]:
    """Emit ``request`` (after ``before``), counting it against the closing budget."""
    if state.closing:
        if state.budget <= 0:
            return _stop(state)
        state = replace(state, budget=state.budget - 1)
    return state, [*before, request]


def _pulled(state: EngineState, page: PulledPage) -> tuple[EngineState, list[Action]]:
    reports: list[Action] = [ReportIntegrity(message) for message in page.rejected]
    state = replace(
        state,
        rejected=state.rejected + len(page.rejected),
        first_rejection=state.first_rejection or (page.rejected[0] if page.rejected else ""),
        auth_refreshed=False,
    )
    progressed = page.cursor > state.cursor
    state = replace(state, cursor=max(state.cursor, page.cursor))
    if page.more and progressed:
        new_state, actions = _request(state, FetchPage(state.cursor))
        return new_state, [*reports, *actions]
    if page.more:
        # "More" without moving the cursor would ask for the same page forever.
        message = f"the server's pull cursor did not advance past {state.cursor}"
        reports.append(ReportIntegrity(message))
        state = replace(state, rejected=state.rejected + 1)
        state = replace(state, first_rejection=state.first_rejection or message)
    new_state, actions = _finish_round(state)
    return new_state, [*reports, *actions]


def _finish_round(state: EngineState) -> tuple[EngineState, list[Action]]:
    """The round reached its end (pulled everything): ok, or failed by integrity rejections."""
    if state.rejected:
        done: Action = RoundFinished(
            "integrity", f"{state.rejected} refused: {state.first_rejection}"
        )
    else:
        done = RoundFinished("ok")
    state = replace(
        state,
        failures=0,
        delay=0.0,
        auth_refreshed=False,
        next_round_at=state.round_started_at + state.config.interval,
    )
    if state.closing and not state.again:
        new_state, actions = _stop(state)
        return new_state, [done, *actions]
    if state.again:
        new_state, actions = _start_round(state, state.clock)
        return new_state, [done, *actions]
    return replace(state, phase="idle"), [done]


def _failed(state: EngineState, failure: Failed) -> tuple[EngineState, list[Action]]:
    kind, message, now = failure.kind, failure.message, failure.now
    if state.closing:
        new_state, actions = _stop(state)
        reports: list[Action] = [ReportIntegrity(message)] if kind == "integrity" else []
        return new_state, [*reports, RoundFinished(kind, message), *actions]
    if kind == "auth":
        if not state.auth_refreshed:
            request = in_flight(state)
            assert request is not None  # noqa: S101 - _failed runs only while pushing/pulling
            state = replace(state, auth_refreshed=True)
            return state, [RefreshLogin(), request]
        return replace(state, phase="blocked", again=False), [RoundFinished("auth", message)]
    if kind == "integrity":
        state = replace(state, phase="idle", again=False, next_round_at=now + state.config.interval)
        return state, [ReportIntegrity(message), RoundFinished("integrity", message)]
    failures = state.failures + 1
    delay = backoff_delay(state.config, failures, failure.jitter, state.delay)
    state = replace(
        state,
        phase="backoff",
        again=False,
        failures=failures,
        delay=delay,
        backoff_until=now + delay,
    )
    return state, [RoundFinished(kind, message), Backoff(state.backoff_until)]


def _closing(state: EngineState, now: float, deadline: float) -> tuple[EngineState, list[Action]]:
    if state.closing:
        return replace(state, deadline=min(state.deadline, deadline)), []
    state = replace(state, closing=True, deadline=deadline, budget=state.config.close_budget)
    if now >= deadline or state.phase == "blocked":
        return _stop(state)
    if state.phase in ("idle", "backoff"):
        return _start_round(state, now)
    # pushing / pulling: this round may have read the rows before the last writes; one more
    # round after it pushes them (both within the deadline and the request budget).
    return replace(state, again=True), []


def _stop(state: EngineState) -> tuple[EngineState, list[Action]]:
    return replace(state, phase="stopped", again=False), [Stop()]
