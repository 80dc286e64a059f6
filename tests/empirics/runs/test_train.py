"""Training runs: run-directory contents, same seed ⇒ same numbers, kill-and-resume ⇒ identical results, NaN loss,
early stopping, optimizer groups and schedules, bad inputs. Data: the tiny IDX MNIST / Fashion-MNIST of conftest."""
from __future__ import annotations

import signal

import pytest
import torch

from empirics.cli import main
from empirics.models.ensembles import build_model
from empirics.runs import train as train_module
from empirics.runs.config import Config
from empirics.runs.evaluate import evaluate_run
from empirics.runs.folder import load_checkpoint, save_checkpoint
from empirics.runs.train import build_optimizer, build_scheduler, train
from infra.cli import run_cli
from infra.errors import BadInput

from conftest import assert_same_run, read_json, run_kill_script, tiny_config


@pytest.fixture(autouse=True)
def restore_threads():
    """Runs set torch's thread count (config ``threads``); put it back for the other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


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
    assert (run / "COMPLETE").is_file() and load_checkpoint(run)["epoch"] == 2
    assert "epoch 2: train loss" in (run / "train.log").read_text()


def test_same_seed_gives_identical_numbers_and_another_seed_does_not(tiny_mnist_root, tmp_path):
    """Deterministic algorithms, seeded init, split, shuffling and dropout: bit-identical reruns; seed 1 differs."""
    config = tiny_config(tiny_mnist_root, epochs=2)
    train(config, tmp_path / "a")
    train(config, tmp_path / "b")
    assert_same_run(tmp_path / "a", tmp_path / "b")
    train(Config.from_dict({**config.to_dict(), "seed": 1}), tmp_path / "c")
    assert read_json(tmp_path / "a" / "metrics.json")["final"] != read_json(tmp_path / "c" / "metrics.json")["final"]


def test_training_seconds_are_recorded_and_summed_over_the_invocations(tiny_mnist_root, tmp_path):
    """metrics.json and the checkpoint record the wall time spent training (> 0); a resumed run adds its own time to
    the checkpoint's (1000 s stored, more after the resume); a checkpoint written before times were recorded resumes
    from 0 instead of failing."""
    config, run = tiny_config(tiny_mnist_root, epochs=1), tmp_path / "run"
    train(config, run)
    recorded = read_json(run / "metrics.json")["seconds"]
    assert 0 < load_checkpoint(run)["seconds"] <= recorded

    def resume_from(seconds: float | None) -> float:
        checkpoint = load_checkpoint(run)
        checkpoint.pop("seconds")
        save_checkpoint(run, checkpoint if seconds is None else {**checkpoint, "seconds": seconds})
        (run / "COMPLETE").unlink()
        train(config, run, resume=True)
        return read_json(run / "metrics.json")["seconds"]

    assert resume_from(1000.0) > 1000.0
    assert 0 < resume_from(None) < 1000.0


@pytest.mark.slow
def test_run_killed_with_sigkill_after_epoch_2_of_4_resumes_to_identical_results(tiny_mnist_root, tmp_path):
    """SIGKILL right after epoch 2's checkpoint; ``train(resume=True)`` ends with the uninterrupted run's numbers."""
    config = tiny_config(tiny_mnist_root, method="mc-dropout", dropout=0.2, mc_samples=2)  # dropout: RNG state matters
    killed = run_kill_script("kill-after-epoch-2", config, tmp_path / "killed")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert load_checkpoint(tmp_path / "killed")["epoch"] == 2
    assert not (tmp_path / "killed" / "COMPLETE").exists()
    train(config, tmp_path / "killed", resume=True)
    train(config, tmp_path / "whole")
    assert_same_run(tmp_path / "killed", tmp_path / "whole")


@pytest.mark.slow
def test_sigterm_mid_epoch_checkpoints_at_the_batch_and_resumes_to_identical_results(tiny_mnist_root, tmp_path):
    """SIGTERM during epoch 2 batch 2: checkpoint at that batch boundary, exit 128 + 15; resume = uninterrupted."""
    config = tiny_config(tiny_mnist_root, method="batchensemble", dropout=0.2)
    stopped = run_kill_script("sigterm", config, tmp_path / "stopped")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert "continue with --resume" in stopped.stderr
    checkpoint = load_checkpoint(tmp_path / "stopped")
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
    assert load_checkpoint(run)["epoch"] == 1 and not (run / "COMPLETE").exists()
    assert "loss is nan" in (run / "train.log").read_text()


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch(tiny_mnist_root, tmp_path, monkeypatch):
    """Validation NLL 1.0, 0.5, 0.7 with patience 1: stop after epoch 3, best epoch 2, final model = epoch 2's."""
    nlls = iter([1.0, 0.5, 0.7, 0.6])
    monkeypatch.setattr(train_module, "_validate", lambda *args: {"val/ensemble/nll": next(nlls)})
    run = tmp_path / "run"
    train(tiny_config(tiny_mnist_root, patience=1, epochs=4), run)
    metrics, checkpoint = read_json(run / "metrics.json"), load_checkpoint(run)
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
    evaluated = evaluate_run(run)
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



