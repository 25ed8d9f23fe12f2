"""What this client trusts about each vault, in one place.

Every key of a vault comes from the server, so nothing is used before the vault's signed chain
verified against the **head pin** this identity keeps for that vault: the last chain head it
verified, persisted once in ``pins.json`` in the .tapes directory (mode 0600, atomic writes,
one writer at a time through a lock file) and **monotonic**: a pin only moves forward, and a
chain that shrinks below it, forks from it or skips past it is refused before anything of it is
used. Every entry point verifies through :class:`Trust`: ``tapes auth login``, ``tapes storage
sync``, the hybrid worker, the cloud provider, every ``tapes team`` and ``tapes session share``
command. So once a client has seen a removal (its own ``tapes team remove``, or a sync that
followed the chain), no server can make it seal under the epoch the removal ended: the chain the
server shows must contain the pinned head, and the verified state's epoch is at least the pin's.

The **personal vault** is a team of one: its genesis must be signed by this very identity and
every statement after it too, so its only member and reader is this identity, checked on every
open and on every device (a new device has no pin yet, and this check is what stops a server from
answering with a chain it signed itself and a keyring sealed to its own key).

:class:`VaultAccess` is what an opened vault gives: the verified chain, the epoch keys this
identity opened (None for a metadata viewer) and to whom this identity's copy of each epoch's
keyring was sealed (to find members still missing it).
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

import keymgmt
from keymgmt.keyring import parse_keyring
from tapes_e2e.config import read_private, write_private
from tapes_e2e.errors import TeamError

__all__ = [
    "PINS_FILE",
    "Pins",
    "Trust",
    "VaultAccess",
    "VaultMaterial",
    "check_personal",
]

log = logging.getLogger("tapes.vaults")

PINS_FILE = "pins.json"
_LEGACY_TEAMS_FILE = "teams.json"

VaultMaterial = tuple[list[dict[str, str]], list[dict[str, str]]]
"""A vault's signed chain statements and this identity's sealed keyrings, as wire dicts: safe to
keep on disk (signed, and sealed to the identity), and verified again every time they are used."""


@dataclass(frozen=True)
class VaultAccess:
    """A vault's verified chain, the keys this identity opened (None for a viewer), and to whom
    this identity's copy of each epoch's keyring was sealed."""

    vault: str
    state: keymgmt.VerifiedTeamState
    keys: keymgmt.TeamKeys | None
    sealed_to: Mapping[int, frozenset[str]] = field(default_factory=dict)

    @property
    def epoch(self) -> int:
        return self.state.epoch

    def role(self, fingerprint: str) -> str | None:
        member = self.state.member(fingerprint)
        return member.role if member is not None else None

    def content_keys(self) -> keymgmt.TeamKeys:
        if self.keys is None:
            raise TeamError(
                f"you hold no content key of vault {self.vault} (a viewer reads usage only)",
                hint="ask an owner or admin of the team",
            )
        return self.keys


class _Pin(msgspec.Struct, forbid_unknown_fields=True):
    seqno: int
    hash: str
    epoch: int
    metadata_policy: str = ""  # at the pinned head ("" in pins written before it was kept)
    content_policy: str = ""

    def head(self) -> keymgmt.ChainHead:
        return keymgmt.ChainHead(self.seqno, self.hash)


class _PinsFile(msgspec.Struct, forbid_unknown_fields=True):
    version: int = 1
    pins: dict[str, dict[str, _Pin]] = msgspec.field(default_factory=dict)


_DECODER = msgspec.json.Decoder(_PinsFile)


class _LegacyTeam(msgspec.Struct):
    head: dict[str, object] | None = None


class _LegacyTeams(msgspec.Struct):
    teams: dict[str, _LegacyTeam] = msgspec.field(default_factory=dict)


class Pins:
    """The head pins of every (identity, vault) this .tapes directory has verified."""

    def __init__(self, dotdir: Path) -> None:
        self.dotdir = dotdir
        self.path = dotdir / PINS_FILE

    def _load(self) -> _PinsFile:
        return read_private(
            self.path, _DECODER, _PinsFile(), "the chain heads this client verified"
        )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dotdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (self.dotdir / (PINS_FILE + ".lock")).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def get(self, fingerprint: str, vault: str) -> keymgmt.ChainHead | None:
        """The pinned head, or (once, for a .tapes directory written before pins existed) the head
        ``teams.json`` kept for a team; None when this identity never verified the vault."""
        pin = self._load().pins.get(fingerprint, {}).get(vault)
        if pin is not None:
            return pin.head()
        return self._legacy(vault)

    def _legacy(self, vault: str) -> keymgmt.ChainHead | None:
        try:
            raw = (self.dotdir / _LEGACY_TEAMS_FILE).read_bytes()
            record = msgspec.json.decode(raw, type=_LegacyTeams).teams.get(vault)
        except (OSError, msgspec.DecodeError):
            return None
        if record is None or record.head is None:
            return None
        return keymgmt.ChainHead.from_dict(record.head)

    def inherit(self, old: str, new: str) -> None:
        """A rotated identity keeps what its old key verified: ``new`` starts from ``old``'s
        pins wherever it has none of its own (they only move forward from there)."""
        with self._locked():
            data = self._load()
            mine = data.pins.setdefault(new, {})
            for vault, pin in data.pins.get(old, {}).items():
                mine.setdefault(vault, pin)
            write_private(self.path, msgspec.json.encode(data).decode("utf-8"))

    def advance(self, fingerprint: str, state: keymgmt.VerifiedTeamState) -> str | None:
        """Pin ``state``'s head. A pin never moves back: a head below the pin is refused (the
        caller verified ``state`` against the pin, so this only catches a caller that did not).
        Returns a notice when the move raised the vault's policy (more sent in clear)."""
        with self._locked():
            data = self._load()
            vaults = data.pins.setdefault(fingerprint, {})
            old = vaults.get(state.team)
            head = state.head
            if old is not None:
                if head.seqno < old.seqno:
                    raise keymgmt.ChainRollbackError(
                        f"vault {state.team}: head {head.seqno} is older than the pinned "
                        f"head {old.seqno}"
                    )
                if head.seqno == old.seqno:
                    if head.hash != old.hash:
                        raise keymgmt.ChainForkError(
                            f"vault {state.team}: the chain differs from the pinned one at "
                            f"seqno {head.seqno}"
                        )
                    return None
            vaults[state.team] = _Pin(
                head.seqno, head.hash, state.epoch, state.metadata_policy, state.content_policy
            )
            write_private(self.path, msgspec.json.encode(data).decode("utf-8"))
        return None if old is None else raised_policy(old, state)


