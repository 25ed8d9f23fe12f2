"""``tapes usage --open``: sign a browser in to the server's usage dashboard.

It asks the server for a one-time link (valid 5 minutes, usable once; the server keeps only its
hash), prints it and opens it in the default browser. The link signs the browser in as the
logged-in account; the identity key never leaves this machine. The rest of ``tapes usage``
(tables, CSV, ``--verify``) lives in its own module; this one only opens the dashboard.
"""

from __future__ import annotations

import webbrowser

from tapes_e2e.cli import output
from tapes_e2e.context import Settings, logged_in
from tapes_e2e.teams.access import resolve_team

__all__ = ["open_dashboard"]


def open_dashboard(settings: Settings, team: str | None, *, browser: bool = True) -> str:
    """Mint a link for ``team`` (an id or a unique name; none: the dashboard's first team),
    print it, open it unless ``browser`` is false; returns the URL."""
    api, _ = logged_in(settings, needs="tapes usage --open")
    team_id = resolve_team(api, team) if team else None
    link = api.dashboard_link(team_id)
    output.stdout.print(link.url, markup=False, soft_wrap=True)
    output.note(f"a one-time sign-in link, valid until {link.expires_at}; do not share it")
    if browser and not webbrowser.open(link.url):
        output.note("no browser could be opened here: open the link above on this machine")
    return link.url
