"""Server settings, from environment variables, validated once at start with clear errors.

| variable | default |
|---|---|
| ``TAPES_SERVER_DATABASE_URL`` | SQLite in the user data directory (platformdirs) |
| ``TAPES_SERVER_HOST`` / ``TAPES_SERVER_PORT`` | ``127.0.0.1`` / ``8787`` |
| ``TAPES_SERVER_WORKERS`` | 2 |
| ``TAPES_SERVER_PUBLIC_URL`` | ``http://<host>:<port>``; logins are bound to it (see below) |
| ``TAPES_SERVER_ACCESS_TTL`` / ``TAPES_SERVER_REFRESH_TTL`` | 900 s / 30 days |
| ``TAPES_SERVER_MAX_BODY`` | 20 MiB |
| ``TAPES_SERVER_AUTH_RATE`` | 30 auth requests per client address per minute |
| ``TAPES_SERVER_TRUSTED_PROXIES`` | none (proxy IPs whose ``X-Forwarded-For`` is believed) |
| ``TAPES_SERVER_PLANS`` | ``off``: no plan limits, no retention; ``rfc``: the RFC's tiers |

``TAPES_SERVER_PUBLIC_URL`` is the URL clients use. Login signatures are bound to it, so that a
challenge cannot be relayed from another server; every process of one deployment must share it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from server.errors import SettingsError
from server.plans import PLANS_MODES, PlansMode

__all__ = ["Settings", "default_database_url"]


def default_database_url() -> str:
    data = Path(platformdirs.user_data_dir("tapes-server", appauthor=False))
    return f"sqlite:///{data / 'server.sqlite'}"


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is out of range ({low}..{high})")
    return value


def _addresses(raw: str) -> frozenset[str]:
    """``TAPES_SERVER_TRUSTED_PROXIES``: IP addresses, comma-separated."""
    found = set()
    for part in filter(None, (p.strip() for p in raw.split(","))):
        try:
            found.add(str(ipaddress.ip_address(part)))
        except ValueError:
            raise SettingsError(
                f"TAPES_SERVER_TRUSTED_PROXIES: {part!r} is not an IP address"
            ) from None
    return frozenset(found)


def normalize_database_url(url: str) -> str:
    """Check the URL and pick our drivers: pysqlite for SQLite, psycopg 3 for PostgreSQL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SettingsError(f"TAPES_SERVER_DATABASE_URL={url!r} is not a database URL") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise SettingsError("the SQLite database must be a file (in-memory loses everything)")
        return parsed.set(drivername="sqlite+pysqlite").render_as_string(hide_password=False)
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise SettingsError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def _plans(text: str) -> PlansMode:
    for mode in PLANS_MODES:
        if text == mode:
            return mode
    raise SettingsError(f"TAPES_SERVER_PLANS={text!r} is not one of {', '.join(PLANS_MODES)}")


def _public_url(text: str) -> str:
    if not text:
        return ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise SettingsError(f"TAPES_SERVER_PUBLIC_URL={text!r} is not an http(s) base URL")
    return text.rstrip("/")


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    host: str = "127.0.0.1"
    port: int = 8787
    workers: int = 2
    access_ttl: int = 900
    refresh_ttl: int = 30 * 24 * 3600
    max_body: int = 20 * 1024 * 1024
    auth_rate_per_minute: int = 30
    public_url: str = ""
    trusted_proxies: frozenset[str] = frozenset()
    plans: PlansMode = "off"

    @property
    def audience(self) -> str:
        """What login signatures are bound to: the public URL, without a trailing slash."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            database_url=normalize_database_url(
                env.get("TAPES_SERVER_DATABASE_URL") or default_database_url()
            ),
            host=env.get("TAPES_SERVER_HOST") or "127.0.0.1",
            port=_int(env, "TAPES_SERVER_PORT", 8787, 1, 65535),
            workers=_int(env, "TAPES_SERVER_WORKERS", 2, 1, 64),
            access_ttl=_int(env, "TAPES_SERVER_ACCESS_TTL", 900, 30, 86400),
            refresh_ttl=_int(env, "TAPES_SERVER_REFRESH_TTL", 30 * 24 * 3600, 300, 365 * 86400),
            max_body=_int(env, "TAPES_SERVER_MAX_BODY", 20 * 1024 * 1024, 1024, 1 << 30),
            auth_rate_per_minute=_int(env, "TAPES_SERVER_AUTH_RATE", 30, 1, 100_000),
            public_url=_public_url(env.get("TAPES_SERVER_PUBLIC_URL") or ""),
            trusted_proxies=_addresses(env.get("TAPES_SERVER_TRUSTED_PROXIES") or ""),
            plans=_plans(env.get("TAPES_SERVER_PLANS") or "off"),
        )
