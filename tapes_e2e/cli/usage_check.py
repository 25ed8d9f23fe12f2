"""``tapes usage --verify``: check the server's usage figures against this machine's nodes.

The figures are computed by the server from clear metadata, so a hostile or broken server could
inflate, lower, drop or invent them. This command recomputes them from the decrypted nodes this
machine holds of the vault (those it pushed to it or pulled from it: ``e2e_remote``), with
:mod:`tapes_e2e.usage_verify`:

- **personal vault**: after checking that nothing is left to pull, this machine holds every node
  the report counts, so every figure must be equal (``exact``);
- **team vault** (owners and admins, who read the team's usage and hold its content key): this
  machine holds only some of the vault (its user's uploads, the sessions shared with the team),
  so every figure must be *at least* what those nodes give. A row the server dropped or lowered
  is found; a row it raised is not, and the output says so;
- a **viewer** holds no content key: nothing to recompute from, and the command says so.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import typer

import keymgmt
from tapes_e2e import account
from tapes_e2e.cli import auth, output
from tapes_e2e.context import Connection, Settings, chosen_vault, connect
from tapes_e2e.envelopes import past_policies
from tapes_e2e.errors import RemoteError, TeamError
from tapes_e2e.protocol.usage import OTHER, UsageReport
from tapes_e2e.store.syncstate import SyncState
from tapes_e2e.teams.access import resolve_team, verify_team
from tapes_e2e.usage_verify import (
    CHECKABLE_GROUPS,
    CHECKED,
    Difference,
    Frame,
    Recomputed,
    check_frame,
    compare,
    frame_for,
    recompute,
)

__all__ = ["verify_usage"]

_COST = "cost is the server's price table applied to these counts"
_PARTIAL = (
    "a figure above this machine's may hold nodes of other members or nodes not pulled yet: "
    "that part is the server's word"
)


def _state(linked: Connection, vault: str) -> tuple[keymgmt.VerifiedTeamState, bool]:
    """The vault's verified chain, and whether this machine can check it exactly (a personal
    vault) or only from below (a team); a viewer and a plain member are refused, saying why."""
    api, identity = linked.api, linked.identity
    if vault == linked.session.personal_vault:
        return account.open_vault(api, vault, linked.trust).state, True
    state = verify_team(api, vault, identity, linked.settings.dotdir.path)
    member = state.member(identity.fingerprint)
    role = member.role if member is not None else "none"
    if role == "viewer":
        raise TeamError(
            "viewers cannot verify usage: a viewer holds no content key, so takes every figure "
            "on the server's word",
            hint="a member who holds the nodes can check them: docs/teams.md, "
            '"Checking usage figures"',
        )
    if role not in ("owner", "admin"):
        raise TeamError(
            f"team {vault}: usage is for owners, admins and viewers",
            hint="your own usage is in your personal vault: `tapes usage --verify` without --team",
        )
    return state, False


def _frame(vault: str, state: keymgmt.VerifiedTeamState, query: dict[str, str]) -> Frame:
    if state.metadata_policy == "none":
        raise TeamError(
            f"{vault} keeps no time in clear (metadata policy none): the server places its "
            "nodes by upload time, which only it knows",
            hint="nothing to check but its word",
        )
    outside = [k for k in query["group_by"].split(",") if k and k not in CHECKABLE_GROUPS]
    if outside:
        raise TeamError(
            f"--verify cannot group by {outside[0]}: which account uploaded a node is the "
            "server's record",
            hint=f"group by {', '.join(sorted(CHECKABLE_GROUPS))}",
        )
    try:
        return frame_for(vault, state.metadata_policy, query, now=datetime.now(UTC))
    except (ValueError, OverflowError):
        raise TeamError("--from and --to take a date (YYYY-MM-DD) or an ISO-8601 time") from None


def _recount(settings: Settings, linked: Connection, frame: Frame, *, exact: bool) -> Recomputed:
    """This machine's nodes of the vault, recounted. For an exact check, after the report was
    read: a node pushed (by another machine) before it was read and not pulled here would
    differ for that reason alone, so none may be left to pull."""
    with settings.store(create=True) as store:
        synced = SyncState(store)
        if exact and linked.api.pull(frame.vault, after=synced.cursor(frame.vault), limit=1).items:
            raise TeamError(
                f"this machine has not pulled all of {frame.vault} yet, so its figures would "
                "differ for that reason alone",
                hint="run `tapes storage sync` first",
            )
        hashes = sorted(synced.remote_hashes(frame.vault))
        return recompute((store.get(h) for h in hashes), frame)


def verify_usage(
    settings: Settings, team: str | None, query: dict[str, str], *, as_json: bool
) -> None:
    """Recompute the report's counts from the nodes this machine holds; exit 1 on a difference."""
    linked = connect(settings, prompt=auth.prompt_for_passphrase())
    api = linked.api
    vault = resolve_team(api, team) if team else chosen_vault(settings.config, linked.session)
    state, exact = _state(linked, vault)
    frame = _frame(vault, state, query)
    try:
        report = api.usage(vault, frame.query())
    except RemoteError as exc:
        if exc.status != 403:
            raise
        raise TeamError(f"team {vault}: usage is for owners, admins and viewers") from None
    mine = _recount(settings, linked, frame, exact=exact)
    differences = check_frame(report, frame) + compare(report, mine.rows, exact=exact)
    notes = _notes(state, mine, exact=exact)
    if folded := report.folded_keys():
        names = " and ".join(folded)
        notes.append(
            f"the vault names more than the server itemizes, which counts the rest as "
            f"{OTHER!r}: the figures were compared summed over {names} (which names it counts "
            "so is the server's record)"
        )
    _show(report, frame, differences, notes, exact=exact, as_json=as_json)
    if differences:
        raise typer.Exit(1)


