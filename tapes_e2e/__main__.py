"""``python -m tapes_e2e``: the ``tapes`` command (what a user service runs)."""

from tapes_e2e.cli import main

# Guarded: a worker process that opens pulled pages imports the main module again.
if __name__ == "__main__":
    main()
