"""``tapes keys``: a second machine from a recovery kit, a new passphrase, and the errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer

import keymgmt
from keymgmt import _oskeyring
from tapes_e2e.cli import auth
from tests.client.conftest import Tapes
from tests.client.test_sync_round_trip import hashes, record
from tests.server.conftest import AUDIENCE


def _fingerprint(tapes: Tapes, home: str) -> str:
    code, out, err = tapes(home, "keys", "show", "--json")
    assert code == 0, err
    shown: dict[str, Any] = json.loads(out)
    return str(shown["fingerprint"])


def test_a_second_machine_from_a_recovery_kit_reads_what_the_first_synced(
    tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tapes("laptop", "auth", "login", "--server", AUDIENCE, "--handle", "alice")[0] == 0
    recorded = record(tmp_path / "laptop")
    assert tapes("laptop", "storage", "sync")[0] == 0
    kit = tmp_path / "kit.txt"
    monkeypatch.setenv("TAPES_NEW_PASSPHRASE", "kit passphrase on paper")
    code, _, err = tapes("laptop", "keys", "export", "--recovery-kit", "-o", str(kit))
    assert code == 0, err
    assert oct(kit.stat().st_mode & 0o777) == "0o600"
    text = kit.read_text("utf-8")
    assert text.startswith(keymgmt.KIT_BEGIN)
    assert _fingerprint(tapes, "laptop") in text
    # never over a file
    code, _, err = tapes("laptop", "keys", "export", "--recovery-kit", "-o", str(kit))
    assert code == 1
    assert "never written over a file" in err
    assert kit.read_text("utf-8") == text

    # The desktop: the kit and its passphrase, nothing else.
    monkeypatch.setenv("TAPES_PASSPHRASE", "kit passphrase on paper")
    code, out, err = tapes("desktop", "keys", "import", str(kit))
    assert code == 0, err
    assert _fingerprint(tapes, "desktop") == _fingerprint(tapes, "laptop")
    assert oct((tmp_path / "desktop" / "identity.key").stat().st_mode & 0o777) == "0o600"
    assert tapes("desktop", "auth", "login", "--server", AUDIENCE)[0] == 0  # the same account
    code, out, err = tapes("desktop", "storage", "sync", "--json")
    assert code == 0, err
    assert json.loads(out)["pulled"] == 5
    assert hashes(tmp_path / "desktop") == recorded
    # importing the same identity again changes nothing
    code, _, err = tapes("desktop", "keys", "import", str(kit))
    assert code == 0
    assert "already holds" in err


def test_a_wrong_passphrase_or_a_damaged_kit_writes_no_key(
    tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tapes("laptop", "auth", "login", "--server", AUDIENCE, "--handle", "alice")[0] == 0
    kit = tmp_path / "kit.txt"
    monkeypatch.setenv("TAPES_NEW_PASSPHRASE", "kit passphrase on paper")
    assert tapes("laptop", "keys", "export", "--recovery-kit", "-o", str(kit))[0] == 0
    monkeypatch.setenv("TAPES_PASSPHRASE", "not the kit's passphrase")
    code, _, err = tapes("desktop", "keys", "import", str(kit))
    assert code == 1
    assert err.startswith("tapes: error: ")
    assert len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "desktop" / "identity.key").exists()

    monkeypatch.setenv("TAPES_PASSPHRASE", "kit passphrase on paper")
    lines = kit.read_text("utf-8").splitlines()
    lines[3] = lines[3][:10] + ("A" if lines[3][10] != "A" else "B") + lines[3][11:]
    damaged = tmp_path / "damaged.txt"
    damaged.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, _, err = tapes("desktop", "keys", "import", str(damaged))
    assert code == 1
    assert err.startswith("tapes: error: ")
    assert not (tmp_path / "desktop" / "identity.key").exists()

    code, _, err = tapes("desktop", "keys", "import", str(tmp_path / "missing.txt"))
    assert code == 1
    assert "cannot read" in err


def test_passwd_reseals_the_same_key_under_a_new_passphrase(
    tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tapes("laptop", "auth", "login", "--server", AUDIENCE, "--handle", "alice")[0] == 0
    before = _fingerprint(tapes, "laptop")
    key = tmp_path / "laptop" / "identity.key"
    old_bytes = key.read_bytes()
    monkeypatch.setenv("TAPES_NEW_PASSPHRASE", "short")
    code, _, err = tapes("laptop", "keys", "passwd")
    assert code == 1
    assert "too short" in err
    assert key.read_bytes() == old_bytes
    monkeypatch.setenv("TAPES_NEW_PASSPHRASE", "a brand new passphrase")
    assert tapes("laptop", "keys", "passwd")[0] == 0
    assert _fingerprint(tapes, "laptop") == before
    with pytest.raises(keymgmt.UnlockError):
        keymgmt.read_key_file(key, "correct horse battery", floor=FAST_FLOOR)
    assert keymgmt.read_key_file(key, "a brand new passphrase", floor=FAST_FLOOR).fingerprint == (
        before
    )
    monkeypatch.setenv("TAPES_PASSPHRASE", "a brand new passphrase")
    assert tapes("laptop", "auth", "login")[0] == 0


def test_show_without_a_key_says_how_to_get_one(tapes: Tapes) -> None:
    code, _, err = tapes("empty", "keys", "show")
    assert code == 1
    assert "no identity key at" in err
    assert "tapes keys import" in err


FAST_FLOOR = keymgmt.KdfParams(time_cost=1, memory_kib=8 * 1024, lanes=1)


def test_login_on_a_machine_without_a_key_offers_to_import_one(
    tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a terminal, the first login asks whether to create an identity or import one; the
    answer "import" takes a kit, and the machine logs in to the existing account."""
    assert tapes("laptop", "auth", "login", "--server", AUDIENCE, "--handle", "alice")[0] == 0
    kit = tmp_path / "kit.txt"
    monkeypatch.setenv("TAPES_NEW_PASSPHRASE", "kit passphrase on paper")
    assert tapes("laptop", "keys", "export", "--recovery-kit", "-o", str(kit))[0] == 0
    monkeypatch.delenv("TAPES_PASSPHRASE")
    answers = iter(
        ["import", str(kit), "kit passphrase on paper", "desk passphrase", "desk passphrase"]
    )
    monkeypatch.setattr(auth, "_interactive", lambda: True)
    monkeypatch.setattr(typer, "prompt", lambda *_a, **_k: next(answers))
    code, out, err = tapes("desktop", "auth", "login", "--server", AUDIENCE)
    assert code == 0, err
    assert "logged in to http://testserver.local as alice" in out
    assert f"imported identity {_fingerprint_of(tmp_path / 'laptop')}" in err
    assert next(answers, None) is None
    assert keymgmt.read_key_file(
        tmp_path / "desktop" / "identity.key", "desk passphrase", floor=FAST_FLOOR
    ).fingerprint == _fingerprint_of(tmp_path / "laptop")


