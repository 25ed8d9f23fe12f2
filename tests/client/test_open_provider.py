"""``open_provider`` picks the provider config.toml names."""

from __future__ import annotations

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
