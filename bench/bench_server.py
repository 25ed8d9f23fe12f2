"""Sync server benchmark: a real ``tapes-server serve`` over HTTP, each figure beside a baseline.

    .venv/bin/python bench/bench_server.py              # 100k nodes, 32 clients, mixed load of 64
    .venv/bin/python bench/bench_server.py --quick      # 10k nodes, 8 clients, mixed load of 16
    .venv/bin/python bench/bench_server.py --load-only  # only section 4 (--skip-load: without it)
    .venv/bin/python bench/bench_server.py --keep       # keep the database files (and server logs)

(bench/README.md belongs to the local-store benchmark; the notes for this one are here.)

What it measures (issue 5, "Benchmark"; DESIGN §9):

1. push / pull: one client (httpx, batches of 1,000 encoded before the clock starts, in
   MessagePack as the client sends them, and again in JSON into a second vault) pushes N nodes
   of ~2 KB envelopes (sealed with keymgmt before the clock starts, sessions of 100 turns) to a
   ``tapes-server serve`` process (uvicorn, 2 workers) on SQLite, then pulls them all back page by
   page (limit 1,000), in MessagePack as the client asks for it and in JSON, and checks both
   carry the same records. Baseline, same run and same disk: bare ``sqlite3`` inserting the same
   rows (the envelope bytes the server stores, packed; same columns, primary key and indexes,
   WAL + ``synchronous=FULL``, one ``BEGIN IMMEDIATE … COMMIT`` per 1,000) and selecting them back
   in pages of 1,000 by ``seq``; the two pulls and that select take turns five times, and each
   figure is the median of its five. Goal: >= 10,000 nodes/s each way. The bench user's vault is
   set to the pro plan in the database first (the free plan stops at 100 new sessions a month and
   there is no API to change a plan).
   Where PostgreSQL runs, the same push by one client to a server on PostgreSQL is printed
   beside the SQLite push of the same run.
2. no-op pull with N stored: ``GET /api/v1/sync/pull?after=<head>`` — one request, median of 50.
   Baseline: ``GET /healthz`` (a request that touches no database), median of 50. Goal: < 50 ms.
3. 32 concurrent clients (8 with ``--quick``) pushing to PostgreSQL 15 (a throwaway cluster, as in
   tests/server/pg.py) through one server process with 4 workers: each client pushes its own
   vault; a quarter of them (8 of 32) also push the same vault of a shared user, which exercises
   the vault row lock. A failed request is counted as an error and retried after a short random
   back-off, up to 30 times (pushes are idempotent), so the data checks still say whether
   anything was lost or stored twice: per vault, the stored node IDs equal the pushed set, one
   row each, sequence numbers 1..n without a gap, and the vault row's head_seq and node_count
   equal n. Goal: no errors, nothing lost.
4. mixed load (issue 11), on SQLite and on PostgreSQL, each through a fresh ``tapes-server serve``
   with the default number of workers (``TAPES_SERVER_WORKERS`` unset: 2). 64 clients (16 with
   ``--quick``) run at once as threads of this process, 4 per user (16 users), each on its own
   httpx connection and login. Each makes 60 operations (30 with ``--quick``) drawn with a seeded
   RNG: 40 % push (50 envelopes continuing its own sessions of 100 turns, sealed and encoded
   before the clock starts), 40 % pull (``after`` its cursor, limit 1,000), 20 % status. No
   retries: an error is any non-2xx answer or transport error (timeout 60 s, past the server's
   30 s busy and pool timeouts); a failed push is sent again by the client's next push, as its
   chain continues from it. Every request's latency is recorded; the table gives p50 / p99 per
   kind under load beside the same kind's p50 / p99 for one client alone, measured just before
   on the same server: one connection, one request at a time, playing one user's 4 clients in
   turn so that its pulls bring back about as many nodes as under load (2 users, 480 requests;
   1 user with ``--quick``); ratio p99(load) / p99(alone). After the load, per vault, the data
   check of section 3 (acknowledged node IDs stored once each, gapless ``seq``, vault counters),
   and every pull page must continue its cursor without a gap. All users are on the pro plan
   (set in the database, as in 1). Goal: 0 errors, nothing lost.

   With 64 closed-loop clients, latency under load is mostly queueing: by Little's law the mean
   is 64 / throughput, so ratios of tens are expected when the 2 cores are saturated (2 workers,
   the database and the 64 client threads share them).

   Measured 2026-12-03, two runs of ``--load-only`` in a row (2 vCPU VM shared with three other
   jobs, load average 3-4), p50 / p99 in ms under load, then one client alone, then p99 ratio:

   - SQLite: 0 errors of 3,840 both times; 85,600 rows of 85,600 acknowledged, no data problem;
     75 and 74 requests/s. all 121 / 3,544 vs 10.8 / 65.6 (x54) and 126 / 3,332 vs 12.6 / 78.0
     (x43); push p99 3.9 s and 3.6 s (the write queue: one writer at a time), pull p99 370 and
     453 ms, status p99 241 and 351 ms.
   - PostgreSQL: 0 errors of 3,840 both times; 85,600 of 85,600, no data problem; 62 and 73
     requests/s. all 836 / 2,086 vs 23.5 / 115 (x18) and 617 / 2,175 vs 21.8 / 75.9 (x29).

   Before (same day, same load): SQLite 6 errors, PostgreSQL 123 (60 s client timeouts and
   500s): the request threads (the event loop's default executor, min(32, CPUs + 4) = 6 here)
   blocked in the SQLAlchemy pool's checkout while the requests holding every connection waited
   for one of those threads, until the 30 s pool timeout failed them in bursts. Now every
   database session first waits on the event loop for a turn at one of the pool's connections
   (``server.deps._connection``; ``TAPES_SERVER_DB_CONNECTIONS``, 20, no overflow), so no thread
   ever blocks in a checkout; tests/e2e/test_bursts.py reproduces the stall with a pool of 2.

``--workers N`` runs the SQLite server with N uvicorn workers instead of 2 (diagnosis: with 2 or
more, kept-alive requests stall ~40 ms on TCP delayed ACK; see the "new connection" row).

Database files go in a fresh directory in the system temp directory, or under bench/out/
(git-ignored, the repository's disk) when the temp directory is a tmpfs, and are removed at the
end unless --keep. Results: a table on stdout and bench/out/server.json. Exit status 1 if a goal
is missed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

import keymgmt
from keymgmt.login import sign_login
from server.domain.nodes.stored import store_form
from server.settings import Settings
from tapes_e2e.protocol import MSGPACK, PackedNodeOut

if TYPE_CHECKING:
    from tests.server.pg import PostgresCluster

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
SERVER = Path(sys.executable).with_name("tapes-server")
BATCH = 1000
PAGE = 1000
PULL_ROUNDS = 5
SESSION = 100  # turns per session
BODY = 1200  # plaintext bytes (random, so incompressible): ~2 KB envelope JSON
GOAL_RATE = 10_000.0
GOAL_NOOP_MS = 50.0

encode = msgspec.json.encode
decode = msgspec.json.decode


# --- client-side keys and a minimal batch client ----------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SealingVault:
    """A client's keys for one vault; seals ~2 KB nodes in sessions, parents first."""

    def __init__(self, vault_id: str, author: keymgmt.Identity, seed: int) -> None:
        self.vault_id = vault_id
        self.author = author
        self.vault_key = keymgmt.new_key()
        self.epoch_key = keymgmt.new_key()
        self.rng = random.Random(seed)
        self.metadata = keymgmt.project_metadata(
            "coarse", {"model": "claude-sonnet-4", "role": "assistant", "total_tokens": 1500}
        )

    def sessions(self, count: int, turns: int = SESSION) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        parent: str | None = None
        for index in range(count):
            if index % turns == 0:
                parent = None
            body = self.rng.randbytes(BODY)
            tapes_hash = hashlib.sha256((parent or "").encode() + b"|" + body).hexdigest()
            keys = keymgmt.TeamKeys(self.vault_id, self.vault_key, {1: self.epoch_key})
            # the server never verifies a chain position: a well-formed one does for load
            position = SimpleNamespace(
                team=self.vault_id, epoch=1, head=keymgmt.ChainHead(0, "0" * 64)
            )
            envelope = keymgmt.seal_node(
                state=position,  # type: ignore[arg-type]
                keys=keys,
                tapes_hash=tapes_hash,
                parent_id=None if parent is None else keys.node_id(1, parent),
                body=body,
                metadata=self.metadata,
                author=self.author.fingerprint,
            )
            out.append(envelope.to_dict())
            parent = tapes_hash
        return out


