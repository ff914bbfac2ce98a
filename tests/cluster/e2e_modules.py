"""Load a module of ``tests/e2e`` by name, so that worker processes import it too.

Their job classes (sources, functions) are pickled by reference: the worker imports the
module by the same name (its ``sys.path`` is the master's).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

E2E = Path(__file__).parent.parent / "e2e"


def load(name: str) -> ModuleType:
    """The module ``tests/e2e/<name>.py``, imported once under ``name``."""
    if str(E2E) not in sys.path:
        sys.path.insert(0, str(E2E))
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, E2E / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module
