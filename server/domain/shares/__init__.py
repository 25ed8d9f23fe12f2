"""Shared sessions: ``controllers`` (HTTP), ``services`` (rules and SQL)."""

from server.domain.shares.controllers import ShareController, SharedController
from server.domain.shares.services import record_shared_read

__all__ = ["ShareController", "SharedController", "record_shared_read"]
