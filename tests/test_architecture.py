"""Package boundaries: keymgmt imports neither other package (also import-linter's contract);
the server imports only keymgmt and tapes_e2e.protocol of ours."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
OURS = ("tapes_e2e", "keymgmt", "server")


def imported_modules(package: str, root: Path = ROOT) -> list[tuple[Path, str]]:
    found = []
    for path in sorted((root / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                found += [(path, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found += [(path, node.module)]
                found += [(path, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _ours(module: str) -> bool:
    return module.split(".", maxsplit=1)[0] in OURS


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        ("keymgmt", ("keymgmt",)),
        ("server", ("server", "keymgmt", "tapes_e2e.protocol")),
    ],
)
def test_package_imports_stay_inside_their_allowance(
    package: str, allowed: tuple[str, ...]
) -> None:
    offending = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path, module in imported_modules(package)
        if _ours(module)
        and module != "tapes_e2e"  # `from tapes_e2e import protocol` names the package first
        and not any(module == a or module.startswith(a + ".") for a in allowed)
    ]
    assert offending == []


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    fake = tmp_path / "server"
    fake.mkdir()
    (fake / "bad.py").write_text("from tapes_e2e.node import Node\n", encoding="utf-8")
    assert "tapes_e2e.node" in [m for _, m in imported_modules("server", tmp_path)]


def test_the_client_package_init_stays_light() -> None:
    # The server imports tapes_e2e.protocol, which imports tapes_e2e: that must not drag the
    # client's storage or CLI into the server process.
    tree = ast.parse((ROOT / "tapes_e2e" / "__init__.py").read_text("utf-8"))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