_CLEAR_RANK = {"none": 0, "coarse": 1, "full": 2}
_CONTENT_RANK = {"omit": 0, "encrypted": 1}


def raised_policy(old: _Pin, state: keymgmt.VerifiedTeamState) -> str | None:
    """A one-line notice when ``state`` sends more in clear (metadata) or sends content where the
    pinned head sent none; None otherwise."""
    changes = []
    was: str = old.metadata_policy
    now: str = state.metadata_policy
    if was in _CLEAR_RANK and _CLEAR_RANK[now] > _CLEAR_RANK[was]:
        changes.append(f"clear metadata {was} -> {now}")
    was, now = old.content_policy, state.content_policy
    if was in _CONTENT_RANK and _CONTENT_RANK[now] > _CONTENT_RANK[was]:
        changes.append(f"content {was} -> {now} (encrypted bodies are now uploaded)")
    if not changes:
        return None
    signer = next(
        (st.body.signer for st in reversed(state.statements) if st.body.action == "change_policy"),
        "?",
    )
    return (
        f"vault {state.team}: its policy was raised ({'; '.join(changes)}) by {signer}: "
        "from now on your syncs to it send more than before"
    )


_PERSONAL_ACTIONS = frozenset({"create", "rotate", "change_policy", "rekey"})


def check_personal(state: keymgmt.VerifiedTeamState, identity: keymgmt.Identity) -> None:
    """Refuse a personal vault chain that this identity did not write alone: nobody but one
    member at any point, never an ``add``, and that one member this identity now. Before a key
    rotation (``rekey``) the one member was this identity's earlier key, which signed the
    rotation; the new key's proof in it signed the chain up to there, so no server can end a
    chain it wrote at this identity's key."""
    mine = identity.fingerprint
    foreign = [st.body.seqno for st in state.statements if st.body.action not in _PERSONAL_ACTIONS]
    me = state.member(mine)
    if (
        foreign
        or set(state.members) != {mine}
        or me is None
        or me.public != identity.public
        or any(len(point.readers) != 1 for point in state.checkpoints)
    ):
        where = f" (statement {foreign[0]})" if foreign else ""
        retired = any(
            st.body.action == "rekey" and st.body.signer == mine for st in state.statements
        )
        if me is None and retired and len(state.members) == 1:
            raise keymgmt.ChainPermissionError(
                f"this identity was rotated to {next(iter(state.members))} (`tapes keys rotate` "
                "on another machine): this key is retired",
                hint="import the new key here with `tapes keys import` (its recovery kit)",
            )
        raise keymgmt.ChainPermissionError(
            f"the server's chain for your personal vault {state.team} was not written by your "
            f"identity alone{where}: refused, nothing was sealed or opened"
        )


