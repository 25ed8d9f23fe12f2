"""``tapes usage --open``: a one-time dashboard link for the logged-in account, printed (and
opened in a browser unless ``--no-browser``); a link to anywhere but the server is refused."""

from __future__ import annotations

import webbrowser
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from tapes_e2e.client import ApiClient
from tests.client.conftest import Tapes
from tests.server.conftest import AUDIENCE


def test_usage_open_prints_a_link_that_signs_a_browser_in(
    tapes: Tapes, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tapes("a", "auth", "login", "--server", AUDIENCE, "--handle", "alice")[0] == 0
    opened: list[str] = []

    def open_in_browser(url: str) -> bool:
        opened.append(url)
        return True

    monkeypatch.setattr(webbrowser, "open", open_in_browser)
    code, out, err = tapes("a", "usage", "--open")
    assert code == 0, err
    url = out.strip()
    assert url.startswith(f"{AUDIENCE}/dashboard/link/")
    assert opened == [url]
    assert "one-time sign-in link" in err
    page = client.get(httpx.URL(url).path)
    assert "Sign in as alice?" in page.text
    code, out, err = tapes("a", "usage", "--open", "--no-browser", "--team", "nope")
    assert code == 1
    assert "you are in no team 'nope'" in err
    assert opened == [url]
    code, out, err = tapes("a", "usage", "--json")  # without --open: the figures, no link
    assert code == 0, err
    assert "dashboard/link" not in out
    assert opened == [url]


def test_a_link_to_another_site_is_refused(
    tapes: Tapes, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tapes("a", "auth", "login", "--server", AUDIENCE, "--handle", "alice")[0] == 0
    real = ApiClient._call

    def hostile(self: ApiClient, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        answer = real(self, method, path, *args, **kwargs)
        if path == "/api/v1/dashboard/links":
            return type(answer)(url="javascript:alert(1)//" + AUDIENCE, expires_at="x")
        return answer

    monkeypatch.setattr(ApiClient, "_call", hostile)
    monkeypatch.setattr(webbrowser, "open", lambda url: pytest.fail(f"opened {url}"))
    code, out, err = tapes("a", "usage", "--open")
    assert code == 1
    assert "does not point at the server itself" in err
    assert "javascript" not in out
