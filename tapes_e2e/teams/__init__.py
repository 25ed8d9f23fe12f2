"""Team vaults on the client: the flows behind ``tapes team …`` and ``tapes session share``.

- :mod:`~tapes_e2e.teams.local` — ``teams.json``: verified heads, invite codes, pending joins;
- :mod:`~tapes_e2e.teams.access` — verify a team's chain, then open its keys;
- :mod:`~tapes_e2e.teams.flows` — create, invite, join, approve, remove;
- :mod:`~tapes_e2e.teams.sharing` — share, unshare, list shared sessions;
- :mod:`~tapes_e2e.teams.routing` — which vault a sync uses, and the team push hooks.
"""

__all__: list[str] = []
