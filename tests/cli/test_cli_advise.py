"""``weir advise``: Young's and Daly's checkpoint intervals, and the command around them."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from cli_driver import Outcome
from hypothesis import given
from hypothesis import strategies as st

from runtime.cli.advise import (
    daly_interval,
    expected_overhead,
    parse_seconds,
    young_interval,
)
from runtime.cli.errors import UsageError


def test_young_is_the_square_root_of_twice_cost_times_mtbf() -> None:
    assert young_interval(1.0, 3600.0) == pytest.approx(math.sqrt(7200.0))
    assert young_interval(30.0, 86400.0) == pytest.approx(2276.8399, rel=1e-6)


def test_daly_refines_young() -> None:
    cost, mtbf = 60.0, 3600.0
    ratio = cost / (2 * mtbf)
    expected = math.sqrt(2 * cost * mtbf) * (1 + math.sqrt(ratio) / 3 + ratio / 9) - cost
    assert daly_interval(cost, mtbf) == pytest.approx(expected)
    assert daly_interval(cost, mtbf) < young_interval(cost, mtbf)


def test_daly_is_the_mtbf_when_a_checkpoint_costs_twice_the_mtbf() -> None:
    assert daly_interval(200.0, 100.0) == 100.0
    assert daly_interval(199.0, 100.0) != 100.0


@given(
    cost=st.floats(min_value=0.01, max_value=600.0),
    mtbf=st.floats(min_value=3600.0, max_value=30 * 86400.0),
)
def test_dalys_interval_is_near_the_best_under_dalys_model(cost: float, mtbf: float) -> None:
    daly = daly_interval(cost, mtbf)
    best = expected_overhead(daly, cost, mtbf)
    for factor in (0.5, 0.8, 1.25, 2.0):
        assert best <= expected_overhead(daly * factor, cost, mtbf) + 1e-9


def test_overhead_grows_with_restart_time() -> None:
    assert expected_overhead(100.0, 1.0, 3600.0, restart=60.0) > expected_overhead(
        100.0, 1.0, 3600.0
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("250ms", 0.25),
        ("15m", 900.0),
        ("6h", 21600.0),
        ("2d", 172800.0),
        ("1e3", 1000.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_seconds(text, "--mtbf") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "-5", "0", "5 weeks", "inf"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError, match="--mtbf"):
        parse_seconds(text, "--mtbf")


def test_advise_prints_both_intervals(weir: Callable[..., Outcome]) -> None:
    outcome = weir("advise", "--cost", "2", "--mtbf", "24h", "--json")
    assert outcome.returncode == 0, outcome.stderr
    advice = outcome.json()
    assert advice["cost"] == 2.0 and advice["mtbf"] == 86400.0
    assert advice["young"]["interval"] == pytest.approx(math.sqrt(2 * 2 * 86400))
    assert advice["daly"]["interval"] == pytest.approx(daly_interval(2.0, 86400.0))
    assert 0 < advice["daly"]["overhead"] < 0.01
    human = weir("advise", "--cost", "2", "--mtbf", "24h")
    assert human.returncode == 0
    assert "Young" in human.stdout and "Daly" in human.stdout
    assert "enable_checkpointing(" in human.stdout


def test_advise_needs_exactly_one_cost(weir: Callable[..., Outcome]) -> None:
    neither = weir("advise", "--mtbf", "1h")
    assert neither.returncode == 2 and "exactly one of --cost" in neither.stderr
    both = weir("advise", "--mtbf", "1h", "--cost", "1", "--from", ".", "--json")
    assert both.returncode == 2 and "exactly one" in both.json()["error"]
    bad = weir("advise", "--mtbf", "-1", "--cost", "1")
    assert bad.returncode == 2 and "--mtbf" in bad.stderr
