"""Shared fixtures: isolated homes and small node builders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapes_e2e.cli import go_tapes
from tapes_e2e.node import Bucket, ContentBlock, Node, Usage
from tapes_e2e.providers.local import LocalProvider


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's ~/.tapes or database variables."""
    for var in ("TAPES_HOME", "TAPES_SQLITE", "TAPES_DB", "XDG_DATA_HOME", "TAPES_PASSPHRASE"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    # Pulls open their pages in this process unless a test asks for worker processes (starting
    # them costs tenths of a second a pull; tests/client/test_pull_workers.py covers them).
    monkeypatch.setenv("TAPES_SYNC_WORKERS", "0")
    # An unknown subcommand is handed to Go tapes by exec: never from inside the test process.
    monkeypatch.delenv("TAPES_GO_BIN", raising=False)
    while (go := go_tapes()) is not None:
        path = os.environ["PATH"].split(os.pathsep)
        monkeypatch.setenv("PATH", os.pathsep.join(p for p in path if Path(p or ".") != go.parent))


def text_bucket(role: str, text: str, model: str = "claude-sonnet-4-5") -> Bucket:
    return Bucket(
        type="message",
        role=role,
        content=(ContentBlock(type="text", text=text),),
        model=model,
        provider="anthropic",
    )


def chain(texts: list[str], parent: Node | None = None) -> list[Node]:
    """A conversation alternating user and assistant turns, each node the child of the last."""
    nodes: list[Node] = []
    for index, text in enumerate(texts):
        role = "user" if index % 2 == 0 else "assistant"
        usage = Usage(prompt_tokens=10 * index, completion_tokens=5, total_tokens=10 * index + 5)
        node = Node.new(
            text_bucket(role, text),
            nodes[-1] if nodes else parent,
            usage=usage if role == "assistant" else None,
            stop_reason="end_turn" if role == "assistant" else "",
        )
        nodes.append(node)
    return nodes


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalProvider]:
    provider = LocalProvider(tmp_path / "tapes.sqlite")
    yield provider
    provider.close()
