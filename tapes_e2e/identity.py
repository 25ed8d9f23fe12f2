"""The user's identity key file in the .tapes directory, created and unlocked for the CLI.

``identity.key`` is a keymgmt key file (Argon2id + XChaCha20-Poly1305, mode 0600, atomic
writes). Unlocking tries, in order: the OS keyring (if it holds this identity), the
``TAPES_PASSPHRASE`` environment variable, then an interactive prompt when one is available. A
wrong passphrase is one clear error and never touches the file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import keymgmt

__all__ = [
    "IDENTITY_FILE",
    "check_passphrase",
    "create_identity",
    "identity_path",
    "restore",
    "save",
    "unlock",
]

IDENTITY_FILE = "identity.key"
MIN_PASSPHRASE = 8
# The Argon2id cost of new key files and the floor below which a key file is refused. Tests
# lower both (and say so); nothing else should.
KDF: keymgmt.KdfParams = keymgmt.DEFAULT_KDF
KDF_FLOOR: keymgmt.KdfParams = keymgmt.KDF_FLOOR


def identity_path(dotdir: Path) -> Path:
    return dotdir / IDENTITY_FILE


def create_identity(
    dotdir: Path,
    passphrase: str,
    *,
    params: keymgmt.KdfParams | None = None,
    floor: keymgmt.KdfParams | None = None,
) -> keymgmt.Identity:
    """A new identity sealed under ``passphrase``; refuses to replace an existing key file."""
    identity = keymgmt.generate_identity()
    save(dotdir, identity, passphrase, params=params, floor=floor)
    return identity


def check_passphrase(passphrase: str) -> None:
    if len(passphrase) < MIN_PASSPHRASE:
        raise keymgmt.KeymgmtError(
            f"the passphrase is too short (at least {MIN_PASSPHRASE} characters)",
            hint="choose a longer passphrase; a few random words work well",
        )


def save(
    dotdir: Path,
    identity: keymgmt.Identity,
    passphrase: str,
    *,
    params: keymgmt.KdfParams | None = None,
    floor: keymgmt.KdfParams | None = None,
) -> None:
    """Write ``identity`` as this machine's key file; refuses to replace an existing one."""
    check_passphrase(passphrase)
    dotdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    keymgmt.write_key_file(
        identity_path(dotdir), identity, passphrase, params=params or KDF, floor=floor or KDF_FLOOR
    )


def restore(
    raw: bytes,
    *,
    prompt: Callable[[], str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> keymgmt.Identity:
    """The identity in a paper key, a recovery kit or a key file from another machine (the last
    two unlocked with ``TAPES_PASSPHRASE`` or the passphrase ``prompt`` asks for). Anything
    else, a damaged kit or paper key, a wrong passphrase: one :class:`keymgmt.UnlockError`."""
    text = raw.decode("utf-8", errors="replace")
    if keymgmt.is_paper_key(text):
        return keymgmt.import_paper_key(text)
    passphrase = keymgmt.passphrase_from_env(environ)
    if passphrase is None:
        if prompt is None:
            raise keymgmt.UnlockError(
                "the kit or key file is sealed and no passphrase was given",
                hint=f"type its passphrase in a terminal, or set {keymgmt.PASSPHRASE_ENV}",
            )
        passphrase = prompt()
    if keymgmt.KIT_BEGIN in text:
        return keymgmt.import_recovery_kit(text, passphrase, floor=KDF_FLOOR)
    return keymgmt.open_key_file_bytes(raw, passphrase, floor=KDF_FLOOR)


def unlock(
    dotdir: Path,
    *,
    prompt: Callable[[], str] | None = None,
    environ: Mapping[str, str] | None = None,
    use_os_keyring: bool = True,
    floor: keymgmt.KdfParams | None = None,
) -> keymgmt.Identity:
    """Unlock ``identity.key`` by OS keyring, ``TAPES_PASSPHRASE`` or ``prompt``, in that order."""
    path = identity_path(dotdir)
    floor = floor or KDF_FLOOR
    try:
        return keymgmt.unlock_identity(
            path, environ=environ, use_os_keyring=use_os_keyring, floor=floor
        )
    except keymgmt.UnlockError:
        if prompt is None or keymgmt.passphrase_from_env(environ) is not None:
            raise
    return keymgmt.unlock_identity(
        path, passphrase=prompt(), environ=environ, use_os_keyring=False, floor=floor
    )
