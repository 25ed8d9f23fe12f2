"""``tapes verify``: recompute every node's hash and report each damaged node; or, with
``--proof``, check an offline session proof (no network, no keys, no database)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tapes_e2e.cli import output
from tapes_e2e.context import Settings
from tapes_e2e.errors import TapesError
from tapes_e2e.proof import MAX_PROOF_BYTES, ProofReport, verify_proof


def verify(
    ctx: typer.Context,
    proof: Annotated[
        Path | None,
        typer.Option(
            "--proof",
            help="Check this session proof (from `tapes session prove`) instead of the database.",
        ),
    ] = None,
    as_json: output.JsonFlag = False,
) -> None:
    """Recompute the hash of every stored node; exit 1 if any node is damaged."""
    if proof is not None:
        _verify_proof(proof, as_json=as_json)
        return
    settings: Settings = ctx.obj
    with settings.store() as store:
        total = store.counts()[0]
        with output.progress("verifying", total) as bar:
            task = bar.task_ids[0]
            problems: list[tuple[str, str]] = []
            for checked, found in store.audit():
                if found is not None:
                    problems.append(found)
                if checked % 1000 == 0:
                    bar.update(task, completed=checked)
    if as_json:
        output.emit_json(
            {"checked": total, "damaged": [{"hash": h, "problem": what} for h, what in problems]}
        )
    else:
        for node_hash, what in problems:
            output.stdout.print(f"damaged {node_hash}: {what}", markup=False)
        output.note(f"checked {output.count(total, 'node')}, {len(problems)} damaged")
    if problems:
        raise typer.Exit(1)


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as source:
            data = source.read(MAX_PROOF_BYTES + 1)
    except OSError as exc:
        hint = "give the path of a proof written by `tapes session prove`"
        raise TapesError(f"cannot read {path}: {exc.strerror}", hint=hint) from None
    return data


def _verify_proof(path: Path, *, as_json: bool) -> None:
    report = verify_proof(_read(path))
    if as_json:
        output.emit_json(report.to_json())
        return
    for line in describe(report):
        output.stdout.print(line, markup=False)


def describe(report: ProofReport) -> list[str]:
    """The report in words, each line saying what vouches for it."""
    turns = output.count(report.turns, "turn")
    lines = [f"valid: session {report.session}"]
    lines.append(
        f"  {turns} shown; each hash recomputes as Go tapes computes it, and each turn names "
        "the one before it as its parent"
    )
    if report.hidden_before is not None:
        lines.append(
            "  earlier turns are hidden: the first turn shown names its parent "
            f"{report.hidden_before}"
        )
    shared = report.shared
    if shared is None:
        lines.append(
            "  no team evidence: the proof shows that this content hashes to this session, "
            "not who recorded it or when"
        )
        return lines
    expiry = f", to expire {shared.expires_at.isoformat()}" if shared.expires_at else ""
    lines.append(
        f"  shared with team {shared.team} by {shared.sharer} at {shared.shared_at.isoformat()} "
        f"(epoch {shared.epoch}{expiry}): the sharer's signature verifies and they were a "
        "member who reads content in that epoch"
    )
    lines.append(
        f"  team chain: {shared.statements} signed statements from the team's creation, "
        f"head {shared.head_hash}"
    )
    lines.append(
        f"  safety number {shared.safety_number}: compare it with one the team gives you; "
        "the proof shows the chain is consistent, not that it is the team's own"
    )
    return lines
