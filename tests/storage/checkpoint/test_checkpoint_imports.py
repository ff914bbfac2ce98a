"""storage.checkpoint imports no pickle, and aiofiles appears only in the file storage."""

from __future__ import annotations

import ast
from pathlib import Path

import storage.checkpoint

ROOT = Path(__file__).resolve().parents[3]
CHECKPOINT = ROOT / "storage" / "checkpoint"
AIOFILES_HOME = CHECKPOINT / "filesystem.py"


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


def test_aiofiles_is_used_only_by_the_file_system_storage() -> None:
    users = [
        str(f.relative_to(ROOT))
        for package in ("actors", "storage", "runtime")
        for f in sorted((ROOT / package).rglob("*.py"))
        if "aiofiles" in imported_top_levels(f)
    ]
    # Reads and writes are one worker-thread hop each now: none may use it at all.
    assert set(users) <= {str(AIOFILES_HOME.relative_to(ROOT))}


def test_the_package_exports_what_it_lists() -> None:
    exported = storage.checkpoint.__all__
    assert sorted(exported) == sorted(set(exported))
    assert all(hasattr(storage.checkpoint, name) for name in exported)