# ---------------------------------------------------------------- batch regime, frozen fast weights, trajectory

@pytest.mark.parametrize("method,mode", [("batchensemble", "vectorised"), ("deep-ensemble", "vectorised"),
                                         ("deep-ensemble", "sequential")])
def test_split_regime_gradient_of_member_i_comes_from_its_own_rows_only(method, mode):
    """batch_regime='split': the loss equals (1/k) Σ_i mean CE of member i on its own block of B/k rows, computed by a
    slow per-member loop (member i's logits taken from the repeat forward on block i alone), and every parameter's
    gradient matches that loop's (float64, tolerance 1e-10: only summation order differs). Changing block j's rows
    leaves member i's gradient unchanged (i != j) — member i never sees them."""
    torch.manual_seed(0)
    config = Config.from_dict({"widths": [6, 5], "method": method, "members": 3, "dropout": 0.0, "de_mode": mode,
                               "batch_regime": "split"})
    model = build_model(config.model_spec()).double().train()
    images, labels = torch.randn(12, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (12,))

    def gradients(loss):
        model.zero_grad()
        loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    logits, targets = train_module.training_logits(config, model, images, labels)
    assert logits.shape == (3, 4, 10) and targets.shape == (3, 4)
    fast_loss = train_module.ensemble_loss(logits, targets)
    fast = gradients(fast_loss)
    blocks, block_labels = images.view(3, 4, 1, 28, 28), labels.view(3, 4)
    slow_loss = sum(torch.nn.functional.cross_entropy(model.member_logits(blocks[i])[i], block_labels[i])
                    for i in range(3)) / 3
    assert abs(fast_loss.item() - slow_loss.item()) < 1e-10
    slow = gradients(slow_loss)
    assert all(torch.allclose(fast[name], slow[name], atol=1e-10, rtol=0) for name in fast)

    changed = images.clone()
    changed[8:] = torch.randn(4, 1, 28, 28, dtype=torch.float64)  # block 2 only
    other = gradients(train_module.ensemble_loss(*train_module.training_logits(config, model, changed, labels)))
    def of_member(grads, i):
        """Member i's gradients: slice i of stacked (k, ...) parameters, or the parameters of ``nets.i``."""
        if mode == "sequential" and method == "deep-ensemble":
            return [g for name, g in grads.items() if name.startswith(f"nets.{i}.")]
        return [g[i] for g in grads.values() if g.dim() and g.shape[0] == 3]

    assert of_member(fast, 0), "per-member parameters expected"
    assert all(torch.equal(x, y) for x, y in zip(of_member(fast, 0), of_member(other, 0)))
    assert any(not torch.equal(x, y) for x, y in zip(of_member(fast, 2), of_member(other, 2)))


