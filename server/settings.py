"""Server settings: one table (``OPTIONS``) from which the command line, ``--help``, the
environment and docs/server.md all read, validated once at start with one clear line per error.

Each setting is a ``tapes-server serve`` flag whose default is its ``TAPES_SERVER_*`` variable,
whose default is the one below; a flag given on the command line wins over the variable.

| flag | variable | default |
|---|---|---|
| ``--database-url`` | ``TAPES_SERVER_DATABASE_URL`` | SQLite in the user data directory |
| ``--host`` / ``--port`` | ``TAPES_SERVER_HOST`` / ``TAPES_SERVER_PORT`` | 127.0.0.1 / 8787 |
| ``--workers`` | ``TAPES_SERVER_WORKERS`` | 2 |
| ``--public-url`` | ``TAPES_SERVER_PUBLIC_URL`` | ``http://<host>:<port>`` |
| ``--access-ttl`` | ``TAPES_SERVER_ACCESS_TTL`` | 900 s |
| ``--refresh-ttl`` | ``TAPES_SERVER_REFRESH_TTL`` | 30 days |
| ``--max-body`` | ``TAPES_SERVER_MAX_BODY`` | 20 MiB |
| ``--auth-rate`` | ``TAPES_SERVER_AUTH_RATE`` | 30 per client address per minute |
| ``--trusted-proxies`` | ``TAPES_SERVER_TRUSTED_PROXIES`` | none |
| ``--plans`` | ``TAPES_SERVER_PLANS`` | ``off`` (no plan limits, no retention) |
| ``--pricing`` | ``TAPES_SERVER_PRICING`` | none (``genai-prices`` alone) |
| ``--github-client-id`` | ``TAPES_SERVER_GITHUB_CLIENT_ID`` | none (GitHub binding off) |
| ``--github-client-secret`` | ``TAPES_SERVER_GITHUB_CLIENT_SECRET`` | none |
| ``--github-url`` | ``TAPES_SERVER_GITHUB_URL`` | https://github.com |
| ``--github-api-url`` | ``TAPES_SERVER_GITHUB_API_URL`` | https://api.github.com |

``TAPES_SERVER_PUBLIC_URL`` is the URL clients use. Login signatures are bound to it, so that a
challenge cannot be relayed from another server; every process of one deployment must share it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from server.domain.usage.pricing import PricingFileError, load_overrides
from server.errors import SettingsError
from server.plans import PLANS_MODES, PlansMode

__all__ = ["OPTIONS", "Option", "Settings", "default_database_url", "sqlite_path"]


def default_database_url() -> str:
    data = Path(platformdirs.user_data_dir("tapes-server", appauthor=False))
    return f"sqlite:///{data / 'server.sqlite'}"


def sqlite_path(url: str) -> Path | None:
    """The SQLite file a database URL names, or None for another database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database).absolute()


