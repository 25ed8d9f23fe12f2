"""Alembic migrations on data: a database made at an older revision, upgraded to the head."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

import keymgmt
from server.db.engine import make_engine
from server.db.migrate import current_revision, head_revision, upgrade
from server.db.models import JsonType
from server.domain.usage.buckets import COUNTERS
from server.domain.usage.labels import label_of

NOW = datetime.now(UTC)
_users = sa.table(
    "users", *(sa.column(c) for c in ("id", "handle", "x25519", "ed25519", "fingerprint")),
    sa.column("personal_vault"), sa.column("created_at", sa.DateTime(timezone=True)),
)  # fmt: skip
_teams = sa.table(
    "teams", *(sa.column(c) for c in ("id", "name", "slug", "kind", "owner_id", "tier")),
    *(sa.column(c) for c in ("head_seq", "node_count", "chain_seqno", "chain_head")),
    sa.column("created_at", sa.DateTime(timezone=True)),
)  # fmt: skip
_statements = sa.table(
    "chain_statements", sa.column("team_id"), sa.column("seqno"), sa.column("hash"),
    sa.column("statement", JsonType), sa.column("created_at", sa.DateTime(timezone=True)),
)  # fmt: skip


def _user(conn: sa.Connection, name: str) -> keymgmt.Identity:
    identity = keymgmt.generate_identity()
    conn.execute(
        sa.insert(_users).values(
            id=name, handle=name, x25519=identity.public.x25519,
            ed25519=identity.public.ed25519, fingerprint=identity.fingerprint,
            personal_vault=f"p_{name}", created_at=NOW,
        )
    )  # fmt: skip
    return identity


def _team(conn: sa.Connection, team_id: str, owner: str, chain: list[Any]) -> None:
    """A vault row at revision 0001 and its chain (``chain``: statements, possibly none)."""
    head = chain[-1] if chain else None
    conn.execute(
        sa.insert(_teams).values(
            id=team_id, name=team_id, slug=team_id, kind="team", owner_id=owner, tier="free",
            head_seq=0, node_count=0, chain_seqno=head.body.seqno if head else -1,
            chain_head=head.hash if head else None, created_at=NOW,
        )
    )  # fmt: skip
    for st in chain:
        conn.execute(
            sa.insert(_statements).values(
                team_id=team_id, seqno=st.body.seqno, hash=st.hash, statement=st.to_dict(),
                created_at=NOW,
            )
        )  # fmt: skip


def _chain(owner: keymgmt.Identity, team: str, *others: keymgmt.Identity) -> list[Any]:
    """Genesis, then each of ``others`` added and removed (each removal starts an epoch)."""
    now = int(NOW.timestamp())
    genesis = keymgmt.create_team(
        team=team, owner=owner, vault_id_key=keymgmt.new_key(), epoch_key=keymgmt.new_key(),
        now=now,
    )  # fmt: skip
    state = keymgmt.verify_chain([genesis])
    for other in others:
        added = keymgmt.add_member(state, signer=owner, member=other.public, role="member", now=now)
        state = keymgmt.extend_chain(state, [added])
        removed = keymgmt.remove_member(
            state, signer=owner, member=other.fingerprint, new_epoch_key=keymgmt.new_key(),
            now=now,
        )  # fmt: skip
        state = keymgmt.extend_chain(state, [removed])
    return list(state.statements)


def test_0002_backfills_each_vaults_epoch_from_its_chain_head(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine, "0001")
    with engine.begin() as conn:
        alice, bob, carol = (_user(conn, name) for name in ("alice", "bob", "carol"))
        _team(conn, "t_rotated_twice", "alice", _chain(alice, "t_rotated_twice", bob, carol))
        _team(conn, "t_rotated", "alice", _chain(alice, "t_rotated", bob))
        _team(conn, "t_genesis_only", "alice", _chain(alice, "t_genesis_only"))
        _team(conn, "p_alice", "alice", [])  # a personal vault before its first login
    upgrade(engine, "0002")
    assert current_revision(engine) == "0002"
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, epoch FROM teams")).all()
    epochs: dict[str, int] = dict(rows)
    assert epochs == {"t_rotated_twice": 3, "t_rotated": 2, "t_genesis_only": 1, "p_alice": 1}
    engine.dispose()


_nodes = sa.table(
    "nodes", *(sa.column(c) for c in ("vault_id", "node_id", "parent_id", "seq", "epoch")),
    *(sa.column(c) for c in ("record_type", "author", "padded_size", "metadata_only")),
    sa.column("clear_metadata", JsonType), sa.column("envelope", sa.LargeBinary),
    sa.column("uploader_id"), sa.column("uploaded_at", sa.DateTime(timezone=True)),
)  # fmt: skip


def test_0003_backfills_each_vaults_stored_bytes(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine, "0002")
    with engine.begin() as conn:
        alice = _user(conn, "alice")
        _team(conn, "t_full", "alice", _chain(alice, "t_full"))
        _team(conn, "t_empty", "alice", _chain(alice, "t_empty"))
        for seq, size in enumerate((100, 2_000, 30_000), start=1):
            conn.execute(
                sa.insert(_nodes).values(
                    vault_id="t_full", node_id=f"{seq:064x}", parent_id=None, seq=seq, epoch=1,
                    record_type="node", author="a", padded_size=0, metadata_only=True,
                    clear_metadata={}, envelope=b"x" * size, uploader_id="alice",
                    uploaded_at=NOW,
                )
            )  # fmt: skip
    upgrade(engine)
    assert current_revision(engine) == head_revision(engine)
    with engine.connect() as conn:
        rows: dict[str, int] = dict(
            conn.execute(sa.text("SELECT id, bytes_stored FROM teams")).all()
        )
    assert (rows["t_full"], rows["t_empty"]) == (32_100, 0)
    engine.dispose()


def test_0004_backfills_usage_on_the_day_the_work_happened(database_url: str) -> None:
    """History pushed before the upgrade lands on its ``created_at`` hour, not on the upgrade's
    day; a node without one (the ``none`` policy) stays at its upload time, marked so."""
    engine = make_engine(database_url)
    upgrade(engine, "0003")
    worked = (NOW - timedelta(days=40)).replace(minute=0, second=0, microsecond=0)
    metadata = [
        {"model": "m", "created_at": worked.isoformat(), "prompt_tokens": 10, "total_tokens": 12},
        {"model": "m", "created_at": worked.isoformat(), "cache_read_input_tokens": 4},
        {},
    ]
    with engine.begin() as conn:
        alice = _user(conn, "alice")
        _team(conn, "t_hist", "alice", _chain(alice, "t_hist"))
        for seq, clear in enumerate(metadata, start=1):
            conn.execute(
                sa.insert(_nodes).values(
                    vault_id="t_hist", node_id=f"{seq:064x}",
                    parent_id=None if seq != 2 else f"{1:064x}", seq=seq, epoch=1,
                    record_type="node", author="a", padded_size=0, metadata_only=True,
                    clear_metadata=clear, envelope=b"x", uploader_id="alice", uploaded_at=NOW,
                )
            )  # fmt: skip
    upgrade(engine)
    assert current_revision(engine) == head_revision(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT bucket, by_upload, nodes, sessions, prompt_tokens, "
                "cache_read_input_tokens, total_tokens FROM usage_buckets ORDER BY bucket"
            )
        ).all()
    assert [tuple(int(v) for v in row) for row in rows] == [
        (int(worked.timestamp()) // 900, 0, 2, 1, 10, 4, 12),
        (int(NOW.timestamp()) // 900, 1, 1, 1, 0, 0, 0),
    ]
    engine.dispose()


def test_0013_keeps_every_label_the_usage_named_itemized(database_url: str) -> None:
    """Every model (with its provider), harness and project that the usage held before the
    upgrade is a label of its vault after it, so a vault past a cap keeps them itemized."""
    engine = make_engine(database_url)
    upgrade(engine, "0012")
    buckets = sa.table("usage_buckets", *(sa.column(c) for c in (
        "vault_id", "bucket", "dims", "member_id", "model", "provider", "agent", "project",
        "by_upload", *COUNTERS,
    )))  # fmt: skip
    named = [("m1", "p", "claude-code", "web"), ("m1", "q", "", ""), ("", "", "", "")]
    with engine.begin() as conn:
        alice = _user(conn, "alice")
        _team(conn, "t_named", "alice", _chain(alice, "t_named"))
        for index, (model, provider, agent, project) in enumerate(named):
            conn.execute(
                sa.insert(buckets).values(
                    vault_id="t_named", bucket=index, dims=f"{index:032x}", member_id="alice",
                    model=model, provider=provider, agent=agent, project=project,
                    by_upload=False, **dict.fromkeys(COUNTERS, 1),
                )
            )  # fmt: skip
    upgrade(engine)
    with engine.connect() as conn:
        stored = set(conn.execute(sa.text("SELECT vault_id, kind, label FROM usage_labels")).all())
    assert stored == {
        ("t_named", "model", label_of("model", ("m1", "p"))),
        ("t_named", "model", label_of("model", ("m1", "q"))),
        ("t_named", "agent", label_of("agent", ("claude-code",))),
        ("t_named", "project", label_of("project", ("web",))),
    }
    engine.dispose()
