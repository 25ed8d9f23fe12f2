"""``tapes usage``: a vault's usage and cost as the server counts them from clear metadata.

Readable by a team's owner, admins and viewers (a viewer holds no content key: this is what they
have), and by anyone for their personal vault. Every string in the report came from some
member's clear metadata through the server, so it is printed as text, never as Rich markup.
"""

from __future__ import annotations

import sys
from decimal import Decimal
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import typer
from rich.table import Table

from tapes_e2e.cli import output
from tapes_e2e.cli.usage_check import verify_usage
from tapes_e2e.cli.usage_open import open_dashboard
from tapes_e2e.context import Settings, chosen_vault, logged_in
from tapes_e2e.errors import RemoteError, TeamError
from tapes_e2e.protocol.usage import GROUP_KEYS, OTHER, UsageFigures, UsageReport, to_csv
from tapes_e2e.teams.access import resolve_team

__all__ = ["usage"]

_BAR = "▁▂▃▄▅▆▇█"
_POLICY = {
    "none": "nothing in clear but node counts (placed by upload time)",
    "coarse": "model, provider, agent, role, token counts and the hour in clear",
    "full": "model, provider, agent, project, token counts, durations and exact times in clear",
}


def _query(start: str | None, end: str | None, tz: str | None, by: str) -> dict[str, str]:
    keys = [k.strip() for k in by.split(",") if k.strip()]
    unknown = [k for k in keys if k not in GROUP_KEYS]
    if unknown:
        raise TeamError(f"--by {unknown[0]!r}: expected {', '.join(GROUP_KEYS)}")
    if tz:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise TeamError(
                f"--tz {tz[:64]!r} is not an IANA time zone", hint="name one like Europe/Paris"
            ) from None
    given = {"from": start, "to": end, "tz": tz}
    return {"group_by": ",".join(keys)} | {k: v for k, v in given.items() if v}


def _money(value: Decimal) -> str:
    return f"${value.quantize(Decimal('0.01'))}"


def _policy_line(report: UsageReport) -> str:
    words = _POLICY.get(report.metadata_policy, f"metadata policy {report.metadata_policy}")
    content = (
        "content: encrypted, the server cannot read it"
        if report.content_policy == "encrypted"
        else f"content: {report.content_policy}"
    )
    return f"policy: {content}; metadata: {report.metadata_policy} ({words})"


