"""Usage bench (issue 12): a year of one team's metadata, grouped, beside a raw SQL GROUP BY.

    .venv/bin/python bench/bench_usage.py               # 1,000,000 nodes, SQLite and PostgreSQL
    .venv/bin/python bench/bench_usage.py --nodes 100000 --sqlite-only

Data: one team vault, 20 members, 10 models, sessions of 10 to 60 turns (one member and one
model each, turns 1 to 3 minutes apart) started at random through the last 365 days, coarse
metadata (model, provider, agent, role, the four token kinds and total, the ``created_at``
hour), all uploaded "today" as a backfill would be. Rows go straight into ``nodes`` (1-byte
envelopes: usage never reads them) and into ``usage_buckets`` through ``services.record`` in
batches of 1,000, as the push does.

Figures, each the median of 5 runs, on SQLite (a file, WAL) and a throwaway PostgreSQL 15:

- ``report`` (``server.domain.usage.services.report``, priced, over the whole year) grouped by
  member and by day; goal < 500 ms each;
- baseline, same run: the raw SQL GROUP BY of the same data in ``nodes`` (the JSON fields
  extracted per row, tokens summed, by uploader and by the ``created_at`` day), and the ratio;
- push cost: ``services.record`` of a 1,000-node batch beside the push's own insert of the same
  1,000 rows (``nodes._insert_rows``), and the ratio (the share record adds to a push's SQL).
"""

from __future__ import annotations

import argparse
import functools
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import msgspec  # noqa: E402
from sqlalchemy import Engine, insert, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from server.db.engine import make_engine  # noqa: E402
from server.db.migrate import upgrade  # noqa: E402
from server.db.models import Team, User  # noqa: E402
from server.domain.nodes.services import _insert_rows  # noqa: E402
from server.domain.usage import services  # noqa: E402
from server.domain.usage.pricing import PriceBook  # noqa: E402
from server.domain.usage.schemas import parse_query  # noqa: E402

VAULT = "t_bench_usage"
MODELS = [
    ("claude-sonnet-4-5-20250929", "anthropic"), ("claude-opus-4-1", "anthropic"),
    ("claude-haiku-4-5", "anthropic"), ("gpt-4o", "openai"), ("gpt-4o-mini", "openai"),
    ("gpt-4.1", "openai"), ("o3", "openai"), ("gemini-2.5-pro", "google"),
    ("gemini-2.5-flash", "google"), ("homebrew-7b", "ollama"),
]  # fmt: skip
GOAL_MS = 500.0
BATCH = 1000
_json = msgspec.json.Encoder().encode


def nodes(count: int, now: datetime, seed: int = 12) -> Iterator[tuple[Any, ...]]:
    """``(node id, parent id, clear metadata, uploader)`` of ``count`` nodes in sessions."""
    rng = random.Random(seed)
    made = 0
    while made < count:
        member, (model, provider) = f"u{rng.randrange(20):02d}", rng.choice(MODELS)
        moment = now - timedelta(seconds=rng.randrange(365 * 86400))
        parent = None
        for turn in range(min(rng.randint(10, 60), count - made)):
            moment += timedelta(seconds=rng.randint(60, 180))
            prompt = rng.randint(1_000, 150_000)
            meta = {
                "model": model, "provider": provider, "agent_name": "claude-code",
                "role": "assistant" if turn % 2 else "user",
                "created_at": moment.replace(minute=0, second=0, microsecond=0)
                .isoformat().replace("+00:00", "Z"),
                "prompt_tokens": prompt, "completion_tokens": rng.randint(10, 4_000),
                "cache_creation_input_tokens": prompt // 10, "cache_read_input_tokens": prompt // 2,
                "total_tokens": prompt + 1_000,
            }  # fmt: skip
            node_id = f"{made:064x}"
            yield node_id, parent, meta, member
            parent = node_id
            made += 1


def fill(engine: Engine, count: int, now: datetime) -> tuple[float, float]:
    """Load the data; the summed seconds of ``_insert_rows`` and of ``record`` over all batches."""
    with Session(engine) as db, db.begin():
        db.execute(insert(User), [
            {"id": f"u{i:02d}", "handle": f"member{i:02d}", "x25519": b"x" * 32,
             "ed25519": bytes([i]) * 32, "fingerprint": f"F{i}", "personal_vault": f"p{i}",
             "created_at": now} for i in range(20)
        ])  # fmt: skip
        db.add(Team(id=VAULT, name="bench", slug="bench", kind="team", owner_id="u00",
                    created_at=now))  # fmt: skip
    inserting = recording = 0.0
    sqlite = engine.dialect.name == "sqlite"
    stamp: object = now.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else now
    batch: list[tuple[Any, ...]] = []

    def flush() -> None:
        nonlocal inserting, recording
        rows: list[tuple[object, ...]] = [
            (
                VAULT,
                node_id,
                parent,
                seq0,
                1,
                "node",
                "a",
                0,
                True,
                _json(meta).decode(),
                b"x",
                member,
                stamp,
            )
            for seq0, (node_id, parent, meta, member) in batch
        ]
        with Session(engine) as db, db.begin():
            started = time.perf_counter()
            _insert_rows(db, rows)
            inserting += time.perf_counter() - started
            started = time.perf_counter()
            services.record(
                db, VAULT, ((meta, parent is None, member, now)
                            for _s, (_n, parent, meta, member) in batch),
            )  # fmt: skip
            recording += time.perf_counter() - started
        batch.clear()

    for seq, node in enumerate(nodes(count, now), start=1):
        batch.append((seq, node))
        if len(batch) == BATCH:
            flush()
    if batch:
        flush()
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    if engine.dialect.name == "sqlite":  # the WAL folded back, as it is once a server idles
        with sqlite3.connect(str(engine.url.database), isolation_level=None) as raw:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return inserting, recording


