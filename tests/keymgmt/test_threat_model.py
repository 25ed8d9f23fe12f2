"""threat-model.md: every attack class has a row and every cited test exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "threat-model.md").read_text()


def test_every_attack_class_has_a_row_with_a_control_type() -> None:
    for number in range(1, 18):
        row = re.search(rf"^\| {number} \| .*$", DOC, re.MULTILINE)
        assert row, f"attack class {number} has no row"
        assert re.search(r"crypto|server-enforced|client policy", row.group(0)), number
        assert "tests/" in row.group(0), number
    for extra in ("Length leakage", "Invite replay"):
        assert extra in DOC


def test_every_cited_test_exists() -> None:
    cited = set(re.findall(r"(tests/[\w/]*test_\w+\.py)::(\w+)", DOC))
    assert len(cited) > 50
    for path, name in cited:
        tree = ast.parse((ROOT / path).read_text())
        names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        # a hypothesis state machine's test case is bound by assignment
        names |= {
            t.id
            for n in ast.walk(tree)
            if isinstance(n, ast.Assign)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
        assert name in names, f"{path}::{name} is cited but does not exist"
