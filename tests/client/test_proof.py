"""Offline session proofs (docs/proofs.md): the vectors and their generator, a tampered byte
anywhere, and the CLI end to end (`tapes session prove`, `tapes verify --proof`,
`tapes session export --for-audit`) against the real app, the check itself with no socket."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tapes_e2e.proof import ProofError, build_proof, verify_proof
from tests.client.conftest import Tapes
from tests.client.test_air_gapped import _namespace_works, _no_connection
from tests.client.test_teams import Team, ok, one_error, record
from tests.client.test_teams import team as team  # noqa: PLC0414 - the fixture, by name
from tests.conftest import chain
from tests.server.conftest import AUDIENCE

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "vectors" / "proofs"
CASES = json.loads((VECTORS / "cases.json").read_text("utf-8"))


@pytest.mark.parametrize("case", CASES["cases"], ids=[c["name"] for c in CASES["cases"]])
def test_proof_vectors(case: dict[str, Any]) -> None:
    data = case["proof"].encode("utf-8")
    if case["expect"] == "valid":
        report = verify_proof(data, now=CASES["now"])
        assert report.session == json.loads(data)["session"]
        return
    with pytest.raises(ProofError) as info:
        verify_proof(data, now=CASES["now"])
    assert case["expect"] in info.value.message
    assert "\n" not in info.value.message


def test_the_generator_rewrites_the_vectors_byte_for_byte(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proof_vectors.py"), "--out", str(tmp_path)],
        check=True, cwd=ROOT,
    )  # fmt: skip
    for path in VECTORS.iterdir():
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


def test_the_vectors_are_go_tapes_own_hashes() -> None:
    go = json.loads((ROOT / "vectors" / "tapes-merkle-v1.json").read_text("utf-8"))
    leaf = next(c["hash"] for c in go["cases"] if c["name"] == "chain_child_3")
    assert json.loads(CASES["cases"][0]["proof"])["session"] == leaf


@pytest.mark.parametrize("mask", [0x01, 0x20, 0x80])
def test_every_byte_of_a_proof_matters(mask: int) -> None:
    """Each byte of a proof with team evidence, changed in turn: every change is refused."""
    proof = (VECTORS / "shared-by-a-member.proof.json").read_bytes()
    verify_proof(proof, now=CASES["now"])
    passed = []
    for index in range(len(proof)):
        tampered = bytearray(proof)
        tampered[index] ^= mask
        try:
            verify_proof(bytes(tampered), now=CASES["now"])
        except ProofError:
            continue
        passed.append((index, proof[max(0, index - 20) : index + 20]))
    assert passed == []


def test_a_truncated_proof_and_other_files_are_one_clear_error() -> None:
    proof = (VECTORS / "shared-by-a-member.proof.json").read_bytes()
    for data, words in [
        (proof[: len(proof) // 2], "not JSON"),
        (b"", "not JSON"),
        (b'{"nodes": []}\n', "not a tapes session proof"),
        (b"[1, 2]", "not a tapes session proof"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),  # nested past any parser's depth
        (b'{"format": "x", "nodes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not JSON"),
    ]:
        with pytest.raises(ProofError) as info:
            verify_proof(data)
        assert words in info.value.message


def test_only_a_prefix_of_turns_can_be_hidden() -> None:
    nodes = chain(["a", "b", "c"])
    report = verify_proof(build_proof(nodes, redact=2))
    assert (report.turns, report.hidden_before) == (1, nodes[1].hash)
    with pytest.raises(ProofError, match="the last turn is always shown"):
        build_proof(nodes, redact=3)


# --- the CLI, through the real app -------------------------------------------------------------


def _verify_offline(
    tapes: Tapes, monkeypatch: pytest.MonkeyPatch, proof: Path, *args: str
) -> tuple[int, str, str]:
    """`tapes verify --proof` on a machine with no configuration, keys or network."""
    with monkeypatch.context() as offline:
        _no_connection(offline)
        offline.delenv("TAPES_PASSPHRASE")
        return tapes("auditor", "verify", "--proof", str(proof), *args)


@pytest.mark.server_backends
def test_prove_a_shared_session_and_check_it_offline(
    team: Team, tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = team.home("alice")
    session = record(alice, "why is the build red?", "a flaky test", "which one?", "test_sync")
    ok(tapes("alice", "session", "share", session[-1], "--team", "Acme"))
    proof = tmp_path / "proof.json"
    ok(tapes("alice", "session", "prove", session[-1][:10], "--team", "Acme", "-o", str(proof)))
    code, out, err = _verify_offline(tapes, monkeypatch, proof)
    assert code == 0, err
    assert f"valid: session {session[-1]}" in out
    assert f"shared with team {team.id} by " in out
    report = json.loads(ok(_verify_offline(tapes, monkeypatch, proof, "--json")))
    assert (report["turns_shown"], report["shared"]["team"]) == (4, team.id)
    assert not (tmp_path / "auditor").exists() or not list((tmp_path / "auditor").iterdir())
    # Bob, the other member, proves it too: the evidence is the share, not who holds it
    ok(tapes("bob", "session", "pull", session[-1][:10]))
    bobs = ok(tapes("bob", "session", "prove", session[-1], "--team", team.id, "--redact", "2"))
    shown = verify_proof(bobs.encode())
    assert (shown.turns, shown.hidden_before, shown.shared is not None) == (2, session[1], True)


@pytest.mark.server_backends
def test_prove_refuses_what_it_cannot_vouch_for(team: Team, tapes: Tapes, tmp_path: Path) -> None:
    alice = team.home("alice")
    session = record(alice, "never shared")
    one_error(tapes("alice", "session", "prove", session[-1], "--team", "Acme"), "not shared")
    one_error(tapes("alice", "session", "prove", session[-1], "--redact", "1"), "always shown")
    one_error(tapes("alice", "session", "prove", "f" * 64), "f" * 12)
    # without a team, it is a local command: the content alone, no evidence of who or when
    alone = ok(tapes("alice", "session", "prove", session[-1]))
    assert verify_proof(alone.encode()).shared is None


def test_a_proof_damaged_on_disk_is_one_line(
    tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proof = tmp_path / "proof.json"
    data = (VECTORS / "shared-by-a-member.proof.json").read_bytes()
    proof.write_bytes(data.replace(b'"role":"user"', b'"role":"assistant"', 1))
    line = one_error(_verify_offline(tapes, monkeypatch, proof), "turn 1")
    assert "changed, moved or removed" in line
    one_error(_verify_offline(tapes, monkeypatch, tmp_path / "missing.json"), "cannot read")


@pytest.mark.skipif(not _namespace_works(), reason="no network namespaces here (unshare -n)")
def test_verify_proof_runs_in_a_namespace_with_no_network(tmp_path: Path) -> None:
    """A real process with no network interface and an empty home checks a proof."""
    result = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", "from tapes_e2e.cli import main; main()",
         "--config-dir", str(tmp_path / "empty"), "verify", "--proof",
         str(VECTORS / "shared-by-a-member.proof.json")],
        check=False, capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("TAPES_")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("valid: session ")


@pytest.mark.server_backends
def test_export_for_audit_writes_a_new_directory_whole_or_not_at_all(
    team: Team, tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = team.home("alice")
    session = record(alice, "<b>is this markup?</b>", "no: it is data")
    ok(tapes("alice", "session", "share", session[-1], "--team", "Acme"))
    out = tmp_path / "for-counsel"
    ok(tapes("alice", "session", "export", "--for-audit", session[-1], "--team", "Acme",
             "-o", str(out)))  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "proof.json", "session.jsonl"]
    lines = (out / "session.jsonl").read_text("utf-8").splitlines()
    assert [json.loads(line)["hash"] for line in lines] == session
    assert "<b>is this markup?</b>" in lines[0]
    readme = (out / "README.md").read_text("utf-8")
    for name in ("session.jsonl", "proof.json"):
        assert f"{hashlib.sha256((out / name).read_bytes()).hexdigest()}  {name}" in readme
    assert f"shared with team {team.id}" in readme
    assert "no hash covers them" in readme
    assert ok(_verify_offline(tapes, monkeypatch, out / "proof.json")).startswith("valid")
    # never over a path that exists, and a failure part way leaves nothing behind
    before = (out / "README.md").read_bytes()
    one_error(tapes("alice", "session", "export", "--for-audit", session[-1], "-o", str(out)),
              "already exists")  # fmt: skip
    assert (out / "README.md").read_bytes() == before
    again = tmp_path / "again"
    one_error(tapes("alice", "session", "export", "--for-audit", session[-1], "--team", "Nope",
                    "-o", str(again)))  # fmt: skip
    assert (
        sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".again", "again"))) == []
    )
    one_error(tapes("alice", "session", "export", "--for-audit", "-o", str(again)), "one session")


def test_export_for_audit_interrupted_while_writing_leaves_nothing(
    tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "box").mkdir()
    session = record(tmp_path / "box", "one", "two")
    real_fsync = os.fsync
    calls = []

    def fail_second(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fail_second)
    target = tmp_path / "out"
    one_error(tapes("box", "session", "export", "--for-audit", session[-1], "-o", str(target)),
              "No space left")  # fmt: skip
    assert [p.name for p in tmp_path.iterdir() if "out" in p.name] == []
    assert len(calls) == 2  # the README was written whole; the proof's fsync failed


def test_an_air_gapped_machine_proves_and_exports_but_fetches_no_team_evidence(
    tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(tapes("box", "auth", "login", "--server", AUDIENCE, "--handle", "alice"))
    session = record(tmp_path / "box", "kept on a closed network", "yes")
    monkeypatch.setenv("TAPES_AIR_GAPPED", "1")
    _no_connection(monkeypatch)
    proof = ok(tapes("box", "session", "prove", session[-1]))
    assert verify_proof(proof.encode()).session == session[-1]
    ok(tapes("box", "session", "export", "--for-audit", session[-1], "-o", str(tmp_path / "x")))
    one_error(tapes("box", "session", "prove", session[-1], "--team", "Acme"), "air-gapped")
