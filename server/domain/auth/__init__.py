"""Authentication: challenge login, rotating refresh tokens, team-scoped API keys."""

from server.domain.auth.controllers import ApiKeyController, AuthController, count_attempt

__all__ = ["ApiKeyController", "AuthController", "count_attempt"]
