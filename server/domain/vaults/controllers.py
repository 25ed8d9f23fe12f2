"""HTTP of vaults: the caller's vaults, and a personal vault's genesis, chain and keyrings.

- ``GET /api/v1/teams`` and ``GET /api/v1/teams/{vault}`` — the caller's vaults (personal and
  team), or one of them.
- ``POST /api/v1/teams/{vault}/genesis`` — once, by the owner of a personal vault whose chain is
  empty: 404 for anybody else (as for a vault that does not exist), 400 for a team vault (its
  genesis came with ``POST /api/v1/teams``) or a statement or keyring keymgmt refuses, 409 once
  the chain has its genesis. API keys cannot do it.
- ``GET /api/v1/vaults/{vault}/chain?after=`` — the signed statements after a seqno, for any live
  member of a personal or team vault (``/api/v1/teams/{id}/chain`` serves team vaults only).
- ``GET /api/v1/vaults/{vault}/keyrings`` — the keyrings sealed to the caller, by epoch; a
  viewer gets none.
"""

from __future__ import annotations

from litestar import Controller
from litestar.params import FromPath, JSONBody

from server.deps import AUTHENTICATED, NowDep, PrincipalDep, SessionDep
from server.domain.chain import chain_page
from server.domain.vaults import services
from server.openapi import AfterSeqno, TeamPath, get, post
from tapes_e2e.protocol import VaultOut
from tapes_e2e.protocol.teams import ChainPage, KeyringOut
from tapes_e2e.protocol.vaults import GenesisCreate, GenesisCreated

__all__ = ["VaultChainController", "VaultController"]


class VaultController(Controller):
    path = "/api/v1/teams"
    tags = ["teams"]
    dependencies = AUTHENTICATED

    @get("/", sync_to_thread=True)
    def list_teams(self, db: SessionDep, principal: PrincipalDep) -> list[VaultOut]:
        """The caller's vaults: their personal vault and the teams they belong to."""
        return services.vaults(db, principal)

    @get("/{team_id:str}", sync_to_thread=True)
    def get_team(self, team_id: FromPath[str], db: SessionDep, principal: PrincipalDep) -> VaultOut:
        """One vault of the caller's."""
        return services.vault(db, principal, team_id)


class VaultChainController(Controller):
    """Routes under ``/api/v1``: the genesis under ``teams/``, the reads under ``vaults/``."""

    path = "/api/v1"
    tags = ["vaults"]
    dependencies = AUTHENTICATED

    @post("/teams/{vault:str}/genesis", sync_to_thread=True, status_code=201)
    def genesis(
        self, vault: TeamPath, data: JSONBody[GenesisCreate], db: SessionDep,
        principal: PrincipalDep, now: NowDep,
    ) -> GenesisCreated:  # fmt: skip
        """Upload a personal vault's genesis statement and keyring (the owner, once)."""
        return services.create_genesis(db, principal, vault, data, now)

    @get("/vaults/{vault:str}/chain", sync_to_thread=True)
    def chain(
        self, vault: TeamPath, db: SessionDep, principal: PrincipalDep, after: AfterSeqno = -1
    ) -> ChainPage:
        """The signed statements after ``after`` (any live member, viewers included)."""
        team, _member = services.vault_member(db, principal, vault)
        return chain_page(db, team, after)

    @get("/vaults/{vault:str}/keyrings", sync_to_thread=True)
    def keyrings(
        self, vault: TeamPath, db: SessionDep, principal: PrincipalDep
    ) -> list[KeyringOut]:
        """The keyrings sealed to the caller, by epoch (a viewer has none)."""
        return services.my_keyrings(db, principal, vault)
