"""Storage providers, and :func:`open_provider`, which picks one from ``config.toml``.

``[storage] provider`` is ``local`` (the default: the tapes SQLite file), ``hybrid`` (that file,
synced in the background) or ``cloud`` (the server only). ``hybrid`` and ``cloud`` need a login
(``tapes auth login``) and unlock the identity key (OS keyring, ``TAPES_PASSPHRASE`` or
``prompt``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tapes_e2e.errors import ConfigError
from tapes_e2e.providers.base import Provider, SyncProvider, TeamProvider

if TYPE_CHECKING:
    from tapes_e2e.cli.context import Settings

__all__ = ["Provider", "SyncProvider", "TeamProvider", "open_provider"]


def open_provider(settings: Settings, *, prompt: Callable[[], str] | None = None) -> Provider:
    """The provider ``settings`` configure, ready to use; close it when done."""
    from tapes_e2e import account  # noqa: PLC0415 - the local provider needs none of these
    from tapes_e2e.cli import auth  # noqa: PLC0415
    from tapes_e2e.identity import unlock  # noqa: PLC0415
    from tapes_e2e.providers.cloud import CloudProvider  # noqa: PLC0415
    from tapes_e2e.providers.hybrid import HybridProvider  # noqa: PLC0415
    from tapes_e2e.providers.local import LocalProvider  # noqa: PLC0415
    from tapes_e2e.remote_sync import vault_runner  # noqa: PLC0415
    from tapes_e2e.teams import routing  # noqa: PLC0415
    from tapes_e2e.teams.sharing import TeamSharing  # noqa: PLC0415
    from tapes_e2e.vaults import Trust  # noqa: PLC0415

    kind = settings.config.provider
    if kind == "local":
        return LocalProvider(settings.database.path)
    session = account.load_session(settings.dotdir.path)
    if session is None:
        raise ConfigError(
            f"provider {kind} needs a login to the sync server", hint="run `tapes auth login`"
        )
    identity = unlock(settings.dotdir.path, prompt=prompt)
    api = auth.api_client(settings, session.server)
    trust = Trust(settings.dotdir.path, identity, session.personal_vault)
    cloud = settings.config.cloud
    vault = cloud.team_id or session.personal_vault
    provider: CloudProvider | HybridProvider
    if kind == "cloud":
        if cloud.team_id:
            provider = routing.team_cloud_provider(api, identity, settings.dotdir.path, cloud)
        else:
            provider = CloudProvider(api, account.open_vault(api, vault, trust), trust)
    else:
        store = LocalProvider(settings.database.path)
        try:
            hooks = routing.team_sync_hooks(api, identity, settings, store, vault)
            runner = vault_runner(
                store, api, vault, trust, sync_interval=cloud.sync_interval, hooks=hooks
            )
        except BaseException:
            store.close()
            raise
        provider = HybridProvider(store, runner, sync_on_close=cloud.sync_on_close)
    provider.sharing = TeamSharing(api, identity, settings.dotdir.path, provider.ancestry)
    return provider