def median_ms(run: Callable[[], object], tries: int = 5) -> float:
    times = []
    for _ in range(tries):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def raw_sql(engine: Engine, by: str) -> Callable[[], object]:
    if engine.dialect.name == "sqlite":
        day = "substr(json_extract(clear_metadata, '$.created_at'), 1, 10)"
        tok = "total(json_extract(clear_metadata, '$.{}'))"
    else:
        day = "substr(clear_metadata->>'created_at', 1, 10)"
        tok = "sum((clear_metadata->>'{}')::bigint)"
    key = "uploader_id" if by == "member" else day
    sums = ", ".join(tok.format(k) for k in (
        "prompt_tokens", "completion_tokens", "cache_creation_input_tokens",
        "cache_read_input_tokens", "total_tokens",
    ))  # fmt: skip
    sql = text(
        f"SELECT {key}, clear_metadata{'->>' if engine.dialect.name != 'sqlite' else ' ->> '}"
        f"'model', count(*), {sums} FROM nodes WHERE vault_id = :v GROUP BY 1, 2"
    )

    def run() -> object:
        with engine.connect() as conn:
            return conn.execute(sql, {"v": VAULT}).all()

    return run


def bench(engine: Engine, label: str, count: int) -> list[str]:
    upgrade(engine)
    now = datetime.now(UTC).replace(microsecond=0)
    started = time.perf_counter()
    inserting, recording = fill(engine, count, now)
    print(f"{label}: loaded {count:,} nodes in {time.perf_counter() - started:.1f} s", flush=True)

    def report(query: Any) -> Any:
        with Session(engine) as db:
            team = db.get(Team, VAULT)
            if team is None:
                raise RuntimeError("the bench vault is missing")
            return services.report(db, team, query, PriceBook({}, now))

    with engine.connect() as conn:
        buckets = conn.scalar(text("SELECT count(*) FROM usage_buckets"))
    lines = [f"{label}: {buckets:,} usage_buckets rows for {count:,} nodes"]
    for by in ("member", "day"):
        query = parse_query(start=(now - timedelta(days=366)).date().isoformat(), end=None,
                            tz="Europe/Paris", group_by=by, now=now)  # fmt: skip
        result = report(query)
        if result.totals is None or result.totals.nodes != count:
            raise RuntimeError(f"the report counts {result.totals} nodes, not {count}")
        ours = median_ms(functools.partial(report, query))
        base = median_ms(raw_sql(engine, by))
        verdict = "PASS" if ours < GOAL_MS else "MISS"
        lines.append(
            f"{label}: usage by {by:6} {ours:8.1f} ms ({len(result.rows)} rows, priced)  "
            f"raw SQL GROUP BY over nodes {base:9.1f} ms  ratio x{base / ours:,.1f}  "
            f"goal < {GOAL_MS:.0f} ms: {verdict}"
        )
    batches = -(-count // BATCH)
    lines.append(
        f"{label}: push SQL per {BATCH:,}-node batch: insert {1000 * inserting / batches:.1f} ms, "
        f"usage record {1000 * recording / batches:.2f} ms "
        f"(+{100 * recording / inserting:.1f} % of the insert)"
    )
    return lines


@contextmanager
def sqlite_engine() -> Iterator[Engine]:
    with tempfile.TemporaryDirectory(prefix="bench-usage-") as root:
        engine = make_engine(f"sqlite+pysqlite:///{Path(root) / 'server.sqlite'}")
        yield engine
        engine.dispose()


@contextmanager
def postgres_engine() -> Iterator[Engine | None]:
    from tests.server.pg import postgres_unavailable, running_cluster

    if (reason := postgres_unavailable()) is not None:
        print(f"PostgreSQL: NOT RUN ({reason})")
        yield None
        return
    with running_cluster() as cluster:
        engine = make_engine(cluster.create_database("bench_usage"))
        yield engine
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args()
    lines: list[str] = []
    with sqlite_engine() as engine:
        lines += bench(engine, "SQLite", args.nodes)
    if not args.sqlite_only:
        with postgres_engine() as pg:
            if pg is not None:
                lines += bench(pg, "PostgreSQL", args.nodes)
    print("\n".join(lines))
    return 1 if any("MISS" in line for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