def _spark(values: list[int]) -> str:
    top = max(values, default=0)
    if top == 0:
        return _BAR[0] * len(values)
    return "".join(_BAR[min(len(_BAR) - 1, v * (len(_BAR) - 1) // top)] for v in values)


def _figures_cells(f: UsageFigures) -> list[str]:
    unpriced = f"{f.unpriced_tokens:,}" if f.unpriced_tokens else ""
    return [
        f"{f.nodes:,}", f"{f.sessions:,}", f"{f.prompt_tokens:,}", f"{f.completion_tokens:,}",
        f"{f.cache_creation_input_tokens:,}", f"{f.cache_read_input_tokens:,}",
        _money(f.cost_usd), unpriced,
    ]  # fmt: skip


def render(report: UsageReport, per_day: UsageReport | None = None) -> None:
    """The report as a table with totals, bars per day, the unpriced bucket and the policy."""
    out = output.stdout
    span = f"{report.start} to {report.end} ({report.tz})"
    out.print(output.plain(f"usage of {report.kind} vault {report.vault}, {span}"))
    out.print(output.plain(_policy_line(report)))
    if report.time_basis != "created_at":
        out.print(output.plain(f"nodes placed in time by: {report.time_basis}"))
    grid = Table(show_edge=False, header_style="bold")
    columns = [*(k.upper() for k in report.group_by), "NODES", "SESSIONS", "PROMPT",
               "COMPLETION", "CACHE WRITE", "CACHE READ", "COST", "UNPRICED TOKENS"]  # fmt: skip
    by_day = report.group_by == ["day"]
    for name in [*columns, *(["TOKENS"] if by_day else [])]:
        grid.add_column(output.plain(name), overflow="fold")
    tokens = [r.figures.prompt_tokens + r.figures.completion_tokens for r in report.rows]
    top = max(tokens, default=0)
    for row, used in zip(report.rows, tokens, strict=True):
        bar = ["█" * (round(24 * used / top) if top else 0)] if by_day else []
        cells = [*(row.group.get(k, "") for k in report.group_by), *_figures_cells(row.figures)]
        grid.add_row(*(output.plain(c) for c in [*cells, *bar]))
    if report.totals is not None:
        label = ["TOTAL", *[""] * (len(report.group_by) - 1)] if report.group_by else []
        extra = [""] if by_day else []
        totals = [*label, *_figures_cells(report.totals), *extra]
        grid.add_row(*(output.plain(c, style="bold") for c in totals))
    out.print(grid)
    if per_day is not None and per_day.rows:
        daily = [r.figures.prompt_tokens + r.figures.completion_tokens for r in per_day.rows]
        first, last = per_day.rows[0].group["day"], per_day.rows[-1].group["day"]
        out.print(output.plain(f"tokens per day {first} {_spark(daily)} {last}"))
    if report.totals is not None:
        t = report.totals
        out.print(output.plain(
            f"cost {_money(t.cost_usd)}, cache savings {_money(t.cache_savings_usd)} "
            f"(prices: {report.pricing})"
        ))  # fmt: skip
    if folded := report.folded_keys():
        out.print(output.plain(
            f"{OTHER}: this vault names more than the server itemizes by "
            f'{" and ".join(folded)}; the rest are counted there (docs/teams.md, "How many names")'
        ))  # fmt: skip
    for item in report.unpriced:
        out.print(output.plain(
            f"unpriced: {item.model or '(no model)'} ({item.provider or 'no provider'}): "
            f"{output.count(item.tokens, 'token')} in {output.count(item.nodes, 'node')}, "
            "no known price (not counted as $0)"
        ))  # fmt: skip


def usage(
    ctx: typer.Context,
    team: Annotated[
        str | None, typer.Option("--team", help="A team (id or name); default: the sync target.")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="First day (YYYY-MM-DD) or ISO time.")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="Last day (included) or ISO time (excluded).")
    ] = None,
    tz: Annotated[
        str | None, typer.Option("--tz", help="IANA time zone for days and hours (default UTC).")
    ] = None,
    by: Annotated[
        str, typer.Option("--by", help=f"Group by, comma-separated: {', '.join(GROUP_KEYS)}.")
    ] = "day",
    as_json: output.JsonFlag = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of text.")] = False,
    open_: Annotated[
        bool, typer.Option("--open", help="Open the usage dashboard in a browser (one-time link).")
    ] = False,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="With --open: only print the link.")
    ] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Recompute the counts from this machine's decrypted nodes of the vault and "
            "list every figure the server's report gets wrong; exit 1 if any (a personal "
            "vault: exactly, after a sync; a team: from below, for owners and admins).",
        ),
    ] = False,
) -> None:
    """Usage and cost of a vault from its clear metadata: nodes, sessions, tokens, cost."""
    if as_json and as_csv:
        raise TeamError("--json and --csv: choose one")
    settings: Settings = ctx.obj
    if open_:
        open_dashboard(settings, team, browser=not no_browser)
        return
    query = _query(start, end, tz, by)
    if verify:
        if as_csv:
            raise TeamError("--verify and --csv: choose one")
        verify_usage(settings, team, query, as_json=as_json)
        return
    api, session = logged_in(settings, needs="tapes usage")
    vault = resolve_team(api, team) if team else chosen_vault(settings.config, session)
    try:
        report = api.usage(vault, query)
    except RemoteError as exc:
        if exc.status != 403:
            raise
        raise TeamError(
            f"team {vault}: usage is for owners, admins and viewers",
            hint="your own usage is in your personal vault: `tapes usage` without --team",
        ) from None
    if as_json:
        output.emit_json(msgspec.to_builtins(report))
        return
    if as_csv:  # written here from the checked report: never the server's text as it came
        sys.stdout.write(output.visible(to_csv(report)))
        return
    per_day = None
    if report.group_by != ["day"]:
        per_day = api.usage(vault, {**query, "group_by": "day"})
    render(report, per_day if per_day is not None else report)
