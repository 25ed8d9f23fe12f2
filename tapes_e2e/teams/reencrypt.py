"""``tapes team reencrypt``: seal this member's history in a team vault again under the team's
current key epoch.

After a removal or a stolen key, nodes sealed before stay readable to whoever holds an older
epoch key and a copy of the server's data. This opens each of the caller's own nodes under an
older epoch (the server lets nobody replace another member's uploads) and seals it again under
the current one, parents first, a page at a time; the server swaps each row in place and keeps
the old ID as an alias, so shares and other members' clients keep finding it. Every page is
committed on its own, so an interrupted run loses nothing and the next run goes on with what is
left. One run at a time per team on this machine (a lock file names the holder); two machines
at once are safe too: a node already swapped is refused, and the next run skips it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keymgmt
from tapes_e2e.client import ApiClient
from tapes_e2e.envelopes import MetadataRecord, node_body, open_envelope
from tapes_e2e.errors import TeamError
from tapes_e2e.locks import LockFile
from tapes_e2e.protocol import EnvelopeWire
from tapes_e2e.teams.access import open_team

__all__ = ["Reencrypted", "lock_path", "reencrypt"]

PAGE = 200


@dataclass(frozen=True)
class Reencrypted:
    """What a run did: nodes sealed again, the epoch they are under now, and the other members'
    nodes still under older epochs (only their uploaders can seal those again)."""

    resealed: int
    epoch: int
    others: int


def lock_path(dotdir: Path, team: str) -> Path:
    return dotdir / f"reencrypt-{team}.lock"


def _one_run(dotdir: Path, team: str) -> LockFile:
    """This machine's lock for re-sealing ``team``: a second run is refused, naming the holder."""
    return LockFile(
        lock_path(dotdir, team), command=f"tapes team reencrypt {team}",
        busy=f"team {team} is already being re-encrypted here",
        hint="wait for it to finish; if it was interrupted, run the command again",
    )  # fmt: skip


def reencrypt(
    api: ApiClient, identity: keymgmt.Identity, dotdir: Path, team: str,
    progress: Callable[[int, int], None] = lambda _done, _total: None,
) -> Reencrypted:  # fmt: skip
    """Seal every node this account uploaded to ``team`` under an older epoch again under the
    current one; ``progress(done, total)`` after each page."""
    with _one_run(dotdir, team).hold():
        access = open_team(api, team, identity, dotdir)
        keys = access.content_keys()
        state = access.state
        keys.sealing_key(state)  # refuses before anything is opened if the newest key is missing
        status = api.reseal_status(team)
        if status.epoch != state.epoch:
            raise TeamError(
                f"the server has team {team} in epoch {status.epoch}, the verified chain in "
                f"{state.epoch}", hint="run it again in a moment",
            )  # fmt: skip
        done, after, total = 0, 0, status.mine
        progress(done, total)
        while True:
            page = api.reseal_nodes(team, after, PAGE)
            swaps = [_sealed_again(item.envelope, state, keys, identity) for item in page.items]
            items = [swap for swap in swaps if swap is not None]
            if items:
                done += api.reseal(team, items)
                progress(done, max(total, done))
            if not page.more:
                break
            after = page.cursor
        return Reencrypted(done, state.epoch, status.others)


def _sealed_again(
    wire: EnvelopeWire, state: keymgmt.VerifiedTeamState, keys: keymgmt.TeamKeys,
    identity: keymgmt.Identity,
) -> dict[str, object] | None:  # fmt: skip
    """The swap for one envelope: its ID now and the same node sealed under the current epoch,
    naming its parent as before (an old ID the server resolves) and keeping its clear metadata,
    which was counted once, at push. Anything that does not open is refused as a pull would."""
    node = open_envelope(wire, state=state, keys=keys)
    if isinstance(node, MetadataRecord):  # nothing sealed to seal again
        return None
    sealed = keymgmt.seal_node(
        state=state, keys=keys, tapes_hash=node.hash, parent_id=wire.parent_id,
        body=node_body(node), metadata=wire.metadata, author=identity.fingerprint,
    )  # fmt: skip
    return {"old_id": wire.node_id, "envelope": sealed.to_dict()}
