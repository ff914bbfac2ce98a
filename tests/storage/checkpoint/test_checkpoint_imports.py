"""storage.checkpoint imports no pickle, and exports what it lists."""

from __future__ import annotations

import ast
from pathlib import Path

import storage.checkpoint

ROOT = Path(__file__).resolve().parents[3]
CHECKPOINT = ROOT / "storage" / "checkpoint"


def imported_top_levels(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_checkpoint_storage_never_imports_pickle() -> None:
    files = sorted(CHECKPOINT.rglob("*.py"))
    assert files
    assert [str(f.relative_to(ROOT)) for f in files if "pickle" in imported_top_levels(f)] == []


def test_the_package_exports_what_it_lists() -> None:
    exported = storage.checkpoint.__all__
    assert sorted(exported) == sorted(set(exported))
    assert all(hasattr(storage.checkpoint, name) for name in exported)
