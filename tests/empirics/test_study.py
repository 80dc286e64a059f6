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

from empirics import study
from empirics.config import Config
from empirics.cli import main
from theory.cli_support import BadInput, run_cli

ROOT = Path(__file__).resolve().parents[2]
DATA_ROOT = Path(os.environ.get("EGEO_DATA_ROOT", ROOT.parent / "shared" / "data"))
TWO_RUN_PRESET = """
[study]
claim = "test preset"
evidence = "two tiny runs"
seeds = 1
distance_max_iter = 5

[base]
dataset = "mnist"
arch = "mlp"
widths = [8]
epochs = 2
n_train = 128
patience = 0
threads = 1
shift_families = ["rotate"]

[runs.single]
method = "single"

[runs.be-r1]
method = "batchensemble"
rank = 1
"""


@pytest.mark.parametrize("name", study.available_presets())
def test_every_preset_states_its_claim_and_builds_valid_configs(name):
    """Each preset names a claim and its evidence, and every (run, seed) — full and --tiny — is a valid Config."""
    preset = study.load_preset(name)
    assert len(preset.claim) > 40 and len(preset.evidence) > 40
    for tiny in (False, True):
        for spec in study.run_specs(preset, tiny=tiny):
            assert isinstance(study.build_config(spec), Config)


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
    assert not study.is_finished(run_dir)
    preset = study.load_preset("paper-mnist")
    summary = study.summarise(preset, study.run_specs(preset, seeds=1), tmp_path)
    assert summary["runs"] == {} and "runs/single/seed0" in summary["missing"]
    (run_dir / "COMPLETE").write_bytes(b"")
    assert study.is_finished(run_dir)


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
    assert study.is_finished(first) and not study.is_finished(second), "kill did not land while run 2 trained"
    before = _snapshot(first)
    study.run_study(str(preset_file), out, resume=True)
    assert _snapshot(first) == before
    assert study.is_finished(second)
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
    """single-matched-X has the widths empirics.models.matching_widths gives for be-r1-X's parameter count (the
    preset's literal widths cannot go stale), within 1% of it."""
    from empirics.models import count_parameters, matching_widths
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
