"""Rotating this identity (``tapes keys rotate``): a new key pair replaces the old one in every
vault the account is in, and on the account, in one request.

For each vault (the personal one and every team) the chain is fetched and verified against this
identity's pin, the old key signs a ``rekey`` statement naming the new key (which proves itself
inside it), and, for a vault whose content this identity reads, the new key seals at that
statement the new epoch's key and every epoch key this identity holds, to every reader. The
server takes all of it or nothing (``POST /auth/rekey``), then ends every login and API key of
the account; the caller logs in again with the new key.

The new key is written next to the old one (``identity.next.key``) before anything is sent, so
an interrupted rotation is finished, never lost, by running it again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keymgmt
from tapes_e2e import identity as identities
from tapes_e2e.account import open_vault, trust_for
from tapes_e2e.client import ApiClient, Session
from tapes_e2e.errors import AuthError, TeamError
from tapes_e2e.protocol.teams import RekeyOut
from tapes_e2e.teams.access import open_team
from tapes_e2e.vaults import VaultAccess

__all__ = [
    "NEXT_FILE",
    "Rotation",
    "finish_locally",
    "next_path",
    "resume_or_new",
    "retired_path",
    "rotate",
]

NEXT_FILE = "identity.next.key"


def next_path(dotdir: Path) -> Path:
    """Where a rotation keeps the new key until the server has taken it."""
    return dotdir / NEXT_FILE


def retired_path(dotdir: Path, fingerprint: str) -> Path:
    """Where the old key file goes once the server took the new one (still passphrase-sealed)."""
    return dotdir / f"identity.retired-{fingerprint}.key"


@dataclass(frozen=True)
class Rotation:
    """A rotation the server took: its answer and each vault's chain after it."""

    answer: RekeyOut
    states: tuple[keymgmt.VerifiedTeamState, ...]


def _vault_part(
    access: VaultAccess, old: keymgmt.Identity, new: keymgmt.Identity
) -> tuple[dict[str, object], keymgmt.VerifiedTeamState]:
    """One vault's ``rekey`` statement and the new key's keyrings, and the chain after it."""
    state = access.state
    member = state.member(old.fingerprint)
    if member is None:  # pragma: no cover - open_team and the personal check refuse first
        raise TeamError(f"you are no longer a member of vault {access.vault}")
    epoch_key = keymgmt.new_key() if member.reads_content else None
    statement = keymgmt.rekey(state, signer=old, new=new, new_epoch_key=epoch_key)
    after = keymgmt.extend_chain(state, [statement])
    keyrings = []
    if access.keys is not None and epoch_key is not None:
        epochs = {**access.keys.epochs, after.epoch: epoch_key}
        keyrings = [
            keymgmt.seal_keyring(
                after, sealer=new, epoch=epoch, epoch_key=key,
                vault_id_key=access.keys.vault_id_key,
            ).to_dict()
            for epoch, key in sorted(epochs.items())
        ]  # fmt: skip
    part: dict[str, object] = {
        "vault": access.vault,
        "expected_head_seqno": state.head.seqno,
        "statement": statement.to_dict(),
        "keyrings": keyrings,
    }
    return part, after


def rotate(
    api: ApiClient, session: Session, old: keymgmt.Identity, new: keymgmt.Identity, dotdir: Path
) -> Rotation:
    """Record the rotation in every vault the server lists for this account, in one request.

    Every chain is verified before anything is signed; a vault that refuses (a chain that moved
    meanwhile) makes the server refuse all of it, and running this again starts over."""
    trust = trust_for(dotdir, old)
    parts, states = [], []
    for vault in api.vaults():
        if vault.vault_id == session.personal_vault:
            trust.personal_vault = vault.vault_id
            access = open_vault(api, vault.vault_id, trust)
        else:
            access = open_team(api, vault.vault_id, old, dotdir)
        part, after = _vault_part(access, old, new)
        parts.append(part)
        states.append(after)
    answer = api.rekey(old, new, parts)
    return Rotation(answer, tuple(states))


def finish_locally(
    dotdir: Path,
    old: keymgmt.Identity,
    new: keymgmt.Identity,
    states: tuple[keymgmt.VerifiedTeamState, ...] = (),
) -> Path:
    """The server has the new key: it becomes this machine's identity. The old key file is
    kept beside it, renamed (a hard link first, then an atomic replace, so at every instant
    ``identity.key`` is one whole key), the new key's pins start at the chains it just
    signed, and the OS keyring holds the new key if it held the old one."""
    current = identities.identity_path(dotdir)
    retired = retired_path(dotdir, old.fingerprint)
    if not retired.exists():
        retired.hardlink_to(current)
    next_path(dotdir).replace(current)
    trust = trust_for(dotdir, new)
    trust.pins.inherit(old.fingerprint, new.fingerprint)
    for state in states:
        trust.accept(state)
    if keymgmt.os_keyring_holds(old.fingerprint):
        keymgmt.forget_in_os_keyring(old.fingerprint)
        keymgmt.remember_in_os_keyring(new)
    return retired


def resume_or_new(
    api: ApiClient, dotdir: Path, unlock_next: Callable[[Path], keymgmt.Identity],
    device: str,
) -> tuple[keymgmt.Identity, Session | None]:  # fmt: skip
    """The new key of a rotation that was interrupted (unlocked by ``unlock_next``), with a
    login made with it if the server had already taken it; else a fresh key pair."""
    path = next_path(dotdir)
    if not path.exists():
        return keymgmt.generate_identity(), None
    new = unlock_next(path)
    try:
        return new, api.login(new, device=device)
    except AuthError:  # the server never took it: send the rotation again
        return new, None
