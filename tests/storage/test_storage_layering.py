"""storage/ knows bytes, state and snapshots: it never imports actors or runtime."""

from __future__ import annotations

import ast
from pathlib import Path

STORAGE = Path(__file__).resolve().parents[2] / "storage"
FORBIDDEN = {"actors", "runtime"}


def imported_top_levels(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_storage_imports_neither_actors_nor_runtime() -> None:
    files = sorted(STORAGE.rglob("*.py"))
    assert files
    offenders = {
        str(f.relative_to(STORAGE)): sorted(imported_top_levels(f) & FORBIDDEN) for f in files
    }
    assert {f: bad for f, bad in offenders.items() if bad} == {}
