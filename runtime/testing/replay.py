"""Replay a failing check from the one line it printed.

A check that runs in simulation (``check_exactly_once(..., simulate=True, seed=N)``)
and fails ends its message with a line such as::

    replay: python -c "from runtime.testing import *; replay('mymod:job', seed=3, ...)"

``replay(...)`` runs the same check, with the same seed, job, failure schedule, chaos and
options, in a new simulation, and fails the same way, bit for bit. The job factory (and
``expected``, if a function) is named ``"module:qualname"`` so the line can import it;
a factory defined inside a function has no such name, and the line says so.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from runtime.errors import ConfigError
from runtime.testing.chaos import NotificationChaos
from runtime.testing.failures import InjectedFailure
from runtime.testing.kit import KitOptions
from runtime.testing.modes import CheckpointSetup


def _importable(module: str) -> str:
    # A script's functions live in __main__, which another process cannot import: name
    # the script's module instead (``python -m pkg.mod`` or ``python mod.py``).
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return str(spec.name)
    path = getattr(main, "__file__", None)
    return Path(path).stem if path else module


def reference(obj: Any) -> str | None:
    """``"module:qualname"`` that ``resolve`` turns back into ``obj``, or None."""
    if inspect.ismethod(obj):
        owner = reference(obj.__self__)
        return None if owner is None else f"{owner}.{obj.__name__}"
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if (
        isinstance(obj, types.FunctionType | type)
        and module
        and qualname
        and "<locals>" not in qualname
    ):
        return f"{_importable(module)}:{qualname}"
    home = getattr(type(obj), "__module__", None)
    names = [home] if home in sys.modules else []
    names += [n for n in list(sys.modules) if n != home]
    for name in names:
        found = getattr(sys.modules.get(name), "__dict__", {})
        for attribute, value in list(found.items()):
            if value is obj and not attribute.startswith("_"):
                return f"{_importable(name)}:{attribute}"
    return None


def resolve(ref: str) -> Any:
    """The object ``"module:qualname"`` names.

    Raises:
        ConfigError: the module or the name does not exist.
    """
    module_name, _, path = ref.partition(":")
    if not module_name or not path:
        raise ConfigError(f"replay: {ref!r} is not 'module:name'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in path.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as error:
        raise ConfigError(
            f"replay: cannot find {ref!r} ({error}); run the line from the folder the test "
            f"ran in, with its module importable"
        ) from None
    return obj


def _failure(failure: InjectedFailure) -> str:
    return (
        f"InjectedFailure({failure.point!r}, {failure.subtask!r}, Phase.{failure.phase.name}, "
        f"{failure.after_records!r}, {failure.checkpoint!r})"
    )


def replay_line(
    job: Any,
    *,
    check: str,
    seed: int,
    setup: CheckpointSetup,
    parallelism: int,
    schedule: Iterable[InjectedFailure],
    chaos: NotificationChaos | None,
    options: KitOptions | None,
    expected: Any,
    order: str,
    final_values: bool,
    transactional: bool,
) -> str:
    """The one line that replays a check (see the module docstring)."""
    job_ref = reference(job)
    if job_ref is None:
        return (
            f"replay: seed={seed}; the job factory {job!r} has no importable name (define it "
            f"at module level to get a replay line)"
        )
    if expected is None or isinstance(expected, Counter):
        expected_arg = "None" if expected is None else "...a Counter..."
    else:
        expected_ref = reference(expected)
        expected_arg = "None" if expected_ref is None else repr(expected_ref)
    args = [
        repr(job_ref),
        f"check={check!r}",
        f"seed={seed}",
        f"setup={setup.value!r}",
        f"parallelism={parallelism}",
        f"schedule=[{', '.join(_failure(f) for f in schedule)}]",
        f"chaos={chaos!r}",
        f"options={options!r}",
        f"expected={expected_arg}",
        f"order={order!r}",
        f"final_values={final_values!r}",
        f"transactional={transactional!r}",
    ]
    return f'replay: python -c "from runtime.testing import *; replay({", ".join(args)})"'


def replay(
    job: Any,
    *,
    check: str = "exactly_once",
    seed: int,
    setup: str | CheckpointSetup = CheckpointSetup.ALIGNED,
    parallelism: int = 2,
    schedule: Iterable[InjectedFailure] = (),
    chaos: NotificationChaos | None = None,
    options: KitOptions | None = None,
    expected: Any = None,
    order: str = "split",
    final_values: bool = True,
    transactional: bool = True,
) -> Any:
    """Run a check again in simulation, as its replay line says; blocks until done.

    Args:
        job: the job factory, or its ``"module:qualname"``.
        check: ``"exactly_once"`` or ``"at_least_once"``.
        seed: the simulation's seed.
        setup: the checkpointing mode (a ``CheckpointSetup`` or its value).
        parallelism: the job's parallelism.
        schedule: the failures to inject.
        chaos: the notification chaos, if any.
        options: the kit's options.
        expected: the expected records, or a function of the kit, or its name.
        order: the order guarantee checked.
        final_values: whether the last value per key was compared.
        transactional: two-phase-commit sink (at-least-once checks).

    Returns:
        The check's report, if it passes now.

    Raises:
        ValidationError: the check fails (as it did when the line was printed).
    """
    from runtime.testing.harness import check_at_least_once, check_exactly_once
    from runtime.testing.simulation import simulate

    factory = resolve(job) if isinstance(job, str) else job
    want = resolve(expected) if isinstance(expected, str) else expected
    mode = CheckpointSetup(setup) if isinstance(setup, str) else setup
    if check == "exactly_once":
        main = check_exactly_once(
            factory,
            schedule=list(schedule),
            setup=mode,
            parallelism=parallelism,
            chaos=chaos,
            expected=want,
            order=order,  # type: ignore[arg-type]
            final_values=final_values,
            options=options,
            simulate=True,
            seed=seed,
        )
    elif check == "at_least_once":
        main = check_at_least_once(
            factory,
            schedule=list(schedule),
            setup=mode,
            parallelism=parallelism,
            chaos=chaos,
            transactional=transactional,
            expected=want,
            options=options,
            simulate=True,
            seed=seed,
        )
    else:
        raise ConfigError(f"replay: check must be 'exactly_once' or 'at_least_once', got {check!r}")
    with simulate(seed) as sim:
        return sim.run(main)
