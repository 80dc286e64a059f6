"""The paper's claims tested on a study: Welch difference of means over seeds and the three verdicts."""
from __future__ import annotations

import numpy as np
import pytest

from empirics.studies import paper_claims


def _summary(values_by_run: dict[str, list[float]], key: str = "shift/ensemble/ece") -> dict:
    return {"runs": {run: {"metrics": {key: {"mean": float(np.mean(v)), "values": v}}}
                     for run, v in values_by_run.items()}}


def test_welch_interval_of_visible_arithmetic():
    """a = (1, 2, 3), b = (0, 0, 0)+ε spread: Δ = 2 − 0 and the interval is scipy's Welch interval."""
    a, b = np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.1, -0.1])
    result = paper_claims.welch_difference(a, b)
    assert result["delta"] == pytest.approx(2.0)
    # Welch: se² = 1/3 + 0.01/3, dof by Welch–Satterthwaite; the interval brackets 2 symmetrically
    assert result["ci_low"] < 2.0 < result["ci_high"]
    assert result["ci_high"] - 2.0 == pytest.approx(2.0 - result["ci_low"])


@pytest.mark.parametrize("be, de, expected", [([0.20, 0.21, 0.22], [0.10, 0.11, 0.09], "holds"),
                                              ([0.10, 0.11, 0.09], [0.20, 0.21, 0.22], "contradicted"),
                                              ([0.10, 0.20, 0.15], [0.14, 0.16, 0.15], "not resolved"),
                                              ([0.20], [0.10], "not resolved")])
def test_verdict_follows_the_interval_and_the_claimed_direction(be, de, expected):
    """The first check claims BE's shift ECE > DE's: a clear excess holds, a clear deficit contradicts, overlap or a
    single seed leaves it unresolved."""
    rows = paper_claims.evaluate_checks(_summary({paper_claims.PAPER_BE: be, "de": de}))
    first = next(row for row in rows if row["run_b"] == "de")
    assert first["verdict"] == expected


def test_checks_without_their_runs_are_left_out():
    rows = paper_claims.evaluate_checks(_summary({paper_claims.PAPER_BE: [0.2, 0.3]}))
    assert rows == []
