"""Optional OS keyring (macOS Keychain, Windows Credential Locker, Secret Service) storage.

Everything here degrades gracefully: with no ``keyring`` package, no usable backend, or a backend
that fails, the functions return ``None``/``False`` and log at debug level. Tests inject a
``backend`` (any object with ``get_password``, ``set_password`` and ``delete_password``).
"""

from __future__ import annotations

import logging
from typing import Final, Protocol

from keymgmt._encoding import b64d, b64e

__all__ = ["SERVICE", "Backend", "delete_secret", "load_secret", "store_secret"]

log = logging.getLogger("keymgmt.oskeyring")

SERVICE: Final = "tapes-e2e"


class Backend(Protocol):
    def get_password(self, service: str, username: str) -> str | None: ...
    def set_password(self, service: str, username: str, password: str) -> None: ...
    def delete_password(self, service: str, username: str) -> None: ...


def _default_backend() -> Backend | None:
    try:
        import keyring  # noqa: PLC0415 - optional dependency, imported only when used

        backend: Backend = keyring.get_keyring()
    except Exception:  # noqa: BLE001 - no package or no usable backend: run without it
        log.debug("no OS keyring available")
        return None
    return backend


def store_secret(fingerprint: str, secret: bytes, *, backend: Backend | None = None) -> bool:
    """Store an identity secret under ``fingerprint``; False if no keyring could take it."""
    backend = backend or _default_backend()
    if backend is None:
        return False
    try:
        backend.set_password(SERVICE, fingerprint, b64e(secret))
    except Exception:  # noqa: BLE001 - any backend failure means "not stored"
        log.debug("OS keyring refused to store the secret")
        return False
    return True


def load_secret(fingerprint: str, *, backend: Backend | None = None) -> bytes | None:
    """The stored secret for ``fingerprint``, or None (absent, no keyring, or unreadable)."""
    backend = backend or _default_backend()
    if backend is None:
        return None
    try:
        value = backend.get_password(SERVICE, fingerprint)
        return None if value is None else b64d(value)
    except Exception:  # noqa: BLE001 - any backend failure means "not available"
        log.debug("OS keyring could not be read")
        return None


def delete_secret(fingerprint: str, *, backend: Backend | None = None) -> bool:
    backend = backend or _default_backend()
    if backend is None:
        return False
    try:
        backend.delete_password(SERVICE, fingerprint)
    except Exception:  # noqa: BLE001 - absent entry or backend failure
        log.debug("OS keyring could not delete the secret")
        return False
    return True
