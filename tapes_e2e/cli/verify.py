"""``tapes verify``: recompute every node's hash and report each damaged node."""

from __future__ import annotations

import typer

from tapes_e2e.cli import output
from tapes_e2e.context import Settings


def verify(
    ctx: typer.Context,
    as_json: output.JsonFlag = False,
) -> None:
    """Recompute the hash of every stored node; exit 1 if any node is damaged."""
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
