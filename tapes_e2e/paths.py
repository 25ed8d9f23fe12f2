"""Where the ``.tapes`` directory and the database are, resolved as Go tapes resolves them.

The dot-directory (Go's ``pkg/dotdir``): ``--config-dir``, else ``TAPES_HOME`` (ours), else
``./.tapes`` if it exists, else ``~/.tapes`` if it exists, else ``~/.tapes`` to be created.

The database, first match wins:

1. ``--db`` on the command line;
2. ``TAPES_SQLITE``, then ``TAPES_DB`` (Go's ``deck``/``seed`` variables);
3. ``[storage] path`` (the RFC) or ``storage.sqlite_path`` (Go) in config.toml;
4. ``<dotdir>/tapes.sqlite`` if it exists: the file ``tapes start``/``serve`` record into;
5. only when the dot-directory was not chosen explicitly: the first existing file of Go's
   ``deck`` search list (``$XDG_DATA_HOME/tapes/tapes.db`` … ``./.tapes/tapes.sqlite``);
6. otherwise a new ``<dotdir>/tapes.sqlite``, so that a later ``tapes start`` records into the
   same file we sync.

Each answer carries the reason, which ``tapes storage status`` prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Location", "resolve_database", "resolve_dotdir"]

DB_FILE = "tapes.sqlite"


@dataclass(frozen=True, slots=True)
class Location:
    path: Path
    reason: str
    explicit: bool = False


def resolve_dotdir(
    config_dir: Path | None, env: Mapping[str, str], cwd: Path, home: Path
) -> Location:
    if config_dir is not None:
        return Location(_absolute(config_dir, cwd), "--config-dir", explicit=True)
    if env.get("TAPES_HOME"):
        return Location(_absolute(Path(env["TAPES_HOME"]), cwd), "TAPES_HOME", explicit=True)
    local = cwd / ".tapes"
    if local.is_dir():
        return Location(local, "./.tapes exists in the working directory")
    user = home / ".tapes"
    if user.is_dir():
        return Location(user, "~/.tapes exists")
    return Location(user, "default (~/.tapes, created when first needed)")


def _deck_search_list(env: Mapping[str, str], cwd: Path, home: Path) -> list[Path]:
    candidates = []
    xdg = env.get("XDG_DATA_HOME")
    if xdg:
        candidates += [Path(xdg) / "tapes" / "tapes.db", Path(xdg) / "tapes" / "tapes.sqlite"]
    candidates += [
        home / ".tapes" / "tapes.db",
        home / ".tapes" / "tapes.sqlite",
        cwd / "tapes.db",
        cwd / "tapes.sqlite",
        cwd / ".tapes" / "tapes.db",
        cwd / ".tapes" / "tapes.sqlite",
    ]
    return candidates


def resolve_database(
    *,
    explicit: Path | None,
    configured: Path | None,
    configured_key: str,
    dotdir: Location,
    env: Mapping[str, str],
    cwd: Path,
    home: Path,
) -> Location:
    if explicit is not None:
        return Location(_absolute(explicit, cwd), "--db", explicit=True)
    for var in ("TAPES_SQLITE", "TAPES_DB"):
        if env.get(var):
            return Location(_absolute(Path(env[var]), cwd), f"${var}", explicit=True)
    if configured is not None:
        path = _absolute(configured.expanduser(), dotdir.path)
        return Location(path, f"{configured_key} in config.toml", explicit=True)
    default = dotdir.path / DB_FILE
    if default.is_file():
        return Location(default, f"{DB_FILE} in the .tapes directory ({dotdir.reason})")
    if not dotdir.explicit:
        for candidate in _deck_search_list(env, cwd, home):
            if candidate.is_file():
                return Location(candidate, "first existing file of Go tapes' search list")
    return Location(default, f"new {DB_FILE} in the .tapes directory ({dotdir.reason})")


def _absolute(path: Path, base: Path) -> Path:
    return path if path.is_absolute() else (base / path)
