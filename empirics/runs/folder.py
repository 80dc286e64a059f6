"""A run folder: the one place that knows its file names, reads and writes them, and predicts the run's evaluation
sets (once per trained model).

A run folder holds, written by the stage in brackets (every file atomically):

* ``config.json`` — the full config with provenance, written first (``train``);
* ``checkpoint.pt`` — model, optimiser, scheduler, RNG and early-stopping state (``train``, every epoch);
* ``metrics.json`` — per-epoch values and the final test metrics (``train``); ``train.log`` — one line per event;
* ``predictions.npz`` — every member's outputs on each evaluation set of the run's task (``Task.evaluation_sets``),
  keyed by the checkpoint's SHA-256 and the config, so a retrained or resumed model is predicted afresh; not
  committed (it is derived from the checkpoint);
* ``COMPLETE`` — written last by ``train``: the checkpoint holds the final model;
* ``eval.json`` (``evaluate``), ``diversity.json`` and ``member_sketch.npz`` (``empirics.analysis.diversity``).

A run is *trained* with ``COMPLETE`` and *finished* once also evaluated and analysed.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from empirics.models.ensembles import EnsembleModel, build_model
from empirics.runs.config import Config, resolve_device, result_keys
from empirics.runs.tasks import task_for
from infra.errors import BadInput
from infra.files import atomic_write_bytes, atomic_write_json, json_text, load_torch_file
from infra.provenance import provenance

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
LOG = "train.log"
PREDICTIONS = "predictions.npz"
COMPLETE = "COMPLETE"
EVAL = "eval.json"
DIVERSITY = "diversity.json"
SKETCH = "member_sketch.npz"
# What a fresh start removes: the completion marker first, so an interrupted clean-up never leaves a run that looks
# trained; then everything computed from an earlier model.
RESULTS = (COMPLETE, EVAL, DIVERSITY, SKETCH, PREDICTIONS, METRICS, CHECKPOINT)
ANALYSES = (DIVERSITY, SKETCH)


def is_started(run_dir: Path) -> bool:
    return (Path(run_dir) / CONFIG).is_file()


def is_trained(run_dir: Path) -> bool:
    return (Path(run_dir) / COMPLETE).is_file()


def is_finished(run_dir: Path) -> bool:
    """Finished = trained (``COMPLETE``), evaluated (``eval.json``) and analysed (``diversity.json``)."""
    return all((Path(run_dir) / name).is_file() for name in (COMPLETE, EVAL, DIVERSITY))


def remove(run_dir: Path, names: tuple[str, ...]) -> None:
    for name in names:
        (Path(run_dir) / name).unlink(missing_ok=True)


def read_json(run_dir: Path, name: str) -> dict[str, Any]:
    """A JSON file of the run; a missing or damaged one is a one-line ``BadInput``."""
    path = Path(run_dir) / name
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise BadInput(f"{path} does not exist: expected a run directory written by `python -m empirics train`") \
            from None
    except json.JSONDecodeError as error:
        raise BadInput(f"{path} is not valid JSON ({error})") from None


def write_json(run_dir: Path, name: str, config: Config, payload: dict[str, Any]) -> dict[str, Any]:
    """Write ``{provenance, **payload}`` into the run's file ``name`` atomically, and return it."""
    record = {"provenance": provenance(config.to_dict(), config.seed), **payload}
    atomic_write_json(Path(run_dir) / name, record)
    return record


def write_config(run_dir: Path, config: Config) -> None:
    atomic_write_json(Path(run_dir) / CONFIG, provenance(config.to_dict(), config.seed))


def trained_at(run_dir: Path) -> str:
    """The git commit of the code that trained the run: ``metrics.json``'s provenance (rewritten every epoch, so the
    invocation that finished training), else ``config.json``'s (written when training started); ``"unknown"`` when
    neither records one."""
    for name, block in ((METRICS, lambda record: record.get("provenance", {})), (CONFIG, lambda record: record)):
        if (Path(run_dir) / name).is_file():
            commit = block(read_json(run_dir, name)).get("git_commit")
            if commit:
                return commit
    return "unknown"


def read_config(run_dir: Path) -> Config:
    return Config.from_dict(read_json(run_dir, CONFIG)["config"])


def mark_complete(run_dir: Path) -> None:
    atomic_write_bytes(Path(run_dir) / COMPLETE, b"")


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(run_dir) / CHECKPOINT, buffer.getvalue())


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The run's checkpoint; a missing, empty, truncated or corrupted file is a one-line ``BadInput``."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise BadInput(f"{path} does not exist: the run has not finished an epoch yet")
    return load_torch_file(path, str(path), "delete it to restart the run")


def load_run(run_dir: str | Path, device: torch.device | None = None) -> tuple[Config, EnsembleModel, dict]:
    """The run's config, its model with the checkpoint's weights (in eval mode) and the checkpoint itself."""
    config = read_config(run_dir)
    state = load_checkpoint(run_dir)
    model = build_model(config.model_spec())
    model.load_state_dict(state["model"])
    return config, model.to(device or resolve_device(config.device)).eval(), state


def _checkpoint_digest(run_dir: Path) -> str:
    digest = hashlib.sha256()
    with open(Path(run_dir) / CHECKPOINT, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _predictions_key(run_dir: Path, config: Config) -> str:
    """What the stored predictions were made from: the checkpoint's bytes and every config key that can change a
    result (``result_keys``: execution keys such as threads or the data root aside)."""
    return json_text({"checkpoint_sha256": _checkpoint_digest(run_dir), "config": result_keys(config)})


def predictions(run_dir: Path, config: Config, model: EnsembleModel, device: torch.device) -> dict[str, torch.Tensor]:
    """{split: the members' outputs (k, N, ...)} on every evaluation set of the run's task, for the model in the
    run's checkpoint (``model`` must hold its weights). Predicted once: stored in ``predictions.npz`` and read back
    while the checkpoint and config are unchanged. MC Dropout's test-time masks come from a generator seeded with
    the config's seed (torch's global state is left as it was), so a stored and a fresh prediction agree."""
    path, key = Path(run_dir) / PREDICTIONS, _predictions_key(run_dir, config)
    if path.is_file():
        with np.load(path) as stored:
            if str(stored["key"]) == key:
                return {name.removeprefix("split_"): torch.from_numpy(stored[name]) for name in stored.files
                        if name.startswith("split_")}
    task = task_for(config)
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else None):
        torch.manual_seed(config.seed)
        outputs = {split: task.predict(model, chosen.inputs, config.eval_batch_size, device, split)
                   for split, chosen in task.evaluation_sets(config).items()}
    buffer = io.BytesIO()
    np.savez(buffer, key=np.array(key), **{f"split_{split}": value.numpy() for split, value in outputs.items()})
    atomic_write_bytes(path, buffer.getvalue())
    return outputs
