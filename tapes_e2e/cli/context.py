"""What every command needs: the resolved .tapes directory, config, database and provider."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tapes_e2e.config import Config, load_config
from tapes_e2e.errors import NotATapesDatabaseError
from tapes_e2e.paths import Location, resolve_database, resolve_dotdir
from tapes_e2e.providers.local import LocalProvider

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    """The global options, resolved once per command."""

    dotdir: Location
    config: Config
    database: Location
    debug: bool

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
        return cls(dotdir=dotdir, config=config, database=database, debug=debug)

    @contextmanager
    def store(self, *, create: bool = False) -> Iterator[LocalProvider]:
        """The local store; without ``create``, a missing database is an error, not a new file."""
        path = self.database.path
        if not create and not path.exists():
            raise NotATapesDatabaseError(
                f"no database at {path} ({self.database.reason})",
                hint="record a session with `tapes start`, import one with "
                "`tapes session import`, or choose a file with --db",
            )
        provider = LocalProvider(path, create=create)
        try:
            yield provider
        finally:
            provider.close()
