"""The README's first command: the demo runs the whole story and the server never sees content."""

from __future__ import annotations

import subprocess
import sys


def test_the_demo_runs_end_to_end(tmp_path: object) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tapes_e2e.demo"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "sync ok: pushed 7" in done.stderr
    assert "sync ok: pushed 0, pulled 7" in done.stderr
    assert "checked 7 nodes, 0 damaged" in done.stderr
    assert "appear on the server: False" in done.stdout
    # The team story: invite, join, approve, share, and Bob reads Alice's session.
    assert "approved: " in done.stdout
    assert "joined team t_" in done.stdout
    assert "sync ok: pushed 0, pulled 4" in done.stderr
    assert done.stdout.count("Set busy_timeout so writers wait for each other.") == 2
    vaults = [line.split()[0] for line in done.stdout.splitlines() if "B sealed (padded" in line]
    assert sorted(v[:2] for v in vaults) == ["t_"] * 4 + ["v_"] * 7  # personal vault and team
    assert "Traceback" not in done.stderr
