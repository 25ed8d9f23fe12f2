"""Vaults: the caller's vaults, and a personal vault's genesis, chain and keyrings."""

from server.domain.vaults.controllers import VaultChainController, VaultController

__all__ = ["VaultChainController", "VaultController"]
