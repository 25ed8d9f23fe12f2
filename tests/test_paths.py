"""Where the .tapes directory and the database are, and why."""

from __future__ import annotations

from pathlib import Path

from tapes_e2e.paths import resolve_database, resolve_dotdir


def _db(tmp_path: Path, env: dict[str, str], **kwargs: object):  # type: ignore[no-untyped-def]
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(exist_ok=True)
    cwd.mkdir(exist_ok=True)
    dotdir = resolve_dotdir(kwargs.pop("config_dir", None), env, cwd, home)  # type: ignore[arg-type]
    return dotdir, resolve_database(
        explicit=kwargs.get("explicit"),  # type: ignore[arg-type]
        configured=kwargs.get("configured"),  # type: ignore[arg-type]
        configured_key="storage.path",
        dotdir=dotdir,
        env=env,
        cwd=cwd,
        home=home,
    )


def test_default_is_a_new_tapes_sqlite_in_home_dotdir(tmp_path: Path) -> None:
    dotdir, db = _db(tmp_path, {})
    assert dotdir.path == tmp_path / "home" / ".tapes"
    assert db.path == tmp_path / "home" / ".tapes" / "tapes.sqlite"
    assert db.reason.startswith("new tapes.sqlite")


def test_working_directory_dotdir_wins_over_home(tmp_path: Path) -> None:
    (tmp_path / "cwd" / ".tapes").mkdir(parents=True)
    (tmp_path / "home" / ".tapes").mkdir(parents=True)
    dotdir, _ = _db(tmp_path, {})
    assert dotdir.path == tmp_path / "cwd" / ".tapes"


def test_config_dir_and_tapes_home_override(tmp_path: Path) -> None:
    dotdir, db = _db(tmp_path, {"TAPES_HOME": str(tmp_path / "th")}, config_dir=tmp_path / "cd")
    assert dotdir.path == tmp_path / "cd"
    assert dotdir.reason == "--config-dir"
    dotdir, db = _db(tmp_path, {"TAPES_HOME": str(tmp_path / "th")})
    assert dotdir.path == tmp_path / "th"
    assert db.path == tmp_path / "th" / "tapes.sqlite"


def test_precedence_flag_env_config_dotdir_searchlist(tmp_path: Path) -> None:
    home_db = tmp_path / "home" / ".tapes" / "tapes.db"
    home_db.parent.mkdir(parents=True)
    home_db.write_bytes(b"")
    # Go's deck search list finds ~/.tapes/tapes.db when nothing else is set.
    _, db = _db(tmp_path, {})
    assert db.path == home_db
    assert "search list" in db.reason
    # The dot-directory's tapes.sqlite (what `tapes start` writes) wins over the search list.
    start_db = tmp_path / "home" / ".tapes" / "tapes.sqlite"
    start_db.write_bytes(b"")
    assert _db(tmp_path, {})[1].path == start_db
    # config.toml wins over both; relative paths are relative to the dot-directory.
    _, db = _db(tmp_path, {}, configured=Path("sub/x.db"))
    assert db.path == tmp_path / "home" / ".tapes" / "sub" / "x.db"
    assert db.reason == "storage.path in config.toml"
    # then TAPES_DB, TAPES_SQLITE, and --db above all.
    env = {"TAPES_DB": "/d/db.sqlite"}
    assert _db(tmp_path, env, configured=Path("x.db"))[1].path == Path("/d/db.sqlite")
    env["TAPES_SQLITE"] = "/s/s.sqlite"
    assert _db(tmp_path, env)[1].path == Path("/s/s.sqlite")
    assert _db(tmp_path, env, explicit=Path("/e.db"))[1].reason == "--db"


def test_explicit_dotdir_does_not_pick_up_the_users_databases(tmp_path: Path) -> None:
    home_db = tmp_path / "home" / ".tapes" / "tapes.db"
    home_db.parent.mkdir(parents=True)
    home_db.write_bytes(b"")
    _, db = _db(tmp_path, {}, config_dir=tmp_path / "isolated")
    assert db.path == tmp_path / "isolated" / "tapes.sqlite"