def _fingerprint_of(home: Path) -> str:
    return keymgmt.read_public_identity(home / "identity.key").fingerprint


class _MemoryKeyring:
    """An OS keyring stand-in with the ``keyring`` package's three calls."""

    def __init__(self) -> None:
        self.saved: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.saved.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.saved[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.saved[(service, username)]


def test_remember_unlocks_without_a_passphrase_until_forget(
    tapes: Tapes, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _MemoryKeyring()
    monkeypatch.setattr(_oskeyring, "_default_backend", lambda: backend)
    assert tapes("laptop", "auth", "login", "--server", AUDIENCE, "--handle", "alice")[0] == 0
    assert json.loads(tapes("laptop", "keys", "show", "--json")[1])["unlock"] == "passphrase"
    assert tapes("laptop", "keys", "remember")[0] == 0
    assert json.loads(tapes("laptop", "keys", "show", "--json")[1])["unlock"] == "OS keyring"
    monkeypatch.delenv("TAPES_PASSPHRASE")
    assert tapes("laptop", "auth", "login")[0] == 0  # no passphrase needed now
    code, _, err = tapes("laptop", "keys", "forget")
    assert code == 0
    assert "removed from the OS keyring" in err
    assert backend.saved == {}
    code, _, err = tapes("laptop", "auth", "login")
    assert code == 1
    assert "no passphrase was given" in err


def test_remember_without_a_usable_keyring_is_one_error(
    tapes: Tapes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_oskeyring, "_default_backend", lambda: None)
    assert tapes("laptop", "auth", "login", "--server", AUDIENCE, "--handle", "alice")[0] == 0
    code, _, err = tapes("laptop", "keys", "remember")
    assert code == 1
    assert err.startswith("tapes: error: no usable OS keyring on this machine")


def test_each_machine_is_a_device_and_a_revoked_one_is_refused_at_once(
    tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stolen laptop: the desktop (set up from the kit) lists both logins and ends the
    laptop's; the laptop's next command is refused, and the desktop carries on."""
    login = ("auth", "login", "--server", AUDIENCE)
    assert tapes("laptop", *login, "--handle", "alice", "--device", "laptop [/b]")[0] == 0
    kit = tmp_path / "kit.txt"
    monkeypatch.setenv("TAPES_NEW_PASSPHRASE", "correct horse battery")  # both machines' one
    assert tapes("laptop", "keys", "export", "--recovery-kit", "-o", str(kit))[0] == 0
    assert tapes("desktop", "keys", "import", str(kit))[0] == 0
    assert tapes("desktop", *login, "--device", "desktop")[0] == 0
    code, out, err = tapes("desktop", "auth", "devices", "--json")
    assert code == 0, err
    devices = {d["name"]: d for d in json.loads(out)}
    assert set(devices) == {"laptop [/b]", "desktop"}
    assert (devices["desktop"]["current"], devices["laptop [/b]"]["current"]) == (True, False)
    code, out, err = tapes("desktop", "auth", "devices")
    assert code == 0, err
    assert "laptop [/b]" in out  # the name as typed, never read as markup
    laptop = devices["laptop [/b]"]["device_id"]
    code, _, err = tapes("desktop", "auth", "devices", "revoke", laptop)
    assert code == 0, err
    assert f"revoked {laptop}" in err
    code, _, err = tapes("laptop", "storage", "sync")
    assert code == 1
    assert err.startswith("tapes: error: your login expired or was revoked")
    assert "run `tapes auth login`" in err
    assert tapes("desktop", "storage", "sync")[0] == 0
    code, _, err = tapes("desktop", "auth", "devices", "revoke", laptop)
    assert code == 1
    assert "no such device" in err
    # revoking this machine's own login ends it here too
    own = devices["desktop"]["device_id"]
    code, _, err = tapes("desktop", "auth", "devices", "revoke", own)
    assert code == 0, err
    assert "this machine's login" in err
    assert not (tmp_path / "desktop" / "session.json").exists()


def test_a_device_name_with_control_characters_is_refused_first(
    tapes: Tapes, tmp_path: Path
) -> None:
    code, _, err = tapes("a", "auth", "login", "--server", AUDIENCE, "--handle", "al",
                         "--device", "bad\x1b[2Jname")  # fmt: skip
    assert code == 2  # a usage error, before any identity or login is made
    assert "--device" in err
    assert "not a printable name" in err
    assert not (tmp_path / "a" / "identity.key").exists()


def test_a_second_machine_from_a_paper_key(tapes: Tapes, tmp_path: Path) -> None:
    """The paper key is the identity itself: no kit passphrase; the new machine's key file gets
    its own passphrase, and the account and vault follow."""
    assert tapes("laptop", "auth", "login", "--server", AUDIENCE, "--handle", "alice")[0] == 0
    paper = tmp_path / "paper.txt"
    code, _, err = tapes("laptop", "keys", "export", "--paper-key", "-o", str(paper))
    assert code == 0, err
    assert "IS your identity" in err
    assert oct(paper.stat().st_mode & 0o777) == "0o600"
    text = paper.read_text("utf-8")
    assert text.startswith(keymgmt.PAPER_KEY_PREFIX)
    assert _fingerprint(tapes, "laptop") in text
    # typed back by hand, in lower case with a typo: refused, nothing written
    lines = text.lower().splitlines()
    lines[2] = ("b" if lines[2][0] != "b" else "c") + lines[2][1:]
    typo = "\n".join(lines)
    (tmp_path / "typo.txt").write_text(typo, encoding="utf-8")
    code, _, err = tapes("desktop", "keys", "import", str(tmp_path / "typo.txt"))
    assert code == 1
    assert "mistyped" in err
    assert "group by group" in err
    assert not (tmp_path / "desktop" / "identity.key").exists()
    code, _, err = tapes("desktop", "keys", "import", str(paper))
    assert code == 0, err
    assert _fingerprint(tapes, "desktop") == _fingerprint(tapes, "laptop")
    assert tapes("desktop", "auth", "login", "--server", AUDIENCE)[0] == 0  # the same account
    for flags in ((), ("--paper-key", "--recovery-kit")):
        assert tapes("laptop", "keys", "export", *flags)[0] == 2  # say which, and only one
