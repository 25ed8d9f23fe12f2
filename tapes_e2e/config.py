"""``config.toml``: Go tapes' keys and the RFC's ``[storage]`` keys, in one file.

The file is Go tapes' own (``pkg/config``); we read and write the same file. We validate the keys
we know, keep every key we do not know when writing back (tomlkit keeps comments and order too),
and write atomically with mode 0600.

Storage keys (RFC, "Storage Provider Interface" and "Config")::

    [storage]
    provider = "local"            # local | cloud | hybrid
    path = "~/.tapes/tapes.db"    # optional; Go's own key storage.sqlite_path also works

    [storage.cloud]
    api_url = "https://api.tapes.dev"
    api_key = "tapes_..."
    team_id = "team_abc123"
    auto_share = true
    sync_interval = "5m"          # Go duration: 30s, 5m, 1h30m
    sync_on_close = true

Not in the RFC: ``air_gapped = true`` under ``[storage]`` makes every command that would reach a
server refuse before it opens a socket (``TAPES_AIR_GAPPED=1`` does the same for one shell).

The RFC's cloud example also puts ``api_url``/``api_key`` directly under ``[storage]``; that is
accepted, and ``[storage.cloud]`` wins where both are set.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, cast
from urllib.parse import urlsplit

import msgspec
import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import Table

from tapes_e2e.errors import ConfigError

__all__ = [
    "PROVIDERS",
    "CloudSettings",
    "Config",
    "load_config",
    "parse_duration",
    "save_config",
    "write_private",
]

CONFIG_FILE = "config.toml"
PROVIDERS = ("local", "cloud", "hybrid")
ProviderName = Literal["local", "cloud", "hybrid"]
MIN_SYNC_INTERVAL = 5.0
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TEAM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_API_KEY = re.compile(r"tapes_[A-Za-z0-9_-]{16,200}")


@dataclass(frozen=True, slots=True)
class CloudSettings:
    api_url: str | None = None
    api_key: str | None = None
    team_id: str | None = None
    auto_share: bool = False
    sync_interval: float = 300.0
    sync_on_close: bool = True


@dataclass(frozen=True)
class Config:
    """The validated settings, and the parsed document they came from (for writing back)."""

    path: Path
    exists: bool
    provider: ProviderName
    db_path: Path | None
    db_path_key: str
    cloud: CloudSettings
    document: tomlkit.TOMLDocument
    air_gapped: bool = False

    def missing_for(self, provider: str) -> list[str]:
        """The settings ``provider`` needs that are not set, as config keys."""
        if provider == "local":
            return []
        missing = []
        if not self.cloud.api_url:
            missing.append("storage.cloud.api_url")
        return missing


def parse_duration(text: str) -> float:
    """A Go duration string (``"5m"``, ``"1h30m"``, ``"45s"``) in seconds."""
    if not text or _DURATION_PART.sub("", text) != "":
        raise ValueError(text)
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


def _bad(key: str, value: object, allowed: str) -> ConfigError:
    return ConfigError(f"{key} = {value!r} is not valid: expected {allowed}")


def _get(table: Mapping[str, Any] | None, key: str) -> Any:
    return None if table is None else table.get(key)


def _typed(key: str, value: Any, kind: type, allowed: str) -> Any:
    if value is None:
        return None
    plain = value.unwrap() if hasattr(value, "unwrap") else value
    if isinstance(plain, bool) is not (kind is bool) or not isinstance(plain, kind):
        raise _bad(key, plain, allowed)
    return plain


def _url(key: str, value: Any) -> str | None:
    text = _typed(key, value, str, "an http:// or https:// URL")
    if text is None:
        return None
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _bad(key, text, "an http:// or https:// URL")
    return cast(str, text.rstrip("/"))


def _pattern(key: str, value: Any, pattern: re.Pattern[str], allowed: str) -> str | None:
    text = _typed(key, value, str, allowed)
    if text is not None and not pattern.fullmatch(text):
        raise _bad(key, text, allowed)
    return cast("str | None", text)


# Go tapes' own keys, checked so that a typo is caught here rather than by Go later.
_GO_KEYS: dict[str, tuple[type, str]] = {
    "storage.sqlite_path": (str, "a file path"),
    "proxy.provider": (str, "a provider name"),
    "proxy.upstream": (str, "a URL"),
    "proxy.listen": (str, "an address such as :8080"),
    "proxy.project": (str, "a project name"),
    "api.listen": (str, "an address such as :8081"),
    "client.proxy_target": (str, "a URL"),
    "client.api_target": (str, "a URL"),
    "vector_store.provider": (str, '"sqlite" or "chroma"'),
    "vector_store.target": (str, "a path or URL"),
    "embedding.provider": (str, "a provider name"),
    "embedding.target": (str, "a URL"),
    "embedding.model": (str, "a model name"),
    "embedding.dimensions": (int, "a whole number ≥ 0"),
}


def _check_go_keys(doc: Mapping[str, Any]) -> None:
    version = doc.get("version")
    if version is not None and (_typed("version", version, int, "0") != 0):
        raise _bad("version", version, "0 (the only version Go tapes reads)")
    for dotted, (kind, allowed) in _GO_KEYS.items():
        section, key = dotted.split(".")
        table = doc.get(section)
        if table is not None and not isinstance(table, Mapping):
            raise _bad(section, table, "a table")
        value = _typed(dotted, _get(table, key), kind, allowed)
        if kind is int and value is not None and value < 0:
            raise _bad(dotted, value, allowed)


def _cloud(storage: Mapping[str, Any] | None) -> CloudSettings:
    cloud = _get(storage, "cloud")
    if cloud is not None and not isinstance(cloud, Mapping):
        raise _bad("storage.cloud", cloud, "a table")

    def pick(key: str) -> tuple[str, Any]:
        value = _get(cloud, key)
        if value is not None:
            return f"storage.cloud.{key}", value
        return f"storage.{key}", _get(storage, key)

    interval_key, interval = pick("sync_interval")
    seconds = 300.0
    if interval is not None:
        text = _typed(interval_key, interval, str, 'a duration such as "30s", "5m" or "1h"')
        try:
            seconds = parse_duration(text)
        except ValueError:
            raise _bad(interval_key, text, 'a duration such as "30s", "5m" or "1h"') from None
        if seconds < MIN_SYNC_INTERVAL:
            raise _bad(interval_key, text, f"at least {MIN_SYNC_INTERVAL:g}s")
    api_key_name, api_key = pick("api_key")
    team_key, team = pick("team_id")
    auto_key, auto = pick("auto_share")
    close_key, close = pick("sync_on_close")
    return CloudSettings(
        api_url=_url(*pick("api_url")),
        api_key=_pattern(api_key_name, api_key, _API_KEY, "an API key starting with tapes_"),
        team_id=_pattern(team_key, team, _TEAM_ID, "letters, digits, _ or - (at most 64)"),
        auto_share=bool(_typed(auto_key, auto, bool, "true or false")),
        sync_interval=seconds,
        sync_on_close=_typed(close_key, close, bool, "true or false") is not False,
    )


def load_config(dotdir: Path) -> Config:
    """Read and validate ``<dotdir>/config.toml``; a missing file gives the defaults."""
    path = dotdir / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
        exists = True
    except FileNotFoundError:
        text, exists = "", False
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    try:
        doc = tomlkit.parse(text)
    except TOMLKitError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    return _validate(doc, path, exists)


def _validate(doc: tomlkit.TOMLDocument, path: Path, exists: bool) -> Config:
    _check_go_keys(doc)
    storage = doc.get("storage")
    if storage is not None and not isinstance(storage, Mapping):
        raise _bad("storage", storage, "a table")
    provider = _typed("storage.provider", _get(storage, "provider"), str, "local, cloud or hybrid")
    if provider is not None and provider not in PROVIDERS:
        raise _bad("storage.provider", provider, "one of local, cloud, hybrid")
    db_key, db_value = "storage.path", _typed("storage.path", _get(storage, "path"), str, "a path")
    if db_value is None:
        db_key, db_value = "storage.sqlite_path", _get(storage, "sqlite_path")
    if db_value is not None and not str(db_value).strip():
        raise _bad(db_key, db_value, "a non-empty file path")
    return Config(
        path=path,
        exists=exists,
        provider=cast(ProviderName, provider or "local"),
        db_path=Path(str(db_value)) if db_value is not None else None,
        db_path_key=db_key,
        cloud=_cloud(storage),
        air_gapped=bool(
            _typed("storage.air_gapped", _get(storage, "air_gapped"), bool, "true or false")
        ),
        document=doc,
    )


def save_config(config: Config, edit: Callable[[tomlkit.TOMLDocument], None]) -> Config:
    """Apply ``edit`` to a copy of the document, validate the result, and write it atomically.

    Unknown keys, comments and order survive. Nothing is written if the result is invalid.
    """
    doc = tomlkit.parse(tomlkit.dumps(config.document))
    if "version" not in doc:
        doc["version"] = 0
    edit(doc)
    updated = _validate(doc, config.path, exists=True)
    write_private(config.path, tomlkit.dumps(doc))
    return updated


def storage_table(doc: tomlkit.TOMLDocument, *names: str) -> Table:
    """``[storage]`` (or ``[storage.<names>]``) of ``doc``, created if missing."""
    table: Any = doc
    for name in ("storage", *names):
        if name not in table:
            table[name] = tomlkit.table()
        table = table[name]
    return cast(Table, table)


class _Versioned(Protocol):
    version: int


_T = TypeVar("_T", bound=_Versioned)


def read_private(path: Path, decoder: msgspec.json.Decoder[_T], empty: _T, holds: str) -> _T:
    """Read one of our private JSON files (``session.json``'s siblings): ``empty`` when there
    is none; a malformed file or an unknown version is an error naming what it ``holds`` (such
    a file is never silently replaced)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return empty
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = decoder.decode(raw)
    except msgspec.DecodeError:
        raise ConfigError(
            f"{path} is malformed", hint=f"restore it from a backup: it holds {holds}"
        ) from None
    if data.version != 1:
        raise ConfigError(f"{path} has version {data.version}, which this tapes cannot read")
    return data


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file, fsync, rename) with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).chmod(0o600)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
