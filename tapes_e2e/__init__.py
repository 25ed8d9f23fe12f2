"""tapes-e2e: end-to-end encrypted storage providers for tapes sessions.

Kept deliberately light: the server imports ``tapes_e2e.protocol`` and must not pull in the
client's storage or CLI by importing this package.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
