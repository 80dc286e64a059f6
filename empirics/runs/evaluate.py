"""Evaluation of a run directory: the members' predictions on the run's evaluation sets → ``eval.json``.

``evaluate_run(run_dir)`` rebuilds the model from the run folder (``empirics.runs.folder``), takes its predictions on
the task's evaluation sets (predicted once per trained model) and writes ``eval.json`` = {provenance, checkpoint
epoch, ``metrics``} with flat keys, each set restricted to its fixed evaluation subset when ``n_eval`` > 0
(``empirics.data.datasets.evaluation_indices``). Classification (``empirics.analysis.metrics``):

* ``test/...`` — clean test split, per member and ensemble;
* ``shift/...`` — every requested corruption family at ``shift_severity`` pooled, and ``shift/<family>/...`` per family;
* ``ood/<score>/<auroc|aupr|fpr95>`` — test (negative) vs the OOD set's test split (positive), and the label-free
  ``ood/predictive_entropy``, ``ood/expected_entropy``, ``ood/mutual_information``, ``ood/pairwise_jsd``,
  ``ood/disagreement`` of the members on the OOD inputs.

Regression: ``test/...`` and ``shift/...`` (``empirics.data.regression``).
"""
from __future__ import annotations

import time
from pathlib import Path

from empirics.data import datasets as data
from empirics.runs import folder
from empirics.runs.config import Config, apply_execution_settings
from empirics.runs.tasks import data_root, task_for


def evaluate_run(run_dir: str | Path, data_root_override: str | None = None) -> dict[str, float]:
    """Score a run's checkpoint on its evaluation sets; write ``eval.json``; return the flat metrics."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    config, model, state = folder.load_run(run_dir)
    if data_root_override:
        config = Config.from_dict({**config.to_dict(), "data_root": data_root_override})
    device = apply_execution_settings(config)
    task = task_for(config)
    results = task.evaluate(config, folder.predictions(run_dir, config, model, device))
    classification = config.task == "classification"
    folder.write_json(run_dir, folder.EVAL, config, {
        "checkpoint_epoch": state["epoch"], "ood_dataset": config.ood_name if classification else "",
        "complete": folder.is_trained(run_dir),
        "shift_sources": data.shift_sources(config.dataset, data_root(config), list(config.shift_families) or None,
                                            config.shift_severity) if classification else {},
        "metrics": results, "seconds": time.perf_counter() - started})
    return results
