"""Storage providers (``tapes_e2e.context.open_provider`` picks one from ``config.toml``).

``[storage] provider`` is ``local`` (the default: the tapes SQLite file), ``hybrid`` (that file,
synced in the background) or ``cloud`` (the server only). ``hybrid`` and ``cloud`` need a login
(``tapes auth login``) and unlock the identity key (OS keyring, ``TAPES_PASSPHRASE`` or
``prompt``).
"""

from __future__ import annotations

from tapes_e2e.providers.base import Provider, SyncProvider, TeamProvider

__all__ = ["Provider", "SyncProvider", "TeamProvider"]
