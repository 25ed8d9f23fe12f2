"""``tapes-server``: the sync server's command line.

The server itself (``serve``, ``db upgrade|current``) is issue 5; until it lands this command
only reports its version, and says so rather than pretending to serve.
"""

from __future__ import annotations

import sys

__all__ = ["main"]

VERSION = "0.1.0"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args in (["version"], ["--version"]):
        sys.stdout.write(f"tapes-server {VERSION}\n")
        return
    sys.stderr.write(
        "tapes-server: error: the sync server is not built yet (see issue 5)\n"
        "tapes-server: hint: `tapes-server version` is the only command so far\n"
    )
    sys.exit(2)
