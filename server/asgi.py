"""The ASGI entry point for uvicorn workers: settings come from the environment."""

from __future__ import annotations

from server.app import create_app
from server.settings import Settings

app = create_app(Settings.from_env())
