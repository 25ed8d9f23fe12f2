"""The composition root below the CLI: what every command and provider is built from.

- :class:`Settings`: the resolved .tapes directory, config and database (global options);
- :func:`api_client` / :func:`logged_in`: the server client of the saved login, saving every
  rotated login (``http_factory`` is how it reaches a server; tests replace it);
- :func:`chosen_vault`: the one place that decides which vault a sync uses (``team_id`` or the
  personal vault);
- :func:`connect`: the logged-in stack (client, login, unlocked identity, :class:`Trust`), which
  ``tapes storage sync`` and :func:`open_provider` (the provider ``config.toml`` names) both
  build from here.

Nothing here imports the CLI: ``providers`` and ``teams`` depend on this module, never on
``tapes_e2e.cli``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

import keymgmt
from tapes_e2e import account
from tapes_e2e.client import ApiClient, Session
from tapes_e2e.config import Config, load_config
from tapes_e2e.errors import AirGappedError, ConfigError, NotATapesDatabaseError
from tapes_e2e.identity import unlock
from tapes_e2e.paths import Location, resolve_database, resolve_dotdir
from tapes_e2e.providers.base import Provider
from tapes_e2e.providers.local import LocalProvider
from tapes_e2e.providers.memory import NodeView
from tapes_e2e.store.syncstate import sync_lock
from tapes_e2e.vaults import Trust

__all__ = [
    "Connection",
    "Settings",
    "api_client",
    "chosen_vault",
    "connect",
    "logged_in",
    "open_provider",
    "reading",
    "server_http",
]

AIR_GAPPED_ENV = "TAPES_AIR_GAPPED"

# How the client reaches a server; tests replace it with the in-process app's client.
http_factory: Callable[[str], httpx.Client] = lambda _url: httpx.Client(timeout=30.0)  # noqa: E731


@dataclass(frozen=True)
class Settings:
    """The global options, resolved once per command."""

    dotdir: Location
    config: Config
    database: Location
    debug: bool
    air_gapped: bool = False

    @classmethod
    def resolve(cls, *, config_dir: Path | None, db: Path | None, debug: bool) -> Settings:
        env = dict(os.environ)
        cwd, home = Path.cwd(), Path.home()
        dotdir = resolve_dotdir(config_dir, env, cwd, home)
        config = load_config(dotdir.path)
        database = resolve_database(
            explicit=db,
            configured=config.db_path,
            configured_key=config.db_path_key,
            dotdir=dotdir,
            env=env,
            cwd=cwd,
            home=home,
        )
        gapped = config.air_gapped or env.get(AIR_GAPPED_ENV, "").lower() in ("1", "true", "yes")
        return cls(dotdir=dotdir, config=config, database=database, debug=debug, air_gapped=gapped)

    @contextmanager
    def store(self, *, create: bool = False) -> Iterator[LocalProvider]:
        """The local store; without ``create``, a missing database is an error, not a new file."""
        path = self.database.path
        if not create and not path.exists():
            raise NotATapesDatabaseError(
                f"no database at {path} ({self.database.reason})",
                hint="record a session with Go tapes (`tapes start`), import one with "
                "`tapes session import`, or choose a file with --db",
            )
        if create and self.database.explicit and not path.parent.is_dir():
            raise NotATapesDatabaseError(
                f"no directory {path.parent} for the database ({self.database.reason})",
                hint="create the directory first, or choose another file with --db",
            )
        provider = LocalProvider(path, create=create)
        try:
            yield provider
        finally:
            provider.close()


def server_http(settings: Settings, api_url: str) -> httpx.Client:
    """The HTTP client for ``api_url``, the one way this client reaches a server: on an
    air-gapped machine it refuses before any socket is opened."""
    if settings.air_gapped:
        raise AirGappedError(f"air-gapped: not connecting to {api_url}; nothing was sent")
    return http_factory(api_url)


def api_client(settings: Settings, api_url: str, session: Session | None = None) -> ApiClient:
    """An ApiClient for ``api_url`` that saves every rotated login (``session``: the saved
    login, when the caller has read it already)."""
    dotdir = settings.dotdir.path
    return ApiClient(
        server_http(settings, api_url),
        api_url=api_url,
        session=session if session is not None else account.load_session(dotdir),
        on_session=lambda rotated: account.save_session(dotdir, rotated),
    )


def logged_in(settings: Settings, needs: str | None = None) -> tuple[ApiClient, Session]:
    """The client of the saved login, and the login; a clear error when there is none
    (``needs``: what needed it, for the message)."""
    session = account.load_session(settings.dotdir.path)
    if session is None:
        message = f"{needs} needs a login to the sync server" if needs else "not logged in"
        raise ConfigError(message + ("" if needs else " to a sync server"),
                          hint="run `tapes auth login`")  # fmt: skip
    return api_client(settings, session.server, session), session


def chosen_vault(config: Config, session: Session) -> str:
    """The vault a sync, the hybrid worker and the cloud provider use: the configured team's,
    else the personal vault."""
    return config.cloud.team_id or session.personal_vault


@dataclass(frozen=True)
class Connection:
    """The logged-in stack: server client, saved login, unlocked identity and its trust."""

    settings: Settings
    api: ApiClient
    session: Session
    identity: keymgmt.Identity
    trust: Trust

    @property
    def vault(self) -> str:
        return chosen_vault(self.settings.config, self.session)


def connect(
    settings: Settings, *, prompt: Callable[[], str] | None = None, needs: str | None = None
) -> Connection:
    """Log in from the saved login and unlock the identity (OS keyring, ``TAPES_PASSPHRASE`` or
    ``prompt``)."""
    api, session = logged_in(settings, needs)
    identity = unlock(settings.dotdir.path, prompt=prompt)
    trust = Trust(settings.dotdir.path, identity, session.personal_vault)
    return Connection(settings, api, session, identity, trust)


def open_provider(settings: Settings, *, prompt: Callable[[], str] | None = None) -> Provider:
    """The provider ``settings`` configure, ready to use; close it when done."""
    from tapes_e2e.providers import cloud as remote  # noqa: PLC0415 - local needs none of these
    from tapes_e2e.providers.hybrid import HybridProvider  # noqa: PLC0415
    from tapes_e2e.remote_sync import vault_runner  # noqa: PLC0415
    from tapes_e2e.teams import routing  # noqa: PLC0415
    from tapes_e2e.teams.sharing import TeamSharing  # noqa: PLC0415

    kind = settings.config.provider
    if kind == "local":
        return LocalProvider(settings.database.path)
    linked = connect(settings, prompt=prompt, needs=f"provider {kind}")
    api, identity, trust, vault = linked.api, linked.identity, linked.trust, linked.vault
    cloud = settings.config.cloud
    provider: remote.CloudProvider | HybridProvider
    if kind == "cloud":
        if cloud.team_id:
            provider = remote.team_cloud_provider(api, identity, settings.dotdir.path, cloud)
        else:
            provider = remote.CloudProvider(api, account.open_vault(api, vault, trust), trust)
    else:
        store = LocalProvider(settings.database.path)
        try:
            dotdir = settings.dotdir.path
            hooks = routing.team_sync_hooks(api, identity, dotdir, cloud, store=store, vault=vault)
            program = Path(sys.argv[0]).name or "python"
            lock = sync_lock(store.path, vault, f"the hybrid provider's sync in {program}")
            runner = vault_runner(
                store, api, vault, trust, sync_interval=cloud.sync_interval, hooks=hooks,
                lock=lock,
            )  # fmt: skip
        except BaseException:
            store.close()
            raise
        provider = HybridProvider(store, runner, sync_on_close=cloud.sync_on_close)
    provider.sharing = TeamSharing(api, identity, settings.dotdir.path, provider.ancestry)
    return provider


@contextmanager
def reading(
    settings: Settings, *, prompt: Callable[[], str] | None = None
) -> Iterator[LocalProvider | NodeView]:
    """Where ``tapes session list|show|export`` read: the local store (``local``, ``hybrid``), or
    with ``cloud`` the vault fetched from the server, every node verified and opened in memory
    (nothing is written to disk)."""
    if settings.config.provider != "cloud":
        with settings.store() as store:
            yield store
        return
    provider = open_provider(settings, prompt=prompt)
    try:
        view = NodeView(provider.list())
    finally:
        provider.close()
    try:
        yield view
    finally:
        view.close()
