"""The README's demo: record sample sessions (with a branch) into a fresh store and show them.

Run with ``python -m tapes_e2e.demo``. It works in a temporary .tapes directory and leaves the
user's own ~/.tapes alone.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tapes_e2e.cli import main as tapes
from tapes_e2e.node import Bucket, ContentBlock, Node, Usage
from tapes_e2e.providers.local import LocalProvider

MODEL = "claude-sonnet-4-5-20250929"


def _turn(role: str, *blocks: ContentBlock) -> Bucket:
    return Bucket(
        type="message",
        role=role,
        content=blocks,
        model=MODEL,
        provider="anthropic",
        agent_name="claude",
    )


def _text(text: str) -> ContentBlock:
    return ContentBlock(type="text", text=text)


def record(store: LocalProvider) -> list[Node]:
    """Record two sessions the way the tapes proxy would; the first one branches."""
    used = Usage(prompt_tokens=1200, completion_tokens=180, total_tokens=1380)
    ask = Node.new(_turn("user", _text("Why does my test fail with 'database is locked'?")))
    look = Node.new(
        _turn(
            "assistant",
            _text("Let me look at how the connection is opened."),
            ContentBlock(
                type="tool_use",
                tool_use_id="toolu_01",
                tool_name="read_file",
                tool_input={"path": "app/db.py", "limit": 80},
            ),
        ),
        ask,
        usage=used,
        stop_reason="tool_use",
        project="demo-app",
    )
    result = Node.new(
        _turn(
            "user",
            ContentBlock(
                type="tool_result",
                tool_result_id="toolu_01",
                tool_output="engine = create_engine('sqlite:///app.db')",
            ),
        ),
        look,
        project="demo-app",
    )
    answer = Node.new(
        _turn("assistant", _text("Turn on WAL and take writes with BEGIN IMMEDIATE.")),
        result,
        usage=Usage(prompt_tokens=1500, completion_tokens=90, total_tokens=1590),
        stop_reason="end_turn",
        project="demo-app",
    )
    # A regenerated answer: a branch from the same parent, so a second session.
    regenerated = Node.new(
        _turn("assistant", _text("Set busy_timeout so writers wait for each other.")),
        result,
        usage=Usage(prompt_tokens=1500, completion_tokens=70, total_tokens=1570),
        stop_reason="end_turn",
        project="demo-app",
    )
    other = Node.new(_turn("user", _text("Summarize RFC 8785 in one sentence.")))
    reply = Node.new(
        _turn("assistant", _text("It defines one canonical byte form for any JSON value.")),
        other,
        usage=Usage(prompt_tokens=40, completion_tokens=20, total_tokens=60),
        stop_reason="end_turn",
    )
    nodes = [ask, look, result, answer, regenerated, other, reply]
    for node in nodes:
        store.put(node)
    return nodes


def _step(title: str) -> None:
    print(f"\n=== {title}")  # noqa: T201 - the demo talks to its user


def _run(*args: str) -> None:
    print("$ tapes " + " ".join(args))  # noqa: T201
    try:
        tapes(list(args))
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tapes-demo-") as home:
        dotdir = Path(home) / ".tapes"
        _step(f"recording sample sessions into a fresh store under {dotdir}")
        with LocalProvider(dotdir / "tapes.sqlite") as store:
            nodes = record(store)
        print(f"recorded {len(nodes)} nodes")  # noqa: T201
        _step("the sessions (a regenerated answer made a branch: two sessions share a prefix)")
        _run("--config-dir", str(dotdir), "session", "list")
        _step("one session, from its first message to its leaf")
        _run("--config-dir", str(dotdir), "session", "show", nodes[4].hash[:12])
        _step("every hash recomputed, Go tapes' algorithm")
        _run("--config-dir", str(dotdir), "verify")
        _step("where it is stored, and why")
        _run("--config-dir", str(dotdir), "storage", "status")
        print("\ndemo finished; the temporary store is removed")  # noqa: T201


if __name__ == "__main__":
    main()
