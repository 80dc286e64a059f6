"""Study presets: every preset states its claim and builds valid configs; finished runs are never redone or lost;
partial runs are never read as complete; every preset runs end to end on tiny subsets (slow smoke tests)."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from empirics.analysis import diversity
from empirics.cli import main
from empirics.runs import folder
from empirics.studies import report
from empirics.studies import runner as study
from infra.cli import run_cli
from infra.errors import BadInput

from two_run_study import DATA_ROOT, ROOT, TWO_RUN_PRESET


@pytest.mark.parametrize("name", study.available_presets())
def test_every_preset_states_its_claim_and_builds_valid_configs(name):
    """Each preset names a claim and its evidence, and every (run, seed) — full and --tiny — builds a Config that
    carries every field the preset sets for it ([base], [runs.NAME], [tiny] with --tiny, and the seed)."""
    preset = study.load_preset(name)
    assert len(preset.claim) > 40 and len(preset.evidence) > 40
    for tiny in (False, True):
        for spec in study.run_specs(preset, tiny=tiny):
            built = study.build_config(spec).to_dict()
            assert {key: built[key] for key in spec.fields} == \
                {key: list(value) if isinstance(value, tuple) else value for key, value in spec.fields.items()}
            if tiny:
                assert preset.tiny.items() <= spec.fields.items()


def test_paper_mnist_preset_is_the_paper_recipe():
    """paper-mnist: MLP 784-64-32-16-10, dropout 0.05, k = 4, Adam 1e-3, wd 1e-4, 75 epochs, patience 10, 5 seeds,
    methods single / BE rank 1 / BE full rank / DE / MCD."""
    preset = study.load_preset("paper-mnist")
    config = study.build_config(study.run_specs(preset)[0])
    assert (config.widths, config.dropout, config.members, config.optimizer, config.lr, config.weight_decay,
            config.epochs, config.patience) == ((64, 32, 16), 0.05, 4, "adam", 1e-3, 1e-4, 75, 10)
    assert preset.seeds == 5
    methods = {name: (fields["method"], fields.get("rank")) for name, fields in preset.runs.items()}
    expected = [("single", None), ("batchensemble", 1), ("batchensemble", "full"), ("deep-ensemble", None),
                ("mc-dropout", None)]
    assert sorted(methods.values(), key=str) == sorted(expected, key=str)


def test_quick_trains_each_included_run_once_with_its_reductions():
    """quick = the union of paper-mnist and rank-ablation runs (shared runs once), with quick's [base] on top."""
    quick, paper, ablation = (study.load_preset(name) for name in ("quick", "paper-mnist", "rank-ablation"))
    assert set(quick.runs) == set(paper.runs) | set(ablation.runs)
    assert all(fields["n_train"] == 10000 and fields["epochs"] == 5 for fields in quick.runs.values())
    assert quick.reference == paper.reference
    assert len(study.run_specs(quick)) == quick.seeds * len(quick.runs)


def test_a_run_defined_twice_differently_is_rejected(tmp_path, monkeypatch):
    """Including two presets whose same-named runs differ is a clear error, not a silent choice."""
    for name, rank in (("a", 1), ("b", 2)):
        (tmp_path / f"{name}.toml").write_text(f'[study]\nclaim = "c"\nevidence = "e"\nseeds = 1\n'
                                               f'[runs.be]\nmethod = "batchensemble"\nrank = {rank}\n')
    (tmp_path / "both.toml").write_text('[study]\nclaim = "c"\nevidence = "e"\nseeds = 1\ninclude = ["a", "b"]\n')
    monkeypatch.setattr(study, "PRESET_DIR", tmp_path)
    with pytest.raises(BadInput, match="run 'be' is defined twice"):
        study.load_preset("both")


