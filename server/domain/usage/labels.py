"""How many models, harnesses and projects one vault's usage itemizes, and what is counted past
that.

Clear metadata is the member's to choose: a member (or a stolen API key with ``push``) could name
a new model in every node. Every usage report, the CSV and each dashboard page would then be as
long as the vault, and the server would price each name (genai-prices matches every one). So
each vault itemizes at most :data:`CAPS` of each kind, the first ones its pushes named; nodes
that name another after that are still counted, in full, under :data:`OTHER` (the model and
its provider both; the constant is the protocol's, ``tapes_e2e.protocol.usage.OTHER``). Honest
teams use tens of models and harnesses and hundreds of projects.

The names are kept by hash (``usage_labels``): up to 512 characters each, too long together for
an index entry, and the aggregate already holds the text.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Iterable
from typing import Final, Literal

import msgspec
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.db.models import UsageLabel
from server.db.queries import one_of
from server.domain.usage.buckets import Key
from tapes_e2e.protocol.usage import OTHER

__all__ = ["CAPS", "OTHER", "Kind", "admit", "label_of"]

Kind = Literal["model", "agent", "project"]
CAPS: Final[dict[Kind, int]] = {"model": 1_000, "agent": 1_000, "project": 10_000}
"""The distinct labels of each kind one vault's usage itemizes; a model is itemized with its
provider (one price each)."""

_encode = msgspec.json.Encoder().encode


def _values(kind: Kind, key: Key) -> tuple[str, ...]:
    if kind == "model":
        return key.model, key.provider
    return (key.agent,) if kind == "agent" else (key.project,)


@functools.lru_cache(maxsize=4096)  # a batch names the same few labels again and again
def label_of(kind: Kind, values: tuple[str, ...]) -> str | None:
    """The stored name of a label, or ``None`` for one not sent (every value empty), which is
    never capped."""
    if not any(values):
        return None
    return hashlib.sha256(_encode([kind, *values])).hexdigest()[:32]


def _folded(key: Key, kinds: Iterable[Kind]) -> Key:
    model, provider, agent, project = key.model, key.provider, key.agent, key.project
    for kind in kinds:
        if kind == "model":
            model = provider = OTHER
        elif kind == "agent":
            agent = OTHER
        else:
            project = OTHER
    return dataclasses.replace(key, model=model, provider=provider, agent=agent, project=project)


def admit(db: Session, vault_id: str, sums: dict[Key, list[int]]) -> dict[Key, list[int]]:
    """``sums`` (from :func:`~server.domain.usage.buckets.contributions`) with every label the
    vault does not itemize yet admitted while its kind is under the cap, in the order the batch
    names them, and the others folded into :data:`OTHER`. Runs in the push's transaction, which
    holds the vault's row lock."""
    labels = {
        (key, kind): name
        for key in sums
        for kind in CAPS
        if (name := label_of(kind, _values(kind, key))) is not None
    }
    refused = _admit_new(db, vault_id, _new(db, vault_id, labels)) if labels else set()
    if not refused:
        return sums
    out: dict[Key, list[int]] = {}
    for key, values in sums.items():
        kinds = [k for k in CAPS if (k, labels.get((key, k))) in refused]
        target = _folded(key, kinds) if kinds else key
        found = out.setdefault(target, [0] * len(values))
        for index, value in enumerate(values):
            found[index] += value
    return out


def _new(db: Session, vault_id: str, labels: dict[tuple[Key, Kind], str]) -> dict[Kind, list[str]]:
    """The labels of ``labels`` the vault does not itemize yet, per kind, in order."""
    known = {
        (kind, name)
        for kind, name in db.execute(
            select(UsageLabel.kind, UsageLabel.label).where(
                UsageLabel.vault_id == vault_id, one_of(db, UsageLabel.label, set(labels.values()))
            )
        )
    }
    new: dict[Kind, list[str]] = {}
    for (_key, kind), name in labels.items():
        names = new.setdefault(kind, [])
        if (kind, name) not in known and name not in names:
            names.append(name)
    return {kind: names for kind, names in new.items() if names}


def _admit_new(db: Session, vault_id: str, new: dict[Kind, list[str]]) -> set[tuple[Kind, str]]:
    """Store the new labels that fit under their kind's cap; return the others."""
    if not new:
        return set()
    held: dict[str, int] = dict(
        db.execute(
            select(UsageLabel.kind, func.count())
            .where(UsageLabel.vault_id == vault_id, UsageLabel.kind.in_(list(new)))
            .group_by(UsageLabel.kind)
        ).all()
    )
    refused: set[tuple[Kind, str]] = set()
    rows = []
    for kind, names in new.items():
        room = max(CAPS[kind] - held.get(kind, 0), 0)
        rows += [{"vault_id": vault_id, "kind": kind, "label": n} for n in names[:room]]
        refused |= {(kind, n) for n in names[room:]}
    if rows:
        dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
        db.execute(dialect.insert(UsageLabel).on_conflict_do_nothing(), rows)
    return refused