def test_split_regime_drops_the_remainder_rows_and_is_rejected_for_a_single_model():
    """A batch of 7 rows with k = 3 trains on 2 rows per member (6 rows); fewer than k rows train nothing; a
    single model has no members to split among (a one-line BadInput naming the value)."""
    torch.manual_seed(0)
    config = Config.from_dict({"widths": [4], "members": 3, "batch_regime": "split"})
    model = build_model(config.model_spec())
    logits, targets = train_module.training_logits(config, model, torch.randn(7, 1, 28, 28), torch.arange(7))
    assert logits.shape[:2] == (3, 2) and targets.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert train_module.training_logits(config, model, torch.randn(2, 1, 28, 28), torch.arange(2)) is None
    with pytest.raises(BadInput, match="batch_regime='split'.*method=single"):
        Config.from_dict({"method": "single", "batch_regime": "split"})


def test_fast_lr_zero_freezes_the_fast_weights_and_trains_the_slow_ones(tiny_mnist_root, tmp_path):
    """fast_lr_mult = 0: every fast factor ends exactly at its init; the slow weights move."""
    config = tiny_config(tiny_mnist_root, epochs=1, fast_lr_mult=0.0)
    torch.manual_seed(config.seed)
    initial = build_model(config.model_spec()).state_dict()
    train(config, tmp_path / "run")
    final = load_checkpoint(tmp_path / "run")["model"]
    fast = [name for name in final if "fast_factors" in name]
    assert fast and all(torch.equal(final[name], initial[name]) for name in fast)
    assert not torch.equal(final["net.hidden.0.weight"], initial["net.hidden.0.weight"])


def test_normal_init_mean_sets_the_fast_weight_mean():
    """init_mean = 0 draws N(0, σ) fast factors (the seed summary's literal reading of the paper's init): over the
    3·(16 + 784) + 3·(10 + 16) entries the sample mean is within 4 standard errors (4 · 0.5 / √2478 ≈ 0.04) of 0,
    and of 1 with the default."""
    for mean in (0.0, 1.0):
        torch.manual_seed(0)
        config = Config.from_dict({"widths": [16], "members": 3, "init_mean": mean})
        model = build_model(config.model_spec())
        entries = torch.cat([p.detach().flatten() for n, p in model.named_parameters() if "fast_factors" in n])
        assert len(entries) == 2478 and abs(entries.mean().item() - mean) < 4 * 0.5 / 2478 ** 0.5


def test_trajectory_is_recorded_every_epoch_changes_no_number_and_epoch_e_is_the_e_epoch_run(tiny_mnist_root,
                                                                                          tmp_path):
    """trajectory = true adds the traj/* measures to every epoch entry, leaves every other number and the weights
    unchanged (the probe restores the RNG), and with patience 0 and a constant LR the 2-epoch run's final
    trajectory entry equals epoch 2 of the 3-epoch run (one long run gives every shorter fixed budget)."""
    common = dict(patience=0, dropout=0.1, trajectory_samples=16)
    train(tiny_config(tiny_mnist_root, epochs=3, trajectory=True, **common), tmp_path / "with")
    train(tiny_config(tiny_mnist_root, epochs=3, **common), tmp_path / "without")
    train(tiny_config(tiny_mnist_root, epochs=2, trajectory=True, **common), tmp_path / "short")
    with_, without, short = (read_json(tmp_path / name / "metrics.json")["epochs"]
                             for name in ("with", "without", "short"))
    keys = {"traj/shift/mutual_information", "traj/shift/disagreement", "traj/weights/mean_cosine",
            "traj/distance/rank1/relative_residual", "traj/shift/members_mean/accuracy",
            "traj/shift/ensemble/accuracy"}
    assert all(keys <= entry.keys() for entry in with_)
    assert [{k: v for k, v in entry.items() if not k.startswith("traj/")} for entry in with_] == without
    assert short == with_[:2]
    a = load_checkpoint(tmp_path / "with")["model"]
    b = load_checkpoint(tmp_path / "without")["model"]
    assert all(torch.equal(a[name], b[name]) for name in a)