def test_unknown_preset_is_a_one_line_error_with_exit_code_2(capsys):
    """`python -m empirics study nope` names the bad preset and the accepted ones on one line, exit code 2."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["study", "nope"])
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert len(stderr.strip().splitlines()) == 1 and "'nope'" in stderr and "paper-mnist" in stderr


def test_rerun_and_resume_together_are_rejected(tmp_path):
    """--rerun (train afresh) and --resume (continue) contradict each other."""
    with pytest.raises(BadInput, match="exclude each other"):
        study.run_study("paper-mnist", tmp_path, resume=True, rerun=True)


def test_a_partial_run_is_never_read_as_complete(tmp_path):
    """Without the completion marker (or without eval/diversity results) a run is unfinished: not summarised."""
    run_dir = tmp_path / "runs" / "single" / "seed0"
    run_dir.mkdir(parents=True)
    for name in ("eval.json", "diversity.json"):
        (run_dir / name).write_text(json.dumps({"metrics": {"test/ensemble/accuracy": 0.5}, "scalars": {}}))
    assert not folder.is_finished(run_dir)
    preset = study.load_preset("paper-mnist")
    summary = study.summarise(preset, study.run_specs(preset, seeds=1), tmp_path)
    assert summary["runs"] == {} and "runs/single/seed0" in summary["missing"]
    (run_dir / "COMPLETE").write_bytes(b"")
    assert folder.is_finished(run_dir)


def test_a_runs_recorded_wall_times_reach_the_summary_and_older_files_without_them_add_none(tmp_path):
    """metrics.json, eval.json and diversity.json record their seconds (training summed over invocations, evaluation,
    analysis): the summary holds them per run under "run_seconds", apart from the results; a file written before times
    were recorded adds no entry (no invented 0)."""
    run_dir = tmp_path / "runs" / "single" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "COMPLETE").write_bytes(b"")
    (run_dir / "metrics.json").write_text(json.dumps({"epochs": [], "seconds": 5.0}))
    (run_dir / "eval.json").write_text(json.dumps({"metrics": {"test/ensemble/accuracy": 0.5}, "seconds": 2.0}))
    (run_dir / "diversity.json").write_text(json.dumps({"scalars": {}}))
    preset = study.load_preset("paper-mnist")
    summary = study.summarise(preset, study.run_specs(preset, seeds=1), tmp_path)
    seconds = summary["run_seconds"]["single"]
    assert (seconds["train"]["mean"], seconds["evaluate"]["mean"]) == (5.0, 2.0) and "analyse" not in seconds
    assert not any("seconds" in key or key.startswith("time") for key in summary["runs"]["single"]["metrics"])


def test_the_summary_records_the_commits_that_trained_its_runs_and_the_report_header_prints_them(tmp_path):
    """Three finished runs, two trained at commit a…, one at b…+dirty (their metrics.json provenance): the summary maps
    each commit to its runs (in the preset's order), apart from the summarising invocation's own commit, and the report header names both
    with their run counts."""
    preset = study.load_preset("paper-mnist")
    for run, commit in (("single", "a" * 40), ("be-r1", "a" * 40), ("de", "b" * 40 + "+dirty")):
        run_dir = tmp_path / "runs" / run / "seed0"
        run_dir.mkdir(parents=True)
        (run_dir / "COMPLETE").write_bytes(b"")
        (run_dir / "metrics.json").write_text(json.dumps({"provenance": {"git_commit": commit}, "epochs": []}))
        (run_dir / "eval.json").write_text(json.dumps({"metrics": {"test/ensemble/accuracy": 0.5}}))
        (run_dir / "diversity.json").write_text(json.dumps({"scalars": {}}))
    summary = study.summarise(preset, study.run_specs(preset, seeds=1), tmp_path)
    assert summary["trained_at"] == {"a" * 40: ["runs/single/seed0", "runs/be-r1/seed0"],
                                     "b" * 40 + "+dirty": ["runs/de/seed0"]}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    header = next(line for line in report.write_report(tmp_path).read_text().splitlines()
                  if line.startswith("Generated from"))
    assert f"summarised at git commit `{summary['provenance']['git_commit']}`" in header
    assert f"runs trained at `{'a' * 10}` (2 runs), `{'b' * 10}+dirty` (1 run)" in header


def test_jobs_below_one_is_a_one_line_error(tmp_path):
    """--jobs counts worker processes: 0 names the value and the accepted range."""
    with pytest.raises(BadInput, match=r"--jobs=0 is out of range: expected an integer >= 1"):
        study.run_study("paper-mnist", tmp_path, workers=0)


@pytest.mark.slow
def test_runs_side_by_side_give_the_same_numbers_as_one_at_a_time(tmp_path, monkeypatch):
    """--jobs 2 (two spawned processes) reproduces --jobs 1 exactly: every run seeds itself (same seed, same numbers)."""
    preset_file = tmp_path / "two-runs.toml"
    preset_file.write_text(TWO_RUN_PRESET)
    monkeypatch.setenv("EGEO_DATA_ROOT", os.environ.get("EGEO_DATA_ROOT", str(DATA_ROOT)))
    summaries = [study.run_study(str(preset_file), tmp_path / f"jobs{jobs}", workers=jobs) for jobs in (1, 2)]
    assert [sorted(summary["timings_s"]) for summary in summaries] == [["be-r1/seed0", "single/seed0"]] * 2
    for run in ("single", "be-r1"):
        evaluated = [json.loads((tmp_path / f"jobs{jobs}" / "runs" / run / "seed0" / "eval.json").read_text())
                     for jobs in (1, 2)]
        assert evaluated[0]["metrics"] == evaluated[1]["metrics"]


def test_reuse_and_rerun_together_are_rejected(tmp_path):
    """--reuse copies finished runs, --rerun trains every run afresh: together they contradict each other."""
    with pytest.raises(BadInput, match="--rerun and --reuse exclude each other"):
        study.run_study("paper-mnist", tmp_path, rerun=True, reuse=[tmp_path])


def test_reuse_of_a_missing_folder_names_it(tmp_path):
    with pytest.raises(BadInput, match=r"--reuse .*nowhere is not a folder"):
        study.run_study("paper-mnist", tmp_path / "out", reuse=[tmp_path / "nowhere"])


@pytest.mark.slow
def test_reuse_copies_exactly_the_runs_with_the_same_config_and_analysis(tmp_path, monkeypatch):
    """A second study reusing the first copies its finished twin (byte for byte, not retrained) and trains the run
    whose config differs; a finished run analysed with other distance settings is not reused."""
    monkeypatch.setenv("EGEO_DATA_ROOT", os.environ.get("EGEO_DATA_ROOT", str(DATA_ROOT)))
    first_file, second_file = tmp_path / "first.toml", tmp_path / "second.toml"
    first_file.write_text(TWO_RUN_PRESET)
    second_file.write_text(TWO_RUN_PRESET.replace("rank = 1", "rank = 2"))
    study.run_study(str(first_file), tmp_path / "first")
    summary = study.run_study(str(second_file), tmp_path / "second", reuse=[tmp_path / "first"])
    assert summary["reused"] == {"single/seed0": str(tmp_path / "first" / "runs" / "single" / "seed0")}
    assert list(summary["timings_s"]) == ["be-r1/seed0"] and summary["missing"] == []
    first_single, second_single = (tmp_path / folder / "runs" / "single" / "seed0" for folder in ("first", "second"))
    assert {name: data for name, (_, data) in _snapshot(first_single).items()} == \
        {name: data for name, (_, data) in _snapshot(second_single).items()}
    other_fit = study.load_preset(str(first_file))
    spec = study.run_specs(other_fit)[0]
    assert study.is_reusable(first_single, spec, other_fit)
    assert not study.is_reusable(first_single, spec, dataclasses.replace(other_fit, distance_max_iter=6))


def _snapshot(run_dir: Path) -> dict[str, tuple[int, bytes]]:
    return {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in sorted(run_dir.iterdir())}


@pytest.mark.slow
def test_study_killed_midway_and_resumed_redoes_no_finished_run(tmp_path, monkeypatch):
    """SIGKILL while the second run trains, then --resume: the first run's files are untouched (not redone), the
    second run finishes, and the summary covers both."""
    preset_file = tmp_path / "two-runs.toml"
    preset_file.write_text(TWO_RUN_PRESET)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "empirics", "study", str(preset_file), "--out", str(out)]
    monkeypatch.setenv("EGEO_DATA_ROOT", os.environ.get("EGEO_DATA_ROOT", str(DATA_ROOT)))
    env = dict(os.environ)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first, second = out / "runs" / "single" / "seed0", out / "runs" / "be-r1" / "seed0"
    deadline = time.monotonic() + 240
    while not (second / "config.json").is_file() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert folder.is_finished(first) and not folder.is_finished(second), "kill did not land while run 2 trained"
    before = _snapshot(first)
    study.run_study(str(preset_file), out, resume=True)
    assert _snapshot(first) == before
    assert folder.is_finished(second)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["runs"]) == {"single", "be-r1"} and summary["missing"] == []
    assert list(summary["timings_s"]) == ["be-r1/seed0"]  # the killed invocation wrote no summary
    study.run_study(str(preset_file), out, resume=True)  # nothing to run: the wall times recorded are kept
    assert json.loads((out / "summary.json").read_text())["timings_s"] == summary["timings_s"]


@pytest.mark.slow
@pytest.mark.parametrize("name", study.available_presets())
def test_every_preset_runs_end_to_end_on_tiny_subsets(name, tmp_path, tiny_image_root, monkeypatch):
    """--tiny: every run of the preset trains, evaluates, is analysed and reported, on a tiny
    data root in torchvision's formats (MNIST, Fashion-MNIST, CIFAR-10, SVHN), so no preset needs real data here."""
    monkeypatch.setenv("EGEO_DATA_ROOT", str(tiny_image_root))
    preset = study.load_preset(name)
    summary = study.run_study(name, tmp_path / "out", tiny=True)
    assert summary["missing"] == [] and set(summary["runs"]) == set(preset.runs)
    assert (tmp_path / "out" / "report.md").is_file() and (tmp_path / "out" / "report.tex").is_file()


def _fake_run(run_dir: Path, fields: dict, finished: bool = True) -> None:
    """A run folder as the engine leaves it: config.json (with provenance), and when ``finished`` the completion
    marker and the result files (contents are not read by the checks below)."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"config": fields, "seed": fields.get("seed", 0)}))
    if finished:
        for name in ("COMPLETE", "eval.json", "diversity.json"):
            (run_dir / name).write_text("{}")


class _NothingTrained(Exception):
    """Raised instead of training: a test checks what the study decided before any run starts."""


def _no_training(*args, **kwargs):
    raise _NothingTrained


def _two_run_preset(folder: Path, text: str = TWO_RUN_PRESET) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "two-runs.toml").write_text(text)
    return folder / "two-runs.toml"


def test_finished_runs_trained_under_another_config_are_listed_and_refused(tmp_path, monkeypatch):
    """Defect 1: a finished run whose config.json differs from the preset's config (here n_train 128 → 64) was
    counted as finished and summarised; now the study lists each such run (key: old → new), trains nothing and
    asks for --rerun or another --out."""
    preset_file = _two_run_preset(tmp_path / "old")
    out = tmp_path / "out"
    for spec in study.run_specs(study.load_preset(str(preset_file))):
        _fake_run(out / spec.relative_dir, study.build_config(spec).to_dict())
    changed = _two_run_preset(tmp_path / "new", TWO_RUN_PRESET.replace("n_train = 128", "n_train = 64"))
    monkeypatch.setattr(study, "_run_all", _no_training)
    with pytest.raises(BadInput) as error:
        study.run_study(str(changed), out)
    message = str(error.value)
    assert message.startswith("2 run(s) in") and "n_train (128 → 64)" in message and "--rerun" in message
    assert "runs/single/seed0" in message and "runs/be-r1/seed0" in message and "\n" not in message
    with pytest.raises(_NothingTrained):  # --rerun retrains them
        study.run_study(str(changed), out, rerun=True)


def test_a_finished_run_is_kept_when_its_config_matches_with_older_files_missing_keys_as_defaults(tmp_path):
    """Same config (execution keys aside) → nothing stale; a key absent from an older config.json counts as its
    default, so the committed studies stay recognised; a missing key whose preset value is not the default differs."""
    preset = study.load_preset(str(_two_run_preset(tmp_path)))
    spec = study.run_specs(preset)[0]
    fields = study.build_config(spec).to_dict()
    older = {key: value for key, value in fields.items() if key not in ("de_mode", "threads")}  # default / execution
    _fake_run(tmp_path / "out" / spec.relative_dir, {**older, "eval_batch_size": 17})
    assert study.stale_runs([spec], tmp_path / "out", resume=False) == {}
    without_n_train = {key: value for key, value in fields.items() if key != "n_train"}
    _fake_run(tmp_path / "out2" / spec.relative_dir, without_n_train)
    assert study.stale_runs([spec], tmp_path / "out2", resume=False) == \
        {str(spec.relative_dir): "n_train (0 → 128)"}


def test_a_partial_run_of_another_config_is_refused_only_when_it_would_be_resumed(tmp_path):
    """With --resume a started run is continued, so its config must match too; without it the run restarts."""
    preset = study.load_preset(str(_two_run_preset(tmp_path)))
    spec = study.run_specs(preset)[0]
    _fake_run(tmp_path / "out" / spec.relative_dir, {**study.build_config(spec).to_dict(), "lr": 0.5},
              finished=False)
    assert study.stale_runs([spec], tmp_path / "out", resume=True) == {str(spec.relative_dir): "lr (0.5 → 0.001)"}
    assert study.stale_runs([spec], tmp_path / "out", resume=False) == {}


def test_another_studys_folder_is_refused_unless_rerun(tmp_path, monkeypatch):
    """Defect 9: `study X --out <folder of study Y>` used to overwrite Y's summary and report without asking."""
    preset_file = _two_run_preset(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "summary.json").write_text(json.dumps({"preset": "paper-mnist", "runs": {}}))
    monkeypatch.setattr(study, "_run_all", _no_training)
    with pytest.raises(BadInput, match=r"holds the study 'paper-mnist', not 'two-runs': choose another --out, or "
                                       r"pass --rerun"):
        study.run_study(str(preset_file), tmp_path / "other")
    with pytest.raises(_NothingTrained):
        study.run_study(str(preset_file), tmp_path / "other", rerun=True)


def test_partial_runs_restarted_without_resume_are_announced(tmp_path, monkeypatch, capsys):
    """Defect 9: without --resume a started, unfinished run restarts from scratch; the study now says so and names
    --resume (it used to say only "N to run")."""
    preset_file = _two_run_preset(tmp_path)
    spec = study.run_specs(study.load_preset(str(preset_file)))[0]
    _fake_run(tmp_path / "out" / spec.relative_dir, study.build_config(spec).to_dict(), finished=False)
    monkeypatch.setattr(study, "_run_all", _no_training)
    with pytest.raises(_NothingTrained):
        study.run_study(str(preset_file), tmp_path / "out")
    assert "1 partial runs restart from scratch; use --resume to continue them" in capsys.readouterr().err
    with pytest.raises(_NothingTrained):
        study.run_study(str(preset_file), tmp_path / "out", resume=True)
    assert "restart from scratch" not in capsys.readouterr().err


def _worker_pids(parent: int) -> list[int]:
    """Pids of the multiprocessing spawn children of ``parent`` (from /proc: ppid and command line)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent and b"spawn_main" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


def _alive(pid: int) -> bool:
    """Running or sleeping (a zombie or a vanished pid is not alive)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads worker pids from /proc (Linux)")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_a_two_job_study_stops_every_worker(signum, tmp_path, tiny_image_root):
    """Defect 4: SIGTERM / SIGINT to the parent of `study --jobs 2` used to leave both workers training, re-parented.
    Now the parent stops them: each checkpoints its run and exits, then the parent exits 128 + signal; no worker
    survives. Real processes and signals; runs long enough (200 epochs) that only the signal can end them."""
    preset_file = _two_run_preset(tmp_path, TWO_RUN_PRESET.replace("epochs = 2", "epochs = 200"))
    out = tmp_path / "out"
    env = {**os.environ, "EGEO_DATA_ROOT": str(tiny_image_root)}
    process = subprocess.Popen([sys.executable, "-m", "empirics", "study", str(preset_file), "--out", str(out),
                                "--jobs", "2"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = [out / "runs" / name / "seed0" / "checkpoint.pt" for name in ("single", "be-r1")]
    deadline = time.monotonic() + 240
    while not all(path.is_file() for path in checkpoints) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.1)
    workers = _worker_pids(process.pid)
    assert len(workers) == 2 and all(path.is_file() for path in checkpoints), "both runs must be training"
    os.kill(process.pid, signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr.decode()
    assert "every worker checkpointed its run and exited; continue with --resume" in stderr.decode()
    time.sleep(1.0)
    assert [pid for pid in workers if _alive(pid)] == []
    for path in checkpoints:
        assert not (path.parent / "COMPLETE").exists() and "stopped by signal" in (path.parent / "train.log").read_text()


@pytest.mark.parametrize("addition,message", [
    ("[study]\nseed = 3\n", r"unknown \[study\] key\(s\) seed: valid are claim, evidence, seeds"),
    ("[tiny]\nn_trian = 64\n", r"unknown \[tiny\] key\(s\) n_trian: valid are dataset"),
    ("[base]\nepoch = 3\n", r"unknown \[base\] key\(s\) epoch: valid are dataset"),
    ("[runs.de]\nmethod = 'deep-ensemble'\nmembrs = 2\n", r"unknown \[runs.de\] key\(s\) membrs"),
    ("[sweep]\nlr = [0.1]\n", r"unknown top-level table\(s\) sweep: valid are study, base, runs, tiny, reference"),
    ("[reference.nope]\n'test/ensemble/accuracy' = 0.9\n", r"unknown \[reference.NAME\] run\(s\) nope"),
])
def test_preset_keys_are_validated_like_config_keys(addition, message, tmp_path):
    """Deliver 4: a typo'd [study], [tiny], [base] or [runs.NAME] key, or an unknown table, used to be ignored; now
    it is a one-line error listing the valid keys (as Config does for config keys)."""
    # a TOML table is defined once: keys for [study] and [base] go into the existing tables
    existing = {"[study]": "seeds = 1\n", "[base]": "threads = 1\n"}
    header, keys = addition.split("\n", 1)
    text = TWO_RUN_PRESET.replace(existing[header], existing[header] + keys) if header in existing else \
        TWO_RUN_PRESET + addition
    path = _two_run_preset(tmp_path, text)
    with pytest.raises(BadInput, match=message):
        study.load_preset(str(path))


# ---------------------------------------------------------------- MLP open-question presets and headline tests

MLP_QUESTION_PRESETS = ("mlp-scale", "mlp-training-time", "mlp-init")


@pytest.mark.parametrize("name", MLP_QUESTION_PRESETS)
def test_mlp_question_presets_preregister_a_headline_test_with_at_least_three_seeds(name):
    """Each states a headline hypothesis with its statistic, runs, direction and value, and has >= 3 seeds."""
    preset = study.load_preset(name)
    assert preset.seeds >= 3 and len(preset.headline["hypothesis"]) > 40
    assert preset.headline["statistic"] in ("ratio", "difference", "ratio_of_ratios")
    assert all(contrast["name"] for contrast in preset.contrasts)


def test_mlp_scale_single_models_have_as_many_parameters_as_the_batchensemble():
    """single-matched-X has the widths empirics.models.ensembles.matching_widths gives for be-r1-X's parameter count
    (the preset's literal widths cannot go stale), within 1% of it."""
    from empirics.models.ensembles import count_parameters, matching_widths
    preset = study.load_preset("mlp-scale")
    for name, fields in preset.runs.items():
        if not name.startswith("single-matched-"):
            continue
        be = study.build_config(study.RunSpec(f"be-r1-{name.rsplit('-', 1)[1]}", 0,
                                              preset.runs[f"be-r1-{name.rsplit('-', 1)[1]}"]))
        single = study.build_config(study.RunSpec(name, 0, fields))
        target = count_parameters(be.model_spec())
        plain = dataclasses.replace(single.model_spec(), widths=be.widths)
        assert single.widths == matching_widths(plain, target)
        assert abs(count_parameters(single.model_spec()) - target) / target < 0.01


def test_mlp_init_headline_compares_random_signs_with_a_zero_mean_init_of_the_same_multiplier_second_moment():
    """A dense multiplier entry is r·s with r, s independent fast-factor draws: E[(r·s)²] = E[r²]·E[s²]. The headline's
    two sides (built from the preset) both have mean 0 and E[(r·s)²] = 1; the N(0, 0.5) contrast side has
    0.25² = 0.0625, the 16× scale gap the headline must not carry. The built layer's factors of the headline's N(0, 1)
    side have sample mean 0 and second moment 1 (8,000 output-side entries: SE of the second moment √(2 / 8000) = 0.016
    for N(0, 1), tolerance 0.1 ≈ 6 SE; of the mean 0.011, tolerance 0.07), so the preset's fields reach the layer."""
    import torch
    from empirics.models.ensembles import build_model
    from empirics.models.layers import rank_one_moments

    preset = study.load_preset("mlp-init")
    head = preset.headline

    def multiplier_second_moment(run: str) -> float:
        config = study.build_config(study.RunSpec(run, 0, preset.runs[run]))
        mean, second = rank_one_moments(config.init, config.init_std, config.sign_prob, config.init_mean)
        assert mean == 0.0
        return second ** 2

    assert (head["a"], head["b"]) == ("be-r1-init-normal0-std1", "be-r1-init-sign")
    assert multiplier_second_moment(head["a"]) == multiplier_second_moment(head["b"]) == 1.0
    assert multiplier_second_moment("be-r1-init-normal0") == pytest.approx(0.0625, abs=1e-15)
    assert any((c["a"], c["b"]) == ("be-r1-init-normal0", "be-r1-init-sign") for c in preset.contrasts)
    torch.manual_seed(0)
    config = study.build_config(study.RunSpec(head["a"], 0, {**preset.runs[head["a"]], "widths": [2000]}))
    output_side = build_model(config.model_spec()).net.hidden[0].fast_factors[0].detach().double()
    assert output_side.numel() == 8000
    assert abs(float(output_side.mean())) < 0.07 and abs(float(output_side.pow(2).mean()) - 1.0) < 0.1


@pytest.mark.parametrize("headline,message", [
    ({"statistic": "ratio"}, "lacks hypothesis"),
    ({"hypothesis": "h", "metric": "m", "a": "x", "b": "be-r1", "statistic": "ratio", "expect": "above",
      "value": 1}, "a='x' is not a run"),
    ({"hypothesis": "h", "metric": "m", "a": "be-r1", "b": "be-r1", "statistic": "mean", "expect": "above",
      "value": 1}, "statistic='mean' is unknown"),
    ({"hypothesis": "h", "metric": "m", "a": "be-r1", "b": "be-r1", "statistic": "ratio_of_ratios",
      "expect": "above", "value": 1}, "needs run c"),
    ({"hypothesis": "h", "metric": "m", "a": "be-r1", "b": "be-r1", "statistic": "ratio", "expect": "up",
      "value": 1}, "expect='up' is unknown"),
])
def test_a_malformed_headline_test_is_a_one_line_error(headline, message, tmp_path, monkeypatch):
    lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in headline.items())
    (tmp_path / "p.toml").write_text(f'[study]\nclaim = "c"\nevidence = "e"\nseeds = 1\n[study.headline]\n{lines}\n'
                                     f'[runs.be-r1]\nmethod = "batchensemble"\n')
    monkeypatch.setattr(study, "PRESET_DIR", tmp_path)
    with pytest.raises(BadInput, match=message):
        study.load_preset("p")


def test_headline_contrast_pairs_sides_of_one_run_by_seed():
    """evaluate_contrast reads each side's per-seed values from the summary; sides of the same run are paired on their
    common seeds, so a run whose metric doubles on every seed gives ratio 2 with a zero-width CI."""
    summary = {"runs": {"r": {"seeds": [0, 1, 2], "metrics": {"m@2": {"values": [2.0, 4.0, 6.0]},
                                                              "m@1": {"values": [1.0, 2.0, 3.0]}}}}}
    entry = {"hypothesis": "h", "metric": "m@2", "metric_b": "m@1", "a": "r", "b": "r", "statistic": "ratio",
             "expect": "above", "value": 1.0}
    found = study.evaluate_contrast(summary, entry)
    assert found["estimate"] == pytest.approx(2.0) and found["ci_low"] == pytest.approx(2.0)
    assert found["verdict"] == "supported" and found["paired"] == ["r"]


def test_summarise_only_refuses_unfinished_runs(tmp_path):
    preset_file = tmp_path / "two.toml"
    preset_file.write_text(TWO_RUN_PRESET)
    with pytest.raises(BadInput, match="--summarise-only: 2 run"):
        study.run_study(str(preset_file), tmp_path / "out", summarise_only=True)


def test_a_study_on_two_data_sets_gets_one_link_per_data_set_never_pooled():
    """Within each data set the weight distance and the shift MI are perfectly anti-ordered (ρ = −1), but the second
    data set's values are larger on both axes, so pooled ranks would read a positive link. The study reports each data
    set's link (ρ = −1 both) under ``link:<dataset>`` and no pooled ``link``; one data set keeps the plain key."""
    distance, mi = diversity.HEADLINE_LINK
    points = [{"run": f"{dataset}-{i}", "seed": 0, "method": "batchensemble", "dataset": dataset,
               distance: scale * (1 + i), mi: scale * (4 - i)}
              for dataset, scale in (("small", 1.0), ("large", 100.0)) for i in range(4)]
    assert diversity.link_analysis(points)["headline"]["rho"] > 0  # what pooling would have read
    links = study.link_analyses(points)
    assert links[diversity.LINK_STRATA] == ["large", "small"] and diversity.LINK not in links
    for dataset in ("large", "small"):
        assert links[diversity.link_key(diversity.LINK, dataset)]["headline"]["rho"] == pytest.approx(-1.0)
    one = study.link_analyses([point for point in points if point["dataset"] == "small"])
    assert set(one) == {diversity.LINK} and one[diversity.LINK]["headline"]["rho"] == pytest.approx(-1.0)
