"""The learning task of a run — classification or regression — as one object that the pipeline asks for everything
that differs between them: data, loss, the training score, the evaluation sets, predictions and metrics.

``task_for(config)`` returns ``CLASSIFICATION`` or ``REGRESSION`` from ``data.task_of(config.dataset)`` (the data
set decides the task, in one place). Classification predicts member probabilities (k, N, C) and is scored by
``empirics.analysis.metrics``; regression predicts member Gaussians (k, N, 2) = (μ, σ²) and is scored by
``empirics.data.regression``. ``evaluation_sets(config)`` are the sets a trained run is scored on (classification:
``test``, ``shift`` with its corruption families, ``ood``; regression: ``test`` and ``shift``); the run folder
predicts them once (``empirics.runs.folder.predictions``) and ``evaluate`` turns those predictions into metrics.
"""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from empirics.analysis import metrics
from empirics.data import datasets as data
from empirics.data import regression

Pair = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class EvaluationSet:
    """The inputs of one evaluation set, their targets (``None`` where labels mean nothing: the OOD set) and named
    row masks (the shift set's corruption families)."""

    inputs: torch.Tensor
    targets: torch.Tensor | None
    groups: dict[str, torch.Tensor] = field(default_factory=dict)


def predict_member_outputs(model, inputs: torch.Tensor, batch_size: int, device: torch.device, desc: str,
                           transform: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``transform(member_logits)`` in eval mode, in chunks of ``batch_size`` inputs: (k, N, ...) float32 on the CPU."""
    model.eval()
    chunks = []
    with torch.no_grad():
        for start in tqdm(range(0, len(inputs), batch_size), desc=desc, unit="batch", leave=False,
                          disable=not sys.stderr.isatty()):
            chunks.append(transform(model.member_logits(inputs[start:start + batch_size].to(device)).float()).cpu())
    return torch.cat(chunks, dim=1)


def softmax_probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, dim=-1)


def gaussian_outputs(outputs: torch.Tensor) -> torch.Tensor:
    """(k, B, 2) raw outputs -> (k, B, 2) = (μ, σ²) of ``regression.gaussian_head``."""
    return torch.stack(regression.gaussian_head(outputs), dim=-1)


def data_root(config) -> str:
    return str(data.resolve_data_root(config.data_root or None))


@dataclass(frozen=True)
class Task:
    name: str
    score: str  # the per-row training score summed over a batch, logged as train/<score>
    headline: tuple[str, ...]  # ensemble metrics of the completion log line

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        raise NotImplementedError

    def training_data(self, config) -> tuple[Pair, Pair]:
        raise NotImplementedError

    def evaluation_sets(self, config) -> dict[str, EvaluationSet]:
        raise NotImplementedError

    def evaluate(self, config, predictions: dict[str, torch.Tensor]) -> dict[str, float]:
        """Flat metrics of every evaluation set from the members' ``predictions`` on it (``evaluation_sets``)."""
        raise NotImplementedError

    def predict(self, model, inputs: torch.Tensor, batch_size: int, device: torch.device, desc: str) -> torch.Tensor:
        raise NotImplementedError

    def split_metrics(self, predictions: torch.Tensor, targets: torch.Tensor, prefix: str) -> dict[str, float]:
        raise NotImplementedError


class Classification(Task):
    def loss(self, outputs, targets):
        """mean over members i and rows b of CE(logits[i, b], y_b) — the mean over the k·B member-major rows."""
        k, _, classes = outputs.shape
        return F.cross_entropy(outputs.reshape(-1, classes), targets.repeat(k))

    def score_sum(self, outputs, targets):
        return (outputs.argmax(-1) == targets).sum().item()

    def training_data(self, config):
        images, labels = data.load_split(config.dataset, "train", data_root(config), config.download)
        return data.train_val_split(images, labels, config.val_fraction, config.seed, config.n_train or None)

    def evaluation_sets(self, config):
        return _image_evaluation_sets(config.dataset, config.ood_name, data_root(config), tuple(config.shift_families),
                                      config.shift_severity, config.seed, config.download, config.n_eval)

    def evaluate(self, config, predictions):
        """``test/...`` per member and ensemble; ``shift/...`` pooled over the families and ``shift/<family>/...``;
        ``ood/<score>/...`` (test negative, OOD positive) and the label-free diversity of the members on OOD inputs."""
        sets = self.evaluation_sets(config)
        results = metrics.member_and_ensemble_metrics(predictions["test"], sets["test"].targets, "test")
        results.update(metrics.member_and_ensemble_metrics(predictions["shift"], sets["shift"].targets, "shift"))
        for family, rows in sets["shift"].groups.items():
            results.update(metrics.member_and_ensemble_metrics(predictions["shift"][:, rows],
                                                               sets["shift"].targets[rows], f"shift/{family}"))
        results.update(metrics.ood_metrics(predictions["test"], predictions["ood"], "ood"))
        results.update(metrics.label_free_metrics(predictions["ood"], "ood"))
        return results

    def predict(self, model, inputs, batch_size, device, desc):
        return predict_member_outputs(model, inputs, batch_size, device, desc, softmax_probs)

    def split_metrics(self, predictions, targets, prefix):
        return metrics.member_and_ensemble_metrics(predictions, targets, prefix)


class Regression(Task):
    def loss(self, outputs, targets):
        return regression.gaussian_nll_loss(outputs, targets)

    def score_sum(self, outputs, targets):
        """Σ over the k·B rows of the squared error (y − μ_i)²; train/squared_error is its mean."""
        return (outputs[..., 0] - targets).pow(2).sum().item()

    def training_data(self, config):
        pool = regression.load(config.dataset).pool
        return data.train_val_split(*pool, config.val_fraction, config.seed, config.n_train or None)

    def evaluation_sets(self, config):
        """``test`` and ``shift`` restricted to the fixed evaluation subset (``data.evaluation_subset``, ``n_eval``);
        regression has no OOD set: the shift split is the out-of-distribution probe."""
        loaded = regression.load(config.dataset)
        return {split: EvaluationSet(*data.evaluation_subset(*getattr(loaded, split), config.n_eval))
                for split in ("test", "shift")}

    def evaluate(self, config, predictions):
        sets = self.evaluation_sets(config)
        return {key: value for split, chosen in sets.items()
                for key, value in self.split_metrics(predictions[split], chosen.targets, split).items()}

    def predict(self, model, inputs, batch_size, device, desc):
        return predict_member_outputs(model, inputs, batch_size, device, desc, gaussian_outputs)

    def split_metrics(self, predictions, targets, prefix):
        return regression.member_and_ensemble_metrics(predictions[..., 0], predictions[..., 1], targets, prefix)


@functools.lru_cache(maxsize=2)
def _image_evaluation_sets(dataset: str, ood_name: str, root: str, families: tuple[str, ...], severity: int, seed: int,
                           download: bool, n_eval: int) -> dict[str, EvaluationSet]:
    """Test, shift (every family at ``severity``, concatenated) and OOD sets, each its fixed evaluation subset
    (cached: the runs of one seed share them)."""
    test = data.load_split(dataset, "test", root, download, n_eval=n_eval)
    images, labels, family_index = data.shifted_test_set(dataset, root, list(families) or None, severity, seed,
                                                         download, n_eval)
    named = data.resolve_shift_families(dataset, root, list(families) or None)
    ood = data.load_split(ood_name, "test", root, download, normalise_as=dataset, n_eval=n_eval)
    return {"test": EvaluationSet(*test),
            "shift": EvaluationSet(images, labels, {family: family_index == position
                                                    for position, family in enumerate(named)}),
            "ood": EvaluationSet(ood[0], None)}


CLASSIFICATION = Classification("classification", "accuracy", ("accuracy", "nll"))
REGRESSION = Regression("regression", "squared_error", ("rmse", "nll"))
TASKS = {task.name: task for task in (CLASSIFICATION, REGRESSION)}


def task_for(config) -> Task:
    return TASKS[data.task_of(config.dataset)]
