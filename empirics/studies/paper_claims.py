"""The source paper's qualitative claims (docs/paper.md §2 claim 2), tested one by one on a study's numbers.

Each check compares two runs of a study on one metric through the difference of their means over seeds,
Δ = mean_a − mean_b, with Welch's 95% t-interval (``empirics.analysis.effects.contrast``, equal to scipy's; the unit of
replication is a seed, and the two runs' seeds are treated as independent samples). The verdict is

* ``holds`` when the interval excludes 0 on the side the claim predicts,
* ``contradicted`` when it excludes 0 on the other side,
* ``not resolved`` otherwise (including runs with fewer than 2 seeds, where no interval exists).

Claims are stated for the paper's BatchEnsemble (rank 1, channel-wise, N(1, 0.5) fast weights), the run named by
``PAPER_BE``; the MLP findings (docs/paper.md §3 question 6: the init, not the rank, sets BE's diversity) are the
later checks, each present only when the study has the runs it compares.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from empirics.analysis import effects

PAPER_BE = "be-r1-channel"
METHOD = ("Each row compares run A with run B on one metric: Δ = mean_A − mean_B over seeds with Welch's 95% "
          "t-interval (seeds are the unit of replication). Verdict: 'holds' when the interval excludes 0 on the side "
          "the claim predicts, 'contradicted' when it excludes 0 on the other side, 'not resolved' otherwise (or "
          "with fewer than 2 seeds).")


@dataclass(frozen=True)
class Check:
    """``run_a`` is claimed to have a larger (``direction`` = +1) or smaller (−1) ``key`` than ``run_b``."""

    claim: str
    run_a: str
    run_b: str
    key: str
    direction: int


CHECKS = (
    Check("BE's ECE under shift is worse (higher) than DE's", PAPER_BE, "de", "shift/ensemble/ece", +1),
    Check("BE's ECE under shift is worse (higher) than MC Dropout's", PAPER_BE, "mcd", "shift/ensemble/ece", +1),
    Check("BE's test ECE is worse (higher) than DE's", PAPER_BE, "de", "test/ensemble/ece", +1),
    Check("BE's OOD AUROC (max-probability score) is worse (lower) than DE's", PAPER_BE, "de",
          "ood/max_prob/auroc", -1),
    Check("BE's OOD AUROC (max-probability score) is worse (lower) than MC Dropout's", PAPER_BE, "mcd",
          "ood/max_prob/auroc", -1),
    Check("BE's member mutual information under shift is below DE's", PAPER_BE, "de", "shift/mutual_information", -1),
    Check("BE's member JSD on OOD inputs is below DE's", PAPER_BE, "de", "ood/pairwise_jsd", -1),
    Check("BE's test NLL is worse (higher) than DE's", PAPER_BE, "de", "test/ensemble/nll", +1),
    Check("MLP finding: random-sign BE has more member MI under shift than N(1, 0.5) BE", "be-r1-signs", PAPER_BE,
          "shift/mutual_information", +1),
    Check("MLP finding: random-sign BE's member MI under shift is below DE's", "be-r1-signs", "de",
          "shift/mutual_information", -1),
    Check("Rank 4 BE has more member MI under shift than rank 1", "be-r4-channel", PAPER_BE,
          "shift/mutual_information", +1),
    Check("Flattened-kernel BE has more member MI under shift than channel-wise", "be-r1-flattened", PAPER_BE,
          "shift/mutual_information", +1),
)


def seed_values(summary: Mapping[str, Any], run: str, key: str) -> np.ndarray | None:
    metric = summary["runs"].get(run, {}).get("metrics", {}).get(key)
    return None if metric is None else np.asarray(metric["values"], dtype=float)


def welch_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float | None]:
    """Δ = mean(a) − mean(b) and Welch's 95% t-interval (``empirics.analysis.effects.contrast``; None bounds with fewer
    than 2 values on a side)."""
    found = effects.contrast({"a": a, "b": b}, "difference")
    return {"delta": found["estimate"], "ci_low": found["ci_low"], "ci_high": found["ci_high"]}


def verdict(difference: Mapping[str, float | None], direction: int) -> str:
    low, high = difference["ci_low"], difference["ci_high"]
    if low is None or high is None:
        return "not resolved"
    if (low > 0 and direction > 0) or (high < 0 and direction < 0):
        return "holds"
    if (low > 0 and direction < 0) or (high < 0 and direction > 0):
        return "contradicted"
    return "not resolved"


def evaluate_checks(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every check whose two runs and metric are in the study: means, Δ, its interval and the verdict."""
    rows = []
    for check in CHECKS:
        a, b = seed_values(summary, check.run_a, check.key), seed_values(summary, check.run_b, check.key)
        if a is None or b is None:
            continue
        difference = welch_difference(a, b)
        rows.append({"claim": check.claim, "run_a": check.run_a, "run_b": check.run_b, "key": check.key,
                     "mean_a": float(a.mean()), "mean_b": float(b.mean()), "seeds": [len(a), len(b)],
                     **difference, "verdict": verdict(difference, check.direction)})
    return rows


def _interval(row: Mapping[str, Any]) -> str:
    if row["ci_low"] is None:
        return "–"
    return f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"


def claims_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["claim", "metric", "A", "B", "mean A", "mean B", "Δ = A − B", "95% CI (Welch)", "verdict"]
    rows = [[row["claim"], f"`{row['key']}`", row["run_a"], row["run_b"], f"{row['mean_a']:.4f}",
             f"{row['mean_b']:.4f}", f"{row['delta']:+.4f}", _interval(row), row["verdict"]]
            for row in evaluate_checks(summary)]
    return header, rows
