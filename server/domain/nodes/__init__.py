"""Nodes and sync: ``controllers`` (HTTP), ``services`` (rules and SQL)."""

from server.domain.nodes.controllers import NodeController, SyncController

__all__ = ["NodeController", "SyncController"]
