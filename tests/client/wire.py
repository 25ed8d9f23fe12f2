"""For hostile servers in tests: an answer's body as JSON values, whichever wire form it came
in, and an answer in the same form carrying altered values, so every alteration a test makes
reaches the client through the binary wire (MessagePack) as well as JSON."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from keymgmt import Envelope, IntegrityError
from tapes_e2e.protocol import MSGPACK, NodeOut, PackedNodeOut, PackedPullPage, PullPage

__all__ = ["answer_with", "body_of", "is_packed", "json_twin"]


def is_packed(answer: httpx.Response) -> bool:
    return str(answer.headers.get("content-type", "")).partition(";")[0].strip() == MSGPACK


def body_of(answer: httpx.Response) -> Any:
    """The answer's body as plain JSON values (a packed pull page as its JSON twin)."""
    if not is_packed(answer):
        return answer.json()
    return msgspec.to_builtins(
        json_twin(msgspec.msgpack.decode(answer.content, type=PackedPullPage))
    )


def json_twin(page: PackedPullPage) -> PullPage:
    """The page a server answering JSON sends for the same rows."""
    items = [
        NodeOut(i.seq, i.uploaded_at, Envelope.from_packed(i.envelope).to_wire())
        for i in page.items
    ]
    return PullPage(page.vault, items, page.cursor, page.more, page.chain_seqno)


def answer_with(answer: httpx.Response, body: Any) -> httpx.Response:
    """A 200 in ``answer``'s form carrying ``body``; JSON when the altered body no longer has
    the shape of a page (a server may answer JSON to a client that asked for either)."""
    if is_packed(answer):
        try:
            page = msgspec.convert(body, PullPage)
            items = [
                PackedNodeOut(i.seq, i.uploaded_at, Envelope.from_wire(i.envelope).to_packed())
                for i in page.items
            ]
        except (msgspec.ValidationError, IntegrityError):
            return httpx.Response(200, json=body)
        packed = PackedPullPage(page.vault, items, page.cursor, page.more, page.chain_seqno)
        return httpx.Response(
            200, content=msgspec.msgpack.encode(packed), headers={"content-type": MSGPACK}
        )
    return httpx.Response(200, json=body)