@dataclass
class Account:
    identity: keymgmt.Identity
    handle: str
    access: str = ""
    vault: str = ""
    user_id: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}", "Content-Type": "application/json"}


def login(http: httpx.Client, account: Account, *, register: bool) -> None:
    challenge = http.post("/auth/challenge").json()
    signature = sign_login(
        account.identity,
        server=challenge["audience"],
        challenge_id=challenge["challenge_id"],
        nonce=unb64(challenge["nonce"]),
    )
    body: dict[str, Any] = {
        "challenge_id": challenge["challenge_id"],
        "keys": {
            "x25519": account.identity.public.x25519.hex(),
            "ed25519": account.identity.public.ed25519.hex(),
        },
        "signature": b64(signature),
    }
    if register:
        body["handle"] = account.handle
    response = http.post("/auth/login", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"login failed: {response.status_code} {response.text}")
    tokens = response.json()
    account.access = tokens["access_token"]
    account.vault = tokens["personal_vault"]
    account.user_id = tokens["user_id"]


def new_account(http: httpx.Client, handle: str) -> Account:
    account = Account(keymgmt.generate_identity(), handle)
    login(http, account, register=True)
    return account


def push_bodies(
    vault: str, envelopes: list[dict[str, Any]], size: int, *, packed: bool = True
) -> list[tuple[bytes, int]]:
    """The push bodies of ``envelopes`` in batches of ``size``, each with its node count: in
    MessagePack (the form the client sends a server that takes it) or JSON. Encoded before
    the clock starts: the figure is the server's."""
    bodies = []
    for start in range(0, len(envelopes), size):
        batch = envelopes[start : start + size]
        if packed:
            packed_batch = [keymgmt.Envelope.from_dict(e).to_packed() for e in batch]
            body = msgspec.msgpack.encode({"vault": vault, "envelopes": packed_batch})
        else:
            body = encode({"vault": vault, "envelopes": batch})
        bodies.append((body, len(batch)))
    return bodies


def push_batches(
    http: httpx.Client, account: Account, bodies: list[tuple[bytes, int]], *, packed: bool = True
) -> None:
    """Post the bodies of :func:`push_bodies` in order; each must store all its nodes."""
    headers = account.headers | {"Content-Type": MSGPACK if packed else "application/json"}
    for body, count in bodies:
        response = http.post("/api/v1/sync/push", content=body, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"push failed: {response.status_code} {response.text[:300]}")
        if len(decode(response.content)["stored"]) != count:
            raise RuntimeError("push stored fewer nodes than sent")


class _PageEnds(msgspec.Struct):
    """What a pulling client must read of a page to ask for the next: its end. The items stay
    bytes until the clock stops."""

    items: msgspec.Raw
    cursor: int
    more: bool


_PAGE_ENDS: dict[bool, msgspec.json.Decoder[_PageEnds] | msgspec.msgpack.Decoder[_PageEnds]] = {
    False: msgspec.json.Decoder(_PageEnds),
    True: msgspec.msgpack.Decoder(_PageEnds),
}


def stored_form(envelope: dict[str, Any]) -> bytes:
    """The envelope as the server stores it (packed)."""
    return store_form(msgspec.convert(envelope, keymgmt.EnvelopeWire))


def pull_pages(
    http: httpx.Client, account: Account, vault: str, *, packed: bool = True
) -> list[bytes]:
    """The items of every page of ``vault`` (an array each, MessagePack as the client asks for
    it, or JSON), timed as the server serves them: the client reads each answer and its cursor,
    and decodes the envelopes after the last page (decoding them into Python objects cost this
    client more than the server spent)."""
    pages: list[bytes] = []
    after = 0
    headers = account.headers | {"Accept": MSGPACK if packed else "application/json"}
    while True:
        response = http.get(
            "/api/v1/sync/pull",
            params={"vault": vault, "after": after, "limit": PAGE},
            headers=headers,
        )
        if response.status_code != 200:
            raise RuntimeError(f"pull failed: {response.status_code} {response.text[:300]}")
        page = _PAGE_ENDS[packed].decode(response.content)
        pages.append(bytes(page.items))
        after = page.cursor
        if not page.more:
            return pages


def check_pulled(pulled: dict[bool, list[bytes]], envelopes: list[dict[str, Any]]) -> None:
    """Each form's pages hold every pushed record, in order, numbered 1 to n."""
    wanted = [keymgmt.Envelope.from_dict(e) for e in envelopes]
    for packed, pages in pulled.items():
        items = pulled_envelopes(pages, packed=packed)
        if [seq for seq, _ in items] != list(range(1, len(wanted) + 1)):
            raise RuntimeError("pull did not return seq 1..n")
        if [record for _, record in items] != wanted:
            raise RuntimeError("pulled envelopes differ from what was pushed")


