"""Team flows of the client: create, invite, join, approve, remove (DESIGN §5).

Each flow signs with keymgmt and talks to the server through :class:`ApiClient`; no flow takes a
key from the server before the chain verified (:mod:`tapes_e2e.teams.access`). Member keys come
from the verified chain or from a join request whose MAC under the invite secret verified, never
from the server's own lists. Order matters where a crash could leave things half-done:

- an invite is saved locally *before* the server hears of it, so its secret is never lost for an
  invite that exists;
- a removal's new-epoch keyring is sealed and saved *before* the removal is appended, so the new
  epoch key cannot be lost between the two requests (``access`` finishes the upload later);
- approving reseals every epoch key this admin holds to any reader still missing it, so running
  ``approve`` again repairs an approval whose keyring upload failed.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import msgspec

import keymgmt
from keymgmt.chain import READER_ROLES, ContentPolicy, MetadataPolicy
from tapes_e2e.account import trust_for
from tapes_e2e.client import ApiClient
from tapes_e2e.errors import RemoteError, TeamError
from tapes_e2e.protocol.teams import JoinRequestOut, TeamCreated
from tapes_e2e.teams import local
from tapes_e2e.teams.access import open_team, require_manager, verify_team
from tapes_e2e.vaults import VaultAccess

__all__ = [
    "Approval",
    "JoinOutcome",
    "approve_requests",
    "change_role",
    "create_team",
    "invite",
    "join",
    "member_fingerprint",
    "remove_member",
    "reseal_missing",
    "rotate",
]

InviteRole = Literal["admin", "member", "viewer"]


def _slug(name: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", name.casefold()).strip("-")[:60] or "team"
    return f"{base}-{secrets.token_hex(3)}"


def create_team(
    api: ApiClient, identity: keymgmt.Identity, dotdir: Path, name: str, *,
    metadata_policy: MetadataPolicy = "coarse", content_policy: ContentPolicy = "encrypted",
) -> TeamCreated:  # fmt: skip
    """A new team owned by ``identity``: the signed genesis and the epoch-1 keyring sealed to it."""
    team_id = "t_" + secrets.token_hex(10)
    vault_key, epoch_key = keymgmt.new_key(), keymgmt.new_key()
    genesis = keymgmt.create_team(
        team=team_id, owner=identity, vault_id_key=vault_key, epoch_key=epoch_key,
        metadata_policy=metadata_policy, content_policy=content_policy,
    )  # fmt: skip
    state = keymgmt.verify_chain([genesis], team=team_id)
    keyring = keymgmt.seal_keyring(
        state, sealer=identity, epoch=1, epoch_key=epoch_key, vault_id_key=vault_key
    )
    created = api.create_team(team_id, name, _slug(name), genesis.to_dict(), keyring.to_dict())
    trust_for(dotdir, identity).accept(state)
    return created


def invite(
    api: ApiClient, identity: keymgmt.Identity, dotdir: Path, team: str, *,
    role: InviteRole = "member", ttl: int = 7 * 24 * 3600,
) -> keymgmt.Invite:  # fmt: skip
    """A new single-use invite. The server gets the id, role and expiry; the code stays here."""
    state = verify_team(api, team, identity, dotdir)
    require_manager(state, identity)
    made = keymgmt.create_invite(team=team, inviter=identity, role=role, ttl=ttl)
    invite_id = made.code.invite_id
    record = local.InviteRecord(team=team, role=role, code=made.code.text)
    local.update(dotdir, lambda data: data.invites.__setitem__(invite_id, record))
    try:
        api.create_invite(team, made.server_record())
    except RemoteError:  # refused: no such invite exists (a lost answer keeps the record)
        local.update(dotdir, lambda data: data.invites.pop(invite_id, None))
        raise
    return made


@dataclass(frozen=True)
class JoinOutcome:
    """``requested``: the join request is with the admins; ``joined``: the chain verified
    against the code and this identity is a member with ``role``."""

    team: str
    status: Literal["requested", "joined"]
    role: str | None = None


def join(api: ApiClient, identity: keymgmt.Identity, dotdir: Path, code_text: str) -> JoinOutcome:
    """Ask to join with an invite code, or, once approved, verify the chain against the code."""
    code = keymgmt.parse_invite_code(code_text)
    saved = local.load(dotdir).joins.get(code.invite_id)
    if saved is not None:
        state = verify_team(api, saved.team, identity, dotdir)
        member = state.member(identity.fingerprint)
        return JoinOutcome(saved.team, "joined", member.role if member else None)
    if time.time() > code.expires_at:
        raise keymgmt.InviteExpiredError(
            "the invite code expired", hint="ask the inviter for a new invite"
        )
    request = keymgmt.make_join_request(code, identity=identity)
    try:
        result = api.join(code.invite_id, request.to_dict())
    except RemoteError as exc:
        raise _join_refused(exc) from None
    record = local.JoinRecord(team=result.team_id, code=code.text)
    local.update(dotdir, lambda data: data.joins.__setitem__(code.invite_id, record))
    return JoinOutcome(result.team_id, "requested")


def _join_refused(exc: RemoteError) -> TeamError:
    if exc.status == 404:
        return TeamError(
            "this server has no such invite",
            hint="check the code and that you are logged in to the inviter's server",
        )
    if exc.status == 410:
        return TeamError("the invite expired", hint="ask the inviter for a new invite")
    if exc.status == 409:
        return TeamError(exc.detail, hint="an invite works once; ask for a new one if needed")
    return TeamError(exc.message, hint=exc.hint)


@dataclass(frozen=True)
class Approval:
    """What happened to one join request."""

    request_id: str
    fingerprint: str
    role: str
    outcome: Literal["approved", "declined", "skipped", "refused"]
    reason: str = ""


Confirm = Callable[[str, str], bool]
"""``confirm(fingerprint, role)``: whether to admit this verified joiner."""


def approve_requests(
    api: ApiClient, identity: keymgmt.Identity, dotdir: Path, team: str, confirm: Confirm
) -> list[Approval]:
    """Verify each pending join request with the invite secret kept here, and admit the ones
    ``confirm`` accepts: a signed ``add``, then the keyrings resealed to include them."""
    access = open_team(api, team, identity, dotdir)
    require_manager(access.state, identity)
    invites = local.load(dotdir).invites
    state, results = access.state, []
    for request in api.join_requests(team):
        approval, state = _approve_one(
            api, identity, dotdir, state, request=request, invites=invites, confirm=confirm
        )
        results.append(approval)
    # A joiner who was a member once is still listed in that time's keyrings, but the server
    # dropped their copies at the removal: seal every epoch to the new readers afresh.
    joined = {r.fingerprint for r in results if r.outcome == "approved"}
    sealed = _without(access.sealed_to, joined)
    reseal_missing(api, identity, VaultAccess(team, state, access.keys, sealed))
    return results


def _without(
    sealed_to: Mapping[int, frozenset[str]], fingerprints: set[str]
) -> dict[int, frozenset[str]]:
    """``sealed_to`` as if none of the keyrings reached ``fingerprints``."""
    return {epoch: readers - fingerprints for epoch, readers in sealed_to.items()}


def _approve_one(
    api: ApiClient, identity: keymgmt.Identity, dotdir: Path, state: keymgmt.VerifiedTeamState,
    *, request: JoinRequestOut, invites: dict[str, local.InviteRecord], confirm: Confirm,
) -> tuple[Approval, keymgmt.VerifiedTeamState]:  # fmt: skip
    def result(outcome: str, fingerprint: str = "", reason: str = "") -> Approval:
        return Approval(
            request.request_id, fingerprint or request.fingerprint, request.role,
            cast(Literal["approved", "declined", "skipped", "refused"], outcome), reason,
        )  # fmt: skip

    saved = invites.get(request.invite_id)
    if saved is None or saved.team != state.team:
        return result("skipped", reason="the invite was made on another machine"), state
    made = keymgmt.Invite(
        state.team, cast(keymgmt.Role, saved.role), keymgmt.parse_invite_code(saved.code)
    )
    try:
        verified = keymgmt.verify_join_request(
            msgspec.to_builtins(request.request), invite=made, state=state
        )
    except keymgmt.InviteError as exc:
        return result("refused", reason=exc.message), state
    fingerprint = verified.member.fingerprint
    if not confirm(fingerprint, made.role):
        return result("declined", fingerprint), state
    add = keymgmt.accept_join(state, request=verified, signer=identity)
    api.append_chain(state.team, state.head.seqno, [add.to_dict()])
    state = keymgmt.extend_chain(state, [add])
    trust_for(dotdir, identity).accept(state)
    local.update(dotdir, lambda data: data.invites.pop(request.invite_id, None))
    return result("approved", fingerprint), state


def reseal_missing(api: ApiClient, identity: keymgmt.Identity, access: VaultAccess) -> list[int]:
    """Seal every epoch key this admin holds to the current readers, where one is missing it."""
    if access.keys is None:
        return []
    state, keys, done = access.state, access.keys, []
    for epoch, epoch_key in sorted(keys.epochs.items()):
        if state.readers <= access.sealed_to.get(epoch, frozenset()):
            continue
        keyring = keymgmt.seal_keyring(
            state, sealer=identity, epoch=epoch, epoch_key=epoch_key,
            vault_id_key=keys.vault_id_key,
        )  # fmt: skip
        api.upload_keyring(state.team, keyring.to_dict())
        done.append(epoch)
    return done


def member_fingerprint(api: ApiClient, state: keymgmt.VerifiedTeamState, text: str) -> str:
    """The verified member ``text`` names: the start of a key fingerprint, ``@handle`` or
    ``gh:GITHUB-LOGIN``. A handle or a GitHub login is the server's label, so it only picks
    among the chain's members by the fingerprint the server pairs it with (the caller shows
    that fingerprint before acting)."""
    if text.startswith("@") or text.lower().startswith("gh:"):
        return _labelled_member(api, state, text)
    wanted = re.sub(r"[\s-]", "", text).upper()
    found = [fp for fp in state.members if fp.replace("-", "").startswith(wanted)]
    if len(wanted) < 4 or len(found) != 1:
        raise TeamError(
            f"no single member of team {state.team} has a fingerprint starting {text!r}",
            hint=f"see the members with `tapes team show {state.team}`",
        )
    return found[0]


def _labelled_member(api: ApiClient, state: keymgmt.VerifiedTeamState, text: str) -> str:
    """The chain's one member the server labels ``@handle`` or ``gh:LOGIN`` (GitHub logins
    compare case-insensitively, as GitHub's do)."""
    members = api.members(state.team)
    if text.startswith("@"):
        what, paired = "handle", [m.fingerprint for m in members if m.handle == text[1:]]
    else:
        login, what = text[3:].lower(), "GitHub login"
        paired = [m.fingerprint for m in members if (m.github_login or "").lower() == login]
    found = [fp for fp in paired if fp in state.members]
    if len(found) != 1:
        raise TeamError(
            f"no member of team {state.team} has the {what} {text!r}",
            hint=f"see the members with `tapes team show {state.team}`",
        )
    return found[0]