def _notes(state: keymgmt.VerifiedTeamState, mine: Recomputed, *, exact: bool) -> list[str]:
    """What this check could not see, said rather than guessed."""
    notes = [_COST] if exact else [_COST, _PARTIAL]
    if len(past_policies(state)) > 1:
        notes.append(
            f"the vault's metadata policy changed over its history (now {state.metadata_policy}): "
            "nodes pushed before the change were counted with what the policy of their time "
            "sent in clear, so rows near their time may differ for that reason"
        )
    if mine.untimed:
        notes.append(
            f"{output.count(mine.untimed, 'node')} of this machine carry no time, and the "
            "server places such nodes by upload time, which only it knows: not checked"
        )
    return notes


def _group(difference: Difference) -> str:
    if difference.where == "totals":
        return "TOTAL"
    if difference.where == "report":
        return "(the report)"
    return ", ".join(f"{k}={v}" for k, v in difference.group.items()) or "(all)"


def _cell(value: int | str) -> str:
    return f"{value:,}" if isinstance(value, int) else value


def _show(
    report: UsageReport, frame: Frame, differences: list[Difference], notes: list[str], *,
    exact: bool, as_json: bool,
) -> None:  # fmt: skip
    rows = len(report.rows)
    if as_json:
        output.emit_json({
            "vault": frame.vault, "verified": not differences,
            "mode": "exact" if exact else "at_least", "from": frame.query()["from"],
            "to": frame.query()["to"], "tz": frame.tz, "group_by": list(frame.group_by),
            "rows": rows, "checked": list(CHECKED), "policy": frame.policy,
            "differences": [msgspec.to_builtins(d) for d in differences], "not_checked": notes,
        })  # fmt: skip
        return
    span = f"{frame.vault}, {frame.query()['from']} to {frame.query()['to']}, {frame.tz}"
    if not differences:
        what = (
            f"{output.count(rows, 'row')} match the server"
            if exact
            else f"no figure of the server's {output.count(rows, 'row')} is below what this "
            "machine's nodes give"
        )
        output.stdout.print(f"verified: {what} ({span}; {', '.join(CHECKED)})", markup=False)
        for note in notes:
            output.stdout.print(f"not checked: {note}", markup=False)
        return
    output.table(
        ("ROW", "FIGURE", "SERVER", "THIS MACHINE"),
        [(_group(d), d.figure, _cell(d.server), _cell(d.local)) for d in differences],
        title=f"usage figures that differ from this machine's nodes ({span})",
    )
    for note in notes:
        output.stdout.print(f"not checked: {note}", markup=False)
    what = "differ from" if exact else "are below"
    output.error(
        f"{output.count(len(differences), 'figure')} of the server's usage report {what} "
        "what this machine's nodes give",
        "the server's figures (and the dashboard's) are not to be trusted for these rows",
    )
