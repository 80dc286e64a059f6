"""Studies: a preset (``empirics/presets/<name>.toml``) names a claim, the evidence it produces and a grid of runs.

``python -m empirics study PRESET [--seeds N] [--resume | --rerun] [--jobs J] [--reuse DIR] [--out DIR] [--tiny]
[--executor local|slurm [--partition P] [--timeout-min M]] [--summarise-only]``
trains every (run, seed), evaluates it on test / shift / OOD data, measures its diversity geometry
(``empirics.analysis.diversity``), then aggregates mean ± std over seeds and the parameter ↔ function-space link into
``<out>/summary.json`` and writes the report (``empirics.studies.report``). PRESET is a name under ``empirics/presets/``
or the path of a preset ``.toml`` file.

Preset format::

    [study]   claim, evidence, seeds (count; seeds are 0..N−1), include (other presets, optional), and the
              distance-to-BE fit: distance_ranks, distance_starts, distance_max_iter (ALS starts and sweeps)
    [study.headline]   optional pre-registered headline test, written before the study runs: hypothesis (text),
              metric, a, b (run names), statistic ("ratio" = mean_a / mean_b, "difference", or "ratio_of_ratios" =
              (mean_a / mean_b) / (mean_c / mean_d) with runs c, d), expect ("above" or "below") and value:
              supported when the bootstrap CI of the statistic lies entirely on that side of value
              (``empirics.analysis.effects``); metric_a..metric_d (optional) take a side's value from another metric,
              e.g. one run's trajectory at two epochs (``traj/shift/mutual_information@30`` vs ``@1``; sides of the same
              run are paired by seed)
    [[study.contrasts]]  further contrasts in the same format, each with a name (reported, not pre-registered tests)
    [base]    Config fields shared by every run (``empirics.runs.config``)
    [runs.NAME]  the Config fields of run NAME on top of [base]
    [tiny]    overrides for ``--tiny`` (CI smoke: every run on tiny training and evaluation subsets, ``n_train``
              and ``n_eval``, one seed, in seconds)
    [reference.NAME]  reference numbers (docs/paper.md §4) for run NAME, under our metric keys (data, not ours)

A preset with ``include`` takes the runs, references and distance ranks of the named presets (a run of the same name
and configuration in several of them is trained once) and applies its own [base] on top of theirs.

Parallel runs: ``--jobs J`` trains J runs side by side, each in its own process with its config's ``threads``
(keep J × threads within the machine's cores). Every run seeds itself, so the numbers do not depend on J.

Cluster: ``--executor slurm`` (or ``local``) submits one submitit job per run instead (``empirics.studies.executors``).

Reuse: ``--reuse DIR`` (repeatable) copies, instead of training, every unfinished run whose twin in another study's
folder ``DIR/runs/NAME/seedS`` is finished with the same config (execution keys aside) and the same analysis settings
(distance ranks, ALS starts and sweeps, function-space samples): same seed, same numbers, so ``rank-ablation`` after
``paper-mnist`` trains only its new runs. ``summary.json`` lists the copied runs and their sources.

Faults: finished runs are skipped (``--rerun`` trains every run afresh). A run counts as finished only when
the engine's completion marker ``COMPLETE``, ``eval.json`` and ``diversity.json`` all exist, each written atomically
and in that order, so a study killed at any point and restarted with ``--resume`` redoes no finished run and never
reads a partial one; an unfinished run continues from its last checkpoint with ``--resume`` and restarts from scratch
without it (the study says how many). A finished run is kept only when its ``config.json`` equals the config the
preset asks for (execution keys aside): otherwise, and when ``--out`` holds another preset's summary, the study
lists what differs and stops before training (exit 2), asking for ``--rerun`` or another ``--out``. SIGTERM or
SIGINT to a ``--jobs J`` study stops its workers too: each checkpoints its run and exits, then the study exits.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from empirics.analysis import diversity, effects
from empirics.runs import folder
from empirics.runs.config import Config, config_differences, describe_differences, field_names
from empirics.runs.evaluate import evaluate_run
from empirics.runs.train import train
from empirics.studies import executors, parity, report
from empirics.studies.report import SUMMARY_FILE
from infra.errors import BadInput, require_int_in_range
from infra.files import atomic_write_json
from infra.provenance import provenance
from infra.signals import on_stop_signals

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PRESET_DIR = Path(__file__).resolve().parents[1] / "presets"
RESULTS_DIR = Path("results")
TINY_SUBDIR = "tiny"
TINY_DISTANCE_MAX_ITER = 10  # --tiny: the distance fit is smoke-tested, not converged
TINY_FUNCTION_SAMPLES = 256  # --tiny: inputs per split for CKA / reliability / ROC


@dataclass(frozen=True)
class Preset:
    name: str
    claim: str
    evidence: str
    seeds: int
    runs: dict[str, dict[str, Any]]
    tiny: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, dict[str, float]] = field(default_factory=dict)
    distance_ranks: tuple[int, ...] = (1,)
    distance_starts: int = 1
    distance_max_iter: int = 100
    includes: tuple[str, ...] = ()
    headline: dict[str, Any] = field(default_factory=dict)
    contrasts: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class RunSpec:
    name: str
    seed: int
    fields: dict[str, Any]

    @property
    def relative_dir(self) -> Path:
        return Path("runs") / self.name / f"seed{self.seed}"


def available_presets() -> list[str]:
    return sorted(path.stem for path in PRESET_DIR.glob("*.toml"))


def preset_path(name: str) -> Path:
    """``presets/<name>.toml``, or ``name`` itself when it is the path of a ``.toml`` file (a user's own preset)."""
    path = Path(name) if name.endswith(".toml") else PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise BadInput(f"preset {name!r} is unknown: expected one of {', '.join(available_presets())} "
                       f"or the path of a preset .toml file")
    return path


def _read_preset_file(name: str) -> dict[str, Any]:
    path = preset_path(name)
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise BadInput(f"preset file {path} is not valid TOML: {error}") from None


PRESET_TABLES = ("study", "base", "runs", "tiny", "reference")
STUDY_KEYS = ("claim", "evidence", "seeds", "include", "distance_ranks", "distance_starts", "distance_max_iter",
              "headline", "contrasts")


def check_preset_keys(name: str, raw: dict[str, Any]) -> None:
    """Unknown tables and keys are refused with the valid ones, as ``Config`` refuses unknown config keys: [study]
    keys from ``STUDY_KEYS``; [base], [tiny] and each [runs.NAME] from the config keys; [reference.NAME] only for a
    run NAME the preset defines (its keys are metric names, data)."""
    _refuse_unknown(name, "top-level table(s)", raw, PRESET_TABLES)
    for table in PRESET_TABLES:
        if table in raw and not isinstance(raw[table], dict):
            raise BadInput(f"preset {name!r}: {table} = {raw[table]!r} is not a table: expected [{table}]")
    _refuse_unknown(name, "[study] key(s)", raw.get("study", {}), STUDY_KEYS)
    for table in ("base", "tiny"):
        _refuse_unknown(name, f"[{table}] key(s)", raw.get(table, {}), field_names())
    for run_name, fields in raw.get("runs", {}).items():
        if not isinstance(fields, dict):
            raise BadInput(f"preset {name!r}: runs.{run_name} is not a table: expected [runs.{run_name}]")
        _refuse_unknown(name, f"[runs.{run_name}] key(s)", fields, field_names())


def _refuse_unknown(name: str, what: str, table: dict[str, Any], valid: Iterable[str]) -> None:
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise BadInput(f"preset {name!r} has unknown {what} {', '.join(unknown)}: valid are {', '.join(valid)}")


def load_preset(name: str) -> Preset:
    """Read ``presets/<name>.toml`` (keys checked by ``check_preset_keys``), resolving ``include`` (runs of the same
    name must have the same fields)."""
    raw = _read_preset_file(name)
    check_preset_keys(name, raw)
    study = raw.get("study", {})
    for key in ("claim", "evidence", "seeds"):
        if key not in study:
            raise BadInput(f"preset {name!r} lacks [study] {key}: every preset states its claim, evidence and seeds")
    base = raw.get("base", {})
    runs: dict[str, dict[str, Any]] = {}
    reference: dict[str, dict[str, float]] = {}
    ranks = set(study.get("distance_ranks", [1]))
    includes = tuple(study.get("include", []))
    sources = [load_preset(included) for included in includes] if includes else []
    for source in sources:
        for run_name, fields in source.runs.items():
            _add_run(runs, run_name, {**fields, **base}, name)
        reference.update(source.reference)
        ranks.update(source.distance_ranks)
    for run_name, fields in raw.get("runs", {}).items():
        _add_run(runs, run_name, {**base, **fields}, name)
    reference.update(raw.get("reference", {}))
    if not runs:
        raise BadInput(f"preset {name!r} defines no runs: add [runs.NAME] tables or [study] include")
    _refuse_unknown(name, "[reference.NAME] run(s)", raw.get("reference", {}), list(runs))
    headline = _checked_contrast(name, "headline", study["headline"], runs) if "headline" in study else {}
    contrasts = tuple(_checked_contrast(name, f"contrasts[{index}]", entry, runs, named=True)
                      for index, entry in enumerate(study.get("contrasts", [])))
    return Preset(name=preset_path(name).stem, claim=" ".join(study["claim"].split()), headline=headline,
                  contrasts=contrasts,
                  evidence=" ".join(study["evidence"].split()),
                  seeds=require_int_in_range("seeds", study["seeds"], 1), runs=runs, tiny=raw.get("tiny", {}),
                  reference=reference, distance_ranks=tuple(sorted(ranks)), includes=includes,
                  **_fit_settings(study, sources))


CONTRAST_KEYS = ("hypothesis", "metric", "a", "b", "statistic", "expect", "value")
CONTRAST_OPTIONAL = ("metric_a", "metric_b", "metric_c", "metric_d", "c", "d", "name")


def _checked_contrast(preset: str, where: str, entry: Any, runs: dict[str, Any], named: bool = False) -> dict:
    """A headline test or contrast of [study], its keys, run names and choices checked (a one-line BadInput)."""
    if not isinstance(entry, dict):
        raise BadInput(f"preset {preset!r}: [study] {where} must be a table with keys {', '.join(CONTRAST_KEYS)}")
    required = CONTRAST_KEYS + (("name",) if named else ())
    missing = [key for key in required if key not in entry]
    unknown = sorted(set(entry) - set(CONTRAST_KEYS) - set(CONTRAST_OPTIONAL))
    if missing or unknown:
        raise BadInput(f"preset {preset!r}: [study] {where} " + (f"lacks {', '.join(missing)}" if missing else
                       f"has unknown key(s) {', '.join(unknown)}") + f": expected {', '.join(required)} "
                       f"(optional: {', '.join(CONTRAST_OPTIONAL)})")
    if entry["statistic"] not in effects.STATISTIC_SIDES:
        raise BadInput(f"preset {preset!r}: [study] {where} statistic={entry['statistic']!r} is unknown: expected "
                       f"one of {', '.join(effects.STATISTIC_SIDES)}")
    for side in effects.STATISTIC_SIDES[entry["statistic"]]:
        if side not in entry:
            raise BadInput(f"preset {preset!r}: [study] {where} statistic={entry['statistic']!r} needs run {side}")
        if entry[side] not in runs:
            raise BadInput(f"preset {preset!r}: [study] {where} {side}={entry[side]!r} is not a run: expected one of "
                           f"{', '.join(runs)}")
    if entry["expect"] not in effects.EXPECTATIONS:
        raise BadInput(f"preset {preset!r}: [study] {where} expect={entry['expect']!r} is unknown: expected one of "
                       f"{', '.join(effects.EXPECTATIONS)}")
    if isinstance(entry["value"], bool) or not isinstance(entry["value"], (int, float)):
        raise BadInput(f"preset {preset!r}: [study] {where} value={entry['value']!r} is not a number")
    return {**entry, "hypothesis": " ".join(str(entry["hypothesis"]).split()), "value": float(entry["value"])}


def _fit_settings(study: dict[str, Any], sources: list[Preset]) -> dict[str, int]:
    """ALS starts and sweeps of the distance fit: the preset's, else the largest of its includes', else defaults."""
    settings = {}
    for key, low in (("distance_starts", 1), ("distance_max_iter", 1)):
        inherited = [getattr(source, key) for source in sources]
        value = study.get(key, max(inherited) if inherited else Preset.__dataclass_fields__[key].default)
        settings[key] = require_int_in_range(key, value, low)
    return settings


def _add_run(runs: dict[str, dict[str, Any]], run_name: str, fields: dict[str, Any], preset: str) -> None:
    if run_name in runs and runs[run_name] != fields:
        raise BadInput(f"preset {preset!r}: run {run_name!r} is defined twice with different fields "
                       f"({runs[run_name]} vs {fields})")
    runs[run_name] = fields


def run_specs(preset: Preset, seeds: int | None = None, tiny: bool = False) -> list[RunSpec]:
    """Every (run, seed) of the preset, seed-major so a partial study already covers every run."""
    count = 1 if tiny and seeds is None else (preset.seeds if seeds is None else seeds)
    require_int_in_range("--seeds", count, 1)
    overrides = preset.tiny if tiny else {}
    return [RunSpec(name, seed, {**fields, **overrides, "seed": seed})
            for seed in range(count) for name, fields in preset.runs.items()]


def build_config(spec: RunSpec) -> Config:
    """The engine's typed config for one run (unknown fields and wrong types are rejected there)."""
    return Config.from_dict(spec.fields)


def execute_run(spec: RunSpec, run_dir: Path, resume: bool, preset: Preset, rerun: bool = False,
                tiny: bool = False) -> None:
    """Train, evaluate and analyse one run, skipping each stage whose result file already exists.

    Training (re)starts without ``COMPLETE`` (or with ``rerun``); the analysis of an earlier attempt is removed
    first, so no stage reads a result of another model (``train`` removes ``eval.json`` when it starts afresh)."""
    if rerun or not folder.is_trained(run_dir):
        folder.remove(run_dir, folder.ANALYSES)
        train(build_config(spec), run_dir, resume=resume and not rerun and folder.is_started(run_dir))
    if not (run_dir / folder.EVAL).is_file():
        evaluate_run(run_dir)
    if not (run_dir / folder.DIVERSITY).is_file():
        diversity.analyse_run(run_dir, preset.distance_ranks, preset.distance_starts, preset.distance_max_iter,
                              TINY_FUNCTION_SAMPLES if tiny else diversity.FEATURE_SAMPLES)


def _distance_ranks_of(analysed: dict[str, Any]) -> set[int]:
    """The BE-set ranks a ``diversity.json`` measured (none for a one-member model)."""
    network = analysed["scalars"].get("distance", {}).get(diversity.NETWORK, {})
    return {int(key.split("/")[0].removeprefix("rank")) for key in network}


def is_reusable(source: Path, spec: RunSpec, preset: Preset, tiny: bool = False) -> bool:
    """``source`` is a finished run of ``spec``'s config (execution keys aside) analysed with ``preset``'s settings."""
    if not folder.is_finished(source):
        return False
    if config_differences(folder.read_config(source), build_config(spec)):
        return False
    analysed = folder.read_json(source, folder.DIVERSITY)
    ranks = _distance_ranks_of(analysed)
    return (analysed["distance_fit"] == {"starts": preset.distance_starts, "max_iter": preset.distance_max_iter}
            and analysed["function_space_samples"] == (TINY_FUNCTION_SAMPLES if tiny else diversity.FEATURE_SAMPLES)
            and (not ranks or ranks == set(preset.distance_ranks)))


def copy_run(source: Path, target: Path) -> None:
    """Copy a finished run into ``target`` atomically (a copy beside it, then one rename); an unfinished ``target``
    is replaced, a finished one never."""
    if folder.is_finished(target):
        raise BadInput(f"{target} is already a finished run: not replaced by a copy of {source}")
    staging = target.with_name(f".{target.name}.copying")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


def reuse_finished_runs(todo: list[RunSpec], sources: list[Path], out: Path, preset: Preset,
                        tiny: bool = False) -> dict[str, str]:
    """Copy each run of ``todo`` that has a reusable twin under one of ``sources``; return ``{name/seedS: source}``."""
    reused = {}
    for spec in todo:
        source = next((folder / spec.relative_dir for folder in sources
                       if is_reusable(folder / spec.relative_dir, spec, preset, tiny)), None)
        if source is not None and source.resolve() != (out / spec.relative_dir).resolve():
            copy_run(source, out / spec.relative_dir)
            reused[f"{spec.name}/seed{spec.seed}"] = str(source)
    return reused


def stale_runs(specs: list[RunSpec], out: Path, resume: bool) -> dict[str, str]:
    """``{runs/NAME/seedS: 'key (old → new), ...'}`` for every run under ``out`` that the study would keep (a finished
    run, or with ``resume`` a started one) although its ``config.json`` differs from the preset's config (execution
    keys aside; keys missing from an older ``config.json`` count as their defaults)."""
    stale = {}
    for spec in specs:
        run_dir = out / spec.relative_dir
        kept = folder.is_finished(run_dir) or (resume and folder.is_started(run_dir))
        if kept:
            differing = describe_differences(folder.read_config(run_dir), build_config(spec))
            if differing:
                stale[str(spec.relative_dir)] = differing
    return stale


def partial_runs(specs: list[RunSpec], out: Path) -> list[RunSpec]:
    """Runs started under ``out`` (``config.json``) whose training did not finish (no ``COMPLETE``)."""
    return [spec for spec in specs if folder.is_started(out / spec.relative_dir)
            and not folder.is_trained(out / spec.relative_dir)]


def check_output_folder(preset: Preset, specs: list[RunSpec], out: Path, resume: bool) -> None:
    """Refuse, before any training, to mix this study with other results in ``out``: the summary of another preset,
    or runs trained under another config (which would otherwise be reported as this preset's)."""
    if (out / SUMMARY_FILE).is_file():
        earlier = _earlier_summary(out)
        if earlier is not None and earlier.get("preset") not in (None, preset.name):
            raise BadInput(f"--out {out} holds the study {earlier['preset']!r}, not {preset.name!r}: choose another "
                           f"--out, or pass --rerun to replace its summary and report")
    stale = stale_runs(specs, out, resume)
    if stale:
        listed = "; ".join(f"{run}: {differing}" for run, differing in stale.items())
        raise BadInput(f"{len(stale)} run(s) in {out} were trained under another config than {preset.name!r} asks "
                       f"for ({listed}): pass --rerun to retrain them, or choose another --out")


def default_out(preset: str, tiny: bool) -> Path:
    return RESULTS_DIR / TINY_SUBDIR / preset if tiny else RESULTS_DIR / preset


def run_study(preset_name: str, out: Path | None = None, seeds: int | None = None, resume: bool = False,
              tiny: bool = False, rerun: bool = False, workers: int = 1,
              reuse: list[Path] | None = None, executor: str | None = None,
              cluster: dict[str, Any] | None = None, summarise_only: bool = False) -> dict[str, Any]:
    """Run every unfinished (run, seed) of the preset (every one with ``rerun``), ``workers`` at a time, after copying
    those with a reusable twin under a ``reuse`` folder; then write ``summary.json`` and the report; return it.
    ``summarise_only`` trains nothing: it rebuilds ``summary.json`` and the report from the finished run folders (the
    current analyses on committed runs; a run folder's missing new config keys read as their defaults) and refuses
    when a run is unfinished."""
    require_int_in_range("--jobs", workers, 1)
    if executor is not None:
        executors.check_executor(executor)
    preset = load_preset(preset_name)
    if tiny:
        preset = dataclasses.replace(preset, distance_max_iter=min(preset.distance_max_iter, TINY_DISTANCE_MAX_ITER))
    out = Path(out) if out is not None else default_out(preset.name, tiny)
    specs = run_specs(preset, seeds, tiny)
    for spec in specs:  # reject a bad preset before any training
        build_config(spec)
    if rerun and resume:
        raise BadInput("--rerun and --resume exclude each other: --rerun trains every run afresh")
    if rerun and reuse:
        raise BadInput("--rerun and --reuse exclude each other: --rerun trains every run afresh")
    for source in reuse or []:
        if not Path(source).is_dir():
            raise BadInput(f"--reuse {source} is not a folder: expected a study's output folder (with runs/)")
    if not rerun:
        check_output_folder(preset, specs, out, resume)
    todo = [spec for spec in specs if rerun or not folder.is_finished(out / spec.relative_dir)]
    if summarise_only and (todo or rerun):
        raise BadInput(f"--summarise-only: {len(todo)} run(s) of {preset.name} in {out} are unfinished (e.g. "
                       f"{todo[0].relative_dir if todo else '--rerun'}): expected every run finished")
    reused = reuse_finished_runs(todo, [Path(folder) for folder in reuse or []], out, preset, tiny)
    todo = [spec for spec in todo if f"{spec.name}/seed{spec.seed}" not in reused]
    print(f"{preset.name}: {len(specs)} runs, {len(specs) - len(todo) - len(reused)} already finished, "
          f"{len(reused)} copied, {len(todo)} to run -> {out}", file=sys.stderr)
    restarted = [] if resume or rerun else partial_runs(todo, out)
    if restarted:
        print(f"{preset.name}: {len(restarted)} partial runs restart from scratch; use --resume to continue them",
              file=sys.stderr)
    jobs = [(spec, out / spec.relative_dir, resume, preset, rerun, tiny) for spec in todo]
    earlier = {} if rerun else _earlier_records(out)
    timings = {key: value for key, value in earlier.get("timings_s", {}).items() if key not in reused}
    failures: dict[str, str] = {}
    if executor is None:
        timings.update(_run_all(jobs, workers, preset.name))
    else:  # one submitit job per run (empirics.studies.executors)
        devices = [build_config(spec).device for spec in todo]
        done, failures = executors.submit_runs(jobs, _timed_run, executor, out, preset.name, workers,
                                               executors.wants_gpu(devices), max(1, build_config(specs[0]).threads),
                                               **(cluster or {}))
        timings.update(done)
    summary = summarise(preset, specs, out, tiny)
    if failures:
        summary["failures"] = failures
    summary["timings_s"] = timings
    summary["reused"] = {**{key: value for key, value in earlier.get("reused", {}).items() if key not in timings},
                         **reused}
    atomic_write_json(out / SUMMARY_FILE, summary)
    report.write_report(out)
    parity.write_parity(out, summary)
    print(report.console_table(summary))
    return summary


def _earlier_records(out: Path) -> dict[str, Any]:
    """The ``timings_s`` and ``reused`` of the summary an earlier invocation left in ``out`` (kept across resumes:
    a run's wall time is that of the invocation that finished it)."""
    earlier = _earlier_summary(out)
    if earlier is None:
        return {}
    return {key: earlier.get(key, {}) for key in ("timings_s", "reused")}


def _earlier_summary(out: Path) -> dict[str, Any] | None:
    """The ``summary.json`` an earlier invocation left in ``out``; None when there is none or it is damaged (a damaged
    summary only loses the earlier records; it is rewritten at the end)."""
    if not (out / SUMMARY_FILE).is_file():
        return None
    try:
        return report.load_summary(out)
    except json.JSONDecodeError:
        return None


def _timed_run(spec: RunSpec, run_dir: Path, resume: bool, preset: Preset, rerun: bool,
               tiny: bool) -> tuple[str, float]:
    """``execute_run`` and its wall time in seconds, keyed ``name/seedN``."""
    start = time.perf_counter()
    execute_run(spec, run_dir, resume, preset, rerun, tiny)
    return f"{spec.name}/seed{spec.seed}", round(time.perf_counter() - start, 2)


def _run_all(jobs: list[tuple], workers: int, label: str) -> list[tuple[str, float]]:
    """Every job through ``_timed_run``: in this process when ``workers`` is 1, else in a pool of ``workers`` spawned
    processes (spawn, not fork: a forked child would inherit torch's thread pools). The first failure cancels the
    runs not yet started and is raised; runs already going finish. SIGTERM or SIGINT stops the workers (each
    checkpoints at its next batch and exits) and then the study, with exit code 128 + signal."""
    progress = tqdm(total=len(jobs), desc=label, unit="run", disable=not sys.stderr.isatty())
    with progress:
        if workers == 1:
            return [_progressed(progress, _timed_run(*job)) for job in jobs]
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool, \
                _signals_raise() as received:
            futures = [pool.submit(_worker_run, *job) for job in jobs]
            try:
                return [_progressed(progress, future.result()) for future in as_completed(futures)]
            except KeyboardInterrupt:
                stop_workers()
                pool.shutdown(wait=True, cancel_futures=True)
                print(f"{label}: stopped by signal {received[-1] if received else signal.SIGINT}; every worker "
                      f"checkpointed its run and exited; continue with --resume", file=sys.stderr)
                raise SystemExit(128 + (received[-1] if received else signal.SIGINT)) from None
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise


WORKER_STOP_TIMEOUT_S = 300  # a worker checkpoints at its next batch boundary; past this it is killed


@contextmanager
def _signals_raise() -> Iterator[list[int]]:
    """While the pool runs, SIGTERM as well as SIGINT raise ``KeyboardInterrupt`` in the main thread (the signal
    numbers received are appended to the yielded list), so the study can stop its workers instead of orphaning them."""
    received: list[int] = []

    def interrupt(signum: int, frame: Any) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    with on_stop_signals(interrupt):
        yield received


def stop_workers(timeout_s: float = WORKER_STOP_TIMEOUT_S) -> None:
    """SIGTERM to every child process (the engine checkpoints and exits), wait for them, SIGKILL any left."""
    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout_s
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
            child.join()


def _worker_run(spec: RunSpec, run_dir: Path, resume: bool, preset: Preset, rerun: bool,
                tiny: bool) -> tuple[str, float]:
    """``_timed_run`` in a pool worker. A run stopped by a signal (``SystemExit`` after its checkpoint, or
    ``KeyboardInterrupt``) ends the worker process itself: a pool worker would otherwise take the next run."""
    try:
        return _timed_run(spec, run_dir, resume, preset, rerun, tiny)
    except (SystemExit, KeyboardInterrupt) as stopped:
        sys.stderr.flush()
        os._exit(stopped.code if isinstance(stopped, SystemExit) and isinstance(stopped.code, int) else 130)


def _progressed(progress: tqdm, item: tuple[str, float]) -> tuple[str, float]:
    progress.update(1)
    return item


def _flatten(payload: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts as flat ``a/b/c`` keys (lists, strings and None are not metrics)."""
    if isinstance(payload, dict):
        flat: dict[str, float] = {}
        for key, value in payload.items():
            flat.update(_flatten(value, f"{prefix}{key}/"))
        return flat
    if isinstance(payload, (int, float)) and not isinstance(payload, bool):
        return {prefix.rstrip("/"): float(payload)}
    return {}


def run_metrics(run_dir: Path) -> dict[str, float]:
    """The scalar metrics of a finished run: ``eval.json`` and the scalars of ``diversity.json`` (prefixed)."""
    evaluated, analysed = folder.read_json(run_dir, folder.EVAL), folder.read_json(run_dir, folder.DIVERSITY)
    metrics = _flatten(evaluated.get("metrics", evaluated))
    metrics.update(_flatten(analysed.get("scalars", {})))
    return metrics


def training_record(run_dir: Path) -> dict[str, float]:
    """From ``metrics.json``: ``train/epochs_run``, ``train/best_epoch``, ``train/stopped_early`` (1 or 0), and
    ``traj/<measure>@<epoch>`` for every ``traj/*`` value recorded per epoch (``empirics.analysis.trajectory``)."""
    if not (run_dir / folder.METRICS).is_file():
        return {}
    record = folder.read_json(run_dir, folder.METRICS)
    epochs = record.get("epochs", [])
    out = {"train/epochs_run": float(len(epochs)), "train/best_epoch": float(record.get("best_epoch", 0)),
           "train/stopped_early": float(bool(record.get("stopped_early")))}
    out.update({f"{key}@{entry['epoch']}": float(value) for entry in epochs for key, value in entry.items()
                if key.startswith("traj/")})
    return out


RUN_SECONDS = (("train", folder.METRICS), ("evaluate", folder.EVAL), ("analyse", folder.DIVERSITY))


def run_seconds(run_dir: Path) -> dict[str, float]:
    """What the run cost: the wall seconds its result files record (training summed over the invocations that trained
    it, evaluation, analysis); a file written before times were recorded adds nothing. Kept apart from the metrics
    (a summary's ``run_seconds[name]``, mean ± std over seeds): timings of a shared machine, not results, so the same
    seeds still give the same ``runs``."""
    times = {key: folder.read_json(run_dir, name).get("seconds") for key, name in RUN_SECONDS
             if (run_dir / name).is_file()}
    return {key: float(value) for key, value in times.items() if value is not None}


def evaluate_contrast(summary: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """The contrast ``entry`` (a headline or a [[study.contrasts]] table) on the summarised runs: the statistic with
    its Welch t-interval over seeds (``empirics.analysis.effects.contrast``; paired by seed when a = b) and the
    verdict of the pre-registered test."""
    sides = effects.STATISTIC_SIDES[entry["statistic"]]
    metric = {side: entry.get(f"metric_{side}", entry["metric"]) for side in sides}
    found = effects.contrast_of_runs(summary["runs"], {side: (entry[side], metric[side]) for side in sides},
                                     entry["statistic"])
    return {**entry, **{f"metric_{side}": metric[side] for side in sides}, **found,
            "verdict": effects.verdict(found, entry["expect"], entry["value"])}


def mean_std(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof = 1; 0 for one seed) over seeds, with the raw per-seed values."""
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "n": len(array), "values": [float(v) for v in array]}


def append_seed(per_run: dict[str, dict[str, list[float]]], name: str, values: dict[str, float]) -> None:
    """Add one seed's ``values`` of run ``name`` to the per-key lists of ``per_run``."""
    for key, value in values.items():
        per_run.setdefault(name, {}).setdefault(key, []).append(value)


def over_seeds(per_run: dict[str, dict[str, list[float]]], preset: Preset) -> dict[str, dict[str, Any]]:
    """Mean ± std over seeds of every key of every run, runs in the preset's order, keys sorted."""
    return {name: {key: mean_std(values) for key, values in sorted(per_run[name].items())}
            for name in preset.runs if name in per_run}


def summarise(preset: Preset, specs: list[RunSpec], out: Path, tiny: bool = False) -> dict[str, Any]:
    """Aggregate finished runs only (unfinished ones are listed as missing, never read). ``provenance`` is this
    summarising invocation's; ``trained_at`` maps each git commit that trained a run (``folder.trained_at``) to the run
    folders trained at it."""
    per_run: dict[str, dict[str, list[float]]] = {}
    per_run_seconds: dict[str, dict[str, list[float]]] = {}
    seeds: dict[str, list[int]] = {}
    trained_at: dict[str, list[str]] = {}
    missing = []
    points = []
    for spec in specs:
        run_dir = out / spec.relative_dir
        if not folder.is_finished(run_dir):
            missing.append(str(spec.relative_dir))
            continue
        trained_at.setdefault(folder.trained_at(run_dir), []).append(str(spec.relative_dir))
        metrics = run_metrics(run_dir)
        metrics.update(training_record(run_dir))
        append_seed(per_run_seconds, spec.name, run_seconds(run_dir))
        config = build_config(spec)
        points.append({"run": spec.name, "seed": spec.seed, "method": config.method, "dataset": config.dataset,
                       **metrics})
        seeds.setdefault(spec.name, []).append(spec.seed)
        append_seed(per_run, spec.name, metrics)
    runs = {name: {"fields": preset.runs[name], "seeds": seeds[name], "metrics": metrics}
            for name, metrics in over_seeds(per_run, preset).items()}
    seconds = over_seeds(per_run_seconds, preset)
    summary = {"preset": preset.name, "claim": preset.claim, "evidence": preset.evidence, "tiny": tiny,
               "includes": list(preset.includes), "provenance": provenance({"preset": preset.name, "tiny": tiny,
                                                                            "overrides": preset.tiny if tiny else {}}),
               "trained_at": dict(sorted(trained_at.items())),
               "runs": runs, "run_seconds": seconds, "missing": missing, "reference": preset.reference,
               **link_analyses(points)}
    if preset.headline:
        summary["headline"] = evaluate_contrast(summary, preset.headline)
    summary["contrasts"] = [evaluate_contrast(summary, entry) for entry in preset.contrasts]
    return summary


def link_analyses(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The link over every ensemble (``link``) and, when the study has MC Dropout, over the others only
    (``link_without_mc_dropout``): MCD's members are dropout masks of one weight set, drawn at test time, so their
    weight geometry measures the masks, not what training made different (they lie exactly on the rank-1 BE set).
    A study on several data sets gets these per data set (``link:<dataset>``, listed under ``link_strata``), never
    pooled: a function-space measure has each data set's scale (the regression targets' units), so pooled ranks would
    order data sets, not ensembles."""
    datasets = sorted({point["dataset"] for point in points})
    if len(datasets) < 2:
        return _links(points)
    links: dict[str, Any] = {diversity.LINK_STRATA: datasets}
    for dataset in datasets:
        links.update(_links([point for point in points if point["dataset"] == dataset], dataset))
    return links


def _links(points: list[dict[str, Any]], stratum: str | None = None) -> dict[str, Any]:
    links = {diversity.link_key(diversity.LINK, stratum): diversity.link_analysis(points)}
    if any(point["method"] == "mc-dropout" for point in points):
        links[diversity.link_key(diversity.LINK_WITHOUT_MCD, stratum)] = diversity.link_analysis(
            [point for point in points if point["method"] != "mc-dropout"])
    return links


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("study", help="run a study preset (train, evaluate, analyse, summarise, report)",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", help=f"one of {', '.join(available_presets())}, or a preset .toml file")
    parser.add_argument("--seeds", type=int, help="number of seeds (0..N-1); default: the preset's")
    parser.add_argument("--resume", action="store_true", help="continue unfinished runs from their last checkpoint")
    parser.add_argument("--out", type=Path, help="output folder (default results/PRESET, results/tiny/PRESET)")
    parser.add_argument("--rerun", action="store_true", help="train every run afresh, replacing finished results")
    parser.add_argument("--tiny", action="store_true", help="CI smoke mode: tiny subsets, one seed, seconds per run")
    parser.add_argument("--reuse", type=Path, action="append", metavar="DIR",
                        help="copy finished runs with the same config from another study's folder (repeatable)")
    parser.add_argument("--summarise-only", action="store_true",
                        help="train nothing: rebuild summary.json and the report from the finished runs")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained side by side, one process each (default 1; keep jobs x threads <= cores)")
    parser.add_argument("--executor", choices=executors.EXECUTORS,
                        help="one submitit job per run: 'local' processes or 'slurm' jobs (empirics.studies.executors); "
                             "--jobs then caps the runs at once")
    parser.add_argument("--partition", help="SLURM partition for --executor slurm")
    parser.add_argument("--timeout-min", type=int, default=executors.DEFAULT_TIMEOUT_MIN,
                        help="time limit of one run's job in minutes (default %(default)s)")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    cluster = {"timeout_min": require_int_in_range("--timeout-min", args.timeout_min, 1), "partition": args.partition}
    summary = run_study(args.preset, args.out, args.seeds, args.resume, args.tiny, args.rerun, args.jobs,
                        args.reuse, args.executor, cluster if args.executor else None, args.summarise_only)
    return 1 if summary["missing"] else 0
