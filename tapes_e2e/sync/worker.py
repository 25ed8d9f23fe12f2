"""The I/O edge of the sync: performs the engine's actions against the store and the server.

``SyncRunner`` feeds events to :func:`tapes_e2e.sync.engine.decide` and performs the actions it
returns, one after the other, turning each request's outcome into the next event. The server is
reached only through injected callables (``push``, ``pull``, ``refresh_login``), so tests pass
fakes; the clock and the random source are injected too.

``SyncWorker`` runs a runner on a thread: it wakes when the engine's next deadline comes (the
sync interval, the end of a backoff) or when :meth:`SyncWorker.request_sync` is called, and
:meth:`SyncWorker.close` gives it one bounded round when ``sync_on_close`` is set.
:func:`run_sync` runs one round in the calling thread (``tapes storage sync``).

One sync of a store and vault at a time: the worker runs each round holding the runner's
``lock`` (``SyncState.sync_lock``, a file lock shared with ``tapes storage sync`` and any other
process), and skips the round, asking again ``busy_retry`` later, while someone else holds it.

The callables' contract:

- ``push(vault, nodes) -> node_ids``: seal and send the nodes (parents first, as given); return
  the server's node id of each, in order, once the server has acknowledged all of them
  (``existing`` counts as acknowledged). Pushing an acknowledged node again must be harmless.
  A :class:`Pusher` splits this in two (``prepare`` seals, ``send`` sends), so that the next
  batch is sealed on a helper thread while the server stores this one.
- ``pull(vault, after_cursor, limit) -> PulledBatch``: fetch and verify the page after the cursor;
  nodes that fail verification go to ``rejected`` (one message each), never to ``rows``. It is
  called on a helper thread for the page after one that says ``more`` (never two at once). A
  :class:`Puller` splits it: only its ``fetch`` runs ahead, ``open`` runs on the runner's thread.
- ``refresh_login()``: get a fresh access token.
- Each raises :class:`SyncError` with a kind (``offline``, ``auth``, ``integrity``, ``server``)
  for an expected failure. Anything else is logged and treated as a ``server`` failure.

A pulled node whose parent is neither stored nor in its page (the parent was refused) is refused
too, with a message, so that one bad envelope does not stall every page after it.

Pipelining: while a batch is in flight the runner prepares the next one on a helper thread, and
while a page is being stored it already fetches (and verifies) the next. Only the work runs
ahead, never the bookkeeping: a batch is still recorded after its own acknowledgement and a page
is stored in order, so a crash loses at most the work done ahead. What ran ahead is used only if
the engine then asks for exactly that batch or page; anything else (a failure, the round's end)
drops it, and a failure met ahead surfaces when, and only if, its page is asked for.

Crash safety comes from the order of the steps, not from this thread: a batch is recorded as
pushed (``SyncState.mark_pushed``) only after ``push`` returned, and a page is stored with its
cursor in one transaction (``SyncState.store_pulled``).
"""

from __future__ import annotations

import functools
import logging
import queue
import random as _random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from tapes_e2e.errors import InvalidNodeError, MissingParentError, TapesError
from tapes_e2e.locks import LockFile
from tapes_e2e.node import Node
from tapes_e2e.store.rows import PulledRow
from tapes_e2e.store.syncstate import SyncState, pull_window
from tapes_e2e.sync.engine import (
    Action,
    Backoff,
    Closing,
    EngineConfig,
    EngineState,
    Event,
    Failed,
    FailureKind,
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
    decide,
    next_wakeup,
)

__all__ = [
    "BATCH_SIZE",
    "PAGE_SIZE",
    "PullFn",
    "PulledBatch",
    "PulledRow",
    "Puller",
    "PushFn",
    "Pusher",
    "RefreshFn",
    "SyncError",
    "SyncRunner",
    "SyncWorker",
    "run_sync",
]

log = logging.getLogger(__name__)

# Nodes per push request and per pulled page. 1,000 is the server's largest page; a batch of
# 1,000 nodes of 2 KB is ~3 MB, well under the server's 16 MiB request limit, and amortizes the
# server's per-request commit.
BATCH_SIZE = PAGE_SIZE = 1000


