"""Training runs: run-directory contents, same seed ⇒ same numbers, kill-and-resume ⇒ identical results, NaN loss,
early stopping, optimizer groups and schedules, bad inputs. Data: the tiny IDX MNIST / Fashion-MNIST of conftest."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from empirics import train as train_module
from empirics.cli import main
from empirics.config import Config
from empirics.evaluate import load_checkpoint
from empirics.models import build_model
from empirics.train import build_optimizer, build_scheduler, train
from theory.cli_support import BadInput, run_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def restore_threads():
    """Runs set torch's thread count (config ``threads``); put it back for the other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def tiny_config(root: Path, **overrides) -> Config:
    """58 training images in 4 batches of 16, 6 validation images, 2 members, one corruption family."""
    fields = dict(dataset="mnist", arch="mlp", widths=[16], method="batchensemble", members=2, epochs=4,
                  batch_size=16, eval_batch_size=64, data_root=str(root), shift_families=["rotate"], threads=1)
    return Config.from_dict({**fields, **overrides})


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def assert_same_run(first: Path, second: Path) -> None:
    """Identical per-epoch numbers, final metrics and final weights (exact equality, no tolerance)."""
    a, b = read_json(first / "metrics.json"), read_json(second / "metrics.json")
    assert a["epochs"] == b["epochs"] and a["final"] == b["final"] and a["best_epoch"] == b["best_epoch"]
    model_a, model_b = load_checkpoint(first / "checkpoint.pt")["model"], load_checkpoint(second / "checkpoint.pt")["model"]
    assert all(torch.equal(model_a[name], model_b[name]) for name in model_a)


@pytest.mark.parametrize("method", ["single", "batchensemble", "deep-ensemble", "mc-dropout"])
def test_run_directory_holds_config_metrics_checkpoint_log_and_completion_marker(method, tiny_mnist_root, tmp_path):
    """config.json (config, seed, versions, git commit), metrics.json (per-epoch train/val, final test per member and
    ensemble under flat keys), checkpoint.pt, train.log, and COMPLETE."""
    run = tmp_path / "run"
    final = train(tiny_config(tiny_mnist_root, method=method, epochs=2, dropout=0.1), run)
    stored = read_json(run / "config.json")
    assert stored["config"]["method"] == method and stored["seed"] == 0
    assert {"versions", "git_commit", "command"} <= stored.keys()
    metrics = read_json(run / "metrics.json")
    assert [entry["epoch"] for entry in metrics["epochs"]] == [1, 2]
    assert {"train/loss", "train/accuracy", "val/ensemble/nll", "val/member_0/accuracy", "lr"} <= metrics["epochs"][0].keys()
    assert metrics["final"] == final and "test/ensemble/accuracy" in final and "test/member_0/ece" in final
    assert (run / "COMPLETE").is_file() and load_checkpoint(run / "checkpoint.pt")["epoch"] == 2
    assert "epoch 2: train loss" in (run / "train.log").read_text()


def test_same_seed_gives_identical_numbers_and_another_seed_does_not(tiny_mnist_root, tmp_path):
    """Deterministic algorithms, seeded init, split, shuffling and dropout: bit-identical reruns; seed 1 differs."""
    config = tiny_config(tiny_mnist_root, epochs=2)
    train(config, tmp_path / "a")
    train(config, tmp_path / "b")
    assert_same_run(tmp_path / "a", tmp_path / "b")
    train(Config.from_dict({**config.to_dict(), "seed": 1}), tmp_path / "c")
    assert read_json(tmp_path / "a" / "metrics.json")["final"] != read_json(tmp_path / "c" / "metrics.json")["final"]