def pulled_envelopes(pages: list[bytes], *, packed: bool) -> list[tuple[int, keymgmt.Envelope]]:
    """Each pulled item's sequence number and record, from the pages of :func:`pull_pages`."""
    if packed:
        items = [
            i for page in pages for i in msgspec.msgpack.decode(page, type=list[PackedNodeOut])
        ]
        return [(i.seq, keymgmt.Envelope.from_packed(i.envelope)) for i in items]
    plain = [i for page in pages for i in decode(page)]
    return [(i["seq"], keymgmt.Envelope.from_dict(i["envelope"])) for i in plain]


# --- the server process ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    def __init__(self, root: Path, database_url: str, workers: int | None) -> None:
        """``workers`` None: the server's default (``TAPES_SERVER_WORKERS`` left unset)."""
        self.root = root
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        home = root / "home"
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "TAPES_SERVER_DATABASE_URL": database_url,
            "TAPES_SERVER_PORT": str(self.port),
            "TAPES_SERVER_AUTH_RATE": "100000",
            "TAPES_SERVER_ACCESS_TTL": "3600",
        }
        if workers is not None:
            self.env["TAPES_SERVER_WORKERS"] = str(workers)
        if os.environ.get("PYTHONPATH"):  # to measure another checkout's server in the same run
            self.env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        with (
            (self.root / "stdout.log").open("wb") as out,
            (self.root / "stderr.log").open("wb") as err,
        ):
            self.process = subprocess.Popen(
                [str(SERVER), "serve"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((self.root / "stderr.log").read_text())
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("the server did not become healthy in 60 s")

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
        except ProcessLookupError:
            pass

    def errors_logged(self) -> list[str]:
        text = (self.root / "stderr.log").read_text(errors="replace")
        return [line for line in text.splitlines() if "internal error" in line]


# --- baseline: bare sqlite3 --------------------------------------------------------------------

BASELINE_DDL = """
CREATE TABLE teams (id VARCHAR(64) PRIMARY KEY);
CREATE TABLE users (id VARCHAR(36) PRIMARY KEY);
CREATE TABLE nodes (
    vault_id VARCHAR(64) NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    node_id VARCHAR(64) NOT NULL,
    parent_id VARCHAR(64),
    seq BIGINT NOT NULL,
    epoch INTEGER NOT NULL,
    record_type VARCHAR(32) NOT NULL,
    author VARCHAR(128) NOT NULL,
    padded_size BIGINT NOT NULL,
    metadata_only BOOLEAN NOT NULL,
    clear_metadata JSON NOT NULL,
    envelope BLOB NOT NULL,
    uploader_id VARCHAR(36) NOT NULL REFERENCES users (id),
    uploaded_at DATETIME NOT NULL,
    PRIMARY KEY (vault_id, node_id),
    UNIQUE (vault_id, seq)
);
CREATE INDEX ix_nodes_uploader ON nodes (uploader_id);
CREATE INDEX ix_nodes_vault_parent ON nodes (vault_id, parent_id);
"""
INSERT = "INSERT INTO nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
SELECT = (
    "SELECT vault_id, node_id, parent_id, seq, epoch, record_type, author, padded_size, "
    "metadata_only, clear_metadata, envelope, uploader_id, uploaded_at FROM nodes "
    "WHERE vault_id = ? AND seq > ? ORDER BY seq LIMIT ?"
)


def baseline_sqlite(path: Path, envelopes: list[dict[str, Any]]) -> float:
    """Seconds to insert the rows (batches of 1,000, one transaction each) into a bare sqlite3
    table shaped like the server's; :func:`baseline_select` reads them back."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.executescript(BASELINE_DDL)
    conn.execute("INSERT INTO teams VALUES ('v_bench')")
    conn.execute("INSERT INTO users VALUES ('u_bench')")
    now = "2026-11-26 00:00:00.000000"
    rows = [
        (
            "v_bench",
            e["node_id"],
            e["parent_id"],
            seq,
            e["epoch"],
            e["record_type"],
            e["author"],
            e["padded_size"],
            e["ciphertext"] is None,
            json.dumps(e["metadata"]),
            stored_form(e),  # what the server stores: the envelope packed
            "u_bench",
            now,
        )
        for seq, e in enumerate(envelopes, start=1)
    ]
    start = time.perf_counter()
    for first in range(0, len(rows), BATCH):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, rows[first : first + BATCH])
        conn.execute("COMMIT")
    insert_s = time.perf_counter() - start
    conn.close()
    return insert_s


def baseline_select(path: Path, count: int) -> float:
    """Seconds to select the baseline's rows in pages of 1,000 by seq, as the server's pull
    pages them."""
    conn = sqlite3.connect(path, isolation_level=None)
    start = time.perf_counter()
    selected, after = 0, 0
    while True:
        page = conn.execute(SELECT, ("v_bench", after, PAGE)).fetchall()
        if not page:
            break
        selected += len(page)
        after = page[-1][3]
    select_s = time.perf_counter() - start
    conn.close()
    if selected != count:
        raise RuntimeError(f"baseline selected {selected} of {count} rows")
    return select_s


# --- 1 and 2: push / pull / no-op on SQLite -----------------------------------------------------


def median_ms(http: httpx.Client, path: str, headers: dict[str, str], tries: int) -> float:
    times = []
    for _ in range(tries):
        start = time.perf_counter()
        response = http.get(path, headers=headers)
        times.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code}")
    return statistics.median(times)


@contextmanager
def database(url: str) -> Iterator[Callable[..., Any]]:
    """``execute(sql, params)`` on the server's database, SQLite or PostgreSQL (``?`` placeholders
    either way), committed at the end: for the plan upgrades and the data checks."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split(":///", 1)[1], timeout=30)
        try:
            yield conn.execute
            conn.commit()
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as pg:
        yield lambda sql, params: pg.execute(sql.replace("?", "%s"), params)


def upgrade_to_pro(url: str, vaults: list[str]) -> None:
    """The free plan allows 100 new sessions a month (server/plans.py) and there is no API to
    change a plan yet, so the operator's upgrade is done in the database."""
    with database(url) as execute:
        for vault in vaults:
            if execute("UPDATE teams SET tier = 'pro' WHERE id = ?", (vault,)).rowcount != 1:
                raise RuntimeError(f"no vault {vault} to upgrade")


def median_ms_fresh(base_url: str, path: str, headers: dict[str, str], tries: int) -> float:
    times = []
    for _ in range(tries):
        with httpx.Client(base_url=base_url, timeout=30) as http:
            start = time.perf_counter()
            response = http.get(path, headers=headers)
            times.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code}")
    return statistics.median(times)


