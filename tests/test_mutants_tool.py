"""scripts/mutants on a tiny repository: each verdict is reported as such, and the exit code says
whether every defence was shown load-bearing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "mutants"

GUARD = """def withdraw(balance: int, amount: int) -> int:
    if amount > balance:
        raise ValueError("overdrawn")
    return balance - amount
"""

TESTS = """import pytest
from guard import withdraw


def test_overdraft_is_refused() -> None:
    with pytest.raises(ValueError):
        withdraw(1, 2)


def test_withdraw() -> None:
    assert withdraw(3, 2) == 1
"""

THREATS = """| id | attack |
|---|---|
| 1 | **Overdraft** | a check |
| 2 | **Another** | another check |
"""


def mutant(row: str, old: str, new: str, test: str) -> str:
    return (
        f'[[mutant]]\nrow = "{row}"\nfile = "guard.py"\nold = """{old}"""\n'
        f'new = """{new}"""\ntests = ["{test}"]\nwhy = "row {row}"\n'
    )


def run(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--repo", str(repo), "--jobs", "1", *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "tests").mkdir()
    (tmp_path / "guard.py").write_text(GUARD)
    (tmp_path / "tests" / "test_guard.py").write_text(TESTS)
    (tmp_path / "threat-model.md").write_text(THREATS)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    return tmp_path


def write(repo: Path, *mutants: str, pending: str = "[]") -> None:
    text = f"pending = {pending}\n\n" + "\n".join(mutants)
    (repo / "tests" / "mutations.toml").write_text(text)


REFUSAL = '    if amount > balance:\n        raise ValueError("overdrawn")'
KILLING = mutant("1", REFUSAL, "    pass", "tests/test_guard.py::test_overdraft_is_refused")


def test_a_killed_mutant_passes(repo: Path) -> None:
    write(repo, KILLING, pending='["2"]')
    done = run(repo)
    assert done.returncode == 0, done.stderr
    assert "KILLED" in done.stdout
    assert "1 of 1 killed" in done.stdout


def test_a_surviving_mutant_fails_the_run(repo: Path) -> None:
    weak = mutant("2", REFUSAL, "    pass", "tests/test_guard.py::test_withdraw")
    write(repo, KILLING, weak)
    done = run(repo)
    assert done.returncode == 1
    assert "SURVIVED: row 2" in done.stderr


def test_a_stale_mutant_fails_the_run(repo: Path) -> None:
    stale = mutant("2", "no such text", "x", "tests/test_guard.py::test_withdraw")
    write(repo, KILLING, stale)
    done = run(repo)
    assert done.returncode == 1
    assert "STALE: row 2" in done.stderr


def test_a_mutant_that_breaks_the_import_is_invalid_not_killed(repo: Path) -> None:
    broken = mutant("2", "def withdraw(", "def withdraw((", "tests/test_guard.py::test_withdraw")
    write(repo, KILLING, broken)
    done = run(repo)
    assert done.returncode == 1
    assert "INVALID: row 2" in done.stderr


def test_a_row_without_a_mutant_and_a_misspelt_test_fail_the_run(repo: Path) -> None:
    write(repo, KILLING)
    done = run(repo)
    assert done.returncode == 1
    assert "row 2: no mutant" in done.stderr
    typo = mutant("2", REFUSAL, "    pass", "tests/test_guard.py::test_no_such_test")
    write(repo, KILLING, typo)
    done = run(repo)
    assert done.returncode == 1
    assert "test not found" in done.stderr