class SyncError(Exception):
    """An expected failure of a server call, of one of the engine's kinds."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class PulledBatch:
    """One pulled page, verified: what ``pull`` returns.

    ``rows`` are the page's verified nodes as rows to store (:class:`PulledRow`, with the
    server's node ID), in server order; ``cursor`` is the position after the whole page (refused
    envelopes included); ``head`` is the chain head verified with it, if it moved.
    """

    rows: Sequence[PulledRow]
    cursor: int
    more: bool
    rejected: Sequence[str] = ()
    head: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class PushReceipt:
    """What ``push`` may return instead of bare node ids: the server's sequence numbers of the
    nodes it stored (``first_seq`` … ``last_seq``; 0 when it stored none)."""

    node_ids: Sequence[str]
    first_seq: int = 0
    last_seq: int = 0


PushFn = Callable[[str, Sequence[Node]], Sequence[str] | PushReceipt]
"""A push in one step, for callers (and tests) with nothing to prepare ahead."""
PullFn = Callable[[str, int, int], PulledBatch]
"""A pull in one step, for callers (and tests) with nothing to fetch ahead."""
RefreshFn = Callable[[], None]

_Made = TypeVar("_Made")
_Got = TypeVar("_Got")
_T = TypeVar("_T")


@runtime_checkable
class Pusher(Protocol[_Made]):
    """A push in two steps. ``prepare`` is CPU work on immutable nodes (sealing) with no I/O and
    no shared mutable state, so the runner may call it on a helper thread; ``send`` makes the
    request with what ``prepare`` made (its own type, opaque to the runner)."""

    def prepare(self, vault: str, nodes: Sequence[Node]) -> _Made: ...

    def send(self, vault: str, prepared: _Made) -> PushReceipt: ...

    @property
    def sends_ahead(self) -> bool:
        """Whether ``send`` may run on a helper thread for the next batch, once this one is
        acknowledged, while the runner records this one (it touches nothing the runner does)."""


@runtime_checkable
class Puller(Protocol[_Got]):
    """A pull in two steps. ``fetch`` is the request (the runner makes it on a helper thread
    for the next page while it stores this one); ``open`` verifies and opens what it fetched
    (its own type, opaque to the runner)."""

    def fetch(self, vault: str, after: int, limit: int) -> _Got: ...

    def open(self, vault: str, after: int, fetched: _Got) -> PulledBatch: ...

    def close(self) -> None:
        """The pull is over for now (the round ended or failed): let go of what it held."""


class _OneStepPush:
    """A :data:`PushFn` as a :class:`Pusher`: ``prepare`` keeps the nodes, ``send`` pushes."""

    def __init__(self, push: PushFn) -> None:
        self._push = push

    def prepare(self, vault: str, nodes: Sequence[Node]) -> Sequence[Node]:
        return nodes

    def send(self, vault: str, prepared: Sequence[Node]) -> PushReceipt:
        receipt = self._push(vault, prepared)
        return receipt if isinstance(receipt, PushReceipt) else PushReceipt(list(receipt))

    @property
    def sends_ahead(self) -> bool:
        return False


class _OneStepPull:
    """A :data:`PullFn` as a :class:`Puller`: all of it happens in ``fetch``."""

    def __init__(self, pull: PullFn) -> None:
        self._pull = pull

    def fetch(self, vault: str, after: int, limit: int) -> PulledBatch:
        return self._pull(vault, after, limit)

    def open(self, vault: str, after: int, fetched: PulledBatch) -> PulledBatch:
        return fetched

    def close(self) -> None:
        pass


_Prepared = tuple[Sequence[tuple[int, Node]], Any]  # a batch (rowid, node), what prepare made


class _Helper:
    """One daemon thread running the calls given to it in order, each answered by a Future.

    A daemon, unlike a ``ThreadPoolExecutor``'s thread, which Python joins at exit: after
    Ctrl-C, a request in flight to a stalled server would hold the process until the request's
    timeout. Nothing a helper does is recorded until this runner's thread takes its answer, so
    a call cut short at exit loses nothing that was kept."""

    def __init__(self, name: str) -> None:
        calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._calls, self._closed = calls, threading.Event()
        # The thread holds the queue, not the helper: a helper dropped without shutdown() is
        # collected, and its thread told to end.
        threading.Thread(target=_serve, args=(calls, self._closed), name=name, daemon=True).start()
        weakref.finalize(self, calls.put, None)

    def submit(self, call: Callable[..., _T], *args: Any) -> Future[_T]:
        future: Future[_T] = Future()
        self._calls.put((future, functools.partial(call, *args)))
        return future

    def shutdown(self) -> None:
        """Cancel the calls not yet started; the thread ends after the one it is running."""
        self._closed.set()
        self._calls.put(None)


def _serve(
    calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None],
    closed: threading.Event,
) -> None:
    while (item := calls.get()) is not None:
        future, call = item
        if closed.is_set():
            future.cancel()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            result = call()
        except BaseException as exc:  # noqa: BLE001 - handed, as raised, to whoever takes it
            future.set_exception(exc)
        else:
            future.set_result(result)


@dataclass(frozen=True, slots=True)
class _Ahead(Generic[_T]):
    """Work started ahead for the batch or page that follows position ``after`` (a page of at
    most ``limit``); for a batch, ``sent`` is its push, started once the batch before it was
    acknowledged."""

    after: int
    future: Future[_T]
    limit: int = 0
    sent: Future[PushReceipt | None] | None = None


class SyncRunner:
    """Drives one vault's engine: decide, perform the actions, feed back their outcome."""

    def __init__(
        self,
        state: SyncState,
        vault: str,
        push: PushFn | Pusher[Any],
        pull: PullFn | Puller[Any],
        *,
        refresh_login: RefreshFn | None = None,
        config: EngineConfig | None = None,
        batch_size: int | None = None,
        page_size: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = _random.random,
        wall_clock: Callable[[], float] = time.time,
        on_integrity: Callable[[str], None] | None = None,
        on_progress: Callable[[Event], None] | None = None,
        lock: LockFile | None = None,
    ) -> None:
        self.state = state
        self.lock = lock  # taken by the worker for each round, and by a foreground round
        self.vault = vault
        self._pusher: Pusher[Any] = push if isinstance(push, Pusher) else _OneStepPush(push)
        self._puller: Puller[Any] = pull if isinstance(pull, Puller) else _OneStepPull(pull)
        self._helper: _Helper | None = None
        self._sender: _Helper | None = None
        self._push_ahead: _Ahead[_Prepared] | None = None
        self._pull_ahead: _Ahead[object] | None = None
        self._refresh = refresh_login
        self._batch_size = batch_size or BATCH_SIZE  # read when built: tests make them small
        self._page_size = page_size or PAGE_SIZE
        self.clock = clock
        self._random = random
        self._wall_clock = wall_clock
        self._on_integrity = on_integrity
        self._on_progress = on_progress
        stored = state.load(vault)
        self.engine = EngineState.start(
            config or EngineConfig(),
            now=clock(),
            push_rowid=stored.push_rowid,
            cursor=stored.cursor,
        )
        self.rounds = 0
        self.last_result: RoundFinished | None = None
        self.pushed = 0
        self.pulled = 0
        # Called before each event; may return an event (a Closing) to handle first.
        self.interrupt: Callable[[], Event | None] = lambda: None

    def feed(self, event: Event) -> None:
        """Handle ``event`` and every event its actions lead to, until the engine waits."""
        queue: deque[Event] = deque([event])
        while queue:
            urgent = self.interrupt()
            if urgent is not None:
                queue.appendleft(urgent)
            current = queue.popleft()
            self.engine, actions = decide(self.engine, current)
            for action in actions:
                outcome = self._perform(action)
                if outcome is not None:
                    queue.append(outcome)
                    if isinstance(outcome, Failed | Tick):
                        break  # the rest of the list depended on this step

    def _perform(self, action: Action) -> Event | None:
        if isinstance(action, PushBatch | FetchPage | RefreshLogin):
            return self._attempt(action)
        if isinstance(action, ReportIntegrity):
            log.error("integrity: %s", action.message)
            _notify(self._on_integrity, action.message)
        elif isinstance(action, RoundFinished):
            self._round_finished(action)
        elif isinstance(action, Backoff):
            log.info("sync backs off for %.1f s", action.until - self.clock())
        elif isinstance(action, Stop):
            self._drop_ahead()
            log.debug("sync engine stopped")
        return None

    def _attempt(self, action: PushBatch | FetchPage | RefreshLogin) -> Event | None:
        """Perform a request; its outcome, a failure included, as the next event."""
        now = self.clock()
        if self.engine.closing and now >= self.engine.deadline:
            return Tick(now)  # out of time: the engine stops instead of asking
        try:
            outcome = self._request(action)
        except SyncError as exc:
            return self._failed(exc.kind, exc.message)
        except (InvalidNodeError, MissingParentError) as exc:
            return self._failed("integrity", exc.message)
        except TapesError as exc:
            return self._failed("server", f"local store: {exc.message}")
        except Exception as exc:
            log.exception("sync request failed unexpectedly")
            return self._failed("server", f"{type(exc).__name__}: {exc}")
        if outcome is not None:
            _notify(self._on_progress, outcome)
        return outcome

    def _request(self, action: PushBatch | FetchPage | RefreshLogin) -> Event | None:
        if isinstance(action, RefreshLogin):
            if self._refresh is None:
                raise SyncError("auth", "the session expired and cannot be refreshed here")
            self._refresh()
            return None
        if isinstance(action, PushBatch):
            return self._push_batch(action.after_rowid)
        return self._pull_page(action.after_cursor)

    def _push_batch(self, after_rowid: int) -> Event:
        # The stored mark is the truth (another process may have pushed meanwhile).
        after = max(after_rowid, self.state.push_rowid(self.vault))
        batch, prepared, sent = self._take_push_ahead(after)
        if not batch:
            self.state.advance_past_remote(self.vault)
            return NothingToPush()
        self._start_push_ahead(batch[-1][0])
        receipt = sent.result() if sent is not None else None  # a failure met ahead: raised
        if receipt is None:
            receipt = self._pusher.send(self.vault, prepared)
        self._send_ahead()  # this batch is stored: the next goes out while it is recorded
        node_ids = list(receipt.node_ids)
        if len(node_ids) != len(batch):
            raise SyncError(
                "server", f"the server acknowledged {len(node_ids)} of {len(batch)} nodes"
            )
        new_hwm = batch[-1][0]
        # Our nodes were stored right after what we had pulled: the cursor skips them (in the
        # same transaction), so they are not pulled back.
        stored = (receipt.first_seq, receipt.last_seq) if receipt.first_seq else None
        cursor = self.state.mark_pushed(
            self.vault,
            [
                (rowid, node.hash, node_id)
                for (rowid, node), node_id in zip(batch, node_ids, strict=True)
            ],
            new_hwm,
            stored_seqs=stored,
        )
        self.pushed += len(batch)
        return PushAcked(len(batch), new_hwm, cursor)

    def _take_push_ahead(
        self, after: int
    ) -> tuple[Sequence[tuple[int, Node]], Any, Future[PushReceipt | None] | None]:
        """The batch above ``after``, its prepared form, and its push if already started: the
        one read, sealed (and sent) ahead if it is that batch, else read and prepared now."""
        ahead, self._push_ahead = self._push_ahead, None
        if ahead is not None and ahead.after == after:
            batch, prepared = ahead.future.result()
            return batch, prepared, ahead.sent
        return *self._read_and_prepare(after), None

    def _send_ahead(self) -> None:
        """Send the batch read ahead, on a helper thread, once it is sealed: the server stores
        it while this thread records the batch before it. Only after that batch's answer, so
        the server still sees parents first; only if the pusher allows it (a team vault's push
        hooks run on this thread). Its answer is taken, and recorded, only when the engine asks
        for exactly that batch; a batch sent and never recorded is pushed again later, and the
        server answers ``existing``."""
        ahead = self._push_ahead
        if ahead is None or not self._pusher.sends_ahead:
            return
        if self._sender is None:
            self._sender = _Helper("tapes-sync-send")

        def send() -> PushReceipt | None:
            batch, prepared = ahead.future.result()
            return self._pusher.send(self.vault, prepared) if batch else None

        self._push_ahead = replace(ahead, sent=self._sender.submit(send))

    def _read_and_prepare(self, after: int) -> _Prepared:
        batch = self.state.unpushed(self.vault, after, self._batch_size)
        if not batch:
            return batch, None
        return batch, self._pusher.prepare(self.vault, [node for _, node in batch])

    def _start_push_ahead(self, after: int) -> None:
        """Read and seal the batch above ``after`` on the helper thread while this one is sent.

        The read runs on the helper's own connection; the mark it is taken above is this
        batch's last row, so what it reads is exactly what the engine asks for next."""
        future = self._background().submit(self._read_and_prepare, after)
        self._push_ahead = _Ahead(after, future)

    def _pull_page(self, after_cursor: int) -> Event:
        # The page starts past our own pushes and ends before the next of them (pull_window).
        cursor, own = self.state.pull_position(self.vault)
        after, limit = pull_window(max(after_cursor, cursor), own, self._page_size)
        ahead, self._pull_ahead = self._pull_ahead, None
        if ahead is not None and (ahead.after, ahead.limit) == (after, limit):
            fetched = ahead.future.result()  # a failure met ahead is raised here, for its page
        else:
            fetched = self._puller.fetch(self.vault, after, limit)
        page = self._puller.open(self.vault, after, fetched)
        if page.more and page.cursor > after:
            following, its_limit = pull_window(page.cursor, own, self._page_size)
            future = self._background().submit(self._puller.fetch, self.vault, following, its_limit)
            self._pull_ahead = _Ahead(following, future, its_limit)
        rows, orphans = self._without_orphans(page.rows)
        new = self.state.store_pulled(self.vault, rows, page.cursor, head=page.head)
        self.pulled += new  # a node stored here already (pushed, its answer lost) is not counted
        return PulledPage(new, page.cursor, page.more, (*page.rejected, *orphans))

    def _background(self) -> _Helper:
        if self._helper is None:
            self._helper = _Helper("tapes-sync-ahead")
        return self._helper

    def _drop_ahead(self) -> None:
        """Forget work started ahead (a failure, or the round's end) and let its thread go; the
        puller lets go of what it holds (its worker processes)."""
        self._push_ahead = self._pull_ahead = None
        for helper in (self._helper, self._sender):
            if helper is not None:
                helper.shutdown()
        self._helper = self._sender = None
        self._puller.close()

    def _without_orphans(self, rows: Sequence[PulledRow]) -> tuple[list[PulledRow], list[str]]:
        """Set aside the nodes whose parent is neither stored nor in the page (a parent that was
        refused, say), so that one bad envelope does not block every page after it."""
        in_page = {pulled.hash for pulled in rows}
        outside = {
            parent
            for pulled in rows
            if (parent := pulled.parent_hash) is not None and parent not in in_page
        }
        absent = self.state.provider.missing(outside) if outside else set()
        dropped: set[str] = set()
        while True:
            blocked = absent | dropped
            newly = {
                pulled.hash
                for pulled in rows
                if pulled.hash not in dropped and pulled.parent_hash in blocked
            }
            if not newly:
                break
            dropped |= newly
        kept = [pulled for pulled in rows if pulled.hash not in dropped]
        messages = [
            f"node {pulled.node_id}: its parent {pulled.parent_hash} is not stored; "
            "not stored either"
            for pulled in rows
            if pulled.hash in dropped
        ]
        return kept, messages

    def _failed(self, kind: FailureKind, message: str) -> Failed:
        self._drop_ahead()
        # Whoever runs the worker reports the failure (the CLI's error, the provider's recorded
        # result that `tapes storage status` shows): at warning level it was said twice.
        log.info("sync %s failure: %s", kind, message)
        jitter = 0.5 + 0.5 * self._random()
        return Failed(kind, message, self.clock(), jitter)

    def _round_finished(self, action: RoundFinished) -> None:
        self._drop_ahead()
        self.last_result = action
        result = action.result if not action.message else f"{action.result}: {action.message}"
        at = datetime.fromtimestamp(self._wall_clock(), UTC).isoformat()
        try:
            self.state.record_result(self.vault, at=at, result=result)
        except TapesError as exc:
            log.warning("could not record the sync result: %s", exc.message)
        # Counted last: whoever waits for the round (wait_rounds) then finds its result stored.
        self.rounds += 1


