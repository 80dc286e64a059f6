"""Saved study results for the ``fig_empirics_*`` scripts: which presets have results and their files (never trains).

A study folder ``results/<preset>/`` holds ``summary.json`` and ``runs/<run>/seed<s>/{metrics,eval,diversity}.json``
(written by ``python -m empirics study``). Tiny smoke runs (``results/tiny/``) are not figures.
"""
from __future__ import annotations

from empirics.runs import folder
from empirics.studies.report import SUMMARY_FILE as SUMMARY

from style import FULL_WIDTH, RESULTS, figure, load_json, save

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


def runs_by_dataset(study: dict) -> dict[str, list[str]]:
    """The study's runs grouped by data set (sorted; ``""`` for runs without one), each in the preset's order: every
    figure draws one panel or row per data set, whose measures have their own scale."""
    grouped: dict[str, list[str]] = {}
    for run, entry in study["runs"].items():
        grouped.setdefault(entry["fields"].get("dataset", ""), []).append(run)
    return dict(sorted(grouped.items()))


def calibration_figure(preset: str, study: dict, curve, labels: tuple[str, str, str], name: str) -> None:
    """Test and shift panels with the diagonal and one calibration curve per run (its first seed's ``diversity.json``),
    one row of panels per data set: ``curve(diversity, split) -> (x, y)``; ``labels`` = (diagonal, x axis, y axis)."""
    diagonal, xlabel, ylabel = labels
    datasets = runs_by_dataset(study)
    fig, axes = figure(width=FULL_WIDTH, height=2.6 * len(datasets), nrows=len(datasets), ncols=2, sharey=True,
                       squeeze=False)
    for row, (dataset, runs) in zip(axes, datasets.items()):
        for ax, split in zip(row, ("test", "shift")):
            ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8, label=diagonal)
            for run in runs:
                ax.plot(*curve(run_file(preset, run, first_seed(study, run), DIVERSITY), split), marker=".",
                        label=run)
            ax.set_title(f"{dataset + ', ' if len(datasets) > 1 else ''}{split} (first seed of each run)")
            ax.set_xlabel(xlabel)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
        row[0].set_ylabel(ylabel)
        row[1].legend(fontsize=5, ncol=2)
    save(fig, name)
