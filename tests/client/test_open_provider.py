"""``open_provider`` picks the provider config.toml names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tapes_e2e.context import Settings, open_provider
from tapes_e2e.errors import ConfigError
from tapes_e2e.providers.cloud import CloudProvider
from tapes_e2e.providers.hybrid import HybridProvider
from tapes_e2e.providers.local import LocalProvider
from tests.client.conftest import Tapes
from tests.conftest import chain
from tests.server.conftest import AUDIENCE


def settings(home: Path) -> Settings:
    return Settings.resolve(config_dir=home, db=None, debug=False)


def test_each_configured_provider(tapes: Tapes, tmp_path: Path) -> None:
    home = tmp_path / "p"
    local = open_provider(settings(home))
    assert isinstance(local, LocalProvider)
    local.close()
    assert tapes("p", "storage", "configure", "--api-url", AUDIENCE)[0] == 0
    assert tapes("p", "storage", "set-provider", "hybrid")[0] == 0
    with pytest.raises(ConfigError, match="needs a login"):
        open_provider(settings(home))
    assert tapes("p", "auth", "login", "--handle", "pia")[0] == 0
    hybrid = open_provider(settings(home))
    assert isinstance(hybrid, HybridProvider)
    node = chain(["recorded through the configured provider"])[0]
    assert hybrid.put(node)
    hybrid.close()  # sync_on_close pushes it
    assert tapes("p", "storage", "set-provider", "cloud")[0] == 0
    cloud = open_provider(settings(home))
    assert isinstance(cloud, CloudProvider)
    assert cloud.get(node.hash) == node


def test_with_cloud_the_session_commands_read_the_server_and_write_nothing(
    tapes: Tapes, tmp_path: Path
) -> None:
    """A machine with no local database lists, shows and exports what the server holds."""
    laptop, desktop = tmp_path / "laptop", tmp_path / "desktop"
    assert tapes("laptop", "auth", "login", "--server", AUDIENCE, "--handle", "cleo")[0] == 0
    nodes = chain(["a question kept only on the server", "its answer"])
    with LocalProvider(laptop / "tapes.sqlite") as store:
        store.put_many(nodes)
    assert tapes("laptop", "storage", "sync")[0] == 0
    desktop.mkdir()
    shutil.copy(laptop / "identity.key", desktop / "identity.key")
    assert tapes("desktop", "auth", "login", "--server", AUDIENCE)[0] == 0
    code, _, err = tapes("desktop", "session", "list")
    assert code == 1
    assert "no database" in err  # local: there is no file here
    assert tapes("desktop", "storage", "set-provider", "cloud")[0] == 0
    code, out, _ = tapes("desktop", "session", "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [(s["session_id"], s["nodes"]) for s in listed] == [(nodes[-1].hash, 2)]
    assert listed[0]["first_message"] == "a question kept only on the server"
    code, out, _ = tapes("desktop", "session", "show", nodes[-1].hash[:8], "--json")
    assert code == 0
    assert [n["hash"] for n in json.loads(out)] == [n.hash for n in nodes]
    code, out, _ = tapes("desktop", "session", "export")
    assert code == 0
    assert [json.loads(line)["hash"] for line in out.splitlines()] == [n.hash for n in nodes]
    assert not list(desktop.glob("*.sqlite*"))  # nothing was written to disk