def timed_pulls(
    http: httpx.Client, account: Account, root: Path, count: int
) -> tuple[float, float, float, dict[bool, list[bytes]]]:
    """The median seconds of a whole pull in MessagePack (what the client asks for), in JSON,
    and of the bare select of the same rows, and the last pages of each form. They take turns,
    PULL_ROUNDS times each: the noise of a shared machine hits them alike."""
    pull_times: dict[bool, list[float]] = {True: [], False: []}
    select_times: list[float] = []
    pulled: dict[bool, list[bytes]] = {}
    for _ in range(PULL_ROUNDS):
        for packed in (True, False):
            start = time.perf_counter()
            pulled[packed] = pull_pages(http, account, account.vault, packed=packed)
            pull_times[packed].append(time.perf_counter() - start)
        select_times.append(baseline_select(root / "baseline.sqlite", count))
    return (
        statistics.median(pull_times[True]), statistics.median(pull_times[False]),
        statistics.median(select_times), pulled,
    )  # fmt: skip


def bench_sqlite(root: Path, count: int, workers: int) -> dict[str, Any]:
    identity = keymgmt.generate_identity()
    server_root = root / "server"
    server_root.mkdir()
    db = server_root / "s.sqlite"
    with (
        ServerProcess(server_root, f"sqlite:///{db}", workers=workers) as server,
        httpx.Client(base_url=server.base_url, timeout=120) as http,
    ):
        account = Account(identity, "bench")
        login(http, account, register=True)
        upgrade_to_pro(f"sqlite:///{db}", [account.vault])
        started = time.perf_counter()
        envelopes = SealingVault(account.vault, identity, seed=1).sessions(count)
        seal_s = time.perf_counter() - started
        envelope_bytes = statistics.mean(len(encode(e)) for e in envelopes)
        print(
            f"sealed {count:,} envelopes in {seal_s:.1f} s (mean {envelope_bytes:,.0f} B)",
            flush=True,
        )

        bodies = push_bodies(account.vault, envelopes, BATCH)
        start = time.perf_counter()
        push_batches(http, account, bodies)
        push_s = time.perf_counter() - start
        del bodies
        # the same push in JSON, into another account's vault (envelopes sealed for it)
        json_account = new_account(http, "bench-json")
        upgrade_to_pro(f"sqlite:///{db}", [json_account.vault])
        json_envelopes = SealingVault(json_account.vault, identity, seed=2).sessions(count)
        json_bodies = push_bodies(json_account.vault, json_envelopes, BATCH, packed=False)
        del json_envelopes
        start = time.perf_counter()
        push_batches(http, json_account, json_bodies, packed=False)
        json_push_s = time.perf_counter() - start
        del json_bodies
        print(
            f"push: {count / push_s:,.0f} nodes/s MessagePack, {count / json_push_s:,.0f} JSON",
            flush=True,
        )

        insert_s = baseline_sqlite(root / "baseline.sqlite", envelopes)
        pull_s, json_pull_s, select_s, pulled = timed_pulls(http, account, root, count)
        print(
            f"pull: {count / pull_s:,.0f} nodes/s MessagePack, {count / json_pull_s:,.0f} JSON "
            f"(median of {PULL_ROUNDS})",
            flush=True,
        )
        check_pulled(pulled, envelopes)
        page_bytes = {packed: sum(map(len, pages)) / count for packed, pages in pulled.items()}

        head = count
        noop_path = f"/api/v1/sync/pull?vault={account.vault}&after={head}&limit={PAGE}"
        idle = http.get(noop_path, headers=account.headers).json()
        wanted = {"vault": account.vault, "items": [], "cursor": head, "more": False}
        if {key: idle.get(key) for key in wanted} != wanted:
            raise RuntimeError(f"no-op pull answered {idle}")
        # interleaved, 5 rounds of 10 each, so noise hits both alike
        noop: list[float] = []
        health: list[float] = []
        for _ in range(5):
            noop.append(median_ms(http, noop_path, account.headers, 10))
            health.append(median_ms(http, "/healthz", {}, 10))
        noop_ms, health_ms = statistics.median(noop), statistics.median(health)
        # the same requests, each on a new connection (no keep-alive): what the server costs
        # without the TCP delayed-ACK stall a kept-alive connection can hit
        fresh: list[float] = []
        fresh_health: list[float] = []
        for _ in range(5):
            fresh.append(median_ms_fresh(server.base_url, noop_path, account.headers, 10))
            fresh_health.append(median_ms_fresh(server.base_url, "/healthz", {}, 10))
        server_errors = server.errors_logged()

    db_bytes = sum(p.stat().st_size for p in server_root.glob("s.sqlite*"))
    return {
        "nodes": count,
        "workers": workers,
        "envelope_mean_bytes": round(envelope_bytes),
        "seal_s": round(seal_s, 2),
        "push_s": round(push_s, 3),
        "pull_s": round(pull_s, 3),
        "push_rate": count / push_s,
        "json_push_rate": count / json_push_s,
        "pull_rate": count / pull_s,
        "json_pull_rate": count / json_pull_s,
        "pulled_bytes_per_node": round(page_bytes[True]),
        "json_pulled_bytes_per_node": round(page_bytes[False]),
        "baseline_insert_rate": count / insert_s,
        "baseline_select_rate": count / select_s,
        "noop_pull_ms": noop_ms,
        "healthz_ms": health_ms,
        "noop_pull_new_connection_ms": statistics.median(fresh),
        "healthz_new_connection_ms": statistics.median(fresh_health),
        "server_db_bytes": db_bytes,
        "server_errors": server_errors,
    }


# --- 3: concurrent clients on PostgreSQL --------------------------------------------------------


@dataclass
class Client:
    index: int
    account: Account
    own: list[dict[str, Any]]
    shared: list[dict[str, Any]] = field(default_factory=list)
    shared_account: Account | None = None
    statuses: Counter[int] = field(default_factory=Counter)
    retries: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    gave_up: bool = False


CONCURRENT_BATCH = 250
MAX_ATTEMPTS = 30


def run_client(base_url: str, client: Client, barrier: threading.Barrier) -> None:
    jobs = [(client.account, client.account.vault, client.own)]
    if client.shared_account is not None:
        jobs.append((client.shared_account, client.shared_account.vault, client.shared))
    # interleave batches of the two vaults
    plan: list[tuple[Account, str, list[dict[str, Any]]]] = []
    for start in range(0, max(len(job[2]) for job in jobs), CONCURRENT_BATCH):
        for account, vault, envelopes in jobs:
            batch = envelopes[start : start + CONCURRENT_BATCH]
            if batch:
                plan.append((account, vault, batch))
    bodies = [(account, encode({"vault": v, "envelopes": b})) for account, v, b in plan]
    with httpx.Client(base_url=base_url, timeout=300) as http:
        barrier.wait()
        for account, body in bodies:
            for attempt in range(MAX_ATTEMPTS):
                sent = time.perf_counter()
                try:
                    response = http.post("/api/v1/sync/push", content=body, headers=account.headers)
                    status = response.status_code
                except httpx.TransportError as exc:
                    status, response = -1, None
                    client.failures.append(type(exc).__name__)
                client.latencies.append(time.perf_counter() - sent)
                client.statuses[status] += 1
                if status == 200:
                    break
                if response is not None:
                    client.failures.append(f"{status} {response.text[:200]}")
                client.retries += 1
                if attempt == MAX_ATTEMPTS - 1:
                    client.gave_up = True
                    return
                time.sleep(random.uniform(0.01, 0.1))  # back off before retrying