def _whole(low: int, high: int) -> Callable[[str, str], int]:
    def parse(label: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{label}={raw!r} is not a whole number") from None
        if not low <= value <= high:
            raise SettingsError(f"{label}={value} is out of range ({low}..{high})")
        return value

    return parse


def normalize_database_url(url: str, label: str = "TAPES_SERVER_DATABASE_URL") -> str:
    """Check the URL and pick our drivers: pysqlite for SQLite, psycopg 3 for PostgreSQL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SettingsError(f"{label}={url!r} is not a database URL") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise SettingsError("the SQLite database must be a file (in-memory loses everything)")
        return parsed.set(drivername="sqlite+pysqlite").render_as_string(hide_password=False)
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise SettingsError(
        f"{label}: unsupported database {backend!r}: use sqlite:/// or postgresql://"
    )


def _host(label: str, text: str) -> str:
    if not text or any(c.isspace() or c in "/[]" for c in text):
        raise SettingsError(f"{label}={text!r} is not a host name or address")
    return text


def _public_url(label: str, text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise SettingsError(f"{label}={text!r} is not an http(s) base URL")
    return text.rstrip("/")


def _addresses(label: str, raw: str) -> frozenset[str]:
    """IP addresses, comma-separated."""
    found = set()
    for part in filter(None, (p.strip() for p in raw.split(","))):
        try:
            found.add(str(ipaddress.ip_address(part)))
        except ValueError:
            raise SettingsError(f"{label}: {part!r} is not an IP address") from None
    return frozenset(found)


def _plans(label: str, text: str) -> PlansMode:
    for mode in PLANS_MODES:
        if text == mode:
            return mode
    raise SettingsError(f"{label}={text!r} is not one of {', '.join(PLANS_MODES)}")


def _pricing(label: str, path: str) -> str:
    """A price-override file in Go tapes' ``--pricing`` shape, read once now to check it."""
    try:
        load_overrides(path)
    except PricingFileError as exc:
        raise SettingsError(f"{label}: {exc}") from None
    return path


def _token(label: str, text: str) -> str:
    if not 1 <= len(text) <= 200 or any(not c.isprintable() or c.isspace() for c in text):
        raise SettingsError(f"{label}: not a GitHub client id or secret")
    return text


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its ``Settings`` field, flag, variable, default as written, and help."""

    field: str
    flag: str
    env: str
    default: str
    help: str
    parse: Callable[[str, str], object]
    metavar: str


OPTIONS: tuple[Option, ...] = (
    Option(
        "database_url", "--database-url", "TAPES_SERVER_DATABASE_URL",
        "server.sqlite in the user data directory "
        "(on Linux $XDG_DATA_HOME/tapes-server, by default ~/.local/share/tapes-server)",
        "sqlite:///PATH (a file) or postgresql://USER:PASSWORD@HOST:PORT/DB",
        lambda label, raw: normalize_database_url(raw, label), "URL",
    ),
    Option(
        "host", "--host", "TAPES_SERVER_HOST", "127.0.0.1",
        "address to listen on; 0.0.0.0 listens on every interface (in a container)", _host,
        "HOST",
    ),
    Option(
        "port", "--port", "TAPES_SERVER_PORT", "8787", "TCP port (1..65535)", _whole(1, 65535),
        "PORT",
    ),
    Option(
        "workers", "--workers", "TAPES_SERVER_WORKERS", "2",
        "worker processes (1..64); they share the database, nothing else", _whole(1, 64), "N",
    ),
    Option(
        "public_url", "--public-url", "TAPES_SERVER_PUBLIC_URL", "http://HOST:PORT",
        "the URL clients use (behind a proxy: the proxy's); logins are bound to it", _public_url,
        "URL",
    ),
    Option(
        "access_ttl", "--access-ttl", "TAPES_SERVER_ACCESS_TTL", "900",
        "seconds an access token lives (30..86400)", _whole(30, 86400), "SECONDS",
    ),
    Option(
        "refresh_ttl", "--refresh-ttl", "TAPES_SERVER_REFRESH_TTL", str(30 * 24 * 3600),
        "seconds a refresh token lives, 30 days (300..31536000)", _whole(300, 365 * 86400),
        "SECONDS",
    ),
    Option(
        "max_body", "--max-body", "TAPES_SERVER_MAX_BODY", str(20 * 1024 * 1024),
        "largest request body in bytes, 20 MiB (1024..1073741824)", _whole(1024, 1 << 30),
        "BYTES",
    ),
    Option(
        "auth_rate_per_minute", "--auth-rate", "TAPES_SERVER_AUTH_RATE", "30",
        "login requests per client address per minute (1..100000)", _whole(1, 100_000), "N",
    ),
    Option(
        "trusted_proxies", "--trusted-proxies", "TAPES_SERVER_TRUSTED_PROXIES", "none",
        "IP addresses of reverse proxies, comma-separated, whose X-Forwarded-For names the "
        "client (for the login rate limit)", _addresses, "IP,...",
    ),
    Option(
        "db_connections", "--db-connections", "TAPES_SERVER_DB_CONNECTIONS", "20",
        "database connections per worker process (1..1000); requests beyond them wait their "
        "turn (on PostgreSQL keep workers x N under its max_connections)", _whole(1, 1000), "N",
    ),
    Option(
        "plans", "--plans", "TAPES_SERVER_PLANS", "off",
        "off: no plan limits and no retention (a self-hosted server); "
        "rfc: the RFC's free/pro/enterprise limits and retention", _plans, "off|rfc",
    ),
    Option(
        "pricing", "--pricing", "TAPES_SERVER_PRICING", "none",
        "a JSON file of prices per million tokens that override genai-prices, in Go tapes' "
        '--pricing shape: {"MODEL": {"input": 3, "output": 15, "cache_read": 0.3, '
        '"cache_write": 3.75}}', _pricing, "FILE",
    ),
    Option(
        "github_client_id", "--github-client-id", "TAPES_SERVER_GITHUB_CLIENT_ID", "none",
        "a GitHub OAuth app's client id: lets accounts bind a GitHub login (`tapes auth login "
        "--github`); unset, binding is off", _token, "ID",
    ),
    Option(
        "github_client_secret", "--github-client-secret", "TAPES_SERVER_GITHUB_CLIENT_SECRET",
        "none", "that app's client secret (prefer the variable: a flag shows in ps)", _token,
        "SECRET",
    ),
    Option(
        "github_url", "--github-url", "TAPES_SERVER_GITHUB_URL", "https://github.com",
        "GitHub's web base URL (its device-flow endpoints)", _public_url, "URL",
    ),
    Option(
        "github_api_url", "--github-api-url", "TAPES_SERVER_GITHUB_API_URL",
        "https://api.github.com", "GitHub's API base URL (its /user endpoint)", _public_url, "URL",
    ),
)  # fmt: skip
_BY_FIELD = {option.field: option for option in OPTIONS}


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
    db_connections: int = 20
    pricing: str = ""
    github_client_id: str = ""
    github_client_secret: str = ""
    github_url: str = "https://github.com"
    github_api_url: str = "https://api.github.com"

    @property
    def github(self) -> bool:
        """Whether accounts may bind a GitHub login here (both client id and secret set)."""
        return bool(self.github_client_id and self.github_client_secret)

    @property
    def audience(self) -> str:
        """What login signatures are bound to: the public URL, without a trailing slash."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @classmethod
    def load(
        cls, values: Mapping[str, str | None], labels: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings from raw text by field name; a missing or empty value takes the default.

        ``labels`` names where each value came from (``--port`` or ``TAPES_SERVER_PORT``, the
        default) for the error message."""
        labels = labels or {}
        parsed: dict[str, object] = {}
        for option in OPTIONS:
            raw = values.get(option.field)
            if raw:
                parsed[option.field] = option.parse(labels.get(option.field, option.env), raw)
        if "database_url" not in parsed:
            parsed["database_url"] = normalize_database_url(default_database_url())
        return cls(**parsed)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls.load({option.field: env.get(option.env) for option in OPTIONS})

    def to_env(self) -> dict[str, str]:
        """The ``TAPES_SERVER_*`` variables that load these settings again (for the workers)."""
        return {_BY_FIELD[f.name].env: _text(getattr(self, f.name)) for f in fields(self)}


def _text(value: object) -> str:
    return ",".join(sorted(value)) if isinstance(value, frozenset) else str(value)
