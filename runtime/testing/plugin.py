"""The pytest plugin (entry point ``pytest11``: ``weir``): one short test per job.

Installed with Weir, it registers the marker ``weir_exactly_once`` and the fixture of
the same name, and two Hypothesis profiles::

    import pytest

    @pytest.mark.weir_exactly_once(modes=["aligned", "unaligned"], examples=50)
    def test_counts(weir_exactly_once):
        weir_exactly_once(count_job)          # a job factory (runtime.testing.JobKit)

The fixture runs a Hypothesis property: for each mode, ``examples`` examples, each
drawing a simulation seed, a parallelism, a schedule of failures at the job's failure
points (those its factory adds with ``kit.source`` and ``kit.failure_point``, and the
sink), sometimes notification chaos, and the records per split (50 up to the
options'); each example is ``check_exactly_once`` (or ``check_at_least_once`` for
``"at_least_once"``) in deterministic simulation. A failing
example is shrunk by Hypothesis and its message ends with the ``replay:`` line.

Marker arguments (all optional): ``modes`` (``CheckpointSetup`` values; the three
exactly-once modes by default), ``examples`` (per mode; 50, or
``WEIR_PROPERTY_EXAMPLES``), ``parallelism`` (choices; ``(1, 2)``), ``max_failures``
(3), ``chaos`` (True), ``simulate`` (True; False runs on real time), ``options``
(``KitOptions``). The fixture's own keyword arguments (``expected``, ``order``,
``final_values``, ``options``) go to the check.

Profiles: ``weir-ci`` (a fixed seed: every run checks the same examples, no database)
and ``weir-nightly`` (new random examples, kept in the database): choose with
``--hypothesis-profile=weir-nightly`` and ``WEIR_PROPERTY_EXAMPLES=5000``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest

from runtime.api.environment import StreamEnvironment
from runtime.errors import ConfigError
from runtime.testing.failures import FailureSchedule
from runtime.testing.harness import check_at_least_once, check_exactly_once
from runtime.testing.kit import SINK_POINT, JobFactory, JobKit, KitOptions
from runtime.testing.modes import CheckpointSetup
from runtime.testing.simulation import simulate

MARKER = "weir_exactly_once"
DEFAULT_MODES = ("aligned", "unaligned", "aligned_timeout")
DEFAULT_EXAMPLES = 50
MIN_RECORDS = 50
"""The fewest records per split an example draws (Hypothesis shrinks towards it)."""


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker and the Hypothesis profiles (unless defined already)."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(modes=..., examples=..., parallelism=..., max_failures=..., chaos=..., "
        f"simulate=..., options=...): settings of the {MARKER} fixture's property "
        f"(runtime.testing.plugin)",
    )
    try:
        from hypothesis import settings
        from hypothesis.errors import InvalidArgument
    except ImportError:  # pragma: no cover - the fixture says so when used
        return
    for name, options in (
        ("weir-ci", {"derandomize": True, "database": None, "print_blob": True}),
        ("weir-nightly", {"derandomize": False, "print_blob": True}),
    ):
        try:
            settings.get_profile(name)
        except InvalidArgument:
            settings.register_profile(name, **options)


def failure_points(job: JobFactory, options: KitOptions) -> list[str]:
    """The failure points ``job`` adds (building it once, without running it), and the sink."""
    env = StreamEnvironment(1, options.max_parallelism)
    kit = JobKit(env, FailureSchedule(()), options)
    job(kit)
    return [*kit.points, SINK_POINT]


def _modes(modes: Sequence[str | CheckpointSetup]) -> list[CheckpointSetup]:
    chosen = []
    for mode in modes:
        try:
            chosen.append(mode if isinstance(mode, CheckpointSetup) else CheckpointSetup(mode))
        except ValueError:
            names = ", ".join(repr(m.value) for m in CheckpointSetup)
            raise ConfigError(
                f"@pytest.mark.{MARKER}: unknown mode {mode!r}; use one of {names}"
            ) from None
    if not chosen:
        raise ConfigError(f"@pytest.mark.{MARKER}: modes is empty; name at least one")
    return chosen


class ExactlyOnceProperty:
    """The fixture's value: call it with a job factory to run the property."""

    def __init__(
        self,
        *,
        modes: Sequence[str | CheckpointSetup] = DEFAULT_MODES,
        examples: int | None = None,
        parallelism: Sequence[int] = (1, 2),
        max_failures: int = 3,
        chaos: bool = True,
        simulate: bool = True,
        options: KitOptions | None = None,
    ) -> None:
        self.modes = _modes(modes)
        env_examples = os.environ.get("WEIR_PROPERTY_EXAMPLES")
        self.examples = examples or int(env_examples or DEFAULT_EXAMPLES)
        self.parallelism = list(parallelism)
        self.max_failures = max_failures
        self.chaos = chaos
        self.simulate = simulate
        self.options = options or KitOptions()
        self.reports: list[Any] = []

    def __call__(
        self,
        job: JobFactory,
        *,
        expected: Any = None,
        order: str = "split",
        final_values: bool = True,
        options: KitOptions | None = None,
    ) -> list[Any]:
        """Run the property on ``job``; returns the reports of the examples.

        Raises:
            ValidationError: an example broke the guarantee (shrunk, with a replay line).
            SimulationError: the job cannot be simulated (pass ``simulate=False``).
        """
        try:
            from hypothesis import HealthCheck, given, settings
            from hypothesis import strategies as st
        except ImportError:  # pragma: no cover
            raise ConfigError(
                f"the {MARKER} fixture needs Hypothesis: pip install 'weir[test]'"
            ) from None
        from runtime.testing.strategies import failure_schedules, notification_chaos

        kit_options = options or self.options
        points = failure_points(job, kit_options)
        chaos_strategy = notification_chaos() if self.chaos else st.none()

        @st.composite
        def cases(draw: Any) -> tuple[int, list[Any], Any, KitOptions]:
            parallelism = draw(st.sampled_from(self.parallelism), label="parallelism")
            schedule = draw(
                failure_schedules(
                    points, parallelism, min_failures=1, max_failures=self.max_failures
                ),
                label="schedule",
            )
            chaos = draw(chaos_strategy, label="chaos")
            most = kit_options.records_per_split
            records = draw(st.integers(min(MIN_RECORDS, most), most), label="records per split")
            return parallelism, schedule, chaos, replace(kit_options, records_per_split=records)

        run_settings = settings(
            max_examples=self.examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )

        def property_of(mode: CheckpointSetup) -> Callable[[], None]:
            @run_settings
            @given(case=cases(), seed=st.integers(0, 2**32 - 1))
            def example(case: tuple[int, list[Any], Any, KitOptions], seed: int) -> None:
                parallelism, schedule, chaos, sized = case
                common: dict[str, Any] = {
                    "schedule": schedule,
                    "setup": mode,
                    "parallelism": parallelism,
                    "chaos": chaos,
                    "expected": expected,
                    "options": sized,
                    "simulate": self.simulate,
                    "seed": seed,
                }
                if mode.exactly_once:
                    check = check_exactly_once(
                        job,
                        order=order,  # type: ignore[arg-type]
                        final_values=final_values,
                        **common,
                    )
                else:
                    check = check_at_least_once(job, **common)
                if self.simulate:
                    with simulate(seed) as sim:
                        self.reports.append(sim.run(check))
                else:
                    self.reports.append(asyncio.run(check))

            return example

        for mode in self.modes:
            property_of(mode)()
        return self.reports


@pytest.fixture
def weir_exactly_once(request: pytest.FixtureRequest) -> ExactlyOnceProperty:
    """A callable that checks a job factory's exactly-once property (see the module)."""
    marker = request.node.get_closest_marker(MARKER)
    kwargs = dict(marker.kwargs) if marker is not None else {}
    return ExactlyOnceProperty(**kwargs)
