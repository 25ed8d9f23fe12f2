"""GitHub's device flow and ``/user``, as this server calls them. Every failure or malformed
answer is one :class:`~server.errors.BadGateway` line; the access token lives only in here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, TypeVar

import httpx
import msgspec

from server.errors import BadGateway
from server.settings import Settings
from tapes_e2e.protocol import GITHUB_LOGIN

__all__ = ["LOGIN", "DeviceCode", "GithubUser", "Grant", "poll", "start", "user"]

TIMEOUT = httpx.Timeout(10.0)
LOGIN = GITHUB_LOGIN
MAX_INTERVAL = 600  # seconds; GitHub asks for 5, plus 5 at each slow_down
_JSON = {"Accept": "application/json", "User-Agent": "tapes-server"}


class DeviceCode(msgspec.Struct, frozen=True):
    device_code: str
    user_code: str
    verification_uri: str
    expires_in: int
    interval: int = 5


class _Token(msgspec.Struct, frozen=True):
    access_token: str | None = None
    error: str | None = None
    interval: int | None = None


class GithubUser(msgspec.Struct, frozen=True):
    id: int
    login: str


@dataclass(frozen=True)
class Grant:
    """What one poll found: ``token`` when approved, else the state GitHub named."""

    state: Literal["granted", "pending", "slow_down", "expired", "denied"]
    token: str = ""
    interval: int | None = None


_T = TypeVar("_T")


def _decode(response: httpx.Response, kind: type[_T], what: str) -> _T:
    if response.status_code != 200:
        raise BadGateway(f"GitHub refused {what} ({response.status_code})")
    try:
        return msgspec.json.decode(response.content, type=kind)
    except msgspec.DecodeError:
        raise BadGateway(f"GitHub's answer to {what} is not what its API documents") from None


async def _post(settings: Settings, path: str, data: dict[str, str], what: str) -> httpx.Response:
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            return await http.post(f"{settings.github_url}{path}", data=data, headers=_JSON)
    except httpx.HTTPError as exc:
        raise BadGateway(f"GitHub did not answer {what}: {type(exc).__name__}") from None


async def start(settings: Settings) -> DeviceCode:
    """A new device code and the user code a person enters at GitHub."""
    data = {"client_id": settings.github_client_id, "scope": "read:user"}
    response = await _post(settings, "/login/device/code", data, "the device code request")
    code = _decode(response, DeviceCode, "the device code request")
    in_range = (
        0 < code.expires_in <= 3600 and 0 < code.interval <= 60
        and 0 < len(code.device_code) <= 100 and 0 < len(code.user_code) <= 20
        and code.verification_uri.startswith(("https://", "http://"))
        and len(code.verification_uri) <= 200
    )  # fmt: skip
    if not in_range:
        raise BadGateway("GitHub's device code is out of the documented ranges")
    return code


_STATES = {"authorization_pending": "pending", "slow_down": "slow_down",
           "expired_token": "expired", "access_denied": "denied"}  # fmt: skip


async def poll(settings: Settings, device_code: str) -> Grant:
    """One poll for the access token of a device code."""
    data = {
        "client_id": settings.github_client_id,
        "client_secret": settings.github_client_secret,
        "device_code": device_code,
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
    }
    response = await _post(settings, "/login/oauth/access_token", data, "the token request")
    token = _decode(response, _Token, "the token request")
    if token.access_token:
        return Grant("granted", token=token.access_token)
    state = _STATES.get(token.error or "")
    if state is None:
        raise BadGateway(f"GitHub refused the token request: {str(token.error)[:80]!r}")
    if token.interval is not None and not 0 < token.interval <= MAX_INTERVAL:
        raise BadGateway("GitHub's polling interval is out of the documented ranges")
    return Grant(state, interval=token.interval)  # type: ignore[arg-type]


async def user(settings: Settings, token: str) -> GithubUser:
    """The GitHub account an access token belongs to."""
    headers = _JSON | {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            response = await http.get(f"{settings.github_api_url}/user", headers=headers)
    except httpx.HTTPError as exc:
        raise BadGateway(f"GitHub did not answer the user request: {type(exc).__name__}") from None
    found = _decode(response, GithubUser, "the user request")
    if not 0 < found.id < 2**63 or not re.fullmatch(LOGIN, found.login):
        raise BadGateway("GitHub's user is out of the documented ranges")
    return found
