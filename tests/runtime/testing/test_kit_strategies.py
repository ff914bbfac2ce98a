"""The kit's Hypothesis strategies draw valid cases; the kit itself needs no Hypothesis."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import runtime.testing
from runtime.errors import ConfigError
from runtime.testing import CheckpointSetup, InjectedFailure, KitOptions, NotificationChaos, Phase
from runtime.testing.strategies import (
    JobCase,
    checkpoint_options,
    failure_schedules,
    job_cases,
    notification_chaos,
    sure_failures,
)
from runtime.testing.topologies import TOPOLOGIES


@settings(max_examples=200)
@given(job_cases())
def test_cases_are_consistent(case: JobCase) -> None:
    assert case.topology in TOPOLOGIES
    assert case.parallelism in (1, 2, 4)
    assert isinstance(case.setup, CheckpointSetup)
    assert len(case.schedule) <= 3
    for failure in case.schedule:
        assert isinstance(failure, InjectedFailure)
        assert failure.point in case.topology.points
        assert failure.subtask is None or failure.subtask < case.parallelism
    assert case.chaos is None or isinstance(case.chaos, NotificationChaos)


@settings(max_examples=50)
@given(
    failure_schedules(["a", "b"], 3, min_failures=1, max_failures=5, phases=[Phase.RESTORE]),
    checkpoint_options([CheckpointSetup.UNALIGNED]),
    notification_chaos(),
)
def test_strategies_take_their_bounds(
    schedule: list[InjectedFailure],
    options: dict[str, object],
    chaos: NotificationChaos | None,
) -> None:
    assert 1 <= len(schedule) <= 5
    assert {f.phase for f in schedule} == {Phase.RESTORE}
    assert options["unaligned"] is True and options["aligned_timeout"] == 0.0
    if chaos is not None:
        assert chaos.drop + chaos.delay <= 1


@given(st.data())
def test_every_topology_names_its_failure_points(data: st.DataObject) -> None:
    topology = data.draw(st.sampled_from(TOPOLOGIES))
    assert "sink" in topology.points
    assert len(set(topology.points)) == len(topology.points)


def test_only_the_strategies_module_imports_hypothesis() -> None:
    package = Path(runtime.testing.__file__).parent
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # The pytest plugin imports Hypothesis (and the strategies) inside the functions
        # that use them: loading the plugin needs neither.
        nodes = tree.body if path.name == "plugin.py" else list(ast.walk(tree))
        imported = {
            (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
            for node in nodes
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        uses_hypothesis = any(name.split(".")[0] == "hypothesis" for name in imported)
        assert uses_hypothesis == (path.name == "strategies.py"), path.name
        if path.name != "strategies.py":
            assert "runtime.testing.strategies" not in imported, path.name


def test_a_slow_case_slows_the_sink_and_unthrottles_the_sources() -> None:
    from runtime.testing import KitOptions
    from runtime.testing.strategies import SLOW_SINK_YIELDS
    from runtime.testing.topologies import KEYED

    base = KitOptions(records_per_second=1000.0)
    calm = JobCase(KEYED, 2, CheckpointSetup.ALIGNED, [], None)
    assert calm.options(base) is base
    slow = JobCase(KEYED, 2, CheckpointSetup.ALIGNED, [], None, slow_sink=True)
    assert slow.options(base).sink_yields == SLOW_SINK_YIELDS
    assert slow.options(base).records_per_second is None


@settings(max_examples=200)
@given(job_cases(options=KitOptions(splits=2, records_per_split=10)))
def test_every_case_starts_with_a_failure_sure_to_fire(case: JobCase) -> None:
    assert 1 <= len(case.schedule) <= 3
    sure = case.schedule[0]
    assert sure.phase is Phase.PROCESSING and sure.subtask is None
    assert sure.checkpoint is None
    # The busiest of the point's subtasks sees at least 20 // parallelism records.
    assert sure.after_records is not None and sure.after_records < 20 // case.parallelism


@settings(max_examples=50)
@given(failure_schedules(["a"], 2, min_failures=0, max_failures=2, sure_records=100))
def test_without_a_minimum_a_schedule_may_be_empty_and_nothing_is_sure(
    schedule: list[InjectedFailure],
) -> None:
    assert len(schedule) <= 2


def test_no_failure_is_sure_when_a_subtask_may_get_no_record() -> None:
    with pytest.raises(ConfigError, match="3 records over 4 subtasks"):
        sure_failures(["a"], 4, 3)


def test_more_failures_at_least_than_at_most_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"min_failures \(3\) is more than max_failures \(2\)"):
        job_cases(min_failures=3, max_failures=2)
