"""Private keys at rest: the passphrase-protected key file, the OS keyring, the recovery kit.

Key file (JSON, mode 0600, written atomically: temp file, fsync, rename, fsync directory)::

    {"format": "tapes-e2e-keyfile", "version": 1,
     "public": {"x25519": hex, "ed25519": hex, "fingerprint": "..."},
     "kdf": {"algorithm": "argon2id", "time_cost": 3, "memory_kib": 131072, "lanes": 1,
             "salt": b64url},
     "nonce": b64url, "ciphertext": b64url}

The 64 secret bytes are sealed with XChaCha20-Poly1305 under ``Argon2id(passphrase, salt,
params)``; the associated data is a label plus the RFC 8785 form of every other field, so the
public keys and parameters cannot be altered. Parameters are recorded so they can be raised
later (:func:`change_passphrase`), and are refused below :data:`KDF_FLOOR` (a tampered file
cannot downgrade them) or above :data:`KDF_CEILING` (a tampered file cannot exhaust memory).

A wrong passphrase and a corrupt file give the same :class:`~keymgmt.errors.UnlockError`; a
failed unlock never writes. A recovery kit is the same structure (``format`` =
``tapes-e2e-recovery-kit``) armored as text, protected by its own passphrase.
"""

from __future__ import annotations

import base64
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from keymgmt import _oskeyring, labels
from keymgmt import _primitives as prim
from keymgmt._encoding import b64d, b64e, canonical_json
from keymgmt.errors import KdfParamsError, KeyFileError, KeyFileExistsError, UnlockError
from keymgmt.identity import SECRET_BYTES, Identity, PublicIdentity

__all__ = [
    "DEFAULT_KDF",
    "KDF_CEILING",
    "KDF_FLOOR",
    "PASSPHRASE_ENV",
    "TEST_KDF",
    "KdfParams",
    "change_passphrase",
    "export_recovery_kit",
    "forget_in_os_keyring",
    "import_recovery_kit",
    "passphrase_from_env",
    "read_key_file",
    "read_public_identity",
    "remember_in_os_keyring",
    "unlock_identity",
    "write_key_file",
]

log = logging.getLogger("keymgmt.keystore")

