"""Everything the CLI prints: JSON, tables, progress bars and errors.

Results go to stdout (``--json`` for machines); progress bars, notes and errors go to stderr, so
``tapes session export > file`` stays clean. Errors read ``tapes: error: …`` then, when there is
something to do about it, ``tapes: hint: …``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from tapes_e2e.errors import TapesError
from tapes_e2e.protocol.text import JSON_UNESCAPED, visible

# The --json flag of every listing command.
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]

__all__ = [
    "JsonFlag",
    "Progress",
    "emit_json",
    "error",
    "note",
    "plain",
    "progress",
    "stdout",
    "table",
    "visible",
]


def plain(text: str, style: str = "") -> Text:
    """``text`` as Rich shows it: never markup (``[/INST]``, ``[link=…]``), never control."""
    return Text(visible(text), style=style)


class _PlainConsole(Console):
    """A Console that shows every string it is given as :func:`visible` text. Renderables (a
    table) are built from :func:`plain` cells."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(visible(o) if isinstance(o, str) else o for o in objects), **kwargs)


stdout = _PlainConsole(highlight=False, soft_wrap=True)
_stderr = _PlainConsole(stderr=True, highlight=False, soft_wrap=True)


def emit_json(value: Any) -> None:
    text = json.dumps(value, indent=2, ensure_ascii=False)  # C0 controls come out escaped
    sys.stdout.write(JSON_UNESCAPED.sub(lambda c: f"\\u{ord(c.group()):04x}", text) + "\n")


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    """A table on stdout. Every cell is plain text: cells carry prompts, titles and names that
    came from other people or the server, and a string such as ``[/INST]`` or ``[link=…]`` read
    as Rich markup crashes the command or becomes a live link."""
    grid = Table(title=plain(title) if title else None, show_edge=False, header_style="bold")
    for column in columns:
        grid.add_column(plain(column), overflow="fold")
    for row in rows:
        grid.add_row(*(plain(str(cell)) for cell in row))
    stdout.print(grid)


def count(number: int, noun: str) -> str:
    """``1 session``, ``2 sessions``, ``1,024 nodes``: a number and its noun, agreeing."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def confirm(yes: bool, what: str, question: str) -> None:
    """Go on with ``--yes``, or when the user answers yes at a terminal; otherwise one error
    (no terminal to ask at: say --yes; answered no: nothing was changed)."""
    if yes:
        return
    if sys.stdin is None or not sys.stdin.isatty():
        raise TapesError(f"{what} asks you to confirm", hint="run it in a terminal, or pass --yes")
    if not typer.confirm(question, default=False):
        raise TapesError("nothing was changed", hint="answer yes, or pass --yes")


def note(message: str) -> None:
    _stderr.print(message, markup=False)


def error(message: str, hint: str | None = None) -> None:
    # markup=False: messages may quote user input, which must not be read as rich markup.
    _stderr.print(f"tapes: error: {message}", markup=False)
    if hint:
        _stderr.print(f"tapes: hint: {hint}", markup=False)


@contextmanager
def progress(description: str, total: float | None) -> Iterator[Progress]:
    """A progress bar on stderr, shown only when stderr is a terminal."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),  # "12/?" while the total is unknown
        TimeRemainingColumn(),
        console=_stderr,
        transient=True,
        disable=not _stderr.is_terminal,
    )
    with bar:
        bar.add_task(description, total=total)
        yield bar
