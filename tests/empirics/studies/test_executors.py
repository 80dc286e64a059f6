"""empirics.studies.executors: studies through submitit — real local processes give the numbers of --jobs 1, a failing
run is reported by name while the others finish, SLURM's absence is a one-line error, preemption requeues with
resume."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from empirics.cli import main
from empirics.studies import executors
from empirics.studies import runner as study
from infra.cli import run_cli
from infra.errors import BadInput

from two_run_study import DATA_ROOT, ROOT
from two_run_study import two_run_preset as preset_text

TWO_RUN_PRESET = preset_text(epochs=1, n_train=64, n_eval=64)


@pytest.fixture
def two_run_preset(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "two-runs.toml"
    path.write_text(TWO_RUN_PRESET)
    monkeypatch.setenv("EGEO_DATA_ROOT", os.environ.get("EGEO_DATA_ROOT", str(DATA_ROOT)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return path


def _run_results(out: Path, run: str) -> tuple[dict, dict]:
    folder = out / "runs" / run / "seed0"
    evaluated = json.loads((folder / "eval.json").read_text())["metrics"]
    analysed = json.loads((folder / "diversity.json").read_text())["scalars"]
    return evaluated, analysed


@pytest.mark.slow
def test_local_executor_gives_the_numbers_of_jobs_1(two_run_preset, tmp_path):
    """--executor local (submitit.LocalExecutor: each run a separate process, its arguments pickled; two at once) writes the
    same eval.json and diversity.json numbers and the same summary statistics as --jobs 1 in this process."""
    serial = study.run_study(str(two_run_preset), tmp_path / "serial")
    submitted = study.run_study(str(two_run_preset), tmp_path / "local", workers=2, executor="local",
                                cluster={"timeout_min": 10})
    assert submitted["missing"] == [] and "failures" not in submitted
    assert sorted(submitted["timings_s"]) == ["be-r1/seed0", "single/seed0"]
    for run in ("single", "be-r1"):
        assert _run_results(tmp_path / "local", run) == _run_results(tmp_path / "serial", run)
    assert submitted["runs"] == serial["runs"]
    assert any((tmp_path / "local" / executors.SUBMITIT_DIR).glob("*_result.pkl"))  # really went through submitit


@pytest.mark.slow
def test_a_failing_run_is_reported_by_name_and_the_summary_still_built(two_run_preset, tmp_path, capsys):
    """One run whose data root is empty fails inside its job: the failure names that run and its error, the other
    run finishes, summary.json lists the failed run as missing and carries the failure."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    two_run_preset.write_text(TWO_RUN_PRESET.replace('method = "single"',
                                                     f'method = "single"\ndata_root = "{empty}"'))
    summary = study.run_study(str(two_run_preset), tmp_path / "out", workers=2, executor="local",
                              cluster={"timeout_min": 10})
    assert summary["missing"] == ["runs/single/seed0"] and list(summary["runs"]) == ["be-r1"]
    assert list(summary["failures"]) == ["single/seed0"]
    assert summary["failures"]["single/seed0"].startswith("infra.errors.BadInput: mnist train data not found")
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["failures"] == summary["failures"]
    assert "run single/seed0 failed: " in capsys.readouterr().err


def test_slurm_without_sbatch_is_a_one_line_error_exit_2(tmp_path, monkeypatch, capsys):
    """`study quick --tiny --executor slurm` where SLURM is absent (no sbatch, srun on PATH): exit 2, one line saying so,
    before anything is trained or written."""
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without sbatch
    with pytest.raises(SystemExit) as stopped:
        run_cli(main, ["study", "quick", "--tiny", "--executor", "slurm", "--out", str(tmp_path / "out")])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "--executor slurm needs SLURM, but sbatch, srun are not on this machine's PATH" in error
    assert not (tmp_path / "out").exists()


def test_unknown_executor_is_rejected():
    with pytest.raises(BadInput, match="--executor 'pbs' is unknown: expected one of local, slurm"):
        executors.check_executor("pbs")


def test_preempted_job_is_requeued_with_resume():
    """submitit calls checkpoint() on preemption/timeout: the resubmission is the same run with resume=True and
    rerun=False, so it continues from the run's last checkpoint."""
    job = executors.RunJob(print)
    delayed = job.checkpoint("spec", Path("run"), False, "preset", True, True)
    assert delayed.function is job and delayed.args == ("spec", Path("run"), True, "preset", False, True)


def test_gpu_requested_only_when_a_run_asks_for_cuda():
    assert executors.wants_gpu(["cpu", "auto"]) and executors.wants_gpu(["cuda"])
    assert not executors.wants_gpu(["cpu", "cpu"])


def test_slurm_executor_asks_one_gpu_per_run_job_with_the_given_limits(tmp_path, monkeypatch):
    """With sbatch and srun present (stand-in scripts on PATH; nothing is submitted), the SLURM executor's parameters are one
    GPU, the run's CPUs, the partition, the time limit and the array throttle given."""
    (tmp_path / "bin").mkdir()
    for tool in executors.SLURM_TOOLS:
        (tmp_path / "bin" / tool).write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / "bin" / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    executor = executors.make_executor("slurm", tmp_path / "submitit", parallel=3, gpu=True, cpus=4, timeout_min=90,
                                       partition="gpu")
    parameters = executor._executor.parameters
    assert (parameters["gpus_per_node"], parameters["cpus_per_task"], parameters["partition"],
            parameters["time"], parameters["array_parallelism"]) == (1, 4, "gpu", 90, 3)
