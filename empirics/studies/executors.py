"""Studies on a cluster: every (run, seed) of a study as its own submitit job (``study --executor local|slurm``).

``--executor slurm`` submits one SLURM job per run through submitit (``submitit.AutoExecutor(cluster="slurm")``),
with a GPU per job when the run's config asks for CUDA (``device = "cuda"`` or ``"auto"``), ``threads`` CPUs (at
least 1), the partition and time limit given on the command line, and at most ``--jobs`` runs at once when ``--jobs``
is above 1 (SLURM's array throttle; otherwise the queue decides). ``--executor local`` runs the same jobs as local processes
(``submitit.LocalExecutor``: real processes, real pickling), at most ``--jobs`` at a time: what CI tests.

Each job calls the study's own ``execute_run`` on the study's run folder, so jobs write the same resumable folders as
``--jobs``: a job that SLURM preempts or times out is requeued by submitit with ``resume=True`` (``RunJob.checkpoint``)
and continues from its last checkpoint, and ``study ... --executor slurm --resume`` after the whole study was stopped
skips finished runs and resumes the others. A failed job is reported per run (its name and error) and does not stop
the others; the study's summary is built once every job has ended, and lists the failed runs as missing.
Submitit's job files and logs go to ``<out>/submitit/``.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import submitit
from tqdm import tqdm

from infra.errors import BadInput, require_int_in_range

EXECUTORS = ("local", "slurm")
SUBMITIT_DIR = "submitit"
DEFAULT_TIMEOUT_MIN = 24 * 60  # submitit's local default is 2 minutes: far too short for a training run
CUDA_DEVICES = ("cuda", "auto")
SLURM_TOOLS = ("sbatch", "srun")  # submitit submits with sbatch and starts each task with srun


class RunJob(submitit.helpers.Checkpointable):
    """One study run as a submitit job: ``run(spec, run_dir, resume, preset, rerun, tiny)`` (the study's
    ``_timed_run``). On preemption or timeout submitit calls ``checkpoint`` and requeues the job with ``resume=True``
    and ``rerun=False``, so it continues from the run's last checkpoint instead of starting over."""

    def __init__(self, run: Callable[..., tuple[str, float]]) -> None:
        self.run = run

    def __call__(self, spec, run_dir: Path, resume: bool, preset, rerun: bool, tiny: bool) -> tuple[str, float]:
        return self.run(spec, run_dir, resume, preset, rerun, tiny)

    def checkpoint(self, spec, run_dir: Path, resume: bool, preset, rerun: bool,
                   tiny: bool) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self, spec, run_dir, True, preset, False, tiny)


def check_executor(kind: str) -> None:
    """``kind`` is one of ``EXECUTORS``; ``slurm`` needs SLURM's ``sbatch`` and ``srun`` on this machine."""
    if kind not in EXECUTORS:
        raise BadInput(f"--executor {kind!r} is unknown: expected one of {', '.join(EXECUTORS)}")
    missing = [tool for tool in SLURM_TOOLS if shutil.which(tool) is None] if kind == "slurm" else []
    if missing:
        raise BadInput(f"--executor slurm needs SLURM, but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                       "not on this machine's PATH: run the study on a SLURM login node, or here with --executor local "
                       "or --jobs N")


def make_executor(kind: str, folder: Path, parallel: int, gpu: bool, cpus: int, timeout_min: int,
                  partition: str | None = None) -> submitit.Executor:
    """A submitit executor writing its files to ``folder``, with the resources of one run."""
    check_executor(kind)
    if kind == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=timeout_min, gpus_per_node=1 if gpu else 0)
        return executor
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    options: dict[str, Any] = {"timeout_min": timeout_min, "cpus_per_task": cpus, "gpus_per_node": 1 if gpu else 0,
                               "slurm_array_parallelism": parallel, "name": "egeo-study"}
    if partition:
        options["slurm_partition"] = partition
    executor.update_parameters(**options)
    return executor


def submit_runs(jobs: Sequence[tuple], run: Callable[..., tuple[str, float]], kind: str, out: Path, label: str,
                parallel: int = 1, gpu: bool = False, cpus: int = 1, timeout_min: int = DEFAULT_TIMEOUT_MIN,
                partition: str | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """Run every job ``(spec, run_dir, resume, preset, rerun, tiny)`` as its own submitit job; wait for all.

    Returns ``({name/seedS: wall seconds}, {name/seedS: error})``. The local executor keeps at most ``parallel`` jobs
    running; SLURM gets them all at once (``slurm_array_parallelism`` throttles them there)."""
    require_int_in_range("--jobs", parallel, 1)
    if kind == "slurm" and parallel == 1:
        parallel = max(1, len(jobs))  # --jobs left at 1: no cap on the cluster (SLURM's queue decides)
    executor = make_executor(kind, out / SUBMITIT_DIR, parallel, gpu, max(1, cpus), timeout_min, partition)
    task = RunJob(run)
    timings: dict[str, float] = {}
    failures: dict[str, str] = {}
    progress = tqdm(total=len(jobs), desc=f"{label} ({kind})", unit="run", disable=not sys.stderr.isatty())
    with progress:
        for batch in _waves(jobs, parallel if kind == "local" else len(jobs)):
            for job, handle in _submit(executor, task, batch, array=kind == "slurm"):
                key = f"{job[0].name}/seed{job[0].seed}"
                try:
                    name, seconds = handle.result()
                    timings[name] = seconds
                except Exception as error:  # submitit wraps the job's exception: report it per run, go on
                    failures[key] = f"{_last_line(error)} (job {handle.job_id}, logs in {out / SUBMITIT_DIR})"
                    print(f"run {key} failed: {failures[key]}", file=sys.stderr)
                progress.update(1)
    return timings, failures


def _waves(jobs: Sequence[tuple], size: int) -> list[Sequence[tuple]]:
    return [jobs[start:start + size] for start in range(0, len(jobs), max(1, size))]


def _submit(executor: submitit.Executor, task: RunJob, batch: Sequence[tuple], array: bool) -> list[tuple]:
    """Submit ``batch``: as one SLURM job array (one task per run) when ``array``, else job by job."""
    if not array:
        return [(job, executor.submit(task, *job)) for job in batch]
    with executor.batch():
        handles = [executor.submit(task, *job) for job in batch]
    return list(zip(batch, handles))


TRACE_RULE = "-" * 22  # submitit's FailedJobError puts the job's traceback between two such rules


def _last_line(error: BaseException) -> str:
    """The job's own error: the last line of the traceback submitit quotes, else of the message."""
    text = str(error)
    parts = text.split(TRACE_RULE)
    lines = [line.strip() for line in (parts[1] if len(parts) >= 3 else text).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def wants_gpu(devices: Sequence[str]) -> bool:
    """A GPU per job when any run's ``device`` is ``cuda`` or ``auto``."""
    return any(device in CUDA_DEVICES for device in devices)