def _append_new_epoch(
    api: ApiClient, identity: keymgmt.Identity, dotdir: Path, access: VaultAccess,
    *, statement: keymgmt.UnverifiedStatement, new_key: bytes,
) -> keymgmt.VerifiedTeamState:  # fmt: skip
    """Append a statement that starts a new epoch, with that epoch's keyring sealed and saved
    here first (so the key cannot be lost between the two requests) and uploaded after."""
    team, state = access.vault, access.state
    after = keymgmt.extend_chain(state, [statement])
    keyring = keymgmt.seal_keyring(
        after, sealer=identity, epoch=after.epoch, epoch_key=new_key,
        vault_id_key=access.content_keys().vault_id_key,
    )  # fmt: skip
    pending = local.PendingKeyring(statement=statement.to_dict(), keyring=keyring.to_dict())
    local.update(dotdir, lambda data: data.pending_keyrings.__setitem__(team, pending))
    try:
        api.append_chain(team, state.head.seqno, [statement.to_dict()])
    except RemoteError:  # refused: the epoch never started (a lost answer keeps the key)
        local.update(dotdir, lambda data: data.pending_keyrings.pop(team, None))
        raise
    trust_for(dotdir, identity).accept(after)
    api.upload_keyring(team, keyring.to_dict())
    local.update(dotdir, lambda data: data.pending_keyrings.pop(team, None))
    return after


