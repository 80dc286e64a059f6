"""Saved study results for the ``fig_empirics_*`` scripts: which presets have results and their files (never trains).

A study folder ``results/<preset>/`` holds ``summary.json`` and ``runs/<run>/seed<s>/{metrics,eval,diversity}.json``
(written by ``python -m empirics study``). Tiny smoke runs (``results/tiny/``) are not figures.
"""
from __future__ import annotations

from empirics.runs import folder
from empirics.studies.report import SUMMARY_FILE as SUMMARY

from style import RESULTS, load_json

DIVERSITY, EVAL, METRICS = folder.DIVERSITY, folder.EVAL, folder.METRICS


def studies() -> list[str]:
    """Presets with a saved summary; FileNotFoundError (the quick study's summary) when there is none."""
    found = sorted(path.parent.name for path in RESULTS.glob(f"*/{SUMMARY}"))
    if not found:
        raise FileNotFoundError(2, "no study results", str(RESULTS / "quick" / SUMMARY))
    return found


def summary(preset: str) -> dict:
    return load_json(f"{preset}/{SUMMARY}")


def run_file(preset: str, run: str, seed: int, name: str) -> dict:
    return load_json(f"{preset}/runs/{run}/seed{seed}/{name}")


def first_seed(study: dict, run: str) -> int:
    return study["runs"][run]["seeds"][0]


def method_of(study: dict, run: str) -> str:
    return study["runs"][run]["fields"].get("method", "batchensemble")


def ensemble_runs(study: dict) -> list[str]:
    """Runs with k >= 2 members (their diversity is defined)."""
    return [run for run in study["runs"] if method_of(study, run) != "single"]


def metric(study: dict, run: str, key: str) -> dict | None:
    return study["runs"][run]["metrics"].get(key)


def classification_study(study: dict) -> bool:
    """True when the study's runs are scored as classifiers (accuracy, MI, ROC); a regression study (Gaussian heads,
    ``empirics.data.regression``) has RMSE and coverage instead."""
    return any("test/ensemble/accuracy" in run["metrics"] for run in study["runs"].values())
