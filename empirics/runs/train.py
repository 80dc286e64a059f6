"""Resumable, deterministic training of every method, with early stopping on validation NLL.

``train(config, run_dir, resume=False) -> dict`` (final flat test metrics) writes into ``run_dir`` (the run folder,
``empirics.runs.folder``, owns the file names):

* ``config.json`` — full config with provenance (seed, versions, git commit, command), written first;
* ``checkpoint.pt`` — model, optimizer, scheduler, RNG state, early-stopping state, history and position
  (epoch, batch), written atomically at the end of every epoch and at the batch boundary where SIGTERM/SIGINT arrive;
* ``metrics.json`` — per-epoch ``train/*`` and ``val/*`` values and the final ``test/*`` metrics per member and for
  the ensemble (flat keys), rewritten every epoch;
* ``train.log`` — one line per epoch and every event (resume, interruption, divergence, early stop);
* ``predictions.npz`` — the final model's predictions on every evaluation set (``empirics.runs.folder.predictions``),
  from which the final test metrics come and which ``evaluate`` and the analysis reuse;
* ``COMPLETE`` — written last: the run finished and ``checkpoint.pt`` holds the final (best) model.

Loss: the mean cross-entropy over all k·B member rows (each member sees the whole batch of B examples), as edward2
trains BatchEnsemble (the batch repeated k times) and as torch-uncertainty did up to 0.8; since 0.9 torch-uncertainty
splits the batch across members in training instead (``repeat_strategy="paper"``, the ``batched_resnet`` default:
member i trains on B/k examples, the input is repeated only at evaluation; docs/peers.md §1), so at equal batch size
its members see k times fewer examples per step than ours. The jointly trained Deep Ensembles use the same mean (for
SGD this gives each DE member the gradient of its own loss divided by k; torch-uncertainty's DE recipe raises the
learning rate by k accordingly).
With ``batch_regime = "split"`` this project trains that way too: member i sees only the i-th of k blocks of B // k
rows and the loss is the mean over those B rows (``training_logits``); evaluation always feeds every member every
input. With ``trajectory = true`` every epoch's entry also holds the ``traj/*`` diversity measures of
``empirics.analysis.trajectory``.

Determinism: deterministic algorithms on; the epoch's shuffling comes from a generator seeded with (seed, epoch), the
dropout masks from torch's global generator whose state is checkpointed, so a resumed run — from an epoch end or
from the batch where a signal stopped it — is bit-identical to an uninterrupted one. The final test pass draws MC
Dropout's masks from a generator seeded with the config's seed (inside ``torch.random.fork_rng``), as ``evaluate``
does: its numbers do not depend on a resume and equal ``evaluate``'s for the same checkpoint. A non-finite loss stops
the run with a ``TrainingDiverged`` (exit 2) and leaves the last good checkpoint untouched. Precision: the model's
(``empirics.models.precision``; float32 by default, bf16 autocast with ``precision = "bf16"``).
"""
from __future__ import annotations

import copy
import logging
import math
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from empirics.analysis.trajectory import TrajectoryProbe
from empirics.models.ensembles import EnsembleModel, build_model
from empirics.runs import folder
from empirics.runs.config import Config, apply_execution_settings, describe_differences
from empirics.runs.tasks import CLASSIFICATION, task_for
from infra.errors import BadInput
from infra.signals import on_stop_signals

FAST_WEIGHT_MARK = "fast_factors"
_SHUFFLE_STRIDE = 1_000_003  # seed of epoch e's shuffle: seed · stride + e (distinct for every (seed, epoch < stride))


class TrainingDiverged(BadInput):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class _StopSignal:
    """SIGTERM/SIGINT set a flag; the loop checkpoints at the next batch boundary and exits 128 + signal."""

    def __init__(self) -> None:
        self.received: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        self.received = signum


@contextmanager
def _signal_flag() -> Iterator[_StopSignal]:
    flag = _StopSignal()
    with on_stop_signals(flag):
        yield flag