def remove_member(
    api: ApiClient, identity: keymgmt.Identity, dotdir: Path, team: str, member: str
) -> keymgmt.VerifiedTeamState:
    """Remove a member and rotate: one signed statement, a new epoch sealed to the rest."""
    access = open_team(api, team, identity, dotdir)
    require_manager(access.state, identity)
    fingerprint = member_fingerprint(api, access.state, member)
    new_key = keymgmt.new_key()
    statement = keymgmt.remove_member(
        access.state, signer=identity, member=fingerprint, new_epoch_key=new_key
    )
    return _append_new_epoch(api, identity, dotdir, access, statement=statement, new_key=new_key)


def rotate(
    api: ApiClient, identity: keymgmt.Identity, dotdir: Path, team: str
) -> keymgmt.VerifiedTeamState:
    """Start a new key epoch without a membership change (a member's laptop was lost, say):
    what is pushed from now on is sealed under a key only the current readers get."""
    access = open_team(api, team, identity, dotdir)
    require_manager(access.state, identity)
    new_key = keymgmt.new_key()
    statement = keymgmt.rotate(access.state, signer=identity, new_epoch_key=new_key)
    return _append_new_epoch(api, identity, dotdir, access, statement=statement, new_key=new_key)


def change_role(
    api: ApiClient, identity: keymgmt.Identity, dotdir: Path, team: str, *, member: str,
    role: keymgmt.Role,
) -> keymgmt.VerifiedTeamState:  # fmt: skip
    """Change a member's role. A reader who becomes a viewer loses future content: the same
    statement starts a new epoch sealed to the remaining readers. A viewer who becomes a reader
    gets every epoch key this admin holds, as a new member does."""
    access = open_team(api, team, identity, dotdir)
    state = access.state
    require_manager(state, identity)
    fingerprint = member_fingerprint(api, state, member)
    current = state.members[fingerprint].role
    if current == role:
        raise TeamError(f"{member} is already {role} in team {team}")
    if current in READER_ROLES and role not in READER_ROLES:
        new_key = keymgmt.new_key()
        statement = keymgmt.change_role(
            state, signer=identity, member=fingerprint, role=role, new_epoch_key=new_key
        )
        return _append_new_epoch(
            api, identity, dotdir, access, statement=statement, new_key=new_key
        )
    statement = keymgmt.change_role(state, signer=identity, member=fingerprint, role=role)
    api.append_chain(team, state.head.seqno, [statement.to_dict()])
    after = keymgmt.extend_chain(state, [statement])
    trust_for(dotdir, identity).accept(after)
    # Their copies were dropped when they became a viewer, though old keyrings still list them.
    sealed = _without(access.sealed_to, {fingerprint})
    reseal_missing(api, identity, VaultAccess(team, after, access.keys, sealed))
    return after
