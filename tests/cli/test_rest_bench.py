"""The benchmark kit's ``rest`` part runs end to end on a tiny input (figures not judged)."""

from __future__ import annotations

from benchmarks import kit, rest


def test_rest_part_reports_both_variants_and_its_headline() -> None:
    report = rest.main(["--quick", "--records", "20000", "--repeats", "1", "--rounds", "5"])
    assert set(report["records_per_s"]) == {"no server", "polled"}
    assert all(s["median"] > 0 for s in report["records_per_s"].values())
    assert report["ratio_polled_to_no_server"] > 0
    assert report["polls_answered"] >= 0 and report["polls_refused"] >= 0
    assert report["cpu_ratio_polled_to_no_server"] > 0
    rows = kit.headlines("rest", report)
    assert [row["part"] for row in rows] == ["rest", "rest", "rest"]
    assert all(row["goal"] == ">= 0.98x" for row in rows)
    assert "projected" in rows[0]["figure"] and "CPU second" in rows[1]["figure"]
    assert 0 < report["poll_cost"]["projected_ratio_at_1_hz"] <= 1
    assert "rest" in kit.available_parts()