def _logger(run_dir: Path) -> logging.Logger:
    logger = logging.getLogger(f"empirics.runs.train.{run_dir.resolve()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        handler = logging.FileHandler(run_dir / folder.LOG, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
    return logger


def _close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


def load_training_data(config: Config) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(train, validation) pairs of the run's task (``empirics.runs.tasks``)."""
    return task_for(config).training_data(config)


def build_optimizer(config: Config, model: EnsembleModel) -> torch.optim.Optimizer:
    """Two parameter groups: slow weights (lr, weight_decay) and BE fast factors (lr · fast_lr_mult, weight_decay
    only when ``fast_weight_decay``)."""
    slow, fast = [], []
    for name, parameter in model.named_parameters():
        (fast if FAST_WEIGHT_MARK in name else slow).append(parameter)
    groups = [{"params": slow, "lr": config.lr, "weight_decay": config.weight_decay}]
    if fast:
        groups.append({"params": fast, "lr": config.lr * config.fast_lr_mult,
                       "weight_decay": config.weight_decay if config.fast_weight_decay else 0.0})
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    return torch.optim.Adam(groups, lr=config.lr)


def build_scheduler(config: Config, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.gamma)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def ensemble_loss(member_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """mean over members i and rows b of CE(logits[i, b], y_b) — the mean over the k·B member-major rows (the
    classification task's loss; a regression run trains on ``Task.loss``, the Gaussian NLL); ``labels`` is (B,) (every
    member sees the batch) or (k, B) (member i's own rows, ``batch_regime='split'``)."""
    k, _, classes = member_logits.shape
    targets = labels.reshape(-1) if labels.dim() == 2 else labels.repeat(k)
    return F.cross_entropy(member_logits.reshape(-1, classes), targets)


def training_logits(config: Config, model: EnsembleModel, images: torch.Tensor,
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The training forward of ``config.batch_regime``: ``repeat`` → (k, B, C) logits of every member on the whole
    batch and the (B,) labels; ``split`` → member i's logits on the i-th of k blocks of B // k rows, (k, B // k, C),
    and their (k, B // k) labels — the last B mod k rows of a batch are left out (at most k − 1 rows, only in a batch
    whose size is not a multiple of k); ``None`` for a batch of fewer than k rows under ``split``."""
    if config.batch_regime == "repeat":
        return model.member_logits(images), labels
    block = len(images) // model.members
    if block == 0:
        return None
    used = block * model.members
    return model.member_logits_split(images[:used]), labels[:used].view(model.members, block)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """Index batches of epoch ``epoch``: a permutation from a generator seeded with (seed, epoch)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * _SHUFFLE_STRIDE + epoch))
    return list(torch.split(order, batch_size))


def _fresh_state() -> dict[str, Any]:
    return {"epoch": 0, "batch": 0, "running": {"loss": 0.0, "correct": 0.0, "rows": 0}, "history": [],
            "best_nll": math.inf, "best_epoch": 0, "best_model": None, "bad_epochs": 0, "stopped_early": False,
            "seconds": 0.0}  # wall time spent training, summed over the invocations that trained this run


def _check_resumable(config: Config, run_dir: Path) -> None:
    differing = describe_differences(folder.read_config(run_dir), config)
    if differing:
        raise BadInput(f"cannot resume {run_dir}: config differs from its config.json in {differing}")


def require_resumable_folder(run_dir: Path) -> None:
    """``--resume`` needs a folder holding a started run; anything else is refused before anything is written."""
    if not run_dir.is_dir():
        raise BadInput(f"cannot resume {run_dir}: no such folder; check the path, or drop --resume to start a new run")
    if not folder.is_started(run_dir):
        raise BadInput(f"cannot resume {run_dir}: it holds no {folder.CONFIG} (no run was started there); check the "
                       f"path, or drop --resume to start a new run (nothing was overwritten)")


def _start_fresh(config: Config, run_dir: Path) -> None:
    """Remove every result of an earlier run in ``run_dir`` (completion marker first) and write ``config.json``."""
    folder.remove(run_dir, folder.RESULTS)
    folder.write_config(run_dir, config)


def _save(run_dir: Path, model, optimizer, scheduler, state: dict[str, Any]) -> None:
    folder.save_checkpoint(run_dir, {**state, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                     "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state()})


def _write_metrics(run_dir: Path, config: Config, state: dict[str, Any], final: dict[str, float] | None) -> None:
    folder.write_json(run_dir, folder.METRICS, config, {
        "epochs": state["history"], "best_epoch": state["best_epoch"], "stopped_early": state["stopped_early"],
        "final": final or {}, "seconds": state["seconds"]})


def _train_epoch(config: Config, model: EnsembleModel, optimizer, train_set: TensorDataset, state: dict[str, Any],
                 device: torch.device, stop: _StopSignal, save) -> None:
    """Run the batches of ``state['epoch']`` from ``state['batch']``, updating the running sums in ``state``."""
    batches = epoch_batches(len(train_set), config.batch_size, config.seed, state["epoch"])
    # Its own generator: the loader's worker base seed must not consume the global RNG (dropout masks), or a run
    # resumed mid-epoch would draw once more than an uninterrupted one.
    loader = DataLoader(train_set, sampler=batches[state["batch"]:], batch_size=None, num_workers=config.num_workers,
                        generator=torch.Generator().manual_seed(config.seed * _SHUFFLE_STRIDE + state["epoch"]))
    model.train()
    task = task_for(config)
    running = state["running"]
    bar = tqdm(loader, desc=f"epoch {state['epoch'] + 1}", unit="batch", leave=False, initial=state["batch"],
               total=len(batches), disable=not sys.stderr.isatty())
    for images, labels in bar:
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad(set_to_none=True)
        forward = training_logits(config, model, images, labels)
        if forward is None:  # split regime, a final batch smaller than k: nothing to train on
            state["batch"] += 1
            continue
        logits, labels = forward
        loss = (ensemble_loss if task is CLASSIFICATION else task.loss)(logits, labels)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss is {loss.item()} at epoch {state['epoch'] + 1}, batch {state['batch'] + 1}: training stopped; "
                f"the last good checkpoint (end of epoch {state['epoch']}) is kept; try a smaller lr or grad_clip > 0")
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        rows = logits.shape[0] * logits.shape[1]
        running["loss"] += loss.item() * rows
        running["correct"] += task.score_sum(logits, labels)  # the task's score (accuracy: correct rows)
        running["rows"] += rows
        state["batch"] += 1
        bar.set_postfix(loss=f"{running['loss'] / running['rows']:.4f}")
        if stop.received is not None:
            save()
            raise _Stopped(stop.received)


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _validate(config: Config, model: EnsembleModel, val_set: tuple[torch.Tensor, torch.Tensor],
              device: torch.device) -> dict[str, float]:
    if len(val_set[1]) == 0:
        return {}
    task = task_for(config)
    return task.split_metrics(task.predict(model, val_set[0], config.eval_batch_size, device, "val"), val_set[1], "val")


def _end_epoch(config: Config, model: EnsembleModel, optimizer, scheduler, state: dict[str, Any],
               val: dict[str, float]) -> None:
    """Record the epoch, step the schedule, update early stopping (on ``val/ensemble/nll``)."""
    running = state["running"]
    entry = {"epoch": state["epoch"] + 1, "lr": optimizer.param_groups[0]["lr"],
             "train/loss": running["loss"] / running["rows"],
             f"train/{task_for(config).score}": running["correct"] / running["rows"],
             **val}
    state["history"].append(entry)
    scheduler.step()
    state["epoch"] += 1
    state["batch"] = 0
    state["running"] = _fresh_state()["running"]
    if not val:
        return
    if val["val/ensemble/nll"] < state["best_nll"]:
        state["best_nll"], state["best_epoch"], state["bad_epochs"] = val["val/ensemble/nll"], state["epoch"], 0
        state["best_model"] = copy.deepcopy(model.state_dict())
    else:
        state["bad_epochs"] += 1
    state["stopped_early"] = 0 < config.patience <= state["bad_epochs"]


def _restore(model, optimizer, scheduler, checkpoint: dict[str, Any]) -> dict[str, Any]:
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    torch.set_rng_state(checkpoint["torch_rng"])
    fresh = _fresh_state()  # a checkpoint written before "seconds" was recorded has none: its time is unknown (0)
    return {key: checkpoint[key] if key != "seconds" else checkpoint.get(key, fresh[key]) for key in fresh}


def train(config: Config, run_dir: str | Path, resume: bool = False) -> dict[str, float]:
    """Train ``config`` into ``run_dir`` and return the final flat test metrics (see the module docstring).

    ``resume=True`` continues from ``checkpoint.pt`` (a finished run returns its stored metrics) and needs
    ``run_dir/config.json`` (else ``BadInput``, nothing written); ``resume=False`` starts from scratch, removing an
    earlier run's results in ``run_dir``.
    """
    run_dir = Path(run_dir)
    if resume:
        require_resumable_folder(run_dir)
        _check_resumable(config, run_dir)
        if folder.is_trained(run_dir):
            return folder.read_json(run_dir, folder.METRICS)["final"]
    device = apply_execution_settings(config)
    torch.use_deterministic_algorithms(True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(config.seed)
    model = build_model(config.model_spec()).to(device)  # a rejected model or missing data writes nothing
    optimizer, train_set, val_set = build_optimizer(config, model), *load_training_data(config)
    scheduler = build_scheduler(config, optimizer)
    state = _fresh_state()
    if not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        _start_fresh(config, run_dir)
    logger = _logger(run_dir)
    try:
        if resume and (run_dir / folder.CHECKPOINT).is_file():
            state = _restore(model, optimizer, scheduler, folder.load_checkpoint(run_dir))
            logger.info("resumed at epoch %d, batch %d", state["epoch"] + 1, state["batch"])
        return _run(config, run_dir, model, optimizer, scheduler, state, TensorDataset(*train_set), val_set, device,
                    logger)
    except TrainingDiverged as error:
        logger.error("%s", error)
        raise
    finally:
        _close_logger(logger)


def _run(config: Config, run_dir: Path, model, optimizer, scheduler, state: dict[str, Any], train_set: TensorDataset,
         val_set, device: torch.device, logger: logging.Logger) -> dict[str, float]:
    started, earlier = time.perf_counter(), state["seconds"]

    def elapsed() -> float:  # this invocation's training time added to the checkpoint's
        return earlier + time.perf_counter() - started

    def save() -> None:
        state["seconds"] = elapsed()
        _save(run_dir, model, optimizer, scheduler, state)

    probe = TrajectoryProbe(config) if config.trajectory else None
    with _signal_flag() as stop:
        epochs = tqdm(total=config.epochs, initial=state["epoch"], desc="epochs", unit="epoch",
                      disable=not sys.stderr.isatty())
        try:
            while state["epoch"] < config.epochs and not state["stopped_early"]:
                _train_epoch(config, model, optimizer, train_set, state, device, stop, save)
                _end_epoch(config, model, optimizer, scheduler, state, _validate(config, model, val_set, device))
                if probe is not None:
                    state["history"][-1].update(probe.measure(model, device))
                save()
                _write_metrics(run_dir, config, state, None)
                entry = state["history"][-1]
                logger.info("epoch %d: train loss %.4f, val nll %s", entry["epoch"], entry["train/loss"],
                            f"{entry['val/ensemble/nll']:.4f}" if "val/ensemble/nll" in entry else "-")
                epochs.update(1)
        except _Stopped as stopped:
            logger.info("stopped by signal %d at epoch %d, batch %d; checkpoint saved, continue with --resume",
                        stopped.signum, state["epoch"] + 1, state["batch"])
            print(f"stopped by signal {stopped.signum}: checkpoint saved in {run_dir}; continue with --resume",
                  file=sys.stderr)
            raise SystemExit(128 + stopped.signum) from None
        finally:
            epochs.close()
    if state["stopped_early"]:
        logger.info("early stop after epoch %d; best epoch %d", state["epoch"], state["best_epoch"])
    if state["best_model"] is not None and config.patience > 0:
        model.load_state_dict(state["best_model"])
    save()
    task = task_for(config)
    # the final model's predictions on every evaluation set, stored once for evaluate and the analysis; MC Dropout's
    # test-time masks come from a generator seeded with the config's seed, so a resume re-scores identically
    test = task.evaluation_sets(config)["test"]
    final = task.split_metrics(folder.predictions(run_dir, config, model, device)["test"], test.targets, "test")
    state["seconds"] = elapsed()  # with the final predictions, stored for evaluate
    _write_metrics(run_dir, config, state, final)
    folder.mark_complete(run_dir)
    logger.info("complete: %s", ", ".join(f"test/ensemble/{name} {final[f'test/ensemble/{name}']:.4f}"
                                          for name in task.headline))
    return final