def run_together(
    target: Callable[[str, Any, threading.Barrier], None], base_url: str, clients: list[Any]
) -> float:
    """One thread per client, released together once all are ready: seconds until the last
    one is done."""
    barrier = threading.Barrier(len(clients) + 1)
    threads = [threading.Thread(target=target, args=(base_url, c, barrier)) for c in clients]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def check_stored(
    url: str, expected: dict[str, list[str]], unconfirmed: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Per vault: the stored node IDs are the expected set, one row each, sequence numbers
    1..n without a gap, and the vault row's head_seq and node_count equal n. IDs in
    ``unconfirmed`` (sent in a request that failed and never acknowledged) may be stored or not."""
    problems: list[str] = []
    rows_total = 0
    with database(url) as execute:
        for vault, pushed in expected.items():
            rows = execute(
                "SELECT node_id, seq FROM nodes WHERE vault_id = ? ORDER BY seq", (vault,)
            ).fetchall()
            rows_total += len(rows)
            ids = [r[0] for r in rows]
            seqs = [r[1] for r in rows]
            if len(ids) != len(set(ids)):
                problems.append(f"{vault}: a node stored twice")
            if set(ids) - unconfirmed != set(pushed):
                lost = len(set(pushed) - set(ids))
                extra = len(set(ids) - unconfirmed - set(pushed))
                problems.append(f"{vault}: {lost} lost, {extra} unexpected")
            if seqs != list(range(1, len(seqs) + 1)):
                problems.append(f"{vault}: sequence numbers have gaps or repeats")
            head = execute(
                "SELECT head_seq, node_count FROM teams WHERE id = ?", (vault,)
            ).fetchone()
            if head is None or tuple(head) != (len(rows), len(rows)):
                problems.append(f"{vault}: vault row says {head}, {len(rows)} rows stored")
    return {"rows": rows_total, "problems": problems}


@contextmanager
def postgres_server(
    root: Path, cluster: PostgresCluster, database: str, *, workers: int
) -> Iterator[tuple[str, ServerProcess, httpx.Client]]:
    """A new database ``database`` in ``cluster``, a ``tapes-server`` of ``workers`` on it, and
    a client of that server: (database URL, server, client)."""
    url = cluster.create_database(database)
    server_root = root / f"{database}-server"
    server_root.mkdir()
    with (
        ServerProcess(server_root, url, workers=workers) as server,
        httpx.Client(base_url=server.base_url, timeout=120) as http,
    ):
        yield url, server, http


def bench_push_postgres(root: Path, cluster: PostgresCluster, count: int) -> dict[str, Any]:
    """Section 1's push, one client, on PostgreSQL: printed beside the SQLite push of the same
    run (same envelope size, batches of 1,000, a server of 2 workers)."""
    with postgres_server(root, cluster, "tapes_push", workers=2) as (url, _server, http):
        account = new_account(http, "pgpush")
        upgrade_to_pro(url, [account.vault])
        envelopes = SealingVault(account.vault, account.identity, seed=1).sessions(count)
        bodies = push_bodies(account.vault, envelopes, BATCH)
        start = time.perf_counter()
        push_batches(http, account, bodies)
        push_s = time.perf_counter() - start
    print(f"push on PostgreSQL: {count / push_s:,.0f} nodes/s", flush=True)
    return {"nodes": count, "push_s": round(push_s, 3), "push_rate": count / push_s}


def bench_postgres(
    root: Path, cluster: PostgresCluster, clients_n: int, own_n: int, shared_n: int
) -> dict[str, Any]:
    sharers = max(2, clients_n // 4)
    with postgres_server(root, cluster, "tapes_bench", workers=4) as (url, server, http):
        shared_owner = new_account(http, "shared")
        shared_keys = SealingVault(shared_owner.vault, shared_owner.identity, seed=999)
        clients: list[Client] = []
        for index in range(clients_n):
            account = new_account(http, f"client{index}")
            own = SealingVault(account.vault, account.identity, seed=index).sessions(own_n)
            client = Client(index, account, own)
            if index < sharers:
                # the shared user's identity, logged in separately by this client
                session = Account(shared_owner.identity, "shared")
                login(http, session, register=False)
                client.shared_account = session
                client.shared = shared_keys.sessions(shared_n)
            clients.append(client)
        elapsed = run_together(run_client, server.base_url, clients)
        server_errors = server.errors_logged()
    expected = {c.account.vault: [e["node_id"] for e in c.own] for c in clients}
    expected[shared_owner.vault] = [e["node_id"] for c in clients for e in c.shared]
    checked = check_stored(url, expected)
    statuses: Counter[int] = Counter()
    for c in clients:
        statuses.update(c.statuses)
    failures = Counter(f for c in clients for f in c.failures)
    latencies = sorted(x for c in clients for x in c.latencies)
    nodes = sum(len(c.own) + len(c.shared) for c in clients)
    return {
        "clients": clients_n,
        "sharing_one_vault": sharers,
        "nodes": nodes,
        "seconds": round(elapsed, 2),
        "rate": nodes / elapsed,
        "requests": sum(statuses.values()),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": sum(v for k, v in statuses.items() if k != 200),
        "retries": sum(c.retries for c in clients),
        "error_kinds": dict(failures.most_common(5)),
        "server_internal_errors_logged": len(server_errors),
        "server_error_sample": server_errors[:3],
        "push_p50_ms": 1000 * latencies[len(latencies) // 2],
        "push_p95_ms": 1000 * latencies[int(len(latencies) * 0.95)],
        "clients_gave_up": sum(c.gave_up for c in clients),
        "rows": checked["rows"],
        "expected_rows": sum(len(v) for v in expected.values()),
        "data_problems": checked["problems"],
    }


# --- 4: mixed load: push, pull and status from many clients at once -----------------------------

LOAD_BATCH = 50  # envelopes per push
LOAD_DEVICES = 4  # clients per user, each logged in on its own
KINDS = ("push", "pull", "status")
MIX = (40, 40, 20)  # percent of each kind, drawn with a seeded RNG
LOAD_OPS, LOAD_OPS_QUICK = 60, 30  # operations per client
LOAD_TIMEOUT = 60.0  # longer than the server's 30 s busy timeout: a stall shows as a 500


class _Seq(msgspec.Struct):
    seq: int


class _PageHead(msgspec.Struct):
    """The part of a pull page the load clients read (the envelopes are skipped, not decoded)."""

    items: list[_Seq]
    cursor: int
    more: bool


decode_page = msgspec.json.Decoder(_PageHead).decode


@dataclass
class Device:
    """One client of a load user: its own login, its own chain of envelopes (pushed in order,
    so every parent is stored before its child), its own pull cursor and its planned operations.
    Every request is recorded as (kind, seconds, status); status -1 is a transport error."""

    account: Account
    ops: list[str]
    pushes: list[tuple[bytes, list[str]]]  # (request body, node IDs), in order
    cursor: int = 0
    pushed: int = 0
    acknowledged: list[str] = field(default_factory=list)
    samples: list[tuple[str, float, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    pulled: int = 0
    pull_gaps: int = 0
    wrong_answers: int = 0
    resend: bool = False  # the last push of this batch failed: it may have been stored


def load_step(http: httpx.Client, device: Device, kind: str) -> None:
    """One operation, one request, no retry: a failure is recorded and the client goes on."""
    account = device.account
    body, ids = device.pushes[device.pushed] if kind == "push" else (b"", [])
    start = time.perf_counter()
    try:
        if kind == "push":
            response = http.post("/api/v1/sync/push", content=body, headers=account.headers)
        else:
            path = "/api/v1/sync/pull" if kind == "pull" else "/api/v1/sync/status"
            params: dict[str, Any] = {"vault": account.vault, "after": device.cursor}
            if kind == "pull":
                params["limit"] = PAGE
            response = http.get(path, params=params, headers=account.headers)
    except httpx.TransportError as exc:
        device.samples.append((kind, time.perf_counter() - start, -1))
        device.failures.append(f"{kind}: {type(exc).__name__}")
        device.resend = device.resend or kind == "push"
        return
    device.samples.append((kind, time.perf_counter() - start, response.status_code))
    if not response.is_success:
        device.failures.append(f"{kind}: {response.status_code} {response.text[:200]}")
        device.resend = device.resend or kind == "push"
        return
    if kind == "push":
        # a failed batch is sent again by the device's next push (its chain continues from it);
        # the failure was counted, and only then may the server know some of its IDs
        result = decode(response.content)
        existing = result["existing"] if device.resend else []
        if sorted(result["stored"] + existing) != sorted(ids):
            device.wrong_answers += 1
        device.pushed += 1
        device.resend = False
        device.acknowledged.extend(ids)
    elif kind == "pull":
        page = decode_page(response.content)
        # the owner reads the whole vault, so a page continues the cursor without a gap
        if [i.seq for i in page.items] != list(
            range(device.cursor + 1, device.cursor + 1 + len(page.items))
        ):
            device.pull_gaps += 1
        device.pulled += len(page.items)
        device.cursor = page.cursor


def connection(base_url: str) -> httpx.Client:
    """One kept-alive connection, as one sync client holds."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return httpx.Client(base_url=base_url, timeout=LOAD_TIMEOUT, limits=limits)


def run_device(base_url: str, device: Device, barrier: threading.Barrier) -> None:
    with connection(base_url) as http:
        barrier.wait()
        for kind in device.ops:
            load_step(http, device, kind)


def run_alone(base_url: str, users: list[list[Device]]) -> None:
    """The baseline: a single client, one connection, one request at a time, alone on the
    server. It plays one user's devices in turn (each its own login, chain and cursor), so that
    its pulls bring back as many nodes as a device's pulls under load (the other devices' pushes
    since its last pull)."""
    with connection(base_url) as http:
        for devices in users:
            for step in range(len(devices[0].ops)):
                for device in devices:
                    load_step(http, device, device.ops[step])


def load_users(
    http: httpx.Client, prefix: str, users_n: int, ops_n: int, seed: int
) -> list[list[Device]]:
    """``users_n`` new users, ``LOAD_DEVICES`` logged-in devices each, with their operations
    drawn and their push bodies sealed and encoded (before any clock starts)."""
    users: list[list[Device]] = []
    for u in range(users_n):
        owner = new_account(http, f"{prefix}{u}")
        keys = SealingVault(owner.vault, owner.identity, seed=seed + u)
        devices: list[Device] = []
        for d in range(LOAD_DEVICES):
            account = owner
            if d > 0:
                account = Account(owner.identity, owner.handle)
                login(http, account, register=False)
            rng = random.Random(seed * 1000 + u * LOAD_DEVICES + d)
            ops = rng.choices(KINDS, weights=MIX, k=ops_n)
            envelopes = keys.sessions(ops.count("push") * LOAD_BATCH)
            pushes = []
            for first in range(0, len(envelopes), LOAD_BATCH):
                batch = envelopes[first : first + LOAD_BATCH]
                body = encode({"vault": owner.vault, "envelopes": batch})
                pushes.append((body, [e["node_id"] for e in batch]))
            devices.append(Device(account, ops, pushes))
        users.append(devices)
    return users


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def latency_summary(devices: list[Device]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in (*KINDS, "all"):
        samples = [s for d in devices for s in d.samples if kind in {s[0], "all"}]
        times = [1000 * s[1] for s in samples]
        out[kind] = {
            "requests": len(samples),
            "errors": sum(not 200 <= s[2] < 300 for s in samples),
            "p50_ms": percentile(times, 0.50) if times else None,
            "p99_ms": percentile(times, 0.99) if times else None,
            "max_ms": max(times) if times else None,
        }
    return out


def bench_load(
    root: Path, name: str, url: str, *, clients_n: int, ops_n: int, alone_users: int
) -> dict[str, Any]:
    """``clients_n`` clients (``LOAD_DEVICES`` per user) at once, each ``ops_n`` operations in
    the mix, against one server with the default number of workers; before them, on the same
    server, one client alone (``alone_users`` users' devices in turn) for the baseline."""
    server_root = root / f"load-{name}"
    server_root.mkdir()
    with (
        ServerProcess(server_root, url, workers=None) as server,
        httpx.Client(base_url=server.base_url, timeout=120) as http,
    ):
        started = time.perf_counter()
        alone = load_users(http, "alone", alone_users, ops_n, seed=1)
        users = load_users(http, "load", clients_n // LOAD_DEVICES, ops_n, seed=2)
        everyone = [d for group in alone + users for d in group]
        upgrade_to_pro(url, sorted({d.account.vault for d in everyone}))
        print(
            f"load ({name}): {len(everyone)} devices ready in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )

        start = time.perf_counter()
        run_alone(server.base_url, alone)
        alone_s = time.perf_counter() - start

        devices = [d for group in users for d in group]
        cpu = time.process_time()
        elapsed = run_together(run_device, server.base_url, devices)
        cpu = time.process_time() - cpu
        server_errors = server.errors_logged()
    expected: dict[str, list[str]] = {}
    for d in everyone:
        expected.setdefault(d.account.vault, []).extend(d.acknowledged)
    # a device whose last push failed leaves that batch unconfirmed: stored or not, both are right
    unconfirmed = frozenset(i for d in everyone if d.resend for i in d.pushes[d.pushed][1])
    checked = check_stored(url, expected, unconfirmed)
    problems = list(checked["problems"])
    gaps = sum(d.pull_gaps for d in everyone)
    if gaps:
        problems.append(f"{gaps} pull pages did not continue their cursor")
    wrong = sum(d.wrong_answers for d in everyone)
    if wrong:
        problems.append(f"{wrong} pushes answered 200 without storing exactly the batch")
    under_load = latency_summary(devices)
    requests = under_load["all"]["requests"]
    return {
        "backend": name,
        "clients": len(devices),
        "users": len(users),
        "workers": worker_count(url),
        "ops_per_client": ops_n,
        "mix_percent": dict(zip(KINDS, MIX, strict=True)),
        "push_batch": LOAD_BATCH,
        "seconds": round(elapsed, 2),
        "client_cpu_s": round(cpu, 2),  # the clients' own share of the 2 cores
        "requests": requests,
        "errors": under_load["all"]["errors"],
        "requests_per_s": requests / elapsed,
        "nodes_per_s": sum(len(d.acknowledged) for d in devices) / elapsed,
        "mean_nodes_per_pull": mean_pulled(devices),
        "under_load": under_load,
        "alone": latency_summary([d for group in alone for d in group]),
        "alone_seconds": round(alone_s, 2),
        "alone_mean_nodes_per_pull": mean_pulled([d for group in alone for d in group]),
        "error_kinds": dict(Counter(f for d in everyone for f in d.failures).most_common(5)),
        "server_internal_errors_logged": len(server_errors),
        "server_error_sample": server_errors[:3],
        "rows": checked["rows"],
        "acknowledged_rows": sum(len(v) for v in expected.values()),
        "unconfirmed_nodes": len(unconfirmed),
        "data_problems": problems,
    }


def mean_pulled(devices: list[Device]) -> float:
    pulls = sum(1 for d in devices for s in d.samples if s[0] == "pull")
    return sum(d.pulled for d in devices) / max(pulls, 1)


def worker_count(url: str) -> int:
    """The server's default ``TAPES_SERVER_WORKERS`` (what a server started without it runs)."""
    return Settings.from_env({"TAPES_SERVER_DATABASE_URL": url}).workers


# --- report -------------------------------------------------------------------------------------


def on_tmpfs(path: Path) -> bool:
    best, fstype = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
            best, fstype = parts[1], parts[2]
    return fstype == "tmpfs"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def push_pull_rows(s: dict[str, Any], count: int) -> tuple[list[list[str]], list[bool]]:
    push_ok = s["push_rate"] >= GOAL_RATE
    pull_ok = s["pull_rate"] >= GOAL_RATE
    noop_ok = s["noop_pull_ms"] < GOAL_NOOP_MS
    rows = [[
        f"push {count:,} x {s['envelope_mean_bytes']:,} B, MessagePack (nodes/s)",
        f"{s['push_rate']:,.0f}",
        f"{s['baseline_insert_rate']:,.0f} sqlite3 insert",
        f"{s['push_rate'] / s['baseline_insert_rate']:.3f}",
        f">= {GOAL_RATE:,.0f}",
        "PASS" if push_ok else "MISS",
    ], [
        "  the same push in JSON (nodes/s)",
        f"{s['json_push_rate']:,.0f}",
        f"{s['baseline_insert_rate']:,.0f} sqlite3 insert",
        f"{s['json_push_rate'] / s['baseline_insert_rate']:.3f}",
        "(diagnostic)",
        "",
    ], [
        f"pull {count:,}, MessagePack (nodes/s)",
        f"{s['pull_rate']:,.0f}",
        f"{s['baseline_select_rate']:,.0f} sqlite3 select",
        f"{s['pull_rate'] / s['baseline_select_rate']:.3f}",
        f">= {GOAL_RATE:,.0f}",
        "PASS" if pull_ok else "MISS",
    ], [
        (f"  the same pull in JSON (nodes/s; {s['json_pulled_bytes_per_node']:,} B a node, "
         f"MessagePack {s['pulled_bytes_per_node']:,} B)"),
        f"{s['json_pull_rate']:,.0f}",
        f"{s['baseline_select_rate']:,.0f} sqlite3 select",
        f"{s['json_pull_rate'] / s['baseline_select_rate']:.3f}",
        "(diagnostic)",
        "",
    ], [
        f"no-op pull, {count:,} stored (median ms)",
        f"{s['noop_pull_ms']:.2f}",
        f"{s['healthz_ms']:.2f} GET /healthz",
        f"{s['noop_pull_ms'] / s['healthz_ms']:.2f}",
        f"< {GOAL_NOOP_MS:.0f} ms, 1 request",
        "PASS" if noop_ok else "MISS",
    ], [
        "  the same, new connection per request (ms)",
        f"{s['noop_pull_new_connection_ms']:.2f}",
        f"{s['healthz_new_connection_ms']:.2f} GET /healthz",
        f"{s['noop_pull_new_connection_ms'] / s['healthz_new_connection_ms']:.2f}",
        "(diagnostic)",
        "",
    ]]  # fmt: skip
    return rows, [push_ok, pull_ok, noop_ok]


def postgres_push_rows(
    p: dict[str, Any], sqlite: dict[str, Any]
) -> tuple[list[list[str]], list[bool]]:
    """One client's push on PostgreSQL beside its push on SQLite in this run."""
    base = sqlite.get("push_rate")
    ok = p["push_rate"] >= GOAL_RATE
    rows = [[
        f"push {p['nodes']:,} on PostgreSQL (nodes/s)",
        f"{p['push_rate']:,.0f}",
        f"{base:,.0f} the same push on SQLite" if base else "no SQLite run",
        f"{p['push_rate'] / base:.3f}" if base else "",
        f">= {GOAL_RATE:,.0f}",
        "PASS" if ok else "MISS",
    ]]  # fmt: skip
    return rows, [ok]


def concurrent_rows(p: dict[str, Any]) -> tuple[list[list[str]], list[bool]]:
    pg_ok = p["errors"] == 0 and not p["data_problems"]
    rows = [[
        f"{p['clients']} clients push to PostgreSQL ({p['sharing_one_vault']} share a vault)",
        f"{p['errors']} errors / {p['requests']} requests",
        f"{p['rows']:,} rows of {p['expected_rows']:,} pushed",
        f"{len(p['data_problems'])} data problems",
        "0 errors, nothing lost",
        "PASS" if pg_ok else "MISS",
    ], [
        "  throughput (nodes/s, all clients)",
        f"{p['rate']:,.0f}",
        f"p50 {p['push_p50_ms']:.0f} ms, p95 {p['push_p95_ms']:.0f} ms per push",
        "",
        "",
        "",
    ]]  # fmt: skip
    return rows, [pg_ok]


def figures(latency: dict[str, Any]) -> str:
    return f"{latency['p50_ms']:.1f} / {latency['p99_ms']:.1f} ({latency['requests']:,})"


def load_rows(load: dict[str, Any]) -> tuple[list[list[str]], list[bool]]:
    ok = load["errors"] == 0 and not load["data_problems"]
    title = "SQLite" if load["backend"] == "sqlite" else "PostgreSQL"
    who = f"{load['clients']} clients ({load['users']} users), {load['workers']} workers"
    pulls = f"nodes per pull {load['mean_nodes_per_pull']:.0f}"
    pulls_alone = f"(alone {load['alone_mean_nodes_per_pull']:.0f})"
    cpu = f"{load['client_cpu_s']:.1f} s"
    rows = [[
        f"mixed load on {title}: {who}",
        f"{load['errors']} errors / {load['requests']:,} requests",
        f"{load['rows']:,} rows of {load['acknowledged_rows']:,} acknowledged",
        f"{len(load['data_problems'])} data problems",
        "0 errors, nothing lost",
        "PASS" if ok else "MISS",
    ], [
        "  throughput (requests/s; nodes pushed/s)",
        f"{load['requests_per_s']:,.0f}; {load['nodes_per_s']:,.0f}",
        f"{load['seconds']:.1f} s ({cpu} client CPU); {pulls} {pulls_alone}",
        "",
        "",
        "",
    ]]  # fmt: skip
    for kind in (*KINDS, "all"):
        busy, alone = load["under_load"][kind], load["alone"][kind]
        if not busy["requests"] or not alone["requests"]:
            continue
        label = f"{LOAD_BATCH} nodes" if kind == "push" else "limit 1,000" if kind == "pull" else ""
        rows.append([
            f"  {kind}{f' ({label})' if label else ''}, p50 / p99 ms (requests)",
            figures(busy),
            f"one client alone {figures(alone)}",
            f"p99 x{busy['p99_ms'] / alone['p99_ms']:.1f}",
            "(reported)",
            "",
        ])  # fmt: skip
    return rows, [ok]


def print_problems(name: str, result: dict[str, Any]) -> None:
    if result.get("errors"):
        print(f"\n{name}: errors by status {result.get('statuses', '')}:")
        for kind, n in result["error_kinds"].items():
            print(f"  {n} x {kind}")
        for line in result["server_error_sample"]:
            print(f"  server log: {line}")
    if result.get("data_problems"):
        print(f"{name}: data problems:", *result["data_problems"][:10], sep="\n  ")


def print_report(report: dict[str, Any], count: int) -> list[bool]:
    """The table, then the details of any errors; whether each goal was met."""
    rows = [["figure", "ours", "baseline", "ratio", "goal", "result"]]
    goals: list[bool] = []
    sections: list[tuple[str, str, Callable[[dict[str, Any]], tuple[list[Any], list[bool]]]]] = [
        ("sqlite_server", "push / pull on SQLite", lambda r: push_pull_rows(r, count)),
        (
            "postgres_push",
            "push on PostgreSQL",
            lambda r: postgres_push_rows(r, report.get("sqlite_server") or {}),
        ),
        ("postgres_concurrent", "concurrent clients on PostgreSQL", concurrent_rows),
        ("load_sqlite", "mixed load on SQLite", load_rows),
        ("load_postgres", "mixed load on PostgreSQL", load_rows),
    ]
    for key, title, make_rows in sections:
        result = report.get(key)
        if result is None:
            continue
        if "skipped" in result:
            rows.append([title, "skipped", result["skipped"], "", "", "SKIP"])
            continue
        more, met = make_rows(result)
        rows.extend(more)
        goals.extend(met)
    print()
    print(table(rows))
    for key, title, _make_rows in sections:
        print_problems(title, report.get(key) or {})

    return goals


@contextmanager
def postgres(skip: bool) -> Iterator[PostgresCluster | str]:
    """A throwaway PostgreSQL 15 cluster (tests/server/pg.py), or why there is none."""
    if skip:
        yield "--skip-postgres"
        return
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.server.pg import postgres_unavailable, running_cluster

    reason = postgres_unavailable()
    if reason is not None:
        yield reason
        return
    with running_cluster() as cluster:
        yield cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="10k nodes, 8 and 16 clients")
    parser.add_argument("--keep", action="store_true", help="keep the database files")
    parser.add_argument("--nodes", type=int, default=None, help="override the node count")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--load-only", action="store_true", help="only the mixed load (4)")
    parser.add_argument("--skip-load", action="store_true", help="without the mixed load (4)")
    parser.add_argument(
        "--workers", type=int, default=2, help="uvicorn workers of the SQLite server (default 2)"
    )
    args = parser.parse_args(argv)
    count = args.nodes or (10_000 if args.quick else 100_000)
    clients_n = 8 if args.quick else 32
    own_n, shared_n = (500, 500) if args.quick else (2_000, 1_000)
    load_size = (
        {"clients_n": 16, "ops_n": LOAD_OPS_QUICK, "alone_users": 1}
        if args.quick
        else {"clients_n": 64, "ops_n": LOAD_OPS, "alone_users": 2}
    )

    OUT.mkdir(parents=True, exist_ok=True)
    base = OUT if on_tmpfs(Path(tempfile.gettempdir())) else Path(tempfile.gettempdir())
    root = Path(tempfile.mkdtemp(prefix="bench-server-", dir=base))
    print(f"working in {root}", flush=True)
    report: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
    }
    skipped = {"skipped": "--load-only"}
    try:
        report["sqlite_server"] = (
            skipped if args.load_only else bench_sqlite(root, count, args.workers)
        )
        if not args.skip_load:
            url = f"sqlite:///{root / 'load.sqlite'}"
            report["load_sqlite"] = bench_load(root, "sqlite", url, **load_size)
        with postgres(args.skip_postgres) as cluster:
            if isinstance(cluster, str):
                report["postgres_push"] = {"skipped": cluster}
                report["postgres_concurrent"] = {"skipped": cluster}
                report["load_postgres"] = {"skipped": cluster}
            else:
                report["postgres_push"] = (
                    skipped if args.load_only else bench_push_postgres(root, cluster, count)
                )
                report["postgres_concurrent"] = (
                    skipped
                    if args.load_only
                    else bench_postgres(root, cluster, clients_n, own_n, shared_n)
                )
                if not args.skip_load:
                    url = cluster.create_database("tapes_load")
                    report["load_postgres"] = bench_load(root, "postgres", url, **load_size)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    goals = print_report(report, count)
    report["goals_met"] = all(goals)
    (OUT / "server.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {OUT / 'server.json'}")
    return 0 if all(goals) else 1


if __name__ == "__main__":
    sys.exit(main())