def _notify(callback: Callable[[Any], None] | None, value: object) -> None:
    """Call a caller's callback; its failure is logged, never lets a round die halfway."""
    if callback is None:
        return
    try:
        callback(value)
    except Exception:
        log.exception("a sync callback failed")


def run_sync(runner: SyncRunner) -> RoundFinished | None:
    """One round in the calling thread (push, then pull); its result (None if it did not end).

    A failure ends the round: no backoff wait in the foreground.
    """
    before = runner.rounds
    try:
        runner.feed(SyncRequested(runner.clock()))
    except BaseException:  # Ctrl-C: what was recorded stays; what ran ahead is dropped
        runner._drop_ahead()
        raise
    return runner.last_result if runner.rounds > before else None


class SyncWorker:
    """A background thread syncing one vault every ``sync_interval`` and when asked."""

    def __init__(
        self, runner: SyncRunner, *, sync_on_close: bool = True, busy_retry: float = 5.0
    ) -> None:
        self.runner = runner
        self.sync_on_close = sync_on_close
        self.busy_retry = busy_retry  # a round skipped for another holder of the lock
        self._clock = runner.clock
        self._cond = threading.Condition()
        self._sync_pending = False
        self._closing: Closing | None = None
        self._thread = threading.Thread(target=self._run, name="tapes-sync", daemon=True)
        self._done = threading.Event()
        runner.interrupt = self._take_closing

    def start(self) -> None:
        """Start the thread; its first round starts at once."""
        self._thread.start()

    def request_sync(self) -> None:
        """Ask for a round now (coalesced with one already running)."""
        with self._cond:
            self._sync_pending = True
            self._cond.notify_all()

    def close(self, timeout: float) -> bool:
        """Stop the worker within about ``timeout`` seconds; True if it stopped in time.

        A worker that was never started has nothing to do and returns True at once.

        With ``sync_on_close``, the worker gets one more round bounded by the timeout (what is
        not pushed by then stays pending in the store for the next start); without, it stops
        after the request in flight, if any.
        """
        if not self._thread.is_alive():
            return True
        now = self._clock()
        deadline = now + (timeout if self.sync_on_close else 0.0)
        with self._cond:
            if self._closing is None:
                self._closing = Closing(now, deadline)
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def wait_rounds(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` rounds have finished in total (for tests and the CLI)."""
        end = time.monotonic() + timeout
        with self._cond:
            while self.runner.rounds < count and not self._done.is_set():
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return self.runner.rounds >= count

    @property
    def stopped(self) -> bool:
        return self._done.is_set()

    def _take_closing(self) -> Event | None:
        with self._cond:
            closing, self._closing = self._closing, None
            return closing

    def _next_event(self) -> Event:
        with self._cond:
            while True:
                closing = self._closing
                if closing is not None:
                    self._closing = None
                    return closing
                now = self._clock()
                if self._sync_pending:
                    self._sync_pending = False
                    return SyncRequested(now)
                wake = next_wakeup(self.runner.engine)
                if wake is not None and now >= wake:
                    return Tick(now)
                self._cond.wait(None if wake is None else wake - now)

    def _feed(self, event: Event) -> bool:
        """Handle a wake-up holding the store and vault's sync lock, if the runner has one.
        False when another holder (a foreground `tapes storage sync`) has it: nothing is done."""
        lock = self.runner.lock
        if lock is None:
            self.runner.feed(event)
            return True
        with lock.attempt() as holder:
            if holder is None:
                self.runner.feed(event)
                return True
        log.info("sync round skipped: %s holds %s", holder, lock.path)
        return False

    def _skip(self) -> None:
        """A round skipped: ask for it again after ``busy_retry`` (sooner on a close)."""
        with self._cond:
            if self._closing is None:
                self._cond.wait(min(self.busy_retry, self.runner.engine.config.interval))
            self._sync_pending = True

    def _run(self) -> None:
        try:
            while self.runner.engine.phase != "stopped":
                event = self._next_event()
                if not self._feed(event):
                    if isinstance(event, Closing):
                        break  # the holder is syncing this store: no last round of ours to add
                    self._skip()
                with self._cond:
                    self._cond.notify_all()
        except Exception:
            log.exception("the sync worker died")
        finally:
            self._done.set()
            with self._cond:
                self._cond.notify_all()
