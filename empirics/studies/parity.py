"""Precision parity: the runs of a study that come in ``NAME-fp32`` / ``NAME-bf16`` pairs, side by side.

For each pair and metric (test accuracy, NLL, ECE, mutual information) the mean over seeds in each precision, their
difference Δ = mean_bf16 − mean_fp32 and the seed-to-seed spread s = max(std_fp32, std_bf16) (sample standard
deviations over the pair's seeds). A pair is *within the seed spread* when |Δ| ≤ s for every metric; a study may use
bf16 only if every pair is (preset ``resnet18-parity``). Written as ``parity.json`` beside the study's
``summary.json``; the study report shows the table (``empirics.studies.report``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from infra.files import atomic_write_json
from infra.provenance import provenance

PARITY_METRICS = (("test accuracy", "test/ensemble/accuracy"), ("test NLL", "test/ensemble/nll"),
                  ("test ECE", "test/ensemble/ece"), ("test MI", "test/mutual_information"))
PAIR_SUFFIXES = ("-fp32", "-bf16")


def precision_pairs(runs: Mapping[str, Any]) -> list[str]:
    """Base names NAME with both ``NAME-fp32`` and ``NAME-bf16`` among ``runs``, in the runs' order."""
    fp32, bf16 = PAIR_SUFFIXES
    return [name[:-len(fp32)] for name in runs if name.endswith(fp32) and name[:-len(fp32)] + bf16 in runs]


def parity_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (pair, metric) present in both runs: means, Δ, the seed spread and whether |Δ| ≤ spread."""
    rows = []
    for base in precision_pairs(summary["runs"]):
        runs = [summary["runs"][base + suffix]["metrics"] for suffix in PAIR_SUFFIXES]
        for label, key in PARITY_METRICS:
            if not all(key in metrics for metrics in runs):
                continue
            low, high = (metrics[key] for metrics in runs)
            delta, spread = high["mean"] - low["mean"], max(low["std"], high["std"])
            rows.append({"run": base, "metric": label, "key": key, "fp32": low["mean"], "fp32_std": low["std"],
                         "bf16": high["mean"], "bf16_std": high["std"], "delta": delta, "seed_spread": spread,
                         "seeds": min(low["n"], high["n"]), "within_spread": abs(delta) <= spread})
    return rows


def parity_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| run | metric | fp32 (mean ± std) | bf16 (mean ± std) | Δ = bf16 − fp32 | seed spread | within |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['run']} | {row['metric']} | {row['fp32']:.4f} ± {row['fp32_std']:.4f} | "
                     f"{row['bf16']:.4f} ± {row['bf16_std']:.4f} | {row['delta']:+.4f} | {row['seed_spread']:.4f} | "
                     f"{'yes' if row['within_spread'] else '**no**'} |")
    verdict = all(row["within_spread"] for row in rows)
    lines += ["", f"Every difference within the seed-to-seed spread: {'yes' if verdict else 'no'} "
                  f"({sum(row['within_spread'] for row in rows)} of {len(rows)} rows)."]
    return "\n".join(lines) + "\n"


def write_parity(out: Path, summary: Mapping[str, Any]) -> bool:
    """``parity.json`` in ``out`` when the study has precision pairs; whether it wrote it."""
    rows = parity_rows(summary)
    if not rows:
        return False
    atomic_write_json(Path(out) / "parity.json", {"rows": rows, "within_spread": all(r["within_spread"] for r in rows),
                                                  "provenance": provenance({"preset": summary.get("preset")})})
    return True
