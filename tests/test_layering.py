"""The package layering of DESIGN.md, enforced on the source: arrows never point up.

``runtime`` may import ``actors`` and ``storage``; ``actors`` imports neither of the
others and ``storage`` neither of the others. Every import counts, including those
under ``TYPE_CHECKING`` and inside functions; relative imports are resolved against the
importing module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("actors", "storage", "runtime")
FORBIDDEN = {
    "actors": {"storage", "runtime"},
    "storage": {"actors", "runtime"},
    "runtime": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in(source: str, module: str, *, is_package: bool) -> Iterator[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source``, the text of ``module``."""
    # The package a relative import starts from: the module itself for an __init__.
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    raise AssertionError(f"{module}:{node.lineno}: relative import beyond the top")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                assert node.module is not None
                target = node.module
            yield node.lineno, target
            # ``from runtime import tasks`` may import a submodule: count both names.
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in the file at ``path``."""
    source = path.read_text(encoding="utf-8")
    return imports_in(source, module_name(path), is_package=path.name == "__init__.py")


def source_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def top(module: str) -> str:
    return module.partition(".")[0]


@pytest.mark.parametrize(
    ("source", "module", "is_package", "expected"),
    [
        ("from .keygroups import x", "storage.state", False, "storage.keygroups"),
        ("from ..errors import x", "runtime.api.result", False, "runtime.errors"),
        ("from . import functions", "runtime.api", True, "runtime.api.functions"),
        ("from .. import storage", "runtime.api", True, "runtime.storage"),
        ("import storage.keygroups as kg", "actors.channel", False, "storage.keygroups"),
        ("if TYPE_CHECKING:\n    from runtime import x", "actors.x", False, "runtime"),
        ("def f():\n    import anyio", "storage.file_storage", False, "anyio"),
    ],
)
def test_imports_are_found_and_resolved(
    source: str, module: str, is_package: bool, expected: str
) -> None:
    assert expected in {m for _, m in imports_in(source, module, is_package=is_package)}


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_the_layering_allows(package: str) -> None:
    files = source_files(package)
    assert files, f"no source files under {package}/"
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in files
        for line, module in imported_modules(path)
        if top(module) in FORBIDDEN[package]
    ]
    assert not violations, "\n".join(violations)


def test_the_checker_sees_the_allowed_arrows() -> None:
    """Not vacuous: the imports of runtime on the lower packages are found."""
    tops = {top(m) for path in source_files("runtime") for _, m in imported_modules(path)}
    assert {"actors", "storage", "runtime"} <= tops


# The runtime's sub-packages (and its two loose modules), bottom first. A module may
# import only from its own sub-package and from those listed before it; lazy imports
# (inside functions) and those under TYPE_CHECKING count too. docs/design.md explains
# the order.
RUNTIME_ORDER = (
    "errors",  # imports nothing of runtime
    "config",
    "checkpoint",  # the pure checkpoint decisions and their coordinator actor
    "time",  # watermarks, valve, timer services, side-output tags
    "tasks",  # subtasks, operators, user-function interfaces (functions, source, async_io)
    "windows",
    "connectors",
    "graph",
    "scheduler",  # deployment, executor, recovery, JobResult
    "cluster",  # worker processes
    "api",  # StreamEnvironment, DataStream, JobClient
    "metrics",
    "testing",
    "cli",
)


def runtime_part(module: str) -> str | None:
    """The sub-package (or loose module) of ``runtime`` that ``module`` is in."""
    parts = module.split(".")
    if parts[0] != "runtime" or len(parts) < 2:
        return None
    return parts[1]


def test_every_runtime_subpackage_has_a_place_in_the_order() -> None:
    parts = {p.name for p in (ROOT / "runtime").iterdir() if (p / "__init__.py").exists()}
    parts |= {p.stem for p in (ROOT / "runtime").glob("*.py") if p.stem != "__init__"}
    assert parts <= set(RUNTIME_ORDER), (
        f"place these in RUNTIME_ORDER: {parts - set(RUNTIME_ORDER)}"
    )


def test_runtime_subpackages_import_only_downwards() -> None:
    rank = {name: index for index, name in enumerate(RUNTIME_ORDER)}
    violations = []
    for path in source_files("runtime"):
        here = runtime_part(module_name(path))
        if here is None:  # runtime/__init__.py: the public face, above everything
            continue
        for line, module in imported_modules(path):
            there = runtime_part(module)
            if there is None or there == here or there not in rank:
                continue
            if rank[there] > rank[here]:
                violations.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {module}")
    assert not violations, "\n".join(violations)


def test_runtime_errors_imports_nothing_of_runtime() -> None:
    imported = {m for _, m in imported_modules(ROOT / "runtime" / "errors.py")}
    assert not {m for m in imported if top(m) == "runtime"}
