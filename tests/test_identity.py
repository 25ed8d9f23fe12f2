"""The identity key file: created once, unlocked by environment or prompt, never overwritten."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

import keymgmt
from tapes_e2e.identity import create_identity, identity_path, unlock

# Tests may use cheap Argon2 parameters, below the product's floor, only by saying so.
FAST = keymgmt.KdfParams(time_cost=1, memory_kib=8 * 1024, lanes=1)


def test_create_then_unlock_by_environment_or_prompt(tmp_path: Path) -> None:
    made = create_identity(tmp_path, "correct horse battery", params=FAST, floor=FAST)
    assert stat.S_IMODE(identity_path(tmp_path).stat().st_mode) == 0o600
    env = {"TAPES_PASSPHRASE": "correct horse battery"}
    by_env = unlock(tmp_path, environ=env, use_os_keyring=False, floor=FAST)
    assert by_env.fingerprint == made.fingerprint
    by_prompt = unlock(
        tmp_path, environ={}, prompt=lambda: "correct horse battery", use_os_keyring=False,
        floor=FAST,
    )  # fmt: skip
    assert by_prompt.fingerprint == made.fingerprint


def test_wrong_passphrase_is_one_clear_error_and_the_file_is_untouched(tmp_path: Path) -> None:
    create_identity(tmp_path, "correct horse battery", params=FAST, floor=FAST)
    before = identity_path(tmp_path).read_bytes()
    with pytest.raises(keymgmt.UnlockError) as info:
        unlock(tmp_path, environ={"TAPES_PASSPHRASE": "wrong"}, use_os_keyring=False, floor=FAST)
    assert "passphrase" in info.value.message
    assert identity_path(tmp_path).read_bytes() == before


def test_no_passphrase_and_no_prompt_says_how_to_unlock(tmp_path: Path) -> None:
    create_identity(tmp_path, "correct horse battery", params=FAST, floor=FAST)
    with pytest.raises(keymgmt.UnlockError) as info:
        unlock(tmp_path, environ={}, use_os_keyring=False, floor=FAST)
    assert info.value.hint is not None
    assert "TAPES_PASSPHRASE" in info.value.hint


def test_an_existing_key_file_is_never_replaced(tmp_path: Path) -> None:
    create_identity(tmp_path, "correct horse battery", params=FAST, floor=FAST)
    before = identity_path(tmp_path).read_bytes()
    with pytest.raises(keymgmt.KeymgmtError):
        create_identity(tmp_path, "another passphrase", params=FAST, floor=FAST)
    assert identity_path(tmp_path).read_bytes() == before


def test_short_passphrases_are_refused(tmp_path: Path) -> None:
    with pytest.raises(keymgmt.KeymgmtError, match="too short"):
        create_identity(tmp_path, "short", params=FAST, floor=FAST)
    assert not identity_path(tmp_path).exists()