KILL_SCRIPT = """
import json, os, signal, sys
import empirics.train as T
from empirics.config import Config
mode, payload, run_dir = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
if mode == "kill-after-epoch-2":
    write = T._write_metrics
    def write_then_kill(run_dir, config, state, final):
        write(run_dir, config, state, final)
        if state["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    T._write_metrics = write_then_kill
else:  # SIGTERM during the 6th step (epoch 2, batch 2)
    loss, calls = T.ensemble_loss, []
    def loss_then_term(logits, labels):
        calls.append(1)
        if len(calls) == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss(logits, labels)
    T.ensemble_loss = loss_then_term
T.train(Config.from_dict(payload), run_dir)
"""


def _run_script(mode: str, config: Config, run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILL_SCRIPT, mode, json.dumps(config.to_dict()), str(run_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_run_killed_with_sigkill_after_epoch_2_of_4_resumes_to_identical_results(tiny_mnist_root, tmp_path):
    """SIGKILL right after epoch 2's checkpoint; ``train(resume=True)`` ends with the uninterrupted run's numbers."""
    config = tiny_config(tiny_mnist_root, method="mc-dropout", dropout=0.2, mc_samples=2)  # dropout: RNG state matters
    killed = _run_script("kill-after-epoch-2", config, tmp_path / "killed")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["epoch"] == 2
    assert not (tmp_path / "killed" / "COMPLETE").exists()
    train(config, tmp_path / "killed", resume=True)
    train(config, tmp_path / "whole")
    assert_same_run(tmp_path / "killed", tmp_path / "whole")


@pytest.mark.slow
def test_sigterm_mid_epoch_checkpoints_at_the_batch_and_resumes_to_identical_results(tiny_mnist_root, tmp_path):
    """SIGTERM during epoch 2 batch 2: checkpoint at that batch boundary, exit 128 + 15; resume = uninterrupted."""
    config = tiny_config(tiny_mnist_root, method="batchensemble", dropout=0.2)
    stopped = _run_script("sigterm", config, tmp_path / "stopped")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert "continue with --resume" in stopped.stderr
    checkpoint = load_checkpoint(tmp_path / "stopped" / "checkpoint.pt")
    assert (checkpoint["epoch"], checkpoint["batch"]) == (1, 2)
    train(config, tmp_path / "stopped", resume=True)
    train(config, tmp_path / "whole")
    assert_same_run(tmp_path / "stopped", tmp_path / "whole")


def test_nan_loss_stops_with_a_clear_message_keeps_last_good_checkpoint_and_exits_2(tiny_mnist_root, tmp_path,
                                                                                    monkeypatch, capsys):
    """A NaN loss at epoch 2 batch 2: one-line error, exit 2, the epoch-1 checkpoint is kept, no COMPLETE."""
    loss, calls = train_module.ensemble_loss, []

    def nan_at_sixth_step(logits, labels):
        calls.append(1)
        value = loss(logits, labels)
        return value * float("nan") if len(calls) == 6 else value

    monkeypatch.setattr(train_module, "ensemble_loss", nan_at_sixth_step)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["train", "--run-dir", str(run), "--set", f"data_root={tiny_mnist_root}", "arch=mlp",
                       "widths=16", "members=2", "batch_size=16", "epochs=4", "threads=1"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("error: loss is nan at epoch 2, batch 2") and "last good checkpoint (end of epoch 1)" in message
    assert "\n" not in message
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1 and not (run / "COMPLETE").exists()
    assert "loss is nan" in (run / "train.log").read_text()


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch(tiny_mnist_root, tmp_path, monkeypatch):
    """Validation NLL 1.0, 0.5, 0.7 with patience 1: stop after epoch 3, best epoch 2, final model = epoch 2's."""
    nlls = iter([1.0, 0.5, 0.7, 0.6])
    monkeypatch.setattr(train_module, "_validate", lambda *args: {"val/ensemble/nll": next(nlls)})
    run = tmp_path / "run"
    train(tiny_config(tiny_mnist_root, patience=1, epochs=4), run)
    metrics, checkpoint = read_json(run / "metrics.json"), load_checkpoint(run / "checkpoint.pt")
    assert (len(metrics["epochs"]), metrics["best_epoch"], metrics["stopped_early"]) == (3, 2, True)
    assert all(torch.equal(checkpoint["model"][k], checkpoint["best_model"][k]) for k in checkpoint["model"])


def test_resume_of_a_finished_run_returns_its_metrics_and_a_changed_config_is_refused(tiny_mnist_root, tmp_path):
    config = tiny_config(tiny_mnist_root, epochs=1)
    final = train(config, tmp_path / "run")
    assert train(config, tmp_path / "run", resume=True) == final
    with pytest.raises(BadInput, match=r"config differs from its config.json in lr \(0.001 → 0.5\)"):
        train(Config.from_dict({**config.to_dict(), "lr": 0.5}), tmp_path / "run", resume=True)


def test_mc_dropout_final_test_pass_survives_a_resume_and_equals_evaluate(tiny_mnist_root, tmp_path):
    """Defect 5: the final test pass draws MC Dropout's masks from a generator seeded with the config's seed, so
    (a) resuming between the final checkpoint and COMPLETE re-scores with the same draws (it used to draw from the
    RNG state saved after the test pass), and (b) train's test metrics equal evaluate's for the same checkpoint."""
    config = tiny_config(tiny_mnist_root, method="mc-dropout", dropout=0.5, mc_samples=3, epochs=1)
    run = tmp_path / "run"
    final = train(config, run)
    (run / "COMPLETE").unlink()  # killed after the final save, before the completion marker
    assert train(config, run, resume=True) == final
    evaluated = train_module.evaluate_run(run)
    assert {key: value for key, value in evaluated.items() if key.startswith("test/")} == final


def test_truncated_checkpoint_is_a_clear_error_on_resume(tiny_mnist_root, tmp_path):
    config = tiny_config(tiny_mnist_root, epochs=1)
    train(config, tmp_path / "run")
    (tmp_path / "run" / "COMPLETE").unlink()
    data = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match="checkpoint.pt is not a readable torch file"):
        train(config, tmp_path / "run", resume=True)


def test_missing_data_names_the_root_and_how_to_fix_it(tmp_path):
    with pytest.raises(BadInput, match="EGEO_DATA_ROOT|--download"):
        train(tiny_config(tmp_path / "empty"), tmp_path / "run")


def test_optimizer_groups_apply_fast_lr_multiplier_and_the_fast_weight_decay_switch():
    """Fast factors: lr · fast_lr_mult and weight decay only when fast_weight_decay; slow weights keep both."""
    config = Config.from_dict({"widths": [8], "lr": 0.1, "fast_lr_mult": 0.5, "fast_weight_decay": False,
                               "weight_decay": 1e-3, "optimizer": "sgd", "nesterov": True})
    torch.manual_seed(0)
    model = build_model(config.model_spec())
    slow, fast = build_optimizer(config, model).param_groups
    fast_ids = {id(p) for n, p in model.named_parameters() if "fast_factors" in n}
    assert {id(p) for p in fast["params"]} == fast_ids and len(fast_ids) == 4
    assert (slow["lr"], slow["weight_decay"], fast["lr"], fast["weight_decay"]) == (0.1, 1e-3, 0.05, 0.0)
    assert slow["nesterov"] and slow["momentum"] == 0.9


@pytest.mark.parametrize("schedule,expected", [
    ("multistep", [1.0, 1.0, 0.1, 0.1, 0.01]),  # × gamma = 0.1 at epochs 2 and 4
    ("cosine", [1.0, 0.9045084971874737, 0.6545084971874737, 0.3454915028125263, 0.09549150281252627]),  # (1+cos(πe/5))/2
    ("none", [1.0] * 5),
])
def test_schedules_follow_their_formula_per_epoch(schedule, expected):
    config = Config.from_dict({"widths": [8], "lr": 1.0, "schedule": schedule, "milestones": [2, 4], "epochs": 5})
    optimizer = build_optimizer(config, build_model(config.model_spec()))
    scheduler = build_scheduler(config, optimizer)
    lrs = []
    for _ in range(5):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx(expected, rel=1e-12)

