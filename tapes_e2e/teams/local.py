"""What this client keeps about its teams: ``teams.json`` in the .tapes directory.

- ``teams``: legacy only. Files written before head pins existed kept each team's last verified
  chain head here; :class:`tapes_e2e.vaults.Pins` reads it once as the pin of a team it has none
  for, and nothing writes it any more (the pins live in ``pins.json``);
- ``invites``: the invites this client made, with their codes. A code holds the invite's
  one-time secret, which the inviter needs to check join requests and to sign the ``add``; it is
  kept until the invite is used, and never sent to the server;
- ``joins``: the codes of this client's own join requests, until the chain is verified against
  them (the code pins the inviter's fingerprint and the secret proves the ``add``);
- ``pending_keyrings``: a removal's new-epoch keyring, sealed (safe on disk) before the removal
  is appended, so that a crash between the two steps never loses the new epoch key.

The file holds invite secrets, so it is written like ``session.json``: mode 0600, atomically
(``config.write_private``). A malformed file is an error, never silently replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec

from tapes_e2e.config import read_private, write_private

__all__ = [
    "TEAMS_FILE",
    "InviteRecord",
    "JoinRecord",
    "PendingKeyring",
    "TeamRecord",
    "TeamsFile",
    "load",
    "update",
]

TEAMS_FILE = "teams.json"


class TeamRecord(msgspec.Struct, forbid_unknown_fields=True):
    """Legacy: what files from before head pins kept per team (read, never written)."""

    name: str = ""
    head: dict[str, object] | None = None


class InviteRecord(msgspec.Struct, forbid_unknown_fields=True):
    team: str
    role: str
    code: str


class JoinRecord(msgspec.Struct, forbid_unknown_fields=True):
    team: str
    code: str


class PendingKeyring(msgspec.Struct, forbid_unknown_fields=True):
    statement: dict[str, str]
    keyring: dict[str, str]


class TeamsFile(msgspec.Struct, forbid_unknown_fields=True):
    version: int = 1
    teams: dict[str, TeamRecord] = msgspec.field(default_factory=dict)
    invites: dict[str, InviteRecord] = msgspec.field(default_factory=dict)
    joins: dict[str, JoinRecord] = msgspec.field(default_factory=dict)
    pending_keyrings: dict[str, PendingKeyring] = msgspec.field(default_factory=dict)


_DECODER = msgspec.json.Decoder(TeamsFile)


def load(dotdir: Path) -> TeamsFile:
    """The saved team records; an empty set when there is no file yet."""
    return read_private(
        dotdir / TEAMS_FILE, _DECODER, TeamsFile(), "unused invites and pending joins"
    )


def update(dotdir: Path, change: Callable[[TeamsFile], object]) -> TeamsFile:
    """Read the file, apply ``change``, and write it back atomically with mode 0600."""
    data = load(dotdir)
    change(data)
    write_private(dotdir / TEAMS_FILE, msgspec.json.encode(data).decode("utf-8"))
    return data
