"""config.toml: the RFC's storage keys beside Go tapes' keys, validated, written back safely."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import tomlkit

from tapes_e2e.config import load_config, parse_duration, save_config, storage_table
from tapes_e2e.errors import ConfigError

GO_INIT = """version = 0

[storage]

[proxy]
  provider = "ollama"
  upstream = "http://localhost:11434"
  listen = ":8080"

[api]
  listen = ":8081"

[client]
  proxy_target = "http://localhost:8080"
  api_target = "http://localhost:8081"

[vector_store]
  provider = "sqlite"

[embedding]
  provider = "ollama"
  target = "http://localhost:11434"
  model = "embeddinggemma"
  dimensions = 768
"""


def write(dotdir: Path, text: str) -> None:
    dotdir.mkdir(exist_ok=True)
    (dotdir / "config.toml").write_text(text, encoding="utf-8")


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config.provider == "local"
    assert not config.exists
    assert config.cloud.sync_interval == 300
    assert config.cloud.sync_on_close is True


def test_go_tapes_init_file_loads(tmp_path: Path) -> None:
    write(tmp_path, GO_INIT)
    config = load_config(tmp_path)
    assert config.provider == "local"
    assert config.db_path is None


def test_rfc_hybrid_example_loads(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
[storage]
provider = "hybrid"
path = "~/.tapes/tapes.db"

[storage.cloud]
api_url = "https://api.tapes.dev"
api_key = "tapes_0123456789abcdefXYZ"
team_id = "team_abc123"
sync_interval = "5m"
sync_on_close = true
""",
    )
    config = load_config(tmp_path)
    assert config.provider == "hybrid"
    assert config.db_path == Path("~/.tapes/tapes.db")
    assert config.cloud.api_url == "https://api.tapes.dev"
    assert config.cloud.team_id == "team_abc123"
    assert config.cloud.sync_interval == 300
    assert config.missing_for("hybrid") == []


def test_rfc_cloud_example_with_keys_under_storage(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
[storage]
provider = "cloud"
api_url = "https://api.tapes.dev"

[storage.cloud]
team_id = "team_abc123"
auto_share = true
""",
    )
    config = load_config(tmp_path)
    assert config.cloud.api_url == "https://api.tapes.dev"
    assert config.cloud.auto_share is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[storage]\nprovider = "s3"', "storage.provider = 's3' is not valid: expected one of"),
        ("[storage]\nprovider = 3", "storage.provider = 3"),
        ('[storage.cloud]\napi_url = "ftp://x"', "storage.cloud.api_url = 'ftp://x'"),
        ('[storage.cloud]\nsync_interval = "soon"', "storage.cloud.sync_interval = 'soon'"),
        ('[storage.cloud]\nsync_interval = "1s"', "at least 5s"),
        ('[storage.cloud]\nauto_share = "yes"', "storage.cloud.auto_share = 'yes'"),
        ('[storage.cloud]\nteam_id = "a b"', "storage.cloud.team_id = 'a b'"),
        ('[storage.cloud]\napi_key = "sk-123"', "storage.cloud.api_key = 'sk-123'"),
        ("version = 1", "version = 1"),
        ("[embedding]\ndimensions = -3", "embedding.dimensions = -3"),
        ("[embedding]\ndimensions = true", "embedding.dimensions = True"),
        ('storage = "x"', "storage = 'x'"),
        ("[storage\n", "not valid TOML"),
    ],
)
def test_bad_values_name_key_value_and_what_is_allowed(
    tmp_path: Path, text: str, message: str
) -> None:
    write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert message in info.value.message


def test_writing_back_keeps_unknown_keys_comments_and_mode_0600(tmp_path: Path) -> None:
    write(tmp_path, "# mine\n" + GO_INIT + '\n[future]\nflag = "keep me"\n')
    config = load_config(tmp_path)

    def edit(doc: tomlkit.TOMLDocument) -> None:
        storage_table(doc)["provider"] = "hybrid"
        storage_table(doc, "cloud")["api_url"] = "https://sync.example"

    updated = save_config(config, edit)
    assert updated.provider == "hybrid"
    text = (tmp_path / "config.toml").read_text("utf-8")
    assert "# mine" in text
    assert 'flag = "keep me"' in text
    assert 'model = "embeddinggemma"' in text
    assert stat.S_IMODE((tmp_path / "config.toml").stat().st_mode) == 0o600
    assert load_config(tmp_path).cloud.api_url == "https://sync.example"


def test_an_invalid_edit_writes_nothing(tmp_path: Path) -> None:
    write(tmp_path, GO_INIT)
    before = (tmp_path / "config.toml").read_bytes()

    def edit(doc: tomlkit.TOMLDocument) -> None:
        storage_table(doc)["provider"] = "nowhere"

    with pytest.raises(ConfigError):
        save_config(load_config(tmp_path), edit)
    assert (tmp_path / "config.toml").read_bytes() == before
    assert not list(tmp_path.glob(".config.*"))


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1.5h", 5400), ("500ms", 0.5)]
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m", "5 m", "-5m", "5d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match=text or "^$"):
        parse_duration(text)
