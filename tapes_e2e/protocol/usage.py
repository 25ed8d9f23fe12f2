"""Wire schemas of usage (``GET /api/v1/teams/{id}/usage``), shared by the server, the CLI's
``tapes usage`` and its ``--verify``.

Counts come from clear metadata only. Money travels as decimal strings (msgspec encodes a
``Decimal`` as a string), never as a float. A model with no price is never counted as $0: its
tokens go to ``unpriced``.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Literal

import msgspec

__all__ = [
    "CAPPED_KEYS",
    "GROUP_KEYS",
    "MAX_USD",
    "OTHER",
    "TOKEN_FIELDS",
    "GroupKey",
    "UnpricedModel",
    "UsageFigures",
    "UsageReport",
    "UsageRow",
    "spreadsheet_cell",
    "to_csv",
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
CAPPED_KEYS: frozenset[GroupKey] = frozenset({"model", "provider", "agent", "project"})
"""The groupings by a name a member chooses: a vault itemizes a bounded number of each (the
server's ``server.domain.usage.labels``) and counts the rest under :data:`OTHER`."""
OTHER = "(other)"
TOKEN_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "total_tokens",
)
"""The token kinds Go tapes records, by their clear-metadata names."""


MAX_USD = Decimal(10) ** 15
"""Beyond any bill: an amount at or above it (either sign) is refused as malformed."""


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

    def __post_init__(self) -> None:
        # Run on decoding too: a server's "NaN" or "1e999999999" is no amount (rounding the
        # latter raises, printing it whole spells a billion digits), so it is a malformed answer.
        # Counts are left as they come: --verify reports a wrong one, negative or not.
        for amount in (self.cost_usd, self.cache_savings_usd):
            if not amount.is_finite() or amount.copy_abs() >= MAX_USD:
                raise ValueError("an amount of money is not a finite number of dollars")


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

    def folded_keys(self) -> list[str]:
        """The groupings by a member's names under which this report counts some as
        :data:`OTHER`: the vault names more than the server itemizes (which ones it folded is
        the server's record: the names it was sent first are itemized)."""
        return [
            key
            for key in self.group_by
            if key in CAPPED_KEYS and any(row.group.get(key) == OTHER for row in self.rows)
        ]


# --- CSV (the API's format=csv, and what ``tapes usage --csv`` writes from the checked report) --

_FIGURES = UsageFigures.__struct_fields__
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value: object) -> str:
    """A cell a spreadsheet shows as text: one that would start a formula gets a ``'``."""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(report: UsageReport) -> str:
    """The report's rows, then a ``total`` row, as CSV safe to open in a spreadsheet."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*report.group_by, *_FIGURES])
    for row in report.rows:
        values = [row.group.get(key, "") for key in report.group_by]
        writer.writerow(
            [spreadsheet_cell(v) for v in (*values, *(getattr(row.figures, f) for f in _FIGURES))]
        )
    if report.totals is not None:
        label = ["total", *[""] * (len(report.group_by) - 1)] if report.group_by else []
        writer.writerow([*label, *(spreadsheet_cell(getattr(report.totals, f)) for f in _FIGURES)])
    return out.getvalue()
