"""The pytest plugin: the ``weir_exactly_once`` marker and fixture, in a pytest of its own."""

from __future__ import annotations

import importlib.metadata

import pytest

pytest_plugins = ["pytester"]

JOBS = """
import pytest
from runtime import KeyedProcessFunction, ValueStateDescriptor
from runtime.testing import KitOptions

SMALL = KitOptions(splits=2, records_per_split=250, keys=4)


class Count(KeyedProcessFunction):
    def open(self, ctx):
        self.n = ctx.get_state(ValueStateDescriptor("n", default=0, type=int))

    def process_element(self, record, ctx):
        self.n.update(self.n.value() + 1)
        return [record.with_value(self.n.value())]


class Forgetful(KeyedProcessFunction):
    def open(self, ctx):
        self.n = {}

    def process_element(self, record, ctx):
        self.n[record.key] = self.n.get(record.key, 0) + 1
        return [record.with_value(self.n[record.key])]


def count_job(kit):
    counted = kit.source().key_by(lambda r: r.key).process(Count(), uid="count")
    return kit.failure_point(counted, "count")


def forgetful_job(kit):
    counted = kit.source().key_by(lambda r: r.key).process(Forgetful(), uid="count")
    return kit.failure_point(counted, "count")


@pytest.mark.weir_exactly_once(modes=["aligned", "unaligned"], examples=4, options=SMALL)
def test_count(weir_exactly_once):
    reports = weir_exactly_once(count_job)
    assert len(reports) == 8


@pytest.mark.weir_exactly_once(modes=["aligned"], examples=20, parallelism=[2], options=SMALL)
def test_forgetful(weir_exactly_once):
    weir_exactly_once(forgetful_job)


@pytest.mark.weir_exactly_once(modes=["exactly"])
def test_bad_mode(weir_exactly_once):
    weir_exactly_once(count_job)
"""


def plugin_args() -> list[str]:
    """``-p runtime.testing.plugin`` unless the installed entry point loads it already."""
    installed = importlib.metadata.entry_points(group="pytest11", name="weir")
    return [] if installed else ["-p", "runtime.testing.plugin"]


def test_one_short_test_per_job_passes_fails_with_a_replay_line_and_names_bad_marks(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_weir_plugin_jobs=JOBS)
    result = pytester.runpytest_inprocess(
        *plugin_args(), "-p", "no:cacheprovider", "-q", "--hypothesis-profile=weir-ci"
    )
    # the bad mark fails when the fixture is set up: an error, not a failure
    result.assert_outcomes(passed=1, failed=1, errors=1)
    output = result.stdout.str()
    assert "state is not exactly-once" in output
    assert "replay: python -c" in output and "test_weir_plugin_jobs:forgetful_job" in output
    heading = "Failing test case" if "Failing test case" in output else "Falsifying example"
    shrunk = output.split(heading)[-1]
    assert shrunk.count("InjectedFailure(point=") == 1, "shrunk to one failure"
    assert "unknown mode 'exactly'; use one of 'aligned'" in output


def test_the_marker_is_registered(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_inprocess(*plugin_args(), "--markers")
    result.stdout.fnmatch_lines(["*weir_exactly_once(modes=*"])
