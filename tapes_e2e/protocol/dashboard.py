"""Wire schemas of the dashboard's one API endpoint: ``POST /api/v1/dashboard/links``.

A logged-in client (``tapes usage --open``) asks for a one-time link that signs a browser in to
the usage dashboard. The link's secret is in its URL, usable once, for minutes; the server keeps
only its hash. Same rules as :mod:`tapes_e2e.protocol`: frozen msgspec Structs that refuse
unknown fields.
"""

from __future__ import annotations

import msgspec

from tapes_e2e.protocol import VaultId

__all__ = ["DashboardLinkCreate", "DashboardLinkOut"]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class DashboardLinkCreate(_Strict, frozen=True):
    """``team``: the team the dashboard opens first (its usage must be readable by the caller);
    none opens the first one the caller may read."""

    team: VaultId | None = None


class DashboardLinkOut(_Strict, frozen=True):
    """The link to open in a browser, and when it stops working (ISO 8601, UTC)."""

    url: str
    expires_at: str
