"""What the dashboard shows, as plain values: the one seam between where the numbers come from
(:mod:`server.dashboard.data`) and the templates that render them.

Every ``str`` here may come from a member's clear metadata or a user's own choice (a model
name, a handle, a team name): attacker-controlled text, rendered only through autoescaping.
A cost is ``None`` when no price is known; such tokens are in the unpriced bucket, never $0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

__all__ = ["Bucket", "DayPoint", "Figures", "Policy", "Range", "TeamChoice"]


@dataclass(frozen=True, slots=True)
class Range:
    """Whole UTC days, both ends included."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


@dataclass(frozen=True, slots=True)
class TeamChoice:
    """A vault the signed-in browser may read usage of."""

    team_id: str
    name: str
    kind: str  # personal | team
    role: str  # the member's role, or "read-usage key"


@dataclass(slots=True)
class Bucket:
    """Nodes, tokens and cost of one group (a member, a model, a harness, a project, or all).
    ``label`` is ``None`` when the metadata did not say (or the policy does not send it).
    ``more`` > 0: the sums of that many smaller groups, not shown one by one."""

    label: str | None = None
    detail: str | None = None  # the provider, beside a model
    nodes: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    total_tokens: int = 0
    cost: Decimal | None = None
    more: int = 0


@dataclass(frozen=True, slots=True)
class DayPoint:
    day: date
    total_tokens: int
    cost: Decimal | None


@dataclass(frozen=True, slots=True)
class Policy:
    """The team's policy from its signed chain: ``metadata`` none|coarse|full, ``content``
    encrypted|omit."""

    metadata: str
    content: str

    @property
    def words(self) -> tuple[str, str]:
        """The policy as a reader should hear it: what the server holds of content, and what
        of metadata it sees in clear."""
        content = (
            "content: never uploaded (a metadata-only team)"
            if self.content == "omit"
            else "content: encrypted, the server cannot read it"
        )
        metadata = {
            "none": "metadata in clear: none (node IDs, sizes and upload times only)",
            "coarse": "metadata in clear: model, provider, harness, tokens, hour",
            "full": "metadata in clear: model, provider, harness, project, tokens, exact time",
        }.get(self.metadata, f"metadata in clear: unknown policy {self.metadata}")
        return content, metadata


@dataclass(slots=True)
class Figures:
    """One team's usage over one range."""

    team: TeamChoice
    range: Range
    policy: Policy
    totals: Bucket
    unpriced: Bucket
    unpriced_models: list[str]  # the first UNPRICED_SHOWN, by name
    by_day: list[DayPoint]
    by_member: list[Bucket] = field(default_factory=list)
    by_model: list[Bucket] = field(default_factory=list)
    by_agent: list[Bucket] = field(default_factory=list)
    by_project: list[Bucket] = field(default_factory=list)
    # Nodes whose metadata carries no time (the ``none`` policy): counted on their upload day.
    upload_dated_nodes: int = 0
    # Whether a price source was consulted (genai-prices and the override file, in
    # server.dashboard.data).
    priced: bool = False
    unpriced_more: int = 0  # unpriced models beyond those listed
    # The caps this vault passed ("1,000 models"): it named more than the server itemizes, and
    # the rest are counted as "(other)" (server.domain.usage.labels).
    folded: list[str] = field(default_factory=list)
