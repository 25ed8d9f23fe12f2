"""Server fixtures: the real Litestar app on a fresh, migrated database, and logged-in users.

``server_app`` runs in-process through Litestar's TestClient (an ``httpx.Client``). The same
tests run against PostgreSQL when ``TAPES_TEST_DATABASE_URL`` names one (tests/server/pg.py
starts a throwaway cluster for that).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from litestar.testing import TestClient

import keymgmt
from keymgmt.login import sign_login
from server.app import create_app
from server.db.engine import make_engine
from server.db.migrate import upgrade
from server.plans import PLANS_MODES, PlansMode
from server.settings import Settings
from tests.server.pg import PostgresCluster, postgres_unavailable, running_cluster

AUDIENCE = "http://testserver.local"


class Clock:
    """A clock the tests move by hand. It starts at the real time (whole seconds), because the
    client code under test signs with the real clock and the server allows only minutes of skew:
    a clock pinned to a date stops working once that date is past."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with running_cluster() as cluster:
        yield cluster


_databases = itertools.count()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every server test runs on SQLite and on a real PostgreSQL 15."""
    if request.param == "sqlite":
        return f"sqlite+pysqlite:///{tmp_path / 'server.sqlite'}"
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database(f"tapes_test_{os.getpid()}_{next(_databases)}")


def plans_mode(request: pytest.FixtureRequest) -> PlansMode:
    """The server's plans: ``off`` as a self-hosted server runs, unless the test is marked
    ``@pytest.mark.plans("rfc")`` (the tests of plan limits and retention)."""
    marker = request.node.get_closest_marker("plans")
    mode: PlansMode = marker.args[0] if marker else "off"
    assert mode in PLANS_MODES, mode
    return mode


@pytest.fixture
def client(
    database_url: str, clock: Clock, request: pytest.FixtureRequest
) -> Iterator[TestClient[Any]]:
    url = database_url
    settings = Settings(database_url=url, auth_rate_per_minute=1000, plans=plans_mode(request))
    engine = make_engine(url)
    upgrade(engine)
    app = create_app(settings, engine=engine, clock=clock, audience=AUDIENCE)
    with TestClient(app, base_url=AUDIENCE) as test_client:
        yield test_client
    engine.dispose()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_handles = itertools.count()


class User:
    """A person with an identity, logged in to the server through the real endpoints."""

    def __init__(self, client: TestClient[Any], handle: str | None = None) -> None:
        self.client = client
        self.identity = keymgmt.generate_identity()
        self.handle = handle or f"user{next(_handles)}"
        tokens = self.login(register=True)
        self.access, self.refresh = tokens["access_token"], tokens["refresh_token"]
        self.vault = tokens["personal_vault"]
        self.user_id = tokens["user_id"]

    @property
    def keys(self) -> dict[str, str]:
        return {
            "x25519": self.identity.public.x25519.hex(),
            "ed25519": self.identity.public.ed25519.hex(),
        }

    def login(self, *, register: bool = False, device: str | None = None) -> dict[str, Any]:
        challenge = self.client.post("/auth/challenge").json()
        signature = sign_login(
            self.identity,
            server=challenge["audience"],
            challenge_id=challenge["challenge_id"],
            nonce=unb64(challenge["nonce"]),
        )
        body: dict[str, Any] = {
            "challenge_id": challenge["challenge_id"],
            "keys": self.keys,
            "signature": b64(signature),
        }
        if register:
            body["handle"] = self.handle
        if device is not None:
            body["device"] = device
        response = self.client.post("/auth/login", json=body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def relogin(self) -> None:
        """Log in again (after the test clock moved past the access token's life)."""
        self.access = self.login()["access_token"]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, headers=self.headers, **kwargs)

    def post(self, path: str, body: Any) -> Any:
        return self.client.post(path, json=body, headers=self.headers)

    def delete(self, path: str) -> Any:
        return self.client.delete(path, headers=self.headers)


class Vault:
    """Keys for sealing envelopes into one vault, as a client holds them."""

    def __init__(self, vault_id: str, author: keymgmt.Identity) -> None:
        self.vault_id = vault_id
        self.author = author
        self.vault_key = keymgmt.new_key()
        self.epoch_key = keymgmt.new_key()
        self.epoch = 1

    def seal(
        self,
        text: str,
        parent_hash: str | None = None,
        *,
        size: int = 0,
        parent_id: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """A fake tapes node (the server never looks inside) sealed as an envelope. The parent
        is named ``parent_id`` when given (its ID under the epoch it was sealed in), else as if
        sealed in this vault's epoch."""  # fmt: skip
        body = (text + "x" * size).encode("utf-8")
        tapes_hash = hashlib.sha256(b"%s|%s" % ((parent_hash or "").encode(), body)).hexdigest()
        keys = self.keys
        envelope = keymgmt.seal_node(
            state=self.position,
            keys=keys,
            tapes_hash=tapes_hash,
            parent_id=parent_id
            or (None if parent_hash is None else keys.node_id(self.epoch, parent_hash)),
            body=body,
            metadata=keymgmt.project_metadata(
                "coarse", {"model": "m", "role": "user", "total_tokens": 7}
            ),
            author=self.author.fingerprint,
        )
        return tapes_hash, envelope.to_dict()

    @property
    def keys(self) -> keymgmt.TeamKeys:
        return keymgmt.TeamKeys(self.vault_id, self.vault_key, {self.epoch: self.epoch_key})

    @property
    def position(self) -> keymgmt.VerifiedTeamState:
        """What ``seal_node`` reads of a verified chain (team, epoch, head). The server never
        verifies a chain position, so any well-formed one does here."""
        head = keymgmt.ChainHead(0, "0" * 64)
        return SimpleNamespace(team=self.vault_id, epoch=self.epoch, head=head)  # type: ignore[return-value]

    def seal_metadata_only(
        self, tapes_hash: str, metadata: dict[str, Any], signer: keymgmt.Identity
    ) -> dict[str, Any]:
        """A metadata-only record (content policy ``omit``), signed by ``signer``."""
        return keymgmt.seal_node(
            state=self.position, keys=self.keys, tapes_hash=tapes_hash, parent_id=None,
            body=None, metadata=metadata, author=signer.fingerprint, signer=signer,
        ).to_dict()  # fmt: skip

    def chain(self, count: int, *, size: int = 0) -> list[dict[str, Any]]:
        parent: str | None = None
        out = []
        for index in range(count):
            parent, env = self.seal(f"turn {index}", parent, size=size)
            out.append(env)
        return out


@pytest.fixture
def alice(client: TestClient[Any]) -> User:
    return User(client, "alice")


@pytest.fixture
def bob(client: TestClient[Any]) -> User:
    return User(client, "bob")


@pytest.fixture
def carol(client: TestClient[Any]) -> User:
    return User(client, "carol")
