"""The bounded-input backpressure part (issue 11) at its ``--quick`` size: every mode runs
to its job's end and the report has every figure (nothing is asserted about time)."""

from __future__ import annotations

from benchmarks import backpressure_bounded


def test_bounded_part_reports_every_mode_and_its_headline() -> None:
    report = backpressure_bounded.main(["--quick", "--records", "300"])
    modes = report["modes"]
    assert set(modes) == {"aligned", "unaligned", "aligned_timeout"}
    for mode, summary in modes.items():
        assert summary["checkpoints"] >= 1, mode  # at least the job's final checkpoint
        assert summary["failed"] == 0, mode
        assert summary["longest_gap_max"] > 0, mode
    assert report["ratio_aligned_to_unaligned"] == report["ratio_aligned_to_unaligned"]
    assert "aligned / unaligned duration" in report["markdown"]
