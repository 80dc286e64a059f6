"""Precision parity table: pairs NAME-fp32 / NAME-bf16, Δ against the seed spread, visible arithmetic."""
from __future__ import annotations

from empirics.studies import parity


def _metric(mean: float, std: float) -> dict:
    return {"mean": mean, "std": std, "n": 2, "values": []}


def test_pairs_need_both_precisions():
    runs = {"a-fp32": {}, "a-bf16": {}, "b-fp32": {}, "c-bf16": {}}
    assert parity.precision_pairs(runs) == ["a"]


def test_difference_within_and_outside_the_seed_spread():
    """Δ = 0.972 − 0.970 = 0.002 ≤ max(0.003, 0.001): within; NLL Δ = 0.10 − 0.05 = 0.05 > 0.01: outside."""
    summary = {"runs": {
        "be-fp32": {"metrics": {"test/ensemble/accuracy": _metric(0.970, 0.003), "test/ensemble/nll": _metric(0.05, 0.01)}},
        "be-bf16": {"metrics": {"test/ensemble/accuracy": _metric(0.972, 0.001), "test/ensemble/nll": _metric(0.10, 0.01)}}}}
    rows = {row["metric"]: row for row in parity.parity_rows(summary)}
    assert set(rows) == {"test accuracy", "test NLL"}
    assert abs(rows["test accuracy"]["delta"] - 0.002) < 1e-12 and rows["test accuracy"]["seed_spread"] == 0.003
    assert rows["test accuracy"]["within_spread"] and not rows["test NLL"]["within_spread"]
    assert "1 of 2 rows" in parity.parity_markdown(list(rows.values()))


def test_a_study_without_pairs_writes_nothing(tmp_path):
    assert not parity.write_parity(tmp_path, {"runs": {"single": {"metrics": {}}}})
    assert not (tmp_path / "parity.json").exists()
