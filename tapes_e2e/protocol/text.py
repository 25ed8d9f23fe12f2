"""Text that one person chose and another is shown: how it is shown, and what a name may hold.

Prompts, titles, model names and team names reach the CLI and the dashboard from other members
or the server. There they are data: a control character in them is shown as an escape, never
acted on. The same characters are refused outright in the names the server keeps for display
(team, API key and device names), where no honest use needs them.
"""

from __future__ import annotations

import re
from typing import Annotated

from msgspec import Meta

__all__ = ["CONTROL", "JSON_UNESCAPED", "DeviceName", "KeyName", "TeamName", "is_name", "visible"]

_C1_AND_BIDI = r"\x7f-\x9f\u202a-\u202e\u2066-\u2069"
_CONTROLS = r"\x00-\x08\x0b-\x1f" + _C1_AND_BIDI
CONTROL = re.compile(f"[{_CONTROLS}]")
"""What a terminal or a text layout acts on rather than shows: C0 controls but tab and newline
(escape sequences, carriage return, backspace), DEL, C1 controls (0x9b is CSI on its own), and
the bidirectional overrides and isolates that make text read in another order than it is
stored."""


JSON_UNESCAPED = re.compile(f"[{_C1_AND_BIDI}]")
"""The :data:`CONTROL` characters that JSON leaves as they are (it escapes C0 itself)."""


def visible(text: str) -> str:
    """``text`` with every :data:`CONTROL` character shown as an escape (``\\x1b``,
    ``\\u202e``): a prompt, title or name that came from another person or the server cannot
    move the cursor, clear the screen, set the window title, make a hidden link or reorder what
    is shown around it."""
    return CONTROL.sub(_escaped, text)


def _escaped(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_NAME_CHARS = f"\t\n{_CONTROLS}"  # tab and newline too: a name is one line
_NOT_IN_NAME = re.compile(f"[{_NAME_CHARS}]")


def is_name(text: str, shortest: int, longest: int) -> bool:
    """Whether the server takes ``text`` as a name of ``shortest`` to ``longest`` characters
    (the types below): the CLI says what is wrong before anything is made or sent."""
    return shortest <= len(text) <= longest and _NOT_IN_NAME.search(text) is None


def _name(shortest: int, longest: int) -> Meta:
    return Meta(pattern=f"^[^{_NAME_CHARS}]{{{shortest},{longest}}}$")


TeamName = Annotated[str, _name(1, 200)]
KeyName = Annotated[str, _name(0, 100)]
DeviceName = Annotated[str, _name(1, 64)]
"""A device's name as its user typed it (the hostname by default)."""
