"""The learning task of a run — classification or regression — as one object that the pipeline asks for everything
that differs between them: data, loss, the training score, predictions and metrics.

``task_for(config)`` returns ``CLASSIFICATION`` or ``REGRESSION`` from ``data.task_of(config.dataset)`` (the data
set decides the task, in one place). Classification predicts member probabilities (k, N, C) and is scored by
``empirics.metrics``; regression predicts member Gaussians (k, N, 2) = (μ, σ²) and is scored by
``empirics.regression``.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from empirics import data, metrics, regression

Pair = tuple[torch.Tensor, torch.Tensor]


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

    def test_data(self, config) -> Pair:
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

    def test_data(self, config):
        return data.load_split(config.dataset, "test", data_root(config), config.download, n_eval=config.n_eval)

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

    def test_data(self, config):
        return self.evaluation_set(config, "test")

    def evaluation_set(self, config, split: str) -> Pair:
        """``test`` or ``shift`` restricted to the fixed evaluation subset (``data.evaluation_subset``, ``n_eval``)."""
        return data.evaluation_subset(*getattr(regression.load(config.dataset), split), config.n_eval)

    def predict(self, model, inputs, batch_size, device, desc):
        return predict_member_outputs(model, inputs, batch_size, device, desc, gaussian_outputs)

    def split_metrics(self, predictions, targets, prefix):
        return regression.member_and_ensemble_metrics(predictions[..., 0], predictions[..., 1], targets, prefix)

    def evaluate(self, config, model, device: torch.device) -> dict[str, float]:
        """Test and shift metrics (regression has no OOD set: the shift split is the out-of-distribution probe)."""
        results = {}
        for split in ("test", "shift"):
            inputs, targets = self.evaluation_set(config, split)
            results.update(self.split_metrics(self.predict(model, inputs, config.eval_batch_size, device, split),
                                              targets, split))
        return results


CLASSIFICATION = Classification("classification", "accuracy", ("accuracy", "nll"))
REGRESSION = Regression("regression", "squared_error", ("rmse", "nll"))
TASKS = {task.name: task for task in (CLASSIFICATION, REGRESSION)}


def task_for(config) -> Task:
    return TASKS[data.task_of(config.dataset)]
