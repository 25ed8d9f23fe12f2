"""``python -m tapes_e2e``: the ``tapes`` command (what a user service runs)."""

from tapes_e2e.cli import main

main()
