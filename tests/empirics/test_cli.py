"""``python -m empirics train`` / ``evaluate``: the acceptance flow on tiny data, and one-line errors with exit 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from empirics.cli import main
from infra.cli import run_cli

REPO = Path(__file__).resolve().parents[2]


def _train_args(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["train", "--run-dir", str(run_dir), "--data-root", str(root), "--set", "dataset=mnist", "arch=mlp",
            "method=batchensemble", "rank=1", "members=2", "epochs=1", "--set", "widths=16", "batch_size=16",
            "shift_families=rotate,fog", "threads=1", *extra]


def test_train_then_evaluate_writes_test_shift_and_ood_metrics(tiny_mnist_root, tmp_path, capsys):
    """The acceptance flow: train (two --set groups), then evaluate writes eval.json with test/, shift/ (pooled and
    per family) and ood/ (detection scores and member diversity on the OOD inputs) keys."""
    run = tmp_path / "run"
    assert run_cli(main, _train_args(tiny_mnist_root, run)) == 0
    assert "test/ensemble/accuracy" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["config"]["shift_families"] == ["rotate", "fog"]
    assert run_cli(main, ["evaluate", str(run)]) == 0
    metrics = json.loads((run / "eval.json").read_text())["metrics"]
    for key in ("test/ensemble/accuracy", "test/member_1/nll", "test/mutual_information", "shift/ensemble/ece",
                "shift/rotate/ensemble/accuracy", "shift/fog/disagreement", "ood/max_prob/auroc", "ood/entropy/fpr95",
                "ood/mutual_information/aupr", "ood/mutual_information", "ood/pairwise_jsd"):
        assert key in metrics, key


@pytest.mark.parametrize("argv,message", [
    (["train", "--set", "colour=red"], "unknown config key 'colour': valid keys are dataset"),
    (["train", "--set", "rank=0"], "rank=0 is out of range"),
    (["train", "--resume"], "--resume needs --run-dir"),
    (["evaluate", "/nonexistent/run"], "config.json does not exist"),
    (["fly"], "invalid choice: 'fly'"),
])
def test_bad_input_is_one_line_on_stderr_with_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, argv)
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in error and error.count("\n") == 1


def test_existing_run_directory_is_not_overwritten_without_resume(tiny_mnist_root, tmp_path, capsys):
    run = tmp_path / "run"
    run_cli(main, _train_args(tiny_mnist_root, run))
    before = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, _train_args(tiny_mnist_root, run))
    assert exit_info.value.code == 2 and "already holds a run" in capsys.readouterr().err
    assert (run / "checkpoint.pt").read_bytes() == before


def test_rank_above_every_layer_is_rejected_before_anything_is_written(tiny_mnist_root, tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(SystemExit):
        run_cli(main, _train_args(tiny_mnist_root, run, "--set", "rank=5000"))
    assert "rank=5000 is out of range for this architecture: expected an integer in 1..16" in capsys.readouterr().err
    assert not run.exists()  # defect 9: a rejected run leaves no empty run folder behind


@pytest.mark.parametrize("layout", ["missing", "no-config"])
def test_resume_of_a_missing_path_or_a_folder_without_config_exits_2_and_overwrites_nothing(layout, tmp_path,
                                                                                            capsys):
    """Defect 3: `train --resume` on a mistyped path or a folder without config.json used to start a fresh run
    (exit 0) over the old checkpoint; now it is a one-line error, exit 2, and nothing is written."""
    run = tmp_path / "run"
    if layout == "no-config":
        run.mkdir()
        (run / "checkpoint.pt").write_bytes(b"an earlier checkpoint")
    before = sorted(path.name for path in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["train", "--run-dir", str(run), "--resume"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1 and f"cannot resume {run}" in error
    assert ("no such folder" if layout == "missing" else "holds no config.json") in error
    assert sorted(path.name for path in tmp_path.rglob("*")) == before
    if layout == "no-config":
        assert (run / "checkpoint.pt").read_bytes() == b"an earlier checkpoint"


def test_documented_resume_command_reads_the_runs_own_config(tiny_mnist_root, tmp_path, capsys):
    """Defect 6: `train --run-dir RUN --resume` on a run started with --set continues it with its config.json (it
    used to compare the defaults with config.json and exit 2); an execution key may change, a conflicting --set is
    still refused."""
    run = tmp_path / "run"
    assert run_cli(main, _train_args(tiny_mnist_root, run, "--set", "n_train=40")) == 0
    trained = capsys.readouterr().out
    assert run_cli(main, ["train", "--run-dir", str(run), "--resume", "--set", "threads=2"]) == 0
    assert capsys.readouterr().out == trained  # the finished run's stored test metrics, same run directory
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["train", "--run-dir", str(run), "--resume", "--set", "lr=0.5"])
    assert exit_info.value.code == 2 and "config differs from its config.json in lr (0.001 → 0.5)" in \
        capsys.readouterr().err


@pytest.mark.slow
def test_module_entry_point_exits_2_without_traceback():
    """``python -m empirics`` as a process: exit 2 and the one-line message, no traceback."""
    result = subprocess.run([sys.executable, "-m", "empirics", "train", "--set", "members=0"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: members=0 is out of range: expected a value in [1, ∞)"


@pytest.mark.parametrize("command", ["evaluate", "resume"])
def test_empty_checkpoint_is_one_line_exit_2(command, tiny_mnist_root, tmp_path, capsys):
    """Defect 8: a 0-byte checkpoint.pt gave an IndexError traceback (the empty EOFError message was indexed) in
    `evaluate` and `train --resume`; now one line naming the file, exit 2."""
    run = tmp_path / "run"
    run_cli(main, _train_args(tiny_mnist_root, run))
    (run / "COMPLETE").unlink()
    (run / "checkpoint.pt").write_bytes(b"")
    capsys.readouterr()
    argv = ["evaluate", str(run)] if command == "evaluate" else ["train", "--run-dir", str(run), "--resume"]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "checkpoint.pt is not a readable torch file (empty, truncated or corrupted: EOFError)" in err