class Trust:
    """Verifies vault chains for one identity against its pins, and opens their keys.

    ``personal_vault`` is the id of this identity's personal vault on the server in use (from the
    saved login); a chain for it must pass :func:`check_personal`.
    """

    def __init__(
        self, dotdir: Path, identity: keymgmt.Identity, personal_vault: str | None = None
    ) -> None:
        self.pins = Pins(dotdir)
        self.identity = identity
        self.personal_vault = personal_vault
        self.notices: list[str] = []  # policy raises met while verifying, for the user to see

    def pin(self, vault: str) -> keymgmt.ChainHead | None:
        return self.pins.get(self.identity.fingerprint, vault)

    def verify(
        self,
        vault: str,
        statements: Iterable[object],
        *,
        also_verified: Iterable[keymgmt.ChainHead] = (),
        check: Callable[[keymgmt.VerifiedTeamState], None] | None = None,
    ) -> keymgmt.VerifiedTeamState:
        """Verify ``statements`` as ``vault``'s chain from its genesis against the pin (and any
        ``also_verified`` head, e.g. one a store kept before pins existed), run ``check`` on the
        result (a joiner's invite code, say), then move the pin. Any failure raises and nothing
        is recorded."""
        pin = self.pin(vault)
        try:
            state = keymgmt.verify_chain(statements, pin, team=vault)
        except keymgmt.ChainRollbackError as exc:
            raise _hiding(vault, exc) from None
        for head in also_verified:
            _require_contains(state, head)
        if check is not None:
            check(state)
        return self.accept(state)

    def accept(self, state: keymgmt.VerifiedTeamState) -> keymgmt.VerifiedTeamState:
        """Pin a state verified here (a chain this client just extended itself, say)."""
        if state.team == self.personal_vault:
            check_personal(state, self.identity)
        notice = self.pins.advance(self.identity.fingerprint, state)
        if notice is not None:
            log.warning("%s", notice)
            self.notices.append(notice)
        return state

    def open(
        self,
        vault: str,
        material: VaultMaterial,
        *,
        also_verified: Iterable[keymgmt.ChainHead] = (),
    ) -> VaultAccess:
        """Verify the chain (as :meth:`verify`) and open this identity's keyrings."""
        statements, keyrings = material
        state = self.verify(vault, statements, also_verified=also_verified)
        return self.open_keys(state, keyrings)

    def open_keys(
        self, state: keymgmt.VerifiedTeamState, keyrings: Iterable[Mapping[str, object]]
    ) -> VaultAccess:
        """Open the keyrings of a verified vault that are sealed to this identity; a reader with
        no keyring, or a keyring that does not open, is an error."""
        keys: keymgmt.TeamKeys | None = None
        sealed_to: dict[int, frozenset[str]] = {}
        for wire in keyrings:
            epoch = keymgmt.open_keyring(wire, state=state, identity=self.identity)
            sealed_to[epoch.epoch] = frozenset(parse_keyring(wire).body.recipients)
            if keys is None:
                keys = keymgmt.TeamKeys.from_epoch_keys(epoch)
            else:
                keys.add(epoch)
        member = state.member(self.identity.fingerprint)
        if keys is None and member is not None and member.reads_content:
            raise keymgmt.PolicyError(
                f"no keyring of vault {state.team} is sealed to this identity yet",
                hint=f"ask an owner or admin to run `tapes team approve {state.team}`",
            )
        return VaultAccess(state.team, state, keys, sealed_to)


def _hiding(vault: str, exc: keymgmt.ChainRollbackError) -> keymgmt.ChainRollbackError:
    return keymgmt.ChainRollbackError(
        f"the server shows vault {vault} at an older chain head than this client verified "
        f"({exc.message}): it may be hiding a removal; nothing was sealed or opened"
    )


def _require_contains(state: keymgmt.VerifiedTeamState, head: keymgmt.ChainHead) -> None:
    if head.seqno > state.head.seqno:
        raise keymgmt.ChainRollbackError(
            f"the server shows vault {state.team} at chain head {state.head.seqno}, older than "
            f"the head {head.seqno} this client verified: it may be hiding a removal"
        )
    if state.statements[head.seqno].hash != head.hash:
        raise keymgmt.ChainForkError(
            f"the chain of vault {state.team} differs from the one verified before at seqno "
            f"{head.seqno}"
        )
