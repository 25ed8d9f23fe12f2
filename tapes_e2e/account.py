"""The user's account on a sync server: the saved login and the personal vault's keys.

- ``session.json`` in the .tapes directory holds the login (mode 0600, atomic writes). It holds
  bearer tokens, so it is as sensitive as an unlocked key: ``tapes auth logout`` deletes it.
- The personal vault is a team of one. At the first login the client makes its keys, signs the
  genesis statement and seals the keyring to itself (``POST /api/v1/teams/{vault}/genesis``);
  later logins, on any machine, fetch the chain and the sealed keyring and open them with the
  identity. Nothing secret about the vault is stored locally.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import msgspec

import keymgmt
from tapes_e2e.client import ApiClient, Session
from tapes_e2e.config import write_private
from tapes_e2e.errors import AuthError, RemoteError

__all__ = [
    "SESSION_FILE",
    "VaultAccess",
    "VaultMaterial",
    "ensure_personal_vault",
    "fetch_vault_material",
    "forget_session",
    "load_session",
    "open_vault",
    "open_vault_material",
    "save_session",
]

SESSION_FILE = "session.json"


def load_session(dotdir: Path) -> Session | None:
    """The saved login, or None when there is none."""
    path = dotdir / SESSION_FILE
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AuthError(
            f"cannot read the saved login {path}: {exc}", hint="run `tapes auth login` again"
        ) from exc
    return Session.from_dict(data)


def save_session(dotdir: Path, session: Session) -> None:
    """Write the login atomically with mode 0600."""
    write_private(dotdir / SESSION_FILE, json.dumps(session.to_dict()))


def forget_session(dotdir: Path) -> bool:
    """Delete the saved login; True if there was one."""
    try:
        (dotdir / SESSION_FILE).unlink()
    except FileNotFoundError:
        return False
    return True


@dataclass(frozen=True)
class VaultAccess:
    """A vault's verified chain and the keys this identity opened from its sealed keyrings."""

    vault: str
    state: keymgmt.VerifiedTeamState
    keys: keymgmt.TeamKeys


VaultMaterial = tuple[list[dict[str, str]], list[dict[str, str]]]
"""A vault's signed chain statements and this identity's sealed keyrings, as wire dicts: safe to
keep on disk (signed, and sealed to the identity), and verified again every time they are used."""


def fetch_vault_material(api: ApiClient, vault: str) -> VaultMaterial:
    """The chain and this identity's sealed keyrings, as the server gives them (unverified)."""
    statements = [msgspec.structs.asdict(s) for s in api.chain(vault).statements]
    keyrings = [msgspec.structs.asdict(k.keyring) for k in api.keyrings(vault)]
    return statements, keyrings


def open_vault(
    api: ApiClient,
    vault: str,
    identity: keymgmt.Identity,
    *,
    last_verified_head: keymgmt.ChainHead | None = None,
) -> VaultAccess:
    """Fetch, verify and open a vault's chain and this identity's keyrings."""
    material = fetch_vault_material(api, vault)
    return open_vault_material(vault, material, identity, last_verified_head=last_verified_head)


def open_vault_material(
    vault: str,
    material: VaultMaterial,
    identity: keymgmt.Identity,
    *,
    last_verified_head: keymgmt.ChainHead | None = None,
) -> VaultAccess:
    """Verify the chain and open the keyrings this identity can open.

    Raises keymgmt's errors when the chain does not verify (a fork, a rollback below
    ``last_verified_head``, a forged statement, another vault's chain) or no keyring opens.
    """
    statements, keyrings = material
    state = keymgmt.verify_chain(
        [keymgmt.parse_statement(s) for s in statements], last_verified_head, team=vault
    )
    keys: keymgmt.TeamKeys | None = None
    for wire in keyrings:
        epoch = keymgmt.open_keyring(wire, state=state, identity=identity)
        if keys is None:
            keys = keymgmt.TeamKeys.from_epoch_keys(epoch)
        else:
            keys.add(epoch)
    if keys is None:
        raise keymgmt.PolicyError(
            f"no keyring of vault {vault} is sealed to this identity",
            hint="an admin of the team must seal the current keyring to you",
        )
    return VaultAccess(vault, state, keys)


def ensure_personal_vault(
    api: ApiClient, session: Session, identity: keymgmt.Identity
) -> VaultAccess:
    """The personal vault, with its genesis and keyring created on the very first login."""
    vault = session.personal_vault
    if api.chain(vault).head.seqno < 0:
        vault_key, epoch_key = keymgmt.new_key(), keymgmt.new_key()
        genesis = keymgmt.create_team(
            team=vault, owner=identity, vault_id_key=vault_key, epoch_key=epoch_key
        )
        state = keymgmt.verify_chain([genesis], team=vault)
        keyring = keymgmt.seal_keyring(
            state, sealer=identity, epoch=1, epoch_key=epoch_key, vault_id_key=vault_key
        )
        try:
            api.genesis(vault, genesis.to_dict(), keyring.to_dict())
        except RemoteError as exc:
            if exc.status != 409:  # another machine of ours made it first: use theirs
                raise
    return open_vault(api, vault, identity)
