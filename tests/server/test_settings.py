"""Settings: one table for flags, variables and defaults; errors name where a value came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.errors import SettingsError
from server.settings import OPTIONS, Settings, default_database_url, sqlite_path


def test_defaults_are_a_self_hosted_server_on_sqlite() -> None:
    settings = Settings.from_env({})
    assert settings.plans == "off"
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8787, 2)
    assert settings.database_url == default_database_url().replace("sqlite:", "sqlite+pysqlite:")
    assert sqlite_path(settings.database_url) == Path(default_database_url()[10:])


def test_every_setting_has_one_row_and_the_rows_load_every_field() -> None:
    fields = [option.field for option in OPTIONS]
    assert sorted(fields) == sorted(Settings.__dataclass_fields__)
    assert len({o.env for o in OPTIONS}) == len({o.flag for o in OPTIONS}) == len(OPTIONS)
    assert all(option.env.startswith("TAPES_SERVER_") for option in OPTIONS)


def test_to_env_loads_the_same_settings_again(tmp_path: Path) -> None:
    settings = Settings.load(
        {
            "database_url": f"sqlite:///{tmp_path / 's.sqlite'}",
            "host": "0.0.0.0",  # noqa: S104 - a container listens on every interface
            "port": "9000",
            "workers": "3",
            "public_url": "https://tapes.example.org/",
            "access_ttl": "60",
            "refresh_ttl": "3600",
            "max_body": "4096",
            "auth_rate_per_minute": "5",
            "trusted_proxies": "10.0.0.1, ::1",
            "plans": "rfc",
        }
    )
    assert settings.public_url == "https://tapes.example.org"
    assert settings.trusted_proxies == frozenset({"10.0.0.1", "::1"})
    assert Settings.from_env(settings.to_env()) == settings
    assert Settings.from_env(Settings.from_env({}).to_env()) == Settings.from_env({})


def test_an_error_names_the_flag_or_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^TAPES_SERVER_PLANS='on' is not one of off, rfc$"):
        Settings.from_env({"TAPES_SERVER_PLANS": "on"})
    with pytest.raises(SettingsError, match=r"^--workers=65 is out of range \(1..64\)$"):
        Settings.load({"workers": "65"}, {"workers": "--workers"})
    with pytest.raises(SettingsError, match="in-memory"):
        Settings.from_env({"TAPES_SERVER_DATABASE_URL": "sqlite://"})


def test_sqlite_path_is_none_for_postgresql() -> None:
    assert sqlite_path("postgresql+psycopg://u:p@db/tapes") is None
    assert sqlite_path("sqlite:///relative.sqlite") == Path("relative.sqlite").absolute()
