"""Evaluation of a run directory: member probabilities on test, shifted and OOD data → ``eval.json``.

``evaluate_run(run_dir)`` rebuilds the model from the run's ``config.json``, loads ``checkpoint.pt`` and writes
``eval.json`` = {provenance, checkpoint epoch, ``metrics``} with flat keys (``empirics.metrics``), each set restricted
to its fixed evaluation subset when ``n_eval`` > 0 (``empirics.data.evaluation_indices``):

* ``test/...`` — clean test split, per member and ensemble;
* ``shift/...`` — every requested corruption family at ``shift_severity`` pooled, and ``shift/<family>/...`` per family;
* ``ood/<score>/<auroc|aupr|fpr95>`` — test (negative) vs the OOD set's test split (positive), and the label-free
  ``ood/predictive_entropy``, ``ood/expected_entropy``, ``ood/mutual_information``, ``ood/pairwise_jsd``,
  ``ood/disagreement`` of the members on the OOD inputs.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from empirics import data, metrics, tasks
from empirics.config import Config
from empirics.models import EnsembleModel, build_model
from theory.cli_support import BadInput
from theory.records import atomic_write_json, load_torch_file, provenance

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
EVAL_FILE = "eval.json"
COMPLETE_MARKER = "COMPLETE"


def apply_execution_settings(config: Config) -> torch.device:
    """Thread count (when set) and the device of ``config``."""
    if config.threads:
        torch.set_num_threads(config.threads)
    return resolve_device(config.device)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("device='cuda' is not available on this machine: expected 'cpu' or 'auto'")
    return torch.device(name)


def data_root(config: Config) -> Path:
    return data.resolve_data_root(config.data_root or None)


def predict_member_probs(model: EnsembleModel, images: torch.Tensor, batch_size: int, device: torch.device,
                         desc: str = "predict") -> torch.Tensor:
    """softmax(member_logits) in eval mode, in chunks of ``batch_size`` images: (k, N, C) float32 on the CPU."""
    return tasks.CLASSIFICATION.predict(model, images, batch_size, device, desc)


def read_config(run_dir: Path) -> Config:
    path = Path(run_dir) / CONFIG_FILE
    try:
        with open(path, encoding="utf-8") as handle:
            stored = json.load(handle)
    except FileNotFoundError:
        raise BadInput(f"{path} does not exist: expected a run directory written by `python -m empirics train`") from None
    except json.JSONDecodeError as error:
        raise BadInput(f"{path} is not valid JSON ({error})") from None
    return Config.from_dict(stored["config"])


def load_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load`` of a checkpoint; a missing, empty, truncated or corrupted file is a one-line ``BadInput``."""
    if not path.is_file():
        raise BadInput(f"{path} does not exist: the run has not finished an epoch yet")
    return load_torch_file(path, str(path), "delete it to restart the run")


def checkpoint_bytes(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_run(run_dir: str | Path, device: torch.device | None = None) -> tuple[Config, EnsembleModel, dict]:
    """The run's config, its model with the checkpoint's weights (in eval mode) and the checkpoint itself."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    state = load_checkpoint(run_dir / CHECKPOINT_FILE)
    model = build_model(config.model_spec())
    model.load_state_dict(state["model"])
    return config, model.to(device or resolve_device(config.device)).eval(), state


def _label_free_metrics(member_probs: torch.Tensor, prefix: str) -> dict[str, float]:
    """Entropy and diversity quantities that need no labels (for OOD inputs, whose labels mean nothing here)."""
    ensemble = member_probs.mean(0)
    out = {f"{prefix}/predictive_entropy": metrics.entropy(ensemble).mean().item(),
           f"{prefix}/expected_entropy": metrics.entropy(member_probs).mean().item(),
           f"{prefix}/mutual_information": metrics.mutual_information(member_probs).mean().item()}
    if member_probs.shape[0] >= 2:
        out[f"{prefix}/pairwise_jsd"] = metrics.pairwise_jsd(member_probs)
        out[f"{prefix}/disagreement"] = metrics.disagreement(member_probs)
    return out


def test_metrics(config: Config, model: EnsembleModel, device: torch.device) -> tuple[dict[str, float], torch.Tensor]:
    images, labels = data.load_split(config.dataset, "test", data_root(config), config.download,
                                     n_eval=config.n_eval)
    probs = predict_member_probs(model, images, config.eval_batch_size, device, "test")
    return metrics.member_and_ensemble_metrics(probs, labels, "test"), probs


def shift_metrics(config: Config, model: EnsembleModel, device: torch.device) -> dict[str, float]:
    families = list(config.shift_families) or None
    images, labels, family_index = data.shifted_test_set(config.dataset, data_root(config), families,
                                                         config.shift_severity, config.seed, config.download,
                                                         config.n_eval)
    probs = predict_member_probs(model, images, config.eval_batch_size, device, "shift")
    out = metrics.member_and_ensemble_metrics(probs, labels, "shift")
    for position, family in enumerate(data.resolve_shift_families(config.dataset, data_root(config), families)):
        rows = family_index == position
        out.update(metrics.member_and_ensemble_metrics(probs[:, rows], labels[rows], f"shift/{family}"))
    return out


def ood_metrics(config: Config, model: EnsembleModel, device: torch.device, test_probs: torch.Tensor) -> dict:
    images, _ = data.load_split(config.ood_name, "test", data_root(config), config.download,
                                normalise_as=config.dataset, n_eval=config.n_eval)
    probs = predict_member_probs(model, images, config.eval_batch_size, device, "ood")
    return {**metrics.ood_metrics(test_probs, probs, "ood"), **_label_free_metrics(probs, "ood")}


def evaluate_run(run_dir: str | Path, data_root_override: str | None = None) -> dict[str, float]:
    """Re-evaluate a run's checkpoint on test, shift and OOD data; write ``eval.json``; return the flat metrics."""
    run_dir = Path(run_dir)
    config, model, state = load_run(run_dir)
    if data_root_override:
        config = Config.from_dict({**config.to_dict(), "data_root": data_root_override})
    device = apply_execution_settings(config)
    torch.manual_seed(config.seed)  # MC Dropout's test-time masks: the test pass draws as training's final one
    if config.task == "regression":
        results = tasks.REGRESSION.evaluate(config, model, device)
    else:
        results, test_probs = test_metrics(config, model, device)
        results.update(shift_metrics(config, model, device))
        results.update(ood_metrics(config, model, device, test_probs))
    ood_name = config.ood_name if config.task == "classification" else ""
    atomic_write_json(run_dir / EVAL_FILE, {"provenance": provenance(config.to_dict(), config.seed),
                                            "checkpoint_epoch": state["epoch"], "ood_dataset": ood_name,
                                            "complete": (run_dir / COMPLETE_MARKER).is_file(),
                                            "shift_sources": data.shift_sources(
                                                config.dataset, data_root(config), list(config.shift_families) or None,
                                                config.shift_severity) if config.task == "classification" else {},
                                            "metrics": results})
    return results
