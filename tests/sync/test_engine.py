"""The pure sync engine: table-driven transitions, then properties over any event sequence."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapes_e2e.sync.engine import (
    Action,
    Backoff,
    Closing,
    EngineConfig,
    EngineState,
    Event,
    Failed,
    FetchPage,
    NothingToPush,
    PulledPage,
    PushAcked,
    PushBatch,
    RefreshLogin,
    ReportIntegrity,
    RoundFinished,
    Stop,
    SyncRequested,
    Tick,
    backoff_delay,
    decide,
    in_flight,
    next_wakeup,
)

CONFIG = EngineConfig(interval=60.0, base_backoff=1.0, max_backoff=300.0, close_budget=5)
START = EngineState.start(CONFIG, now=100.0, push_rowid=10, cursor=3)
PUSHING = replace(START, phase="pushing", round_started_at=100.0)
PULLING = replace(START, phase="pulling", round_started_at=100.0)
BACKOFF = replace(START, phase="backoff", failures=1, delay=1.0, backoff_until=101.0)
BLOCKED = replace(START, phase="blocked", auth_refreshed=True)
STOPPED = replace(START, phase="stopped")


def run(state: EngineState, *events: Event) -> tuple[EngineState, list[Action]]:
    """Feed events in order; the actions of the last one."""
    actions: list[Action] = []
    for event in events:
        state, actions = decide(state, event)
    return state, actions


# (name, state, event, expected actions, expected phase)
CASES: list[tuple[str, EngineState, Event, list[Action], str]] = [
    ("first tick starts a round", START, Tick(100.0), [PushBatch(10)], "pushing"),
    (
        "tick before the interval does nothing",
        replace(START, next_round_at=160.0),
        Tick(159.9),
        [],
        "idle",
    ),
    (
        "a request starts a round before the interval",
        replace(START, next_round_at=160.0),
        SyncRequested(120.0),
        [PushBatch(10)],
        "pushing",
    ),
    ("an ack pushes the next batch", PUSHING, PushAcked(5, 42), [PushBatch(42)], "pushing"),
    ("a stale ack never lowers the mark", PUSHING, PushAcked(5, 2), [PushBatch(10)], "pushing"),
    ("nothing left to push: pull", PUSHING, NothingToPush(), [FetchPage(3)], "pulling"),
    ("more pages: pull the next", PULLING, PulledPage(5, 8, more=True), [FetchPage(8)], "pulling"),
    (
        "the last page ends the round",
        PULLING,
        PulledPage(0, 8, more=False),
        [RoundFinished("ok")],
        "idle",
    ),
    (
        "refused envelopes are reported, pulling goes on",
        PULLING,
        PulledPage(3, 9, more=True, rejected=("bad blob", "bad parent")),
        [ReportIntegrity("bad blob"), ReportIntegrity("bad parent"), FetchPage(9)],
        "pulling",
    ),
    (
        "more without moving the cursor ends the round as an integrity failure",
        PULLING,
        PulledPage(0, 3, more=True),
        [
            ReportIntegrity("the server's pull cursor did not advance past 3"),
            RoundFinished(
                "integrity", "1 refused: the server's pull cursor did not advance past 3"
            ),
        ],
        "idle",
    ),
    (
        "offline backs off",
        PULLING,
        Failed("offline", "no route", 130.0, jitter=1.0),
        [RoundFinished("offline", "no route"), Backoff(131.0)],
        "backoff",
    ),
    (
        "server error backs off with jitter",
        PUSHING,
        Failed("server", "500", 130.0, jitter=0.5),
        [RoundFinished("server", "500"), Backoff(130.5)],
        "backoff",
    ),
    (
        "first auth failure refreshes and retries the same request",
        PUSHING,
        Failed("auth", "401", 130.0),
        [RefreshLogin(), PushBatch(10)],
        "pushing",
    ),
    (
        "second auth failure gives up",
        replace(PULLING, auth_refreshed=True),
        Failed("auth", "401", 130.0),
        [RoundFinished("auth", "401")],
        "blocked",
    ),
    (
        "request-level integrity failure reports and ends the round",
        PULLING,
        Failed("integrity", "chain fork", 130.0),
        [ReportIntegrity("chain fork"), RoundFinished("integrity", "chain fork")],
        "idle",
    ),
    ("backoff: tick too early does nothing", BACKOFF, Tick(100.9), [], "backoff"),
    ("backoff: tick after it retries", BACKOFF, Tick(101.0), [PushBatch(10)], "pushing"),
    ("blocked: ticks do not retry", BLOCKED, Tick(10_000.0), [], "blocked"),
    ("blocked: a request retries", BLOCKED, SyncRequested(200.0), [PushBatch(10)], "pushing"),
    ("closing when idle: one more round", START, Closing(100.0, 110.0), [PushBatch(10)], "pushing"),
    (
        "closing in backoff: one more round now",
        BACKOFF,
        Closing(100.5, 110.0),
        [PushBatch(10)],
        "pushing",
    ),
    ("closing past its deadline stops", START, Closing(100.0, 100.0), [Stop()], "stopped"),
    ("closing when blocked stops", BLOCKED, Closing(100.0, 110.0), [Stop()], "stopped"),
    ("closing in a round lets it go on", PULLING, Closing(100.0, 110.0), [], "pulling"),
    ("a response with nothing in flight is ignored", START, PushAcked(1, 99), [], "idle"),
    (
        "a pull answer while pushing is ignored",
        PUSHING,
        PulledPage(1, 9, more=False),
        [],
        "pushing",
    ),
    (
        "a failure with nothing in flight is ignored",
        START,
        Failed("offline", "x", 100.0),
        [],
        "idle",
    ),
    ("stopped ignores everything", STOPPED, SyncRequested(500.0), [], "stopped"),
]


@pytest.mark.parametrize(
    ("state", "event", "expected", "phase"),
    [pytest.param(s, e, a, p, id=name) for name, s, e, a, p in CASES],
)
def test_transition(state: EngineState, event: Event, expected: list[Action], phase: str) -> None:
    new_state, actions = decide(state, event)
    assert actions == expected
    assert new_state.phase == phase


def test_a_full_round_then_the_next_at_the_interval() -> None:
    state, actions = run(START, Tick(100.0))
    assert actions == [PushBatch(10)]
    state, actions = run(state, PushAcked(500, 600))
    assert actions == [PushBatch(600)]
    state, actions = run(state, NothingToPush())
    assert actions == [FetchPage(3)]
    state, actions = run(state, PulledPage(500, 503, more=True))
    assert actions == [FetchPage(503)]
    state, actions = run(state, PulledPage(7, 510, more=False))
    assert actions == [RoundFinished("ok")]
    assert (state.phase, state.push_rowid, state.cursor) == ("idle", 600, 510)
    assert next_wakeup(state) == 160.0
    assert run(state, Tick(159.0))[1] == []
    assert run(state, Tick(160.0))[1] == [PushBatch(600)]


def test_a_request_during_a_round_runs_another_right_after() -> None:
    state, _ = run(START, Tick(100.0), NothingToPush())
    state, actions = decide(state, SyncRequested(101.0))
    assert actions == []
    state, actions = decide(state, PulledPage(0, 3, more=False))
    assert actions == [RoundFinished("ok"), PushBatch(10)]
    assert state.phase == "pushing"
    assert not state.again


def test_backoff_doubles_is_capped_and_resets_after_a_success() -> None:
    state, _ = run(START, Tick(100.0))
    delays = []
    now = 100.0
    for _ in range(12):
        state, actions = decide(state, Failed("offline", "down", now, jitter=1.0))
        (backoff,) = [a for a in actions if isinstance(a, Backoff)]
        delays.append(backoff.until - now)
        now = backoff.until
        state, actions = decide(state, Tick(now))
        assert actions == [PushBatch(10)]
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    state, _ = run(state, NothingToPush(), PulledPage(0, 3, more=False))
    assert (state.failures, state.delay) == (0, 0.0)
    state, actions = run(state, Tick(now + 60), Failed("server", "503", now + 61, jitter=1.0))
    assert Backoff(now + 62) in actions


def test_backoff_delay_is_monotone_even_when_jitter_drops() -> None:
    # 2 * 0.5 (second failure, lowest jitter) is not below 1 * 1.0 (first, highest).
    first = backoff_delay(CONFIG, 1, 1.0, 0.0)
    second = backoff_delay(CONFIG, 2, 0.5, first)
    assert first == 1.0
    assert second == 1.0
    assert backoff_delay(CONFIG, 3, 0.75, second) == 3.0
    assert backoff_delay(CONFIG, 10_000, 1.0, 3.0) == 300.0
    assert backoff_delay(CONFIG, 1, 7.0, 0.0) == 1.0  # jitter clamped to [0.5, 1]


def test_auth_refresh_is_allowed_again_after_a_success() -> None:
    state, actions = run(START, Tick(100.0), Failed("auth", "401", 100.0))
    assert actions == [RefreshLogin(), PushBatch(10)]
    state, actions = run(state, PushAcked(1, 11), Failed("auth", "401", 101.0))
    assert actions == [RefreshLogin(), PushBatch(11)]
    state, actions = decide(state, Failed("auth", "401", 102.0))
    assert actions == [RoundFinished("auth", "401")]
    assert state.phase == "blocked"
    assert next_wakeup(state) is None


def test_integrity_rejections_mark_the_round_failed_but_store_the_rest() -> None:
    state, _ = run(START, Tick(100.0), NothingToPush())
    state, actions = decide(state, PulledPage(9, 13, more=True, rejected=("blob altered",)))
    assert actions == [ReportIntegrity("blob altered"), FetchPage(13)]
    state, actions = decide(state, PulledPage(4, 17, more=False))
    assert actions == [RoundFinished("integrity", "1 refused: blob altered")]
    assert state.cursor == 17
    # The next round starts clean.
    state, _ = run(state, Tick(160.0), NothingToPush(), PulledPage(0, 17, more=False))
    assert state.rejected == 0


def test_closing_budget_bounds_an_endless_pull() -> None:
    state, _ = run(START, Tick(100.0), NothingToPush())
    state, actions = decide(state, Closing(100.0, 1e9))
    assert actions == []
    requests = 0
    cursor = 3
    while state.phase != "stopped":
        cursor += 1
        state, actions = decide(state, PulledPage(1, cursor, more=True))
        requests += sum(isinstance(a, FetchPage) for a in actions)
        assert requests <= CONFIG.close_budget
    assert actions == [Stop()]
    assert requests == CONFIG.close_budget


def test_closing_stops_at_the_deadline_tick_and_after_a_failure() -> None:
    state, _ = run(START, Tick(100.0), Closing(100.0, 105.0))
    assert next_wakeup(state) == 105.0
    assert decide(state, Tick(104.9))[1] == []
    assert decide(state, Tick(105.0))[1] == [Stop()]
    _, actions = decide(state, Failed("offline", "down", 101.0))
    assert actions == [RoundFinished("offline", "down"), Stop()]


def test_closing_round_success_stops() -> None:
    state, _ = run(START, Closing(100.0, 110.0), NothingToPush())
    state, actions = decide(state, PulledPage(0, 3, more=False))
    assert actions == [RoundFinished("ok"), Stop()]
    assert state.phase == "stopped"


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="positive"):
        EngineConfig(base_backoff=10.0, max_backoff=5.0)
    with pytest.raises(ValueError, match="close_budget"):
        EngineConfig(close_budget=-1)


# --- properties -------------------------------------------------------------------------------

_kinds = st.sampled_from(["offline", "auth", "integrity", "server"])
_events = st.one_of(
    st.builds(Tick, st.floats(0, 50)),
    st.builds(SyncRequested, st.floats(0, 50)),
    st.builds(PushAcked, st.integers(0, 100), st.integers(0, 10_000)),
    st.just(NothingToPush()),
    st.builds(
        PulledPage,
        st.integers(0, 100),
        st.integers(0, 10_000),
        st.booleans(),
        st.lists(st.text(max_size=5), max_size=2).map(tuple),
    ),
    st.builds(Failed, _kinds, st.text(max_size=5), st.floats(0, 50), st.floats(0, 2)),
    st.builds(Closing, st.floats(0, 50), st.floats(0, 100)),
)
_REQUEST = PushBatch | FetchPage


def _answers(state: EngineState, event: Event) -> bool:
    """Whether ``event`` is the response to the request outstanding in ``state``."""
    if state.phase == "pushing":
        return isinstance(event, PushAcked | NothingToPush | Failed)
    if state.phase == "pulling":
        return isinstance(event, PulledPage | Failed)
    return False


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_events, st.floats(0, 5)), max_size=60))
def test_any_event_sequence_keeps_the_invariants(steps: list[tuple[Event, float]]) -> None:
    state = EngineState.start(CONFIG, now=0.0)
    outstanding: PushBatch | FetchPage | None = None
    clock = 0.0
    last_delay = 0.0
    for raw_event, advance in steps:
        clock += advance
        # Time only moves forward: shift the event's ``now`` onto the running clock.
        event = raw_event
        if isinstance(raw_event, Tick | SyncRequested | Failed | Closing):
            event = replace(raw_event, now=clock + raw_event.now)
        before = state
        state, actions = decide(state, event)
        requests = [a for a in actions if isinstance(a, _REQUEST)]
        answered = _answers(before, event)

        # Never two requests in flight.
        assert len(requests) <= 1
        if requests:
            assert outstanding is None or answered, (before.phase, event, actions)
            assert state.phase != "stopped"
            outstanding = requests[0]
        elif answered or state.phase == "stopped":
            outstanding = None
        assert in_flight(state) == outstanding
        if Stop() in actions:
            assert actions[-1] == Stop()
            assert state.phase == "stopped"

        # Marks never move back.
        assert state.push_rowid >= before.push_rowid
        assert state.cursor >= before.cursor

        # Backoff: monotone within a failure streak, capped, never below half the base.
        if state.failures == 0:
            last_delay = 0.0
        for action in actions:
            if isinstance(action, Backoff):
                assert isinstance(event, Failed)
                assert action.until == event.now + state.delay
                delay = state.delay
                assert CONFIG.base_backoff * 0.5 <= delay <= CONFIG.max_backoff
                assert delay >= last_delay
                last_delay = delay


def _respond(state: EngineState, choice: int, now: float) -> Event:
    """A consistent environment: the answer to what is in flight, or the wake-up tick."""
    request = in_flight(state)
    if isinstance(request, PushBatch):
        options: list[Event] = [
            PushAcked(1, request.after_rowid + 1),
            NothingToPush(),
            Failed("offline", "down", now),
            Failed("auth", "401", now),
        ]
    elif isinstance(request, FetchPage):
        options = [
            PulledPage(1, request.after_cursor + 1, more=True),
            PulledPage(1, request.after_cursor + 1, more=False),
            PulledPage(0, request.after_cursor + 1, more=True, rejected=("bad",)),
            Failed("server", "503", now),
            Failed("integrity", "fork", now),
        ]
    else:
        wake = next_wakeup(state)
        options = [Tick(max(now, wake if wake is not None else now)), SyncRequested(now)]
    return options[choice % len(options)]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 50), max_size=40),
    st.lists(st.integers(0, 50), min_size=CONFIG.close_budget + 3),
    st.floats(0, 30),
)
def test_closing_always_reaches_stop_within_the_budget(
    before: list[int], after: list[int], grace: float
) -> None:
    state = EngineState.start(CONFIG, now=0.0)
    now = 0.0
    for choice in before:
        now += 1.0
        state, _ = decide(state, _respond(state, choice, now))
    state, actions = decide(state, Closing(now, now + grace))
    steps = 0
    for choice in after:
        if state.phase == "stopped":
            break
        # While closing, the engine is never idle and never waits on a backoff.
        assert state.phase in ("pushing", "pulling")
        state, actions = decide(state, _respond(state, choice, now))
        steps += 1
    assert state.phase == "stopped"
    assert actions[-1] == Stop()
    assert steps <= CONFIG.close_budget + 1


def test_closing_during_a_round_runs_one_more_round_for_late_writes() -> None:
    """A node written while the round was pulling must still leave before the worker stops."""
    from tapes_e2e.sync.engine import (
        Closing,
        EngineConfig,
        EngineState,
        FetchPage,
        NothingToPush,
        PulledPage,
        PushBatch,
        RoundFinished,
        Stop,
        SyncRequested,
        decide,
    )

    state = EngineState.start(EngineConfig(), now=0.0, push_rowid=0, cursor=0)
    state, actions = decide(state, SyncRequested(0.0))
    assert actions == [PushBatch(0)]
    state, actions = decide(state, NothingToPush())
    assert actions == [FetchPage(0)]
    state, actions = decide(state, Closing(1.0, 60.0))  # while pulling
    assert actions == []
    state, actions = decide(state, PulledPage(count=0, cursor=0, more=False))
    assert actions == [RoundFinished("ok"), PushBatch(0)]  # the closing round
    state, actions = decide(state, NothingToPush())
    assert actions == [FetchPage(0)]
    state, actions = decide(state, PulledPage(count=0, cursor=0, more=False))
    assert actions == [RoundFinished("ok"), Stop()]


def test_a_push_stored_right_after_the_cursor_moves_it() -> None:
    from tapes_e2e.sync.engine import (
        EngineConfig,
        EngineState,
        FetchPage,
        PushAcked,
        PushBatch,
        SyncRequested,
        decide,
    )

    state = EngineState.start(EngineConfig(), now=0.0, push_rowid=0, cursor=4)
    state, _ = decide(state, SyncRequested(0.0))
    state, actions = decide(state, PushAcked(count=3, new_hwm=3, cursor=7))
    assert actions == [PushBatch(3)]
    assert state.cursor == 7
    state, actions = decide(state, PushAcked(count=1, new_hwm=4, cursor=None))
    assert (state.cursor, actions) == (7, [PushBatch(4)])
    state, actions = decide(state, PushAcked(count=1, new_hwm=5, cursor=2))  # never backwards
    assert state.cursor == 7
    assert FetchPage(7) not in actions
