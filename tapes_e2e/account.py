"""The user's account on a sync server: the saved login and the personal vault's keys.

- ``session.json`` in the .tapes directory holds the login (mode 0600, atomic writes). It holds
  bearer tokens, so it is as sensitive as an unlocked key: ``tapes auth logout`` deletes it.
- The personal vault is a team of one. At the first login the client makes its keys, signs the
  genesis statement and seals the keyring to itself (``POST /api/v1/teams/{vault}/genesis``);
  later logins, on any machine, fetch the chain and the sealed keyring and open them with the
  identity, after checking that the chain is this identity's own and extends the pinned head
  (:mod:`tapes_e2e.vaults`). Nothing secret about the vault is stored locally.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

import keymgmt
from tapes_e2e.client import ApiClient, Session
from tapes_e2e.config import write_private
from tapes_e2e.errors import AuthError, RemoteError
from tapes_e2e.vaults import Trust, VaultAccess, VaultMaterial

__all__ = [
    "SESSION_FILE",
    "ensure_personal_vault",
    "fetch_vault_material",
    "forget_session",
    "load_session",
    "open_vault",
    "save_session",
    "trust_for",
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


def trust_for(dotdir: Path, identity: keymgmt.Identity) -> Trust:
    """The :class:`~tapes_e2e.vaults.Trust` of ``identity`` in this .tapes directory, knowing
    the personal vault of the saved login (whose chain only this identity may have written)."""
    session = load_session(dotdir)
    return Trust(dotdir, identity, session.personal_vault if session is not None else None)


def fetch_vault_material(api: ApiClient, vault: str) -> VaultMaterial:
    """The chain and this identity's sealed keyrings, as the server gives them (unverified)."""
    statements = [msgspec.structs.asdict(s) for s in api.chain(vault).statements]
    keyrings = [msgspec.structs.asdict(k.keyring) for k in api.keyrings(vault)]
    return statements, keyrings


def open_vault(api: ApiClient, vault: str, trust: Trust) -> VaultAccess:
    """Fetch the vault's chain and this identity's keyrings, verify the chain against the pin
    (moving it), and open the keys."""
    return trust.open(vault, fetch_vault_material(api, vault))


def ensure_personal_vault(api: ApiClient, session: Session, trust: Trust) -> VaultAccess:
    """The personal vault, with its genesis and keyring created on the very first login. Its
    chain must be this identity's own (:func:`~tapes_e2e.vaults.check_personal`), on every device;
    a server that says there is no chain while this identity pinned one is refused."""
    vault, identity = session.personal_vault, trust.identity
    trust.personal_vault = vault
    if api.chain(vault).head.seqno < 0 and trust.pin(vault) is None:
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
    return open_vault(api, vault, trust)
