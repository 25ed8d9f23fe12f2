"""Helpers shared by the benches that talk to a real ``tapes-server``: homes and bench accounts.

A *home* is a ``.tapes`` directory with an identity key, logged in to the server, whose personal
vault has its genesis and keyring (created at the first login of the identity, as ``tapes auth
login`` does). A second home of the same user gets a copy of the first one's identity key, as a
user restoring a recovery kit on a second machine would.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

import keymgmt  # noqa: E402
from tapes_e2e import account, identity  # noqa: E402
from tapes_e2e.client import ApiClient  # noqa: E402
from tapes_e2e.vaults import Trust  # noqa: E402

__all__ = ["FAST", "OUT", "PASSPHRASE", "REPO", "Home", "make_home", "use_pro_plan"]

OUT = REPO / "bench" / "out"
PASSPHRASE = "bench passphrase"  # noqa: S105 - throwaway identities of the benches
# Cheap Argon2 for throwaway bench identities (the product never goes below its own floor).
FAST = keymgmt.KdfParams(time_cost=1, memory_kib=8 * 1024, lanes=1)

Home = tuple[Path, ApiClient, keymgmt.Identity]


def make_home(root: Path, name: str, url: str, handle: str | None, source: Path | None) -> Home:
    """``root/name`` logged in to ``url``: a new identity registered as ``handle`` when
    ``source`` is None, else ``source``'s identity key copied (the same user, another machine)."""
    home = root / name
    home.mkdir(parents=True)
    if source is None:
        who = identity.create_identity(home, PASSPHRASE, params=FAST, floor=FAST)
    else:
        shutil.copy(source / identity.IDENTITY_FILE, home / identity.IDENTITY_FILE)
        who = identity.unlock(home, environ={"TAPES_PASSPHRASE": PASSPHRASE},
                              use_os_keyring=False, floor=FAST)  # fmt: skip
    api = ApiClient(httpx.Client(timeout=120), api_url=url)
    session = api.login(who, handle=handle)
    account.ensure_personal_vault(api, session, Trust(home, who))
    return home, api, who


def use_pro_plan(server_database: Path) -> None:
    """Put every account of the bench server on ``pro``: a bench starts far more sessions than
    the free plan's 100 a month."""
    with sqlite3.connect(server_database) as db:
        db.execute("UPDATE teams SET tier = 'pro'")
