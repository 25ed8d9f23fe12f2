"""``tapes usage --verify``: check the server's usage figures against this machine's nodes.

The figures are computed by the server from clear metadata, so a hostile or broken server could
inflate or drop them. Whoever holds every node of a vault can recompute them from the decrypted
nodes after a sync (:mod:`tapes_e2e.usage_verify`): that is a personal vault's user, for their
usage across all their machines. Nobody holds every node of a team vault (a session stays its
uploader's until shared, and a viewer holds no content at all), so a team's figures are taken on
the server's word, and the command says so.
"""

from __future__ import annotations

import msgspec
import typer

from tapes_e2e import account
from tapes_e2e.cli import auth, output
from tapes_e2e.context import Settings, chosen_vault, connect
from tapes_e2e.errors import TeamError
from tapes_e2e.protocol.usage import UsageReport
from tapes_e2e.store.syncstate import SyncState
from tapes_e2e.teams.access import resolve_team, verify_team
from tapes_e2e.usage_verify import CHECKABLE_GROUPS, CHECKED, Difference, compare, recompute

__all__ = ["verify_usage"]

_WORD = (
    "a team's figures are taken on the server's word (docs/teams.md); each member can check "
    "their own usage with `tapes usage --verify` on their personal vault"
)


def _policy(settings: Settings, team: str | None) -> tuple[str, str]:
    """The personal vault and its metadata policy from its verified chain; a team vault is
    refused, saying why."""
    linked = connect(settings, prompt=auth.prompt_for_passphrase())
    api, identity = linked.api, linked.identity
    vault = resolve_team(api, team) if team else chosen_vault(settings.config, linked.session)
    if vault != linked.session.personal_vault:
        state = verify_team(api, vault, identity, settings.dotdir.path)
        member = state.member(identity.fingerprint)
        if member is not None and member.role == "viewer":
            raise TeamError(
                "a viewer holds no content key, so has nothing to recompute the figures from",
                hint=_WORD,
            )
        raise TeamError(
            f"nobody holds every node of team {vault} (a session stays its uploader's until "
            "shared), so its figures cannot be recomputed on one machine",
            hint=_WORD,
        )
    return vault, account.open_vault(api, vault, linked.trust).state.metadata_policy


def _checkable(settings: Settings, vault: str, query: dict[str, str]) -> None:
    keys = [k for k in query["group_by"].split(",") if k]
    outside = [k for k in keys if k not in CHECKABLE_GROUPS]
    if outside:
        raise TeamError(
            f"--verify cannot group by {outside[0]}: which account uploaded a node is the "
            "server's record",
            hint=f"group by {', '.join(sorted(CHECKABLE_GROUPS))}",
        )
    with settings.store(create=True) as store:
        cursor = SyncState(store).cursor(vault)
    api = connect(settings, prompt=auth.prompt_for_passphrase()).api
    if api.pull(vault, after=cursor, limit=1).items:  # a node this machine has not pulled
        raise TeamError(
            f"this machine has not pulled all of {vault} yet, so its figures would differ "
            "for that reason alone",
            hint="run `tapes storage sync` first",
        )


def verify_usage(
    settings: Settings, team: str | None, query: dict[str, str], *, as_json: bool
) -> None:
    """Recompute the report's counts from the nodes this machine holds; exit 1 on a mismatch."""
    vault, policy = _policy(settings, team)
    if policy == "none":
        raise TeamError(
            f"{vault} keeps no time in clear (metadata policy none): the server places its "
            "nodes by upload time, which only it knows",
            hint="nothing to check but its word",
        )
    _checkable(settings, vault, query)
    api = connect(settings, prompt=auth.prompt_for_passphrase()).api
    report = api.usage(vault, query)
    differences: list[Difference] = []
    if report.metadata_policy != policy:
        differences.append(Difference({}, "metadata_policy", 0, 0))
    with settings.store(create=True) as store:
        hashes = sorted(SyncState(store).remote_hashes(vault))
        local = recompute((store.get(h) for h in hashes), _as_policy(report, policy))
    differences += compare(report, local)
    _show(report, differences, policy, as_json=as_json)
    if differences:
        raise typer.Exit(1)


def _as_policy(report: UsageReport, policy: str) -> UsageReport:
    """The report as it should be read: under the chain's policy, whatever the server says."""
    return msgspec.structs.replace(report, metadata_policy=policy)


def _show(
    report: UsageReport, differences: list[Difference], policy: str, *, as_json: bool
) -> None:
    rows = len(report.rows)
    if as_json:
        output.emit_json({
            "vault": report.vault, "verified": not differences, "rows": rows,
            "checked": list(CHECKED), "policy": policy,
            "differences": [msgspec.to_builtins(d) for d in differences],
        })  # fmt: skip
        return
    if not differences:
        output.stdout.print(
            f"verified: {output.count(rows, 'row')} of {report.vault} match this machine's "
            f"nodes ({', '.join(CHECKED)}); cost is the server's price arithmetic on them",
            markup=False,
        )
        return
    if differences[0].figure == "metadata_policy":
        output.error(
            f"the server reports metadata policy {report.metadata_policy!r}; the vault's signed "
            f"chain says {policy!r}"
        )
    shown = [d for d in differences if d.figure != "metadata_policy"]
    if shown:
        output.table(
            ("GROUP", "FIGURE", "SERVER", "THIS MACHINE"),
            [(", ".join(f"{k}={v}" for k, v in d.group.items()) or "(all)", d.figure,
              f"{d.server:,}", f"{d.local:,}") for d in shown],
        )  # fmt: skip
    output.error(
        f"{output.count(len(differences), 'figure')} of {report.vault}'s usage differ from "
        "what this machine's nodes give",
        "the server's figures (and the dashboard's) are not to be trusted for these rows",
    )
