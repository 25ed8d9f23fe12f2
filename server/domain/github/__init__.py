"""Binding an account to a GitHub login (the RFC's ``POST /auth/github``), by GitHub's device
flow: ``controllers`` (HTTP), ``services`` (rules and SQL), ``gateway`` (GitHub's endpoints)."""

from server.domain.github.controllers import GithubController, UserLookupController

__all__ = ["GithubController", "UserLookupController"]
