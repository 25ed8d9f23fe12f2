"""The personal-vault genesis and vault chain/keyring controllers, registered by
``server.app.create_app``."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from server.domain.genesis import VaultChainController

__all__ = ["GENESIS_CONTROLLERS"]

GENESIS_CONTROLLERS: list[ControllerRouterHandler] = [VaultChainController]
