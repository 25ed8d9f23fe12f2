"""Opening a team vault: fetch the chain, verify it, and only then take keys from the server.

Every key of a team comes from the server, so nothing is used before the chain verified against
this identity's head pin (:class:`tapes_e2e.vaults.Trust`): a fork, a rollback below the pin or a
forged statement raises keymgmt's ``ChainError`` and nothing is used or recorded. A client that
joined by invite also checks the chain against its code (:func:`keymgmt.verify_joined`: the
``add`` was signed by the inviter the code names, with this identity's keys, and carries a proof
under the secret) before the first head is pinned, so its first view of the chain is not
trust-on-first-use.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

import keymgmt
from tapes_e2e.account import trust_for
from tapes_e2e.client import ApiClient
from tapes_e2e.errors import RemoteError, TeamError
from tapes_e2e.teams import local
from tapes_e2e.vaults import VaultAccess

__all__ = ["MANAGERS", "open_team", "require_manager", "resolve_team", "verify_team"]

MANAGERS = frozenset({"owner", "admin"})


def resolve_team(api: ApiClient, text: str) -> str:
    """The id of the caller's team named ``text`` (its id, or its name if that is unique)."""
    teams = [v for v in api.vaults() if v.kind == "team"]
    for vault in teams:
        if vault.vault_id == text:
            return vault.vault_id
    named = [v for v in teams if v.name.casefold() == text.casefold()]
    if len(named) == 1:
        return named[0].vault_id
    if named:
        raise TeamError(f"{len(named)} of your teams are named {text!r}", hint="use the team id")
    raise TeamError(f"you are in no team {text!r}")


def _fetch_chain(api: ApiClient, team: str, pending: bool) -> list[dict[str, str]]:
    try:
        page = api.chain(team)
    except RemoteError as exc:
        if exc.status not in (403, 404):
            raise
        if pending:
            raise TeamError(
                f"your request to join team {team} is waiting for approval",
                hint=f"ask the inviter to run `tapes team approve {team}`",
            ) from None
        raise TeamError(f"you are in no team {team!r} on this server") from None
    return [msgspec.structs.asdict(s) for s in page.statements]


def verify_team(
    api: ApiClient, team: str, identity: keymgmt.Identity, dotdir: Path
) -> keymgmt.VerifiedTeamState:
    """The team's chain, verified against the head pin and any pending invite code."""
    saved = local.load(dotdir)
    joins = {i: j for i, j in saved.joins.items() if j.team == team}

    def check(state: keymgmt.VerifiedTeamState) -> None:
        for join in joins.values():
            code = keymgmt.parse_invite_code(join.code)
            keymgmt.verify_joined(state, code=code, identity=identity)
        if state.member(identity.fingerprint) is None:
            raise TeamError(f"you are no longer a member of team {team}")

    chain = _fetch_chain(api, team, bool(joins))
    state = trust_for(dotdir, identity).verify(team, chain, check=check)
    if joins:  # verified against the code: the secret is not needed any more

        def change(data: local.TeamsFile) -> None:
            for invite_id in joins:
                data.joins.pop(invite_id, None)

        local.update(dotdir, change)
    return state


def open_team(api: ApiClient, team: str, identity: keymgmt.Identity, dotdir: Path) -> VaultAccess:
    """Verify the team's chain, finish a removal's keyring upload, and open this identity's keys."""
    state = verify_team(api, team, identity, dotdir)
    _finish_pending_keyring(api, team, state, identity, dotdir)
    keyrings = [msgspec.structs.asdict(item.keyring) for item in api.keyrings(team)]
    try:
        return trust_for(dotdir, identity).open_keys(state, keyrings)
    except keymgmt.PolicyError as exc:
        raise TeamError(exc.message, hint=exc.hint) from None


def _finish_pending_keyring(
    api: ApiClient, team: str, state: keymgmt.VerifiedTeamState, identity: keymgmt.Identity,
    dotdir: Path,
) -> None:  # fmt: skip
    """Finish a removal interrupted after its statement was appended: the new epoch's key is in
    the saved keyring (sealed, to this identity too), so it is sealed again at the current head
    and uploaded. A saved keyring whose statement never made it into the chain is dropped."""
    pending = local.load(dotdir).pending_keyrings.get(team)
    if pending is None:
        return
    statement = keymgmt.parse_statement(pending.statement)
    seqno = statement.body.seqno
    if seqno <= state.head.seqno and state.statements[seqno].hash == statement.hash:
        opened = keymgmt.open_keyring(pending.keyring, state=state, identity=identity)
        keyring = keymgmt.seal_keyring(
            state, sealer=identity, epoch=opened.epoch, epoch_key=opened.epoch_key,
            vault_id_key=opened.vault_id_key,
        )  # fmt: skip
        api.upload_keyring(team, keyring.to_dict())
    local.update(dotdir, lambda data: data.pending_keyrings.pop(team, None))


def require_manager(state: keymgmt.VerifiedTeamState, identity: keymgmt.Identity) -> None:
    """Refuse, before anything is signed or sent, when this identity may not manage the team."""
    member = state.member(identity.fingerprint)
    role = member.role if member is not None else "not a member"
    if role not in MANAGERS:
        raise TeamError(
            f"this needs an owner or admin of team {state.team}; you are {role}",
            hint="ask an owner or admin of the team",
        )
