"""The run folder: each evaluation set is predicted once per trained model (training, evaluation and the analysis
share the stored predictions), a changed model or config is predicted afresh, and a fresh start removes every result
of the earlier model."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from empirics.analysis.diversity import analyse_run
from empirics.runs import folder, tasks
from empirics.runs.config import Config
from empirics.runs.evaluate import evaluate_run
from empirics.runs.train import train


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_trained_at_is_the_commit_of_metrics_json_else_of_config_json_else_unknown(tmp_path):
    """metrics.json is rewritten by every invocation that trains, so its commit wins over config.json's (written when
    training started); a run with neither recorded is "unknown"."""
    import json

    assert folder.trained_at(tmp_path) == "unknown"
    (tmp_path / folder.CONFIG).write_text(json.dumps({"git_commit": "started", "config": {}}))
    assert folder.trained_at(tmp_path) == "started"
    (tmp_path / folder.METRICS).write_text(json.dumps({"provenance": {"git_commit": "finished"}, "epochs": []}))
    assert folder.trained_at(tmp_path) == "finished"


def tiny_config(root: Path, **overrides) -> Config:
    fields = dict(dataset="mnist", arch="mlp", widths=[8], method="mc-dropout", dropout=0.2, mc_samples=3, epochs=1,
                  batch_size=16, eval_batch_size=16, data_root=str(root), shift_families=["rotate"], threads=1)
    return Config.from_dict({**fields, **overrides})


@pytest.fixture
def counted_predictions(monkeypatch):
    """Every call of the task's predict, by split name (its progress label)."""
    calls: list[str] = []
    original = tasks.Classification.predict

    def counting(self, model, inputs, batch_size, device, desc):
        calls.append(desc)
        return original(self, model, inputs, batch_size, device, desc)

    monkeypatch.setattr(tasks.Classification, "predict", counting)
    return calls


def test_each_evaluation_set_is_predicted_once_across_train_evaluate_and_analysis(tiny_mnist_root, tmp_path,
                                                                                   counted_predictions):
    """train → evaluate → analyse: test, shift and OOD predicted exactly once each (MC Dropout, whose stochastic
    passes would differ if a stage predicted again); the final test metrics of training equal evaluate's."""
    run = tmp_path / "run"
    final = train(tiny_config(tiny_mnist_root), run)
    after_training = [call for call in counted_predictions if call != "val"]
    evaluated = evaluate_run(run)
    analyse_run(run, samples=8)
    assert after_training == ["test", "shift", "ood"]
    assert [call for call in counted_predictions if call != "val"] == after_training
    assert {key: evaluated[key] for key in final} == final


def test_stored_predictions_are_reused_only_for_the_same_checkpoint_and_config(tiny_mnist_root, tmp_path,
                                                                               counted_predictions):
    """A changed checkpoint (another model) or a changed result key of the config is predicted afresh; an execution
    key (``eval_batch_size``) is not a reason to predict again."""
    run = tmp_path / "run"
    train(tiny_config(tiny_mnist_root), run)
    config, model, state = folder.load_run(run)
    stored = folder.predictions(run, config, model, torch.device("cpu"))
    counted_predictions.clear()
    bigger_batches = Config.from_dict({**config.to_dict(), "eval_batch_size": 32})
    again = folder.predictions(run, bigger_batches, model, torch.device("cpu"))
    assert counted_predictions == [] and all(torch.equal(stored[k], again[k]) for k in stored)
    other_seed_masks = Config.from_dict({**config.to_dict(), "seed": 1})
    folder.predictions(run, other_seed_masks, model, torch.device("cpu"))
    assert counted_predictions == ["test", "shift", "ood"]
    counted_predictions.clear()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    folder.save_checkpoint(run, {**state, "model": model.state_dict()})
    fresh = folder.predictions(run, config, model, torch.device("cpu"))
    assert counted_predictions == ["test", "shift", "ood"]
    assert not torch.equal(fresh["test"], stored["test"]), "a changed model must give other predictions"


def test_fresh_start_removes_every_result_of_the_earlier_model(tiny_mnist_root, tmp_path):
    """Training afresh in a used folder leaves none of the earlier model's files behind before it writes its own."""
    run = tmp_path / "run"
    train(tiny_config(tiny_mnist_root), run)
    evaluate_run(run)
    analyse_run(run, samples=8)
    assert all((run / name).is_file() for name in folder.RESULTS)
    seen: list[set[str]] = []
    original = folder.write_config

    def spy(run_dir, config):
        seen.append({path.name for path in Path(run_dir).iterdir()})
        original(run_dir, config)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(folder, "write_config", spy)
        train(tiny_config(tiny_mnist_root, seed=1), run)
    assert not seen[0] & set(folder.RESULTS), seen[0]


def test_a_missing_or_damaged_run_file_is_a_one_line_error(tmp_path):
    from infra.errors import BadInput

    with pytest.raises(BadInput, match="does not exist"):
        folder.read_config(tmp_path)
    (tmp_path / folder.CONFIG).write_text("{not json")
    with pytest.raises(BadInput, match="is not valid JSON"):
        folder.read_config(tmp_path)
    with pytest.raises(BadInput, match="has not finished an epoch"):
        folder.load_checkpoint(tmp_path)
