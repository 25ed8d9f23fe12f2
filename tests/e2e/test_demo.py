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
    assert "checked 7 node(s), 0 damaged" in done.stderr
    assert "appear on the server: False" in done.stdout
    assert "Traceback" not in done.stderr