PASSPHRASE_ENV: Final = "TAPES_PASSPHRASE"  # noqa: S105 - the variable name, not a secret
KEYFILE_FORMAT: Final = "tapes-e2e-keyfile"
KIT_FORMAT: Final = "tapes-e2e-recovery-kit"
KIT_BEGIN: Final = "-----BEGIN TAPES RECOVERY KIT-----"
KIT_END: Final = "-----END TAPES RECOVERY KIT-----"
MAX_FILE_BYTES: Final = 64 * 1024
SALT_BYTES: Final = 16


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id cost parameters (RFC 9106 names: t, m in KiB, p)."""

    time_cost: int
    memory_kib: int
    lanes: int

    def at_least(self, floor: KdfParams) -> bool:
        return (
            self.time_cost >= floor.time_cost
            and self.memory_kib >= floor.memory_kib
            and self.lanes >= floor.lanes
        )


DEFAULT_KDF: Final = KdfParams(time_cost=3, memory_kib=128 * 1024, lanes=1)
"""About 0.5 s on a 2-core CI machine (see bench/bench_keymgmt.py)."""
KDF_FLOOR: Final = KdfParams(time_cost=2, memory_kib=64 * 1024, lanes=1)
"""No file with weaker parameters is accepted unless the caller passes a lower floor."""
KDF_CEILING: Final = KdfParams(time_cost=16, memory_kib=4 * 1024 * 1024, lanes=16)
TEST_KDF: Final = KdfParams(time_cost=1, memory_kib=8, lanes=1)
"""Test-only parameters: accepted only when the caller also passes ``floor=TEST_KDF``."""


class _Kdf(msgspec.Struct, forbid_unknown_fields=True):
    algorithm: str
    time_cost: int
    memory_kib: int
    lanes: int
    salt: str


class _Public(msgspec.Struct, forbid_unknown_fields=True):
    x25519: str
    ed25519: str
    fingerprint: str


class _Sealed(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    version: int
    public: _Public
    kdf: _Kdf
    nonce: str
    ciphertext: str


def _check_params(params: KdfParams, floor: KdfParams) -> None:
    if not params.at_least(floor):
        raise KdfParamsError(
            f"Argon2id parameters t={params.time_cost} m={params.memory_kib}KiB "
            f"p={params.lanes} are below the minimum t={floor.time_cost} "
            f"m={floor.memory_kib}KiB p={floor.lanes}"
        )
    if not KDF_CEILING.at_least(params):
        raise KdfParamsError("Argon2id parameters are above the accepted maximum")


def _header(fmt: str, public: PublicIdentity, params: KdfParams, salt: bytes) -> dict[str, object]:
    return {
        "format": fmt,
        "version": labels.PROTOCOL_VERSION,
        "public": public.to_dict(),
        "kdf": {
            "algorithm": "argon2id",
            "time_cost": params.time_cost,
            "memory_kib": params.memory_kib,
            "lanes": params.lanes,
            "salt": b64e(salt),
        },
    }


def _ad(label: bytes, header: Mapping[str, object]) -> bytes:
    return label + canonical_json(dict(header))


def _derive(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    return prim.argon2id(
        passphrase.encode("utf-8"), salt,
        time_cost=params.time_cost, memory_kib=params.memory_kib, lanes=params.lanes,
    )  # fmt: skip


def _seal(
    fmt: str, label: bytes, identity: Identity, passphrase: str,
    *, params: KdfParams, floor: KdfParams, rng: prim.Rng,
) -> dict[str, object]:  # fmt: skip
    if not passphrase:
        raise KeyFileError("the passphrase must not be empty")
    _check_params(params, floor)
    salt, nonce = rng(SALT_BYTES), rng(prim.AEAD_NONCE_BYTES)
    header = _header(fmt, identity.public, params, salt)
    key = _derive(passphrase, salt, params)
    ciphertext = prim.aead_encrypt(key, nonce, identity.export_secret(), _ad(label, header))
    return {**header, "nonce": b64e(nonce), "ciphertext": b64e(ciphertext)}


def _parse(raw: bytes, fmt: str) -> _Sealed:
    try:
        sealed = msgspec.json.decode(raw, type=_Sealed)
    except msgspec.DecodeError:
        raise UnlockError("could not unlock: the file is corrupt") from None
    if sealed.format != fmt or sealed.version != labels.PROTOCOL_VERSION:
        raise UnlockError(f"could not unlock: not a {fmt} (version {labels.PROTOCOL_VERSION})")
    if sealed.kdf.algorithm != "argon2id":
        raise KdfParamsError(f"unsupported key derivation {sealed.kdf.algorithm!r}")
    return sealed


def _open(sealed: _Sealed, label: bytes, passphrase: str, floor: KdfParams) -> Identity:
    kdf = sealed.kdf
    params = KdfParams(kdf.time_cost, kdf.memory_kib, kdf.lanes)
    _check_params(params, floor)  # before running Argon2id on attacker-chosen parameters
    try:
        public = PublicIdentity.from_dict(msgspec.to_builtins(sealed.public))
        salt = b64d(kdf.salt)
        header = _header(sealed.format, public, params, salt)
        key = _derive(passphrase, salt, params)
        secret = prim.aead_decrypt(
            key, b64d(sealed.nonce), b64d(sealed.ciphertext), _ad(label, header)
        )
        identity = Identity.from_secret(secret)
    except (ValueError, TypeError, prim.PrimitiveError):
        log.debug("key file did not open")
        raise UnlockError("could not unlock: wrong passphrase, or the file is corrupt") from None
    if identity.public != public:  # pragma: no cover - the AD already binds the public keys
        raise UnlockError("could not unlock: wrong passphrase, or the file is corrupt")
    return identity


# --- key file ------------------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write ``data`` to ``path`` with mode 0600: temp file, fsync, rename, fsync directory."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() and not overwrite:
        raise KeyFileExistsError(f"{path} already exists")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.chmod(0o600)
        if overwrite:
            tmp.replace(path)
        else:
            path.hardlink_to(tmp)  # fails if the path appeared meanwhile: never clobber
            tmp.unlink()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeyFileError(f"no key file at {path}", hint="run `tapes keys init` first") from None
    if len(raw) > MAX_FILE_BYTES:
        raise UnlockError("could not unlock: the file is corrupt (too large)")
    return raw


def write_key_file(
    path: Path | str,
    identity: Identity,
    passphrase: str,
    *,
    params: KdfParams = DEFAULT_KDF,
    floor: KdfParams = KDF_FLOOR,
    overwrite: bool = False,
    rng: prim.Rng = prim.random_bytes,
) -> None:
    """Write ``identity`` to ``path``, sealed under ``passphrase``; refuses to replace a file."""
    sealed = _seal(
        KEYFILE_FORMAT, labels.KEYFILE_AD, identity, passphrase, params=params, floor=floor, rng=rng
    )
    _atomic_write(Path(path), canonical_json(sealed) + b"\n", overwrite=overwrite)


def read_key_file(path: Path | str, passphrase: str, *, floor: KdfParams = KDF_FLOOR) -> Identity:
    """Unlock the key file. Wrong passphrase or corrupt file: :class:`UnlockError`."""
    return _open(_parse(_read(Path(path)), KEYFILE_FORMAT), labels.KEYFILE_AD, passphrase, floor)


def open_key_file_bytes(raw: bytes, passphrase: str, *, floor: KdfParams = KDF_FLOOR) -> Identity:
    """Unlock the bytes of a key file (one brought from another machine); as
    :func:`read_key_file`."""
    if len(raw) > MAX_FILE_BYTES:
        raise UnlockError("could not unlock: the file is corrupt (too large)")
    return _open(_parse(raw, KEYFILE_FORMAT), labels.KEYFILE_AD, passphrase, floor)


def os_keyring_holds(fingerprint: str, *, backend: _oskeyring.Backend | None = None) -> bool:
    """Whether the OS keyring holds a secret for this identity (it is not returned)."""
    return _oskeyring.load_secret(fingerprint, backend=backend) is not None


def read_public_identity(path: Path | str) -> PublicIdentity:
    """The public keys recorded in a key file (not authenticated until the file is unlocked)."""
    sealed = _parse(_read(Path(path)), KEYFILE_FORMAT)
    try:
        return PublicIdentity.from_dict(msgspec.to_builtins(sealed.public))
    except ValueError:
        raise UnlockError("the key file is corrupt") from None


def change_passphrase(
    path: Path | str,
    old: str,
    new: str,
    *,
    params: KdfParams = DEFAULT_KDF,
    floor: KdfParams = KDF_FLOOR,
    rng: prim.Rng = prim.random_bytes,
) -> None:
    """Re-seal the key file under ``new`` (and ``params``, e.g. raised ones), atomically."""
    identity = read_key_file(path, old, floor=floor)
    write_key_file(path, identity, new, params=params, floor=floor, overwrite=True, rng=rng)


def passphrase_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """``TAPES_PASSPHRASE`` for automation, or None. The only environment read in keymgmt."""
    env = os.environ if environ is None else environ
    value = env.get(PASSPHRASE_ENV)
    return value or None


def remember_in_os_keyring(
    identity: Identity, *, backend: _oskeyring.Backend | None = None
) -> bool:
    """Store the identity in the OS keyring (opt-in); False if there is no usable keyring."""
    return _oskeyring.store_secret(identity.fingerprint, identity.export_secret(), backend=backend)


def forget_in_os_keyring(fingerprint: str, *, backend: _oskeyring.Backend | None = None) -> bool:
    return _oskeyring.delete_secret(fingerprint, backend=backend)


def unlock_identity(
    path: Path | str,
    *,
    passphrase: str | None = None,
    environ: Mapping[str, str] | None = None,
    backend: _oskeyring.Backend | None = None,
    use_os_keyring: bool = True,
    floor: KdfParams = KDF_FLOOR,
) -> Identity:
    """Unlock through the OS keyring if it holds this identity, else by passphrase.

    The passphrase is ``passphrase`` or else ``TAPES_PASSPHRASE``. A keyring entry is used only
    if its keys match the key file's public keys.
    """
    public = read_public_identity(path)
    if use_os_keyring:
        secret = _oskeyring.load_secret(public.fingerprint, backend=backend)
        if secret is not None:
            try:
                identity = Identity.from_secret(secret)
            except ValueError:
                identity = None
            if identity is not None and identity.public == public:
                return identity
            log.debug("OS keyring entry does not match the key file; ignoring it")
    phrase = passphrase if passphrase is not None else passphrase_from_env(environ)
    if phrase is None:
        raise UnlockError(
            "the key file is locked and no passphrase was given",
            hint=f"type the passphrase, or set {PASSPHRASE_ENV} for automation",
        )
    return read_key_file(path, phrase, floor=floor)


# --- recovery kit --------------------------------------------------------------------------


def export_recovery_kit(
    identity: Identity,
    passphrase: str,
    *,
    params: KdfParams = DEFAULT_KDF,
    floor: KdfParams = KDF_FLOOR,
    rng: prim.Rng = prim.random_bytes,
) -> str:
    """A text block that restores ``identity`` on another machine with ``passphrase``."""
    sealed = _seal(
        KIT_FORMAT,
        labels.RECOVERY_KIT_AD,
        identity,
        passphrase,
        params=params,
        floor=floor,
        rng=rng,
    )
    body = base64.b64encode(canonical_json(sealed)).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([KIT_BEGIN, f"fingerprint: {identity.fingerprint}", *lines, KIT_END, ""])


def import_recovery_kit(text: str, passphrase: str, *, floor: KdfParams = KDF_FLOOR) -> Identity:
    """Inverse of :func:`export_recovery_kit`; damaged kit or wrong passphrase: UnlockError."""
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) < 3 or lines[0] != KIT_BEGIN or lines[-1] != KIT_END:
        raise UnlockError("not a tapes recovery kit (missing BEGIN/END lines)")
    body = "".join(line for line in lines[1:-1] if not line.startswith("fingerprint:"))
    try:
        raw = base64.b64decode(body, validate=True)
    except ValueError:
        raise UnlockError("the recovery kit is damaged") from None
    return _open(_parse(raw, KIT_FORMAT), labels.RECOVERY_KIT_AD, passphrase, floor)


# --- paper key -----------------------------------------------------------------------------

PAPER_KEY_PREFIX: Final = "TAPES-PAPER-1"
_PAPER_CHECK_BYTES = 4
_PAPER_HINT = "compare it with the paper, group by group; nothing was written"
_PAPER_TYPOS = str.maketrans({"0": "O", "1": "I", "8": "B", "-": None, " ": None, "\n": None})


def export_paper_key(identity: Identity) -> str:
    """The identity's secret for paper, unsealed: RFC 4648 base32 in groups of four, with a
    32-bit checksum under its own label that catches a mistyped or missing group. Whoever
    reads it becomes this identity; :func:`import_paper_key` reads it back."""
    secret = identity.export_secret()
    check = prim.sha256(labels.PAPER_KEY_CHECK + secret)[:_PAPER_CHECK_BYTES]
    text = base64.b32encode(secret + check).decode("ascii").rstrip("=")
    groups = [text[i : i + 4] for i in range(0, len(text), 4)]
    rows = [" ".join(groups[i : i + 7]) for i in range(0, len(groups), 7)]
    return "\n".join([PAPER_KEY_PREFIX, f"fingerprint: {identity.fingerprint}", *rows, ""])


def is_paper_key(text: str) -> bool:
    return text.strip().upper().startswith(PAPER_KEY_PREFIX)


def import_paper_key(text: str) -> Identity:
    """Inverse of :func:`export_paper_key`. Spaces, dashes, line breaks and case do not matter,
    and 0, 1 and 8 are read as O, I and B (base32 has no digits 0, 1, 8). A typo anywhere:
    one UnlockError."""
    body = text.strip().upper()
    if not body.startswith(PAPER_KEY_PREFIX):
        raise UnlockError(
            f"not a tapes paper key (it starts with {PAPER_KEY_PREFIX})", hint=_PAPER_HINT
        )
    lines = body[len(PAPER_KEY_PREFIX) :].splitlines()
    letters = "".join(line for line in lines if not line.strip().startswith("FINGERPRINT:"))
    letters = letters.translate(_PAPER_TYPOS)
    try:
        raw = base64.b32decode(letters + "=" * (-len(letters) % 8))
    except ValueError:
        raise UnlockError(
            "the paper key has characters base32 does not use", hint=_PAPER_HINT
        ) from None
    if base64.b32encode(raw).decode("ascii").rstrip("=") != letters:  # stray trailing bits
        raise UnlockError(
            "the paper key is mistyped: its last group is not one it could end in",
            hint=_PAPER_HINT,
        )
    secret, check = raw[:-_PAPER_CHECK_BYTES], raw[-_PAPER_CHECK_BYTES:]
    expected = prim.sha256(labels.PAPER_KEY_CHECK + secret)[:_PAPER_CHECK_BYTES]
    if len(secret) != SECRET_BYTES or not prim.constant_time_equal(check, expected):
        raise UnlockError(
            "the paper key is mistyped: its checksum does not match", hint=_PAPER_HINT
        )
    return Identity.from_secret(secret)
