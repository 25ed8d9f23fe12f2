"""Wire schemas of usage (``GET /api/v1/teams/{id}/usage``), shared by the server, the CLI's
``tapes usage`` and its ``--verify``.

Counts come from clear metadata only. Money travels as decimal strings (msgspec encodes a
``Decimal`` as a string), never as a float. A model with no price is never counted as $0: its
tokens go to ``unpriced``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

__all__ = [
    "GROUP_KEYS",
    "TOKEN_FIELDS",
    "GroupKey",
    "UnpricedModel",
    "UsageFigures",
    "UsageReport",
    "UsageRow",
]

GroupKey = Literal["member", "model", "provider", "agent", "project", "day", "hour"]
GROUP_KEYS: tuple[GroupKey, ...] = (
    "member",
    "model",
    "provider",
    "agent",
    "project",
    "day",
    "hour",
)
TOKEN_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "total_tokens",
)
"""The token kinds Go tapes records, by their clear-metadata names."""


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class UsageFigures(_Strict, frozen=True):
    """Counts of one row (or of the totals).

    ``sessions`` counts roots (nodes with no parent). ``upload_timed_nodes`` are the nodes
    counted at their upload time because their clear metadata has no ``created_at`` (the
    ``none`` policy). ``cost_usd`` prices the priced tokens only; ``unpriced_tokens`` are the
    prompt, completion and cache tokens of models with no known price. ``cache_savings_usd`` is
    what the cache reads would have cost as plain input, less what they cost.
    """

    nodes: int
    sessions: int
    prompt_tokens: int
    completion_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    total_tokens: int
    upload_timed_nodes: int
    cost_usd: Decimal
    cache_savings_usd: Decimal
    unpriced_tokens: int
    unpriced_nodes: int


class UsageRow(_Strict, frozen=True):
    """One group: ``group`` maps each ``group_by`` key to its value (a day is ``YYYY-MM-DD``,
    an hour ``YYYY-MM-DDTHH:MM`` in the report's time zone; a missing value is ``""``)."""

    group: dict[str, str]
    figures: UsageFigures


class UnpricedModel(_Strict, frozen=True):
    """A model (with its provider) that no price table knows, and what it used."""

    model: str
    provider: str
    nodes: int
    tokens: int


class UsageReport(_Strict, frozen=True):
    """Usage of one vault over ``[from, to)`` in time zone ``tz``, grouped by ``group_by``.

    ``time_basis`` says what placed the nodes in time: ``created_at`` (when the work happened,
    the hour under ``coarse``), ``uploaded_at`` (the ``none`` policy) or ``mixed``.
    ``metadata_policy`` and ``content_policy`` are the vault's current ones, as the server read
    them from the vault's chain. ``pricing`` names the price sources."""

    vault: str
    kind: str
    metadata_policy: str
    content_policy: str
    start: str = msgspec.field(name="from")
    end: str = msgspec.field(name="to")
    tz: str = "UTC"
    group_by: list[str] = msgspec.field(default_factory=list)
    time_basis: str = "created_at"
    rows: list[UsageRow] = msgspec.field(default_factory=list)
    totals: UsageFigures | None = None
    unpriced: list[UnpricedModel] = msgspec.field(default_factory=list)
    pricing: str = ""
