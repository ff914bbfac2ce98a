"""The benchmark kit's statistics and report assembly, with fake measurements (no timing).

Medians, min and max, spread and the noisy flag, ratios and per-round ratios, the ABBA
order of ``harness.interleave`` (fake callables record the calls), the progress ticks,
the kit's part selection, its headline figures, noisy-series listing, the report files
(strict JSON, Markdown) and a failing part reported rather than raised.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import harness, kit
from benchmarks.backpressure import ratio_of, summarize_modes
from benchmarks.bytewax_baseline import build_report as bytewax_report
from benchmarks.bytewax_baseline import render as bytewax_render
from benchmarks.harness import (
    NOISY_SPREAD,
    Series,
    interleave,
    paired_ratios,
    ratio,
    round_order,
    summarize,
    to_json,
)
from benchmarks.overhead import interval_label, variants
from benchmarks.sweep import BASE, points

# -- summaries ------------------------------------------------------------------------------


def test_summary_of_an_odd_and_an_even_number_of_values() -> None:
    odd = summarize([3.0, 1.0, 2.0])
    assert (odd["median"], odd["min"], odd["max"]) == (2.0, 1.0, 3.0)
    assert odd["spread"] == 3.0 and odd["noisy"]
    assert odd["values"] == [3.0, 1.0, 2.0]  # in measuring order
    even = summarize([4.0, 1.0, 2.0, 3.0])
    assert even["median"] == 2.5


def test_noisy_above_the_threshold_only() -> None:
    assert not summarize([1.0, NOISY_SPREAD])["noisy"]  # exactly 1.25: steady
    assert summarize([1.0, NOISY_SPREAD + 0.01])["noisy"]
    assert not summarize([5.0, 5.0, 5.0])["noisy"]
    assert summarize([5.0, 5.0, 5.0])["spread"] == 1.0


def test_summary_of_nothing_and_of_a_zero() -> None:
    empty = summarize([])
    assert math.isnan(empty["median"]) and math.isnan(empty["spread"])
    assert not empty["noisy"] and empty["values"] == []
    with_zero = summarize([0.0, 2.0])
    assert with_zero["spread"] == math.inf and with_zero["noisy"]


def test_series_summary_is_the_summary_of_its_values() -> None:
    series = Series("weir", [10.0, 14.0, 12.0])
    assert series.median == 12.0
    assert series.spread == pytest.approx(1.4)
    assert series.noisy
    assert series.summary() == summarize([10.0, 14.0, 12.0])


# -- ratios ---------------------------------------------------------------------------------


def test_ratio() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert math.isnan(ratio(3.0, 0.0))
    assert math.isnan(ratio(math.nan, 2.0))
    assert math.isnan(ratio(2.0, math.nan))


def test_paired_ratios_are_per_round_and_of_medians() -> None:
    candidate = Series("on", [90.0, 50.0, 100.0])
    baseline = Series("off", [100.0, 50.0, 125.0])
    paired = paired_ratios(candidate, baseline)
    assert paired["ratio"] == 90.0 / 100.0  # median over median
    assert paired["per_round"]["values"] == [0.9, 1.0, 0.8]
    assert paired["per_round"]["median"] == 0.9
    assert (paired["per_round"]["min"], paired["per_round"]["max"]) == (0.8, 1.0)


def test_paired_ratios_need_the_same_rounds() -> None:
    with pytest.raises(ValueError):
        paired_ratios(Series("a", [1.0, 2.0]), Series("b", [1.0]))


# -- interleaving ---------------------------------------------------------------------------


def recording(
    calls: list[str], values: dict[str, Iterator[float]]
) -> dict[str, Callable[[], float]]:
    def make(name: str) -> Callable[[], float]:
        def run() -> float:
            calls.append(name)
            return next(values[name])

        return run

    return {name: make(name) for name in values}


def test_interleave_warms_up_then_alternates_abba() -> None:
    calls: list[str] = []
    variants_ = recording(calls, {"A": iter(range(100, 200)), "B": iter(range(200, 300))})
    series = interleave(variants_, repeats=4, warmup=1)
    assert calls == ["A", "B", "A", "B", "B", "A", "A", "B", "B", "A"]
    # The warm-up's measurements are dropped; each series keeps its own in round order.
    assert series["A"].values == [101, 102, 103, 104]
    assert series["B"].values == [201, 202, 203, 204]


def test_interleave_three_variants_and_no_warmup() -> None:
    calls: list[str] = []
    variants_ = recording(calls, {n: iter(range(10)) for n in "XYZ"})
    series = interleave(variants_, repeats=3, warmup=0)
    assert calls == [*"XYZ", *"ZYX", *"XYZ"]
    assert [len(s.values) for s in series.values()] == [3, 3, 3]


def test_round_order() -> None:
    assert round_order(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert round_order(["a", "b", "c"], 1) == ["c", "b", "a"]
    assert round_order(["a", "b", "c"], 2) == ["a", "b", "c"]


def test_interleave_reports_progress_and_restores_the_callback() -> None:
    ticks: list[str] = []
    previous = harness.set_progress(ticks.append)
    try:
        interleave({"A": lambda: 1.0, "B": lambda: 2.0}, repeats=2, warmup=1)
    finally:
        assert harness.set_progress(previous) == ticks.append
    assert ticks == ["A (warm-up)", "B (warm-up)", "A", "B", "B", "A"]


# -- the scripts' own assembly --------------------------------------------------------------


def test_overhead_variants_and_labels() -> None:
    assert interval_label(1.0) == "1 s" and interval_label(0.1) == "100 ms"
    assert list(variants([1.0, 0.1])) == [
        "off",
        "aligned 1 s",
        "aligned 100 ms",
        "unaligned 1 s",
        "unaligned 100 ms",
    ]
    assert variants([0.3])["unaligned 300 ms"] == {"interval": 0.3, "unaligned": True}


def backpressure_run(durations: list[float], in_flight: list[int], rate: float) -> dict[str, Any]:
    return {
        "completed": len(durations),
        "trigger_times": [0.5 * i for i in range(len(durations))],
        "durations": durations,
        "alignments": [0.0] * len(durations),
        "in_flight_bytes": in_flight,
        "state_bytes": [100] * len(durations),
        "unaligned": [bool(b) for b in in_flight],
        "records_per_s": rate,
    }


def test_backpressure_summary_pools_every_checkpoint_of_every_run() -> None:
    runs = {
        "aligned": [backpressure_run([1.0, 1.4], [0, 0], 900), backpressure_run([1.2], [0], 910)],
        "unaligned": [backpressure_run([0.01, 0.02], [9000, 9100], 890)],
        "aligned_timeout": [backpressure_run([], [], 880)],  # completed none
    }
    summary = summarize_modes(runs)
    assert summary["aligned"]["checkpoints"] == 3
    assert summary["aligned"]["duration_median"] == 1.2
    assert (summary["aligned"]["duration_min"], summary["aligned"]["duration_max"]) == (1.0, 1.4)
    assert summary["aligned"]["records_per_s"]["median"] == 905
    assert summary["unaligned"]["in_flight_bytes_median"] == 9050
    assert summary["unaligned"]["ended_unaligned"] == 2
    assert summary["aligned_timeout"]["checkpoints"] == 0
    assert math.isnan(summary["aligned_timeout"]["duration_median"])
    assert ratio_of(summary, "aligned", "unaligned") == pytest.approx(1.2 / 0.015)
    assert math.isnan(ratio_of(summary, "aligned", "aligned_timeout"))


def test_sweep_points_vary_one_dimension_at_a_time_without_repeating_the_base() -> None:
    found = points({"sink_cost": [0.001, 0.003], "parallelism": [1, 2]}, BASE)
    assert found == [BASE, {**BASE, "sink_cost": 0.003}, {**BASE, "parallelism": 2}]


def bytewax_args() -> argparse.Namespace:
    return argparse.Namespace(
        records=1000, keys=10, repeats=2, bytewax_batch=4096, bytewax_small_batch=64
    )


def test_bytewax_report_when_bytewax_is_absent() -> None:
    series = {
        "weir off": Series("weir off", [10.0, 12.0]),
        "weir 1 s": Series("weir 1 s", [10.0, 12.0]),
        "weir 100 ms": Series("weir 100 ms", [9.0, 10.8]),
    }
    report = bytewax_report(series, bytewax_args(), None, harness.machine())
    assert report["bytewax"] == "absent" and "not installed" in report["bytewax_note"]
    assert "weir_to_bytewax" not in report
    assert report["weir_ratio_to_off"]["100 ms"]["ratio"] == pytest.approx(0.9)
    assert "not measured" in bytewax_render(report)


def test_bytewax_report_compares_with_the_faster_bytewax_source() -> None:
    series = {
        "weir off": Series("weir off", [900.0, 1100.0]),
        "weir 1 s": Series("weir 1 s", [900.0, 1000.0]),
        "weir 100 ms": Series("weir 100 ms", [800.0, 900.0]),
        "bytewax off": Series("bytewax off", [250.0, 250.0]),
        "bytewax 1 s": Series("bytewax 1 s", [200.0, 200.0]),
        "bytewax 100 ms": Series("bytewax 100 ms", [125.0, 125.0]),
        "bytewax off, small batches": Series("bytewax off, small batches", [100.0, 100.0]),
    }
    report = bytewax_report(series, bytewax_args(), "0.21.1", harness.machine())
    assert report["bytewax_faster_source"] == "bytewax off"
    assert report["weir_to_bytewax"]["ratio"] == 4.0
    assert report["weir_to_bytewax"]["per_round"]["values"] == [3.6, 4.4]
    assert report["weir_to_bytewax_small_batches"]["ratio"] == 10.0
    assert report["bytewax_ratio_to_off"]["100 ms"]["ratio"] == 0.5
    assert report["bytewax_time_with_snapshots"]["100 ms"] == 2.0
    assert "4.00x" in bytewax_render(report)


# -- the kit --------------------------------------------------------------------------------


def test_select_parts() -> None:
    parts = kit.PARTS
    assert kit.select_parts(None, parts) == list(parts)
    # The kit's order, whatever the order asked in.
    assert kit.select_parts("sweep, throughput", parts) == ["throughput", "sweep"]
    with pytest.raises(ValueError, match="unknown part"):
        kit.select_parts("throughput,nope", parts)


def test_optional_part_only_when_its_module_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        kit.PARTS, "ghost", kit.Part("benchmarks.no_such_module", "Ghost", optional=True)
    )
    assert "ghost" not in kit.available_parts()
    assert "throughput" in kit.available_parts()


def test_part_arguments() -> None:
    part = kit.Part("m", "t", full_args=("--intervals", "1,0.1"))
    assert kit.part_argv(part, quick=True) == ["--quick"]
    assert kit.part_argv(part, quick=False, extra="--repeats '3'") == [
        "--intervals",
        "1,0.1",
        "--repeats",
        "3",
    ]


def test_noisy_series_are_found_with_their_path() -> None:
    report = {
        "machine": {"noisy": True, "spread": 9.0},  # not a measurement
        "records_per_s": {"weir": summarize([1.0, 2.0]), "loop": summarize([1.0, 1.1])},
        "sizes": [{"read_s": summarize([1.0, 1.5])}],
    }
    found = kit.noisy_series(report)
    assert [f["series"] for f in found] == ["records_per_s.weir", "sizes[0].read_s"]
    assert found[0]["spread"] == 2.0
    assert kit.count_series(report) == 4  # the machine's dict counts but is never listed


def throughput_report(weir: list[float], loop: list[float]) -> dict[str, Any]:
    w, lp = Series("weir", weir), Series("loop", loop)
    return {
        "benchmark": "throughput",
        "records": 1000,
        "weir_records_per_s": w.summary(),
        "loop_records_per_s": lp.summary(),
        "ratio_weir_to_loop": w.median / lp.median,
        "ratio_weir_to_loop_per_round": paired_ratios(w, lp)["per_round"],
        "markdown": "| the throughput table |",
    }


def test_headlines_of_a_throughput_report() -> None:
    [row] = kit.headlines("throughput", throughput_report([600.0, 500.0, 550.0], [1000.0] * 3))
    assert row["ratio"] == 0.55 and row["met"] is True and row["goal"] == ">= 0.5x"
    assert row["per_round"] == {"min": 0.5, "max": 0.6}
    [row] = kit.headlines("throughput", throughput_report([400.0], [1000.0]))
    assert row["met"] is False


def test_headlines_of_a_rocksdb_report_judge_both_goals() -> None:
    def summary(median: float) -> dict[str, Any]:
        return {"median": median}

    def paired(value: float) -> dict[str, Any]:
        return {"ratio": value, "per_round": {"min": value * 0.9, "max": value * 1.1}}

    report = {
        "keys": 1_000_000,
        "checkpoints": {
            "incremental_bytes": summary(3e6),
            "full_bytes": summary(100e6),
            "incremental_seconds": summary(0.05),
            "full_seconds": summary(0.2),
        },
        "restore": {"restore": summary(0.1), "read": summary(0.02)},
        "throughput_records_per_second": {"heap": summary(1e6), "rocksdb": summary(1e5)},
        "incremental_over_full_bytes": paired(0.03),
        "incremental_over_full_seconds": paired(0.25),
        "restore_over_read": paired(5.0),
        "rocksdb_over_heap_throughput": paired(0.1),
    }
    rows = kit.headlines("rocksdb", report)
    assert [(row["ratio"], row["met"]) for row in rows] == [
        (0.03, True),  # bytes: <= 0.05x
        (0.25, False),  # duration: <= 0.20x
        (5.0, None),  # reported, no goal
        (0.1, None),
    ]
    assert rows[0]["value"] == "3.0 MB" and rows[0]["baseline"] == "100.0 MB"


def test_overhead_headlines_include_the_projection_from_the_cost_per_checkpoint() -> None:
    report = {
        "records_per_s": {"off": {"median": 100.0}, "aligned 100 ms": {"median": 80.0}},
        "ratio_to_off": {"off": 1.0, "aligned 100 ms": 0.8},
        "goals": {"aligned 100 ms": 0.90, "unaligned 100 ms": 0.90},
        "checkpoint_cost": {"aligned": {"cost_s": 0.006, "interval_s": 0.01}},
        "projected_ratio_to_off": {"aligned 100 ms": 0.94, "unaligned 100 ms": 0.93},
        "stall": {
            "keys": 1000,
            "max_stall_during_checkpoint_s": 0.008,
            "max_stall_without_checkpoint_s": 0.002,
        },
    }
    rows = kit.headlines("overhead", report)
    direct, projected, stall = rows  # no cost measured for unaligned: no projection row
    assert (direct["ratio"], direct["met"]) == (0.8, False)
    assert (projected["ratio"], projected["met"]) == (0.94, True)
    assert "6.0 ms" in projected["figure"] and "10 ms intervals" in projected["figure"]
    assert stall["met"] is True


def test_headlines_of_an_unknown_or_odd_report() -> None:
    assert kit.headlines("savepoint", {"anything": 1}) == []
    own = {"headline": [{"figure": "f", "value": "1", "baseline": "2", "ratio": 0.5}]}
    assert kit.headlines("savepoint", own) == [
        {"part": "savepoint", "figure": "f", "value": "1", "baseline": "2", "ratio": 0.5}
    ]
    assert kit.headlines("throughput", {"benchmark": "throughput"}) == []  # wrong shape


def ok_run(name: str, report: dict[str, Any]) -> kit.PartRun:
    run = kit.PartRun(name, kit.PARTS[name], ["--quick"], status="ok", seconds=1.5)
    run.report = report
    return run


def test_report_assembly_markdown_and_strict_json() -> None:
    runs = [
        ok_run("throughput", throughput_report([500.0, 800.0], [1000.0, 1000.0])),
        kit.PartRun("recovery", kit.PARTS["recovery"], [], status="failed", error="Boom: x"),
    ]
    info = harness.machine()
    import datetime

    report = kit.assemble(
        runs,
        quick=True,
        started=datetime.datetime(2025, 1, 2, 3, 4, 5),
        seconds=90.0,
        machine_start=info,
        machine_end=info,
        argv=["--quick"],
    )
    assert report["mode"] == "quick" and report["failed"] == ["recovery"]
    assert report["command"] == ["python", "-m", "benchmarks", "--quick"]
    assert [row["part"] for row in report["headline"]] == ["throughput"]
    # Weir's series (800 / 500) and so the per-round ratio (0.8 / 0.5); not the loop's.
    assert [s["series"] for s in report["noisy"]["series"]] == [
        "weir_records_per_s",
        "ratio_weir_to_loop_per_round",
    ]
    assert report["noisy"]["of"] == 3
    assert "markdown" not in report["parts"]["throughput"]["report"]
    assert report["parts"]["recovery"]["error"] == "Boom: x"
    report["plots"] = {"skipped": "matplotlib is not installed"}
    text = to_json(report)
    assert "NaN" not in text
    json.loads(text)  # strict JSON
    markdown = kit.render(report, runs)
    assert markdown.startswith("# Weir benchmark report")
    assert "Quick smoke run" in markdown and "**Noisy run: 2 of 3 series" in markdown
    assert "**Failed parts: recovery**" in markdown
    assert "| the throughput table |" in markdown
    assert "| throughput | keyed count" in markdown
    assert "Plots: not drawn (matplotlib is not installed)" in markdown


def test_strict_json_turns_nan_and_infinity_into_null() -> None:
    assert json.loads(to_json({"a": math.nan, "b": [math.inf, 1.5], "c": (2, -math.inf)})) == {
        "a": None,
        "b": [None, 1.5],
        "c": [2, None],
    }


def test_steady_run_says_so() -> None:
    report = {
        "noisy": {"count": 0, "of": 3, "series": []},
        "machine": {"load_average": [0.5, 0.4, 0.3]},
        "load_average_end": [0.7, 0.5, 0.3],
    }
    assert kit.noisy_text(report).startswith("Steady run")


# -- running parts --------------------------------------------------------------------------


@pytest.fixture
def fake_parts(monkeypatch: pytest.MonkeyPatch) -> dict[str, kit.Part]:
    """Two fake parts: one measures twice and reports, one raises."""

    def good_main(argv: list[str]) -> dict[str, Any]:
        harness.tick("A")
        harness.tick("B")
        print("the good part's table")
        return {"argv": argv, "value": summarize([1.0, 1.0]), "markdown": "| good |"}

    def bad_main(argv: list[str]) -> dict[str, Any]:
        raise RuntimeError("the bad part broke")

    for name, main in (("fake_good", good_main), ("fake_bad", bad_main)):
        module = types.ModuleType(f"benchmarks_test_{name}")
        module.main = main  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, module.__name__, module)
    parts = {
        "good": kit.Part("benchmarks_test_fake_good", "Good part"),
        "bad": kit.Part("benchmarks_test_fake_bad", "Bad part"),
    }
    monkeypatch.setattr(kit, "PARTS", parts)
    monkeypatch.setattr(harness, "RESULTS", harness.RESULTS)  # the kit repoints it
    return parts


def test_run_part_counts_measurements_and_captures_output(
    fake_parts: dict[str, kit.Part], tmp_path: Path
) -> None:
    labels: list[str] = []
    run = kit.PartRun("good", fake_parts["good"], ["--quick"])
    with open(tmp_path / "log", "w", encoding="utf-8") as log:
        kit.run_part(run, log, labels.append)
    assert run.status == "ok" and run.measurements == 2 and labels == ["A", "B"]
    assert run.report["argv"] == ["--quick"]
    assert "the good part's table" in (tmp_path / "log").read_text()
    bad = kit.PartRun("bad", fake_parts["bad"], [])
    with open(tmp_path / "log", "a", encoding="utf-8") as log:
        kit.run_part(bad, log, labels.append)
    assert bad.status == "failed" and bad.error == "RuntimeError: the bad part broke"
    assert "Traceback" in (tmp_path / "log").read_text()


def test_kit_main_writes_the_report_and_fails_when_a_part_failed(
    fake_parts: dict[str, kit.Part], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kit.main(["--quick", "--only", "good", "--out", str(tmp_path), "--no-plots"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["parts"]["good"]["measurements"] == 2
    assert report["parts"]["good"]["argv"] == ["--quick"]
    assert "| good |" in (tmp_path / "report.md").read_text()
    assert tmp_path == harness.RESULTS
    out = tmp_path / "both"
    assert kit.main(["--out", str(out), "--no-plots", "--part-args", "good=--x 1"]) == 1
    report = json.loads((out / "report.json").read_text())
    assert report["failed"] == ["bad"] and report["parts"]["good"]["argv"] == ["--x", "1"]
    assert kit.main(["--only", "nope", "--out", str(out)]) == 2
    assert "unknown part(s): nope" in capsys.readouterr().err
