"""Usage and cost from clear metadata: kept at push, reported per vault.

``services.report(db, vault, query, prices)`` is the one entry point for the API and a
dashboard; ``services.record`` is the push's one call.
"""

from __future__ import annotations

__all__: list[str] = []
