"""Key files at rest, the KDF floor, the OS keyring fallback and recovery kits."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from keymgmt import (
    DEFAULT_KDF,
    KDF_FLOOR,
    KdfParams,
    KdfParamsError,
    KeyFileError,
    KeyFileExistsError,
    UnlockError,
    _oskeyring,
    change_passphrase,
    export_recovery_kit,
    forget_in_os_keyring,
    generate_identity,
    import_recovery_kit,
    passphrase_from_env,
    read_key_file,
    read_public_identity,
    remember_in_os_keyring,
    unlock_identity,
    write_key_file,
)
from keymgmt._encoding import b64e
from keymgmt.identity import Identity
from keymgmt.keystore import KDF_CEILING, TEST_KDF

from .conftest import DetRng

PW = "correct horse battery staple"


@pytest.fixture
def ident() -> Identity:
    return generate_identity(rng=DetRng("keystore"))


@pytest.fixture
def key_file(tmp_path: Path, ident: Identity) -> Path:
    path = tmp_path / "keys" / "identity.json"
    write_key_file(path, ident, PW, params=TEST_KDF, floor=TEST_KDF, rng=DetRng("kf"))
    return path


class FakeBackend:
    def __init__(self) -> None:
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.store[(service, username)]


class BrokenBackend:
    def get_password(self, service: str, username: str) -> str | None:
        raise RuntimeError("dbus is down")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise RuntimeError("dbus is down")

    def delete_password(self, service: str, username: str) -> None:
        raise RuntimeError("dbus is down")


def test_round_trip_mode_0600_and_no_temp_files(key_file: Path, ident: Identity) -> None:
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in key_file.parent.iterdir()] == ["identity.json"]
    loaded = read_key_file(key_file, PW, floor=TEST_KDF)
    assert loaded.export_secret() == ident.export_secret()
    assert read_public_identity(key_file) == ident.public
    data = json.loads(key_file.read_text())
    assert data["kdf"]["algorithm"] == "argon2id"
    assert ident.export_secret().hex() not in key_file.read_text()


def test_default_parameters_round_trip(tmp_path: Path, ident: Identity) -> None:
    path = tmp_path / "id.json"
    write_key_file(path, ident, PW)
    data = json.loads(path.read_text())["kdf"]
    assert (data["time_cost"], data["memory_kib"], data["lanes"]) == (
        DEFAULT_KDF.time_cost,
        DEFAULT_KDF.memory_kib,
        DEFAULT_KDF.lanes,
    )
    assert DEFAULT_KDF.at_least(KDF_FLOOR)
    assert read_key_file(path, PW).fingerprint == ident.fingerprint


def test_wrong_passphrase_gives_one_clear_error_and_never_writes(key_file: Path) -> None:
    before = (key_file.read_bytes(), key_file.stat().st_mtime_ns)
    with pytest.raises(UnlockError, match="wrong passphrase") as info:
        read_key_file(key_file, "wrong", floor=TEST_KDF)
    assert info.value.hint
    assert "untouched" in info.value.hint
    with pytest.raises(UnlockError):
        change_passphrase(key_file, "wrong", "new", params=TEST_KDF, floor=TEST_KDF)
    assert (key_file.read_bytes(), key_file.stat().st_mtime_ns) == before


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda d: d.update(ciphertext=d["ciphertext"][:-2] + "AA"),
        lambda d: d.update(nonce="AAAA"),
        lambda d: d["public"].update(x25519="11" * 32),
        lambda d: d["kdf"].update(salt="AAAAAAAAAAAAAAAAAAAAAA"),
        lambda d: d.update(format="other"),
        lambda d: d.update(version=9),
        lambda d: d.pop("nonce"),
    ],
)
def test_corrupt_file_gives_the_same_error(key_file: Path, corrupt: object) -> None:
    data = json.loads(key_file.read_text())
    corrupt(data)  # type: ignore[operator]
    key_file.write_text(json.dumps(data))
    with pytest.raises(UnlockError):
        read_key_file(key_file, PW, floor=TEST_KDF)


def test_garbage_and_huge_files(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_bytes(b"\x00not json")
    with pytest.raises(UnlockError):
        read_key_file(path, PW)
    path.write_bytes(b" " * (70 * 1024))
    with pytest.raises(UnlockError, match="too large"):
        read_key_file(path, PW)
    with pytest.raises(KeyFileError, match="no key file"):
        read_key_file(tmp_path / "absent.json", PW)


def test_tampered_file_cannot_lower_kdf_parameters(
    key_file: Path, tmp_path: Path, ident: Identity
) -> None:
    """Attack class 12: parameters below the floor are refused before Argon2id runs."""
    with pytest.raises(KdfParamsError, match="below the minimum"):
        read_key_file(key_file, PW)  # test parameters against the real floor
    path = tmp_path / "strong.json"
    write_key_file(path, ident, PW, params=KdfParams(2, 64 * 1024, 1))
    data = json.loads(path.read_text())
    data["kdf"]["memory_kib"] = 8
    path.write_text(json.dumps(data))
    with pytest.raises(KdfParamsError):
        read_key_file(path, PW)


def test_raised_parameters_in_a_tampered_file_fail_to_unlock(key_file: Path) -> None:
    data = json.loads(key_file.read_text())
    data["kdf"]["time_cost"] = 2
    key_file.write_text(json.dumps(data))
    with pytest.raises(UnlockError):
        read_key_file(key_file, PW, floor=TEST_KDF)


def test_ceiling_and_algorithm(key_file: Path, ident: Identity, tmp_path: Path) -> None:
    data = json.loads(key_file.read_text())
    data["kdf"]["memory_kib"] = KDF_CEILING.memory_kib * 2
    key_file.write_text(json.dumps(data))
    with pytest.raises(KdfParamsError, match="above"):
        read_key_file(key_file, PW, floor=TEST_KDF)
    data["kdf"]["algorithm"] = "pbkdf2"
    key_file.write_text(json.dumps(data))
    with pytest.raises(KdfParamsError, match="pbkdf2"):
        read_key_file(key_file, PW, floor=TEST_KDF)
    with pytest.raises(KdfParamsError):
        write_key_file(tmp_path / "weak.json", ident, PW, params=TEST_KDF)
    assert not (tmp_path / "weak.json").exists()


def test_refuses_to_overwrite_and_empty_passphrase(key_file: Path, ident: Identity) -> None:
    before = key_file.read_bytes()
    with pytest.raises(KeyFileExistsError):
        write_key_file(key_file, ident, PW, params=TEST_KDF, floor=TEST_KDF)
    with pytest.raises(KeyFileError, match="empty"):
        write_key_file(key_file.with_name("x.json"), ident, "", params=TEST_KDF, floor=TEST_KDF)
    assert key_file.read_bytes() == before
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["identity.json"]


def test_write_failure_leaves_no_temp_file(
    tmp_path: Path, ident: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("keymgmt.keystore.os.fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        write_key_file(tmp_path / "d" / "k.json", ident, PW, params=TEST_KDF, floor=TEST_KDF)
    assert list((tmp_path / "d").iterdir()) == []


def test_change_passphrase_is_atomic_and_can_raise_parameters(
    key_file: Path, ident: Identity
) -> None:
    change_passphrase(key_file, PW, "new pw", params=KdfParams(1, 16, 1), floor=TEST_KDF)
    assert read_key_file(key_file, "new pw", floor=TEST_KDF).fingerprint == ident.fingerprint
    assert json.loads(key_file.read_text())["kdf"]["memory_kib"] == 16
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with pytest.raises(UnlockError):
        read_key_file(key_file, PW, floor=TEST_KDF)


def test_passphrase_from_env() -> None:
    assert passphrase_from_env({"TAPES_PASSPHRASE": "s3cret"}) == "s3cret"
    assert passphrase_from_env({"TAPES_PASSPHRASE": ""}) is None
    assert passphrase_from_env({}) is None
    assert passphrase_from_env() is None or isinstance(passphrase_from_env(), str)


def test_unlock_order_keyring_then_passphrase_then_env(key_file: Path, ident: Identity) -> None:
    backend = FakeBackend()
    with pytest.raises(UnlockError, match="no passphrase"):
        unlock_identity(key_file, environ={}, backend=backend, floor=TEST_KDF)
    env = {"TAPES_PASSPHRASE": PW}
    assert (
        unlock_identity(key_file, environ=env, backend=backend, floor=TEST_KDF).fingerprint
        == ident.fingerprint
    )
    assert unlock_identity(
        key_file, passphrase=PW, environ={}, use_os_keyring=False, floor=TEST_KDF
    )
    assert remember_in_os_keyring(ident, backend=backend)
    assert unlock_identity(key_file, environ={}, backend=backend).fingerprint == ident.fingerprint
    assert forget_in_os_keyring(ident.fingerprint, backend=backend)
    assert not forget_in_os_keyring(ident.fingerprint, backend=backend)


def test_os_keyring_entry_for_other_keys_is_ignored(key_file: Path, ident: Identity) -> None:
    backend = FakeBackend()
    other = generate_identity(rng=DetRng("other"))
    backend.set_password(_oskeyring.SERVICE, ident.fingerprint, b64e(other.export_secret()))
    with pytest.raises(UnlockError, match="no passphrase"):
        unlock_identity(key_file, environ={}, backend=backend, floor=TEST_KDF)
    backend.set_password(_oskeyring.SERVICE, ident.fingerprint, b64e(b"short"))
    with pytest.raises(UnlockError, match="no passphrase"):
        unlock_identity(key_file, environ={}, backend=backend, floor=TEST_KDF)


def test_os_keyring_degrades_gracefully(
    key_file: Path, ident: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = BrokenBackend()
    assert not remember_in_os_keyring(ident, backend=broken)
    assert _oskeyring.load_secret(ident.fingerprint, backend=broken) is None
    assert not forget_in_os_keyring(ident.fingerprint, backend=broken)
    assert unlock_identity(key_file, passphrase=PW, backend=broken, floor=TEST_KDF)
    monkeypatch.setitem(sys.modules, "keyring", None)  # package not installed
    assert not remember_in_os_keyring(ident)
    assert _oskeyring.load_secret(ident.fingerprint) is None
    assert not forget_in_os_keyring(ident.fingerprint)
    assert unlock_identity(key_file, passphrase=PW, floor=TEST_KDF).fingerprint == ident.fingerprint


def test_os_keyring_default_backend_is_used_when_available(
    monkeypatch: pytest.MonkeyPatch, ident: Identity
) -> None:
    import keyring

    backend = FakeBackend()
    monkeypatch.setattr(keyring, "get_keyring", lambda: backend)
    assert remember_in_os_keyring(ident)
    assert _oskeyring.load_secret(ident.fingerprint) == ident.export_secret()


def test_recovery_kit_round_trip(ident: Identity) -> None:
    kit = export_recovery_kit(ident, "kit pw", params=TEST_KDF, floor=TEST_KDF, rng=DetRng("kit"))
    assert kit.startswith("-----BEGIN TAPES RECOVERY KIT-----")
    assert ident.fingerprint in kit
    assert ident.export_secret().hex() not in kit
    restored = import_recovery_kit(kit, "kit pw", floor=TEST_KDF)
    assert restored.export_secret() == ident.export_secret()
    with pytest.raises(UnlockError):
        import_recovery_kit(kit, "wrong", floor=TEST_KDF)
    with pytest.raises(KdfParamsError):
        import_recovery_kit(kit, "kit pw")  # test parameters are below the real floor


@pytest.mark.parametrize(
    "damage",
    [
        lambda k: k.replace("-----END TAPES RECOVERY KIT-----", ""),
        lambda k: "garbage",
        lambda k: k.replace(k.splitlines()[2], k.splitlines()[2][:-3] + "!!!"),
        lambda k: k.replace(k.splitlines()[2], k.splitlines()[2][::-1]),
    ],
)
def test_damaged_recovery_kit(ident: Identity, damage: object) -> None:
    kit = export_recovery_kit(ident, "kit pw", params=TEST_KDF, floor=TEST_KDF, rng=DetRng("kit"))
    with pytest.raises(UnlockError):
        import_recovery_kit(damage(kit), "kit pw", floor=TEST_KDF)  # type: ignore[operator]


def test_key_file_cannot_be_opened_as_a_recovery_kit(key_file: Path) -> None:
    import base64

    armored = "\n".join(
        [
            "-----BEGIN TAPES RECOVERY KIT-----",
            base64.b64encode(key_file.read_bytes()).decode(),
            "-----END TAPES RECOVERY KIT-----",
        ]
    )
    with pytest.raises(UnlockError):
        import_recovery_kit(armored, PW, floor=TEST_KDF)


# --- paper key -----------------------------------------------------------------------------


def _groups(paper: str) -> list[str]:
    return [line for line in paper.splitlines()[2:] if line]


def test_a_paper_key_round_trips_however_it_is_typed_back(ident: Identity) -> None:
    from keymgmt import export_paper_key, import_paper_key

    paper = export_paper_key(ident)
    lines = paper.splitlines()
    assert lines[:2] == ["TAPES-PAPER-1", f"fingerprint: {ident.fingerprint}"]
    assert all(len(group) <= 4 for line in _groups(paper) for group in line.split())
    assert import_paper_key(paper).export_secret() == ident.export_secret()
    letters = "".join(_groups(paper)).replace(" ", "")
    typed = "tapes-paper-1\n" + "-".join(letters[i : i + 5] for i in range(0, len(letters), 5))
    assert import_paper_key(typed.lower()).fingerprint == ident.fingerprint
    confused = paper.replace("O", "0").replace("I", "1").replace("B", "8")
    assert import_paper_key(confused).fingerprint == ident.fingerprint


def test_every_mistyped_character_or_missing_group_of_a_paper_key_is_caught(
    ident: Identity,
) -> None:
    from keymgmt import export_paper_key, import_paper_key

    paper = export_paper_key(ident)
    head, body = "\n".join(paper.splitlines()[:2]), "".join(_groups(paper)).replace(" ", "")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    for index, char in enumerate(body):
        for other in alphabet:
            if other == char:
                continue
            typo = body[:index] + other + body[index + 1 :]
            try:
                found = import_paper_key(f"{head}\n{typo}")
            except UnlockError:
                continue
            assert found.export_secret() != ident.export_secret(), (index, other)
            pytest.fail(f"a typo at {index} ({char}->{other}) went unnoticed")
    for start in range(0, len(body), 4):
        with pytest.raises(UnlockError):
            import_paper_key(f"{head}\n{body[:start]}{body[start + 4 :]}")
    with pytest.raises(UnlockError, match="not a tapes paper key"):
        import_paper_key(body)
    with pytest.raises(UnlockError, match="characters base32 does not use"):
        import_paper_key(f"{head}\n{body[:-1]}9")
