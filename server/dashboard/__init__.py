"""The usage dashboard served at ``/dashboard``: Jinja templates, vendored htmx, no JavaScript
build, a strict Content-Security-Policy. See :mod:`server.dashboard.controllers`."""

from server.dashboard.controllers import DASHBOARD_HANDLERS
from server.dashboard.web import template_config

__all__ = ["DASHBOARD_HANDLERS", "template_config"]
