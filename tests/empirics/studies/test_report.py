"""The study report: every number comes from the saved results (change a result file, the report changes), the
reference numbers sit beside ours, one paragraph per open question (docs/paper.md §3), booktabs LaTeX tables."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from empirics.studies import report
from empirics.studies import runner as study
from infra.errors import BadInput

PRESET = "paper-mnist"


def write_finished_run(out: Path, run: str, seed: int, metrics: dict[str, float], scalars: dict) -> None:
    """A finished run as the study leaves it: completion marker, eval.json and diversity.json."""
    run_dir = out / "runs" / run / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "COMPLETE").write_bytes(b"")
    (run_dir / "eval.json").write_text(json.dumps({"metrics": metrics}))
    (run_dir / "diversity.json").write_text(json.dumps({"scalars": scalars}))


def fake_study(out: Path, be_accuracies=(0.9, 0.8), mcd: bool = False) -> dict:
    """paper-mnist with two seeds of BE rank 1 and DE (and MC Dropout with ``mcd``), hand-chosen values; returns the
    written summary."""
    for seed, accuracy in enumerate(be_accuracies):
        if mcd:  # the least weight distance and the most MI under shift
            write_finished_run(out, "mcd", seed, {"test/ensemble/accuracy": 0.9, "shift/mutual_information": 9 + seed},
                               {"weights": {"network": {"mean_cosine": 0.99, "mean_relative_distance": 0.1}}})
        write_finished_run(out, "be-r1", seed, {"test/ensemble/accuracy": accuracy, "shift/mutual_information": 0.01},
                           {"weights": {"network": {"mean_cosine": 0.95, "mean_relative_distance": 0.3 + seed / 10}},
                            "theory": {"reachable_fraction": 0.27}})
        write_finished_run(out, "de", seed, {"test/ensemble/accuracy": 0.97, "shift/mutual_information": 0.1 + seed},
                           {"weights": {"network": {"mean_cosine": 0.01, "mean_relative_distance": 1.4 + seed / 10}},
                            "theory": {"reachable_fraction": 1.0}})
    preset = study.load_preset(PRESET)
    summary = study.summarise(preset, study.run_specs(preset, seeds=2), out)
    (out / "summary.json").write_text(json.dumps(summary))
    return summary


def test_report_numbers_are_generated_from_the_result_files(tmp_path):
    """BE accuracies 0.9 and 0.8 give mean 0.85 and sample std √0.005 = 0.0707; rewriting a result file changes
    the report accordingly (so no number is typed)."""
    fake_study(tmp_path)
    text = report.write_report(tmp_path).read_text()
    assert "0.8500 ± 0.0707" in text
    fake_study(tmp_path, be_accuracies=(0.6, 0.6))
    text = report.write_report(tmp_path).read_text()
    assert "0.6000 ± 0.0000" in text and "0.8500 ± 0.0707" not in text


def test_split_headings_keep_the_case_of_their_acronyms(tmp_path):
    """Only a heading's first letter is raised: "OOD detection", not "Ood detection" (str.capitalize lowers the rest)."""
    fake_study(tmp_path)
    headings = [line for line in report.write_report(tmp_path).read_text().splitlines() if line.startswith("## ")]
    assert "## Test set" in headings
    assert any(line.startswith("## OOD detection (OOD = positive") for line in headings), headings


def test_reference_numbers_sit_beside_ours(tmp_path):
    """The reference table row of BE rank 1 test accuracy shows our mean ± std beside 0.972 (docs/paper.md §4)."""
    fake_study(tmp_path)
    rows = report.reference_table(report.load_summary(tmp_path))[1]
    assert ["be-r1", "test/ensemble/accuracy", "0.8500 ± 0.0707", "2", "0.972"] in rows


def test_one_paragraph_per_open_question(tmp_path):
    """Each open question of docs/paper.md §3 gets its own paragraph, with generated numbers where evidence exists."""
    fake_study(tmp_path)
    text = report.write_report(tmp_path).read_text()
    for question, _ in report.OPEN_QUESTIONS:
        assert text.count(f"**{question}**") == 1
    # the link paragraph quotes the Spearman estimate of the summary (4 runs × seeds with both measures; 2
    # configurations, too few for a cluster-bootstrap CI)
    head = report.load_summary(tmp_path)["link"]["headline"]
    assert head["n"] == 4 and f"ρ = {head['rho']:.2f} (no CI)" in text


def test_the_link_without_mc_dropout_leaves_out_exactly_its_runs(tmp_path):
    """With MCD in the study the summary adds the link over the other ensembles: n drops by MCD's 2 runs, and the
    BE/DE points alone are ordered up to BE's tied MI (ranks x = 1, 2, 3, 4 and y = 1.5, 1.5, 3, 4: ρ = 3/√10),
    which MCD's outlying points (least weight distance, most MI) break in the link over all runs; the report prints
    both."""
    summary = fake_study(tmp_path, mcd=True)
    every, without = summary["link"]["headline"], summary["link_without_mc_dropout"]["headline"]
    assert (every["n"], without["n"]) == (6, 4)
    assert without["rho"] == pytest.approx(3 / 10 ** 0.5, abs=1e-12) and every["rho"] < 0.5
    text = report.write_report(tmp_path).read_text()
    assert "Over the ensembles without MC Dropout" in text and f"ρ = {without['rho']:.2f} (no CI)" in text


def test_a_study_without_mc_dropout_has_one_link_analysis(tmp_path):
    assert "link_without_mc_dropout" not in fake_study(tmp_path)
    assert "Over the ensembles without MC Dropout" not in report.write_report(tmp_path).read_text()


def test_the_link_paragraph_reads_the_cluster_cis_and_reports_within_configurations_separately(tmp_path):
    """The paragraph states an association across configurations only when the cluster-bootstrap CI excludes 0, never
    calls it evidence for a link, and says separately whether the within-configuration CI excludes 0."""
    summary = fake_study(tmp_path)
    head = summary["link"]["headline"]
    no_within = {"rho": 0.1, "ci_low": -0.3, "ci_high": 0.5}
    excluded = {**head, "rho": 0.9, "ci_low": 0.5, "ci_high": 1.0, "within": no_within}
    included = {**head, "rho": 0.2, "ci_low": -0.4, "ci_high": 0.6, "within": no_within}
    both = {**excluded, "within": {"rho": 0.6, "ci_low": 0.2, "ci_high": 0.8}}
    for headline, verdicts in ((excluded, ["An association across configurations whose CI excludes 0 is not the "
                                           "formal link", "no association is established"]),
                               (included, ["For these pairs this study establishes no association across configurations"]),
                               (both, ["Within configurations, among seeds, an association's CI also excludes 0"])):
        paragraph = report.question_link({**summary, "link": {**summary["link"], "headline": headline,
                                                                "pairs": [headline]}})
        assert all(verdict in paragraph for verdict in verdicts) and "evidence for a link" not in paragraph


def test_a_link_over_too_few_configurations_is_reported_without_a_ci_and_never_established():
    """Four configurations: ρ is printed, the sentence says why there is no CI, and nothing is called established."""
    head = {"parameter": "weight relative distance", "function": "mutual information (shift)", "rho": 0.8,
            "ci_low": None, "ci_high": None, "n_configs": 4, "between": None, "within": None}
    sentence = report.link_sentence(head)
    assert "ρ = 0.80 (no CI), between" in sentence and "no CI with 4 configurations (a cluster bootstrap needs at least 5)" in sentence
    assert not report.link_established(head)


def test_the_init_paragraph_gives_the_init_with_the_highest_mean_mi_its_ratio_to_de_and_its_accuracy_cost():
    """Of two rank-1 inits, the one with the higher mean MI under shift is named as such (picked by the mean alone,
    not called "the most diverse") with its ratio to DE's (0.15 / 0.10 = 1.50×,
    zero-width CI for seed-constant values) and its shift accuracy difference to DE (0.67 − 0.71 = −0.040); random
    signs are cited as prior practice."""
    def run(fields: dict, mi: float, ece: float, accuracy: float) -> dict:
        values = {"shift/mutual_information": mi, "shift/ensemble/ece": ece, "shift/ensemble/accuracy": accuracy}
        return {"fields": {"method": "batchensemble", "rank": 1, **fields}, "seeds": [0, 1],
                "metrics": {key: {"mean": value, "std": 0.0, "values": [value, value]}
                            for key, value in values.items()}}
    summary = {"runs": {"be-r1": run({}, 0.02, 0.2, 0.69),
                        "be-r1-init-sign": run({"init": "random_sign"}, 0.15, 0.12, 0.67),
                        "de": run({"method": "deep-ensemble"}, 0.10, 0.09, 0.71)}}
    paragraph = report.question_init(summary)
    assert ("The init with the highest mean MI under shift, random signs p = 0.5 (be-r1-init-sign), has 1.50× "
            "[1.50, 1.50]" in paragraph) and "most diverse" not in paragraph
    assert "(difference -0.040 [-0.040, -0.040])" in paragraph
    assert "shift ECE 0.1200 ± 0.0000 vs DE 0.0900 ± 0.0000" in paragraph and "random_sign_init" in paragraph
    assert "with more MI under shift than DE and lower shift accuracy than DE (95% CIs)" in paragraph


def test_the_k_controls_compare_pairwise_disagreement_and_jsd_not_mi():
    """k = 8 over k = 4: MI 0.4 / 0.2 = 2.00× (plug-in MI grows with k for the same member spread), pairwise
    disagreement 0.3 / 0.2 = 1.50× and pairwise JSD 0.1 / 0.1 = 1.00×: the k control reports the last two and not the
    MI ratio; the frozen-fast-weights control (same k) still reports MI (0.1 / 0.2 = 0.50×)."""
    def run(fields: dict, mi: float, disagreement: float, jsd: float) -> dict:
        values = {"shift/mutual_information": mi, "shift/disagreement": disagreement, "shift/pairwise_jsd": jsd}
        return {"fields": {"method": "batchensemble", "rank": 1, **fields}, "seeds": [0, 1],
                "metrics": {key: {"mean": value, "std": 0.0, "values": [value, value]}
                            for key, value in values.items()}}
    summary = {"runs": {"be-r1": run({}, 0.2, 0.2, 0.1), "be-r1-init-sign": run({"init": "random_sign"}, 0.3, 0.3, 0.2),
                        "be-r1-k8": run({"members": 8}, 0.4, 0.3, 0.1),
                        "be-r1-frozen": run({"fast_lr_mult": 0.0}, 0.1, 0.1, 0.05)}}
    paragraph = report.question_init(summary)
    k_control = next(part for part in paragraph.split("; ") if part.startswith("k = 8 at N(1, 0.5)"))
    assert "pairwise disagreement under shift 1.50× [1.50, 1.50]" in k_control
    assert "pairwise JSD under shift 1.00× [1.00, 1.00]" in k_control
    assert "MI" not in k_control and "2.00×" not in paragraph
    assert "frozen fast weights (fast LR 0) at N(1, 0.5): MI under shift 0.50× [0.50, 0.50]" in paragraph
    assert "grows with k for the same spread of members" in paragraph


def test_the_init_paragraph_compares_only_runs_that_differ_in_the_init_on_any_architecture():
    """resnet18-mnist: channel-wise N(1, 0.5) and random signs differ only in the init, the flattened-kernel N(1, 0.5)
    run also in its variant. The paragraph compares the first two (random signs: 0.2 / 0.1 = 2.00× DE's MI under
    shift) and leaves the flattened run out; without the channel-wise N(1, 0.5) run no pair is left."""
    def run(fields: dict, mi: float) -> dict:
        values = {"shift/mutual_information": mi, "shift/ensemble/accuracy": 0.7, "shift/ensemble/ece": 0.1}
        return {"fields": {"arch": "resnet18", "width_mult": 0.25, "method": "batchensemble", "rank": 1, **fields},
                "seeds": [0, 1], "metrics": {key: {"mean": value, "std": 0.0, "values": [value, value]}
                                             for key, value in values.items()}}
    runs = {"be-r1-channel": run({}, 0.02), "be-r1-signs": run({"init": "random_sign"}, 0.2),
            "be-r1-flattened": run({"variant": "flattened-kernel"}, 0.03), "de": run({"method": "deep-ensemble"}, 0.1)}
    assert report.init_sweep({"runs": runs}) == ["be-r1-channel", "be-r1-signs"]
    paragraph = report.question_init({"runs": runs})
    assert "random signs p = 0.5 (be-r1-signs): MI under shift 0.2000 ± 0.0000 = 2.00× [2.00, 2.00] DE's" in paragraph
    assert "N(1, 0.5) (be-r1-channel)" in paragraph and "be-r1-flattened" not in paragraph
    without = {name: value for name, value in runs.items() if name != "be-r1-channel"}
    assert "no BE runs that differ only in the fast-weight init" in report.question_init({"runs": without})


def test_rank_paragraph_quantifies_the_rise_and_calls_it_a_rise_only_when_the_ci_lies_above_one():
    """MI under shift 0.02 at r = 1 and 0.04 at full rank: the paragraph gives the 2.00× ratio with its CI and calls
    it a rise; with seeds spread so widely that the CI includes 1, it establishes no change."""
    def run(rank, values: list[float]) -> dict:
        return {"fields": {"method": "batchensemble", "rank": rank}, "seeds": [0, 1],
                "metrics": {"shift/mutual_information": {"mean": sum(values) / 2, "std": 0.0, "values": values}}}
    paragraph = report.question_rank({"runs": {"be-r1": run(1, [0.02, 0.02]), "be-full": run("full", [0.04, 0.04])}})
    assert "changes by 2.00× [2.00, 2.00]" in paragraph and "a rise (the CI lies above 1)" in paragraph
    spread = report.question_rank({"runs": {"be-r1": run(1, [0.01, 0.03]), "be-full": run("full", [0.01, 0.07])}})
    assert "changes by 2.00× [" in spread and "the CI includes 1, so no change is established" in spread
    assert "a rise" not in spread


def test_rank_paragraph_pairs_runs_that_differ_only_in_the_rank_at_any_init():
    """mlp-init: rank 4 and rank 1 with random signs (MI 0.2 and 0.1: 2.00×) form a sweep although no N(1, 0.5) run
    has a second rank; the N(1, 0.5) run and the k = 2 random-sign run differ in more than the rank and are left out.
    The init note is the random-sign one: μ = 0, E[X²] = 1, multiplier std √(1 − 0) = 1, ρ_4 = √(1/4) = 0.5."""
    def run(fields: dict, mi: float) -> dict:
        return {"fields": {"method": "batchensemble", **fields}, "seeds": [0, 1],
                "metrics": {"shift/mutual_information": {"mean": mi, "std": 0.0, "values": [mi, mi]}}}
    summary = {"runs": {"be-r1": run({}, 0.01), "be-r1-init-sign": run({"init": "random_sign"}, 0.1),
                        "be-r1-init-sign-k2": run({"init": "random_sign", "members": 2}, 0.3),
                        "be-r4-init-sign": run({"init": "random_sign", "rank": 4}, 0.2)}}
    assert report.rank_sweeps(summary) == [["be-r1-init-sign", "be-r4-init-sign"]]
    paragraph = report.question_rank(summary)
    assert "single BE rank" not in paragraph and "no BE runs that differ only in the rank" not in paragraph
    assert "From be-r1-init-sign to be-r4-init-sign the MI under shift changes by 2.00× [2.00, 2.00]" in paragraph
    assert "Init (random signs p = 0.5" in paragraph and "r = 4: 0.500" in paragraph
    assert "std √(E[X²]² − μ⁴) = 1.000" in paragraph
    assert "be-r1 (" not in paragraph and "be-r1-init-sign-k2" not in paragraph
    alone = {"runs": {name: summary["runs"][name] for name in ("be-r1", "be-r1-init-sign-k2")}}
    assert "no BE runs that differ only in the rank" in report.question_rank(alone)


def test_batch_regime_paragraph_pairs_runs_that_differ_only_in_the_regime():
    """be-split differs from be-r1 only in batch_regime: its MI ratio (0.03 / 0.02 = 1.50×) is reported; a run that
    differs in anything else is not paired; the paragraph names the confound (1/k of the data per member and epoch)."""
    def run(fields: dict, mi: float) -> dict:
        return {"fields": {"method": "batchensemble", **fields}, "seeds": [0, 1],
                "metrics": {"shift/mutual_information": {"mean": mi, "std": 0.0, "values": [mi, mi]}}}
    summary = {"runs": {"be-r1": run({}, 0.02), "be-split": run({"batch_regime": "split"}, 0.03),
                        "be-sign-split": run({"batch_regime": "split", "init": "random_sign"}, 0.3)}}
    paragraph = report.question_batch_regime(summary)
    assert "be-split over be-r1: MI under shift 1.50× [1.50, 1.50]" in paragraph and "be-sign-split" not in paragraph
    assert "each member sees 1/k of the training data per epoch in the split regime" in paragraph


def test_variant_paragraph_pairs_the_flattened_kernel_run_with_the_channel_wise_run_of_the_same_init():
    """resnet18-mnist has two channel-wise rank-1 runs (N(1, 0.5) and random signs): the flattened-kernel run (an
    N(1, 0.5) run) is compared with the N(1, 0.5) one — MI under shift 0.03 / 0.02 = 1.50× — not with random signs."""
    def run(fields: dict, mi: float) -> dict:
        values = {"shift/mutual_information": mi, "shift/ensemble/accuracy": 0.7}
        return {"fields": {"arch": "resnet18", "method": "batchensemble", "rank": 1, **fields}, "seeds": [0, 1],
                "metrics": {key: {"mean": value, "std": 0.0, "values": [value, value]}
                            for key, value in values.items()}}
    summary = {"runs": {"be-r1-channel": run({}, 0.02), "be-r1-signs": run({"init": "random_sign"}, 0.2),
                        "be-r1-flattened": run({"variant": "flattened-kernel"}, 0.03)}}
    paragraph = report.question_variant(summary)
    assert "flattened-kernel (be-r1-flattened)" in paragraph and "vs channel-wise (be-r1-channel)" in paragraph
    assert "MI under shift 1.50× [1.50, 1.50] of the channel-wise run's" in paragraph
    assert "be-r1-signs" not in paragraph
    lone = {"runs": {"be-r1-signs": summary["runs"]["be-r1-signs"],
                     "be-r1-flattened": summary["runs"]["be-r1-flattened"]}}
    assert "no rank-1 BE run of another variant beside a channel-wise run" in report.question_variant(lone)


def test_latex_tables_use_booktabs_and_escape_text(tmp_path):
    """report.tex: booktabs rules, ± as math, underscores escaped."""
    fake_study(tmp_path)
    report.write_report(tmp_path)
    tex = (tmp_path / "report.tex").read_text()
    assert tex.count(r"\toprule") == tex.count(r"\bottomrule") >= 5
    assert r"0.8500 $\pm$ 0.0707" in tex
    assert "test/ensemble/accuracy" in tex.replace(r"\_", "_")
    assert re.search(r"(?<!\\)_", tex) is None  # every underscore escaped


def test_report_without_summary_is_a_clear_error(tmp_path):
    """No summary.json: a BadInput naming the file and the command that makes it."""
    with pytest.raises(BadInput, match="summary.json does not exist"):
        report.write_report(tmp_path)


# ---------------------------------------------------------------- ViT and regression studies (issue 15)

def fake_issue15_study(out: Path, preset: str, values: dict[str, list[dict[str, float]]]) -> dict:
    """A study of ``preset`` whose runs ``values`` (run -> per-seed metrics) are finished; others are missing."""
    seeds = max(len(per_seed) for per_seed in values.values())
    for run, per_seed in values.items():
        for seed, metrics in enumerate(per_seed):
            write_finished_run(out, run, seed, metrics,
                               {"weights": {"network": {"mean_cosine": 0.5, "mean_relative_distance": 0.3 + seed}}})
    loaded = study.load_preset(preset)
    summary = study.summarise(loaded, study.run_specs(loaded, seeds=seeds), out)
    (out / "summary.json").write_text(json.dumps(summary))
    return summary


def regression_values(be: list[float], sign: list[float], de: list[float]) -> dict[str, list[dict[str, float]]]:
    def seeds(values, rmse):
        return [{"shift/epistemic_variance": value, "test/ensemble/rmse": rmse + i / 100,
                 "shift/ensemble/nll": 1.0, "shift/ensemble/coverage_90": 0.8} for i, value in enumerate(values)]
    return {"toy-be-r1": seeds(be, 0.5), "toy-be-r1-sign": seeds(sign, 0.5), "toy-de": seeds(de, 0.4)}


def test_regression_report_says_be_epistemic_variance_is_below_de_when_the_ci_excludes_zero(tmp_path):
    """BE 0.001-0.0012 vs DE 0.05-0.06 over 3 seeds: Welch CI of the difference below 0 → 'below'; random signs
    0.030-0.032 above N(1, 0.5) → the init finding carries over; the tables are the regression ones."""
    fake_issue15_study(tmp_path, "regression", regression_values([0.001, 0.0011, 0.0012], [0.030, 0.031, 0.032],
                                                                 [0.05, 0.06, 0.055]))
    text = report.write_report(tmp_path).read_text()
    assert "toy-be-r1 0.0011 ± 0.0001 vs toy-de 0.0550 ± 0.0050" in text
    assert "BE is below the Deep Ensemble (the CI excludes 0)" in text
    assert "the MLP studies' init finding carries over" in text
    assert "| run | RMSE | NLL | coverage 90% |" in text and "| run | accuracy |" not in text
    assert "epistemic variance (shift)" in text  # the link's headline for a regression study


def test_regression_report_claims_nothing_when_seeds_overlap(tmp_path):
    """Overlapping seeds (BE 0.01-0.05 vs DE 0.02-0.04): the CI includes 0 → no difference claimed, no init claim."""
    fake_issue15_study(tmp_path, "regression", regression_values([0.01, 0.05, 0.03], [0.02, 0.04, 0.03],
                                                                 [0.02, 0.04, 0.03]))
    answer = report.question_regression_diversity(report.load_summary(tmp_path))
    assert "no difference established at this number of seeds" in answer and "excludes 0" not in answer
    assert "not established here" in report.question_regression_init(report.load_summary(tmp_path))


def test_regression_report_names_the_runs_that_trained_to_the_epoch_cap_in_every_seed(tmp_path):
    """toy-be-r1 ran the preset's maximum in all 3 seeds without stopping early → named as possibly under-trained;
    toy-be-r1-sign reached the cap in only 2 seeds and toy-de stopped early → not named."""
    summary = fake_issue15_study(tmp_path, "regression", regression_values([0.01, 0.05, 0.03], [0.02, 0.04, 0.03],
                                                                           [0.02, 0.04, 0.03]))
    limit = report.canonical(summary["runs"]["toy-be-r1"]["fields"])["epochs"]
    training = {"toy-be-r1": ([limit] * 3, [0, 0, 0]), "toy-be-r1-sign": ([limit, limit, limit - 1], [0, 0, 1]),
                "toy-de": ([limit, 20, 30], [0, 1, 1])}
    for run, (epochs, stopped) in training.items():
        summary["runs"][run]["metrics"].update({"train/epochs_run": {"values": epochs},
                                                "train/stopped_early": {"values": stopped}})
    assert report.runs_at_the_cap(summary, list(training)) == ["toy-be-r1"]
    answer = report.question_regression_diversity(summary)
    assert f"Training: toy-be-r1 ran all {limit} epochs in every seed" in answer and "toy-be-r1-sign ran" not in answer


def regression_study(out: Path, sign_rmse: list[float], de_rmse: list[float]) -> dict:
    """The regression preset with BE (N(1, 0.5) and random signs) and DE on both data sets, one seed per given diamonds
    RMSE (3 in most tests): diamonds' test RMSE as given (random signs, DE), the toy's random-sign BE 0.1 above its DE; each data set's BE at reachable
    fraction 0.3 (toy) or 0.2 (diamonds) and distance 0 to the rank-1 set, its DE at distance 0.5 (toy) or 0.7."""
    def run(dataset: str, method: str, seed: int, rmse: float) -> tuple[dict, dict]:
        toy = dataset == "toy-gap"
        scalars = {"weights": {"network": {"mean_cosine": 0.5, "mean_relative_distance": 0.3 + seed}},
                   "distance": {"network": {"rank1": {"relative_residual":
                                                      0.0 if method != "de" else 0.5 if toy else 0.7}}},
                   "theory": {"reachable_fraction": 1.0 if method == "de" else 0.3 if toy else 0.2}}
        metrics = {"shift/epistemic_variance": 0.01 * (1 + seed) * (3 if method == "de" else 1),
                   "test/ensemble/rmse": rmse, "shift/ensemble/rmse": 1.5, "shift/ensemble/nll": 2.0,
                   "shift/ensemble/coverage_90": 0.7}
        return metrics, scalars

    names = {"toy-gap": "toy", "diamonds": "diamonds"}
    seeds = len(sign_rmse)
    for dataset, prefix in names.items():
        for seed in range(seeds):
            rmse = {"be-r1": 0.6, "be-r1-sign": sign_rmse[seed] if dataset == "diamonds" else 0.6 + seed / 100,
                    "de": de_rmse[seed] if dataset == "diamonds" else 0.5 + seed / 100}
            for suffix, method in (("be-r1", "be"), ("be-r1-sign", "be"), ("de", "de")):
                write_finished_run(out, f"{prefix}-{suffix}", seed, *run(dataset, method, seed, rmse[suffix]))
    loaded = study.load_preset("regression")
    summary = study.summarise(loaded, study.run_specs(loaded, seeds=seeds), out)
    (out / "summary.json").write_text(json.dumps(summary))
    return summary


@pytest.mark.parametrize("sign_rmse,de_rmse,verdict", [
    ([0.40, 0.41, 0.42], [0.50, 0.51, 0.52], "TabM's claim holds here (the CI lies below 0)"),
    ([0.50, 0.51, 0.52], [0.40, 0.41, 0.42], "TabM's claim is contradicted here (the CI lies above 0"),
    ([0.40, 0.50, 0.45], [0.42, 0.48, 0.45], "TabM's claim is not resolved here (the CI includes 0"),
    ([0.25], [0.50], "TabM's claim is not resolved here (no CI)"),
])
def test_tabm_claim_is_judged_on_tabular_data_only_by_the_welch_interval_of_the_rmse_difference(
        tmp_path, sign_rmse, de_rmse, verdict):
    """Random-sign BE vs DE test RMSE on diamonds, Δ = sign − DE: −0.10 with seeds 0.01 apart (the Welch CI below 0:
    holds), +0.10 (above 0: contradicted), 0.00 with overlapping seeds (not resolved), −0.25 from one seed
    (no Welch interval exists: not resolved, saying so). The sentence states the claim with
    TabM's numbers, our means, Δ with its interval, and appears once: on diamonds, never on the toy (not tabular,
    though its random-sign BE is 0.1 above its DE), and with no doubled label."""
    regression_study(tmp_path, sign_rmse, de_rmse)
    answer = report.question_regression_diversity(report.load_summary(tmp_path))
    assert answer.count("TabM's claim (") == 1 and "RMSE: RMSE" not in answer
    diamonds, toy = answer.split("toy-gap — ")
    assert "TabM" not in toy and verdict in diamonds
    assert "California housing 0.441 vs 0.488" in diamonds and "k = 4" in diamonds
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    assert f"diamonds-be-r1-sign {mean(sign_rmse):.4f} ± " in diamonds and f"diamonds-de {mean(de_rmse):.4f} ± " in diamonds
    interval = "(no CI: fewer than 2 seeds" if "no CI" in verdict else "(95% Welch CI ["
    assert f"difference {mean(sign_rmse) - mean(de_rmse):+.4f} {interval}" in diamonds


def test_regression_parameter_table_has_regression_shift_columns_filled(tmp_path):
    """A regression study's parameter-space table ends in shift epistemic variance, RMSE, NLL and 90% coverage (the
    keys ``empirics.data.regression`` writes), filled for every run (no '–' column of classification metrics);
    a classification study keeps MI, disagreement and accuracies."""
    regression_study(tmp_path, [0.4, 0.41, 0.42], [0.5, 0.51, 0.52])
    header, rows = report.diversity_table(report.load_summary(tmp_path))
    assert header[-4:] == ["shift epistemic variance", "shift RMSE", "shift NLL", "shift coverage 90%"]
    assert not any(label.startswith("shift MI") or "acc." in label for label in header)
    written = {row[0]: row for row in rows}
    assert written["diamonds-de"][-4:] == ["0.0600 ± 0.0300", "1.5000 ± 0.0000", "2.0000 ± 0.0000", "0.7000 ± 0.0000"]
    text = report.write_report(tmp_path).read_text()
    assert "## Parameter-space diversity (whole network), with epistemic variance, error and calibration under shift" \
        in text and "feature CKA and the epistemic variance (variance of the member means) do" in text
    classification = tmp_path / "classification"
    fake_study(classification)
    assert "shift MI" in report.diversity_table(report.load_summary(classification))[0]


def test_regression_link_paragraph_uses_the_epistemic_variance_and_one_theory_clause_per_data_set(tmp_path):
    """The rank-1 link of a regression study pairs the distance to the rank-1 set with the epistemic variance under
    shift (not the MI, which regression runs lack), per data set; the theory clause of each data set names that data
    set's BE and DE runs with their reachable fraction (0.2 diamonds, 0.3 toy) and distances (0.7, 0.5)."""
    regression_study(tmp_path, [0.4, 0.41, 0.42], [0.5, 0.51, 0.52])
    answer = report.question_link(report.load_summary(tmp_path))
    assert answer.count("distance to rank-1 BE set (relative) and epistemic variance (shift) have pooled") == 2
    assert "mutual information" not in answer
    theory = answer.split("Link: ")[0]
    diamonds, toy = theory.split("on toy-gap, ")
    assert "on diamonds, rank-1 BE reaches a fraction 0.2000 ± 0.0000" in diamonds and "(diamonds-be-r1;" in diamonds
    assert "Deep Ensemble (diamonds-de) lies at relative distance 0.7000 ± 0.0000" in diamonds and "toy-" not in diamonds
    assert "rank-1 BE reaches a fraction 0.3000 ± 0.0000" in toy and "(toy-be-r1;" in toy
    assert "Deep Ensemble (toy-de) lies at relative distance 0.5000 ± 0.0000" in toy and "diamonds" not in toy


def test_vit_report_answers_the_attention_question_with_scope_and_init(tmp_path):
    """A vit-mnist summary: the Transformers question compares each BE run's MI under shift with the DE's, states the
    init comparison and BE with shared attention, from the numbers."""
    def seeds(values):
        return [{"shift/mutual_information": value, "test/ensemble/accuracy": 0.9} for value in values]
    fake_issue15_study(tmp_path, "vit-mnist", {"be-r1-channel": seeds([0.01, 0.011, 0.012]),
                                               "be-r1-signs": seeds([0.1, 0.11, 0.12]),
                                               "be-r1-signs-mlp": seeds([0.05, 0.051, 0.052]),
                                               "de": seeds([0.2, 0.21, 0.22])})
    answer = report.question_other_models(report.load_summary(tmp_path))
    assert answer.startswith("Attention (ViT")
    assert "be-r1-channel 0.0110 ± 0.0010 vs de 0.2100 ± 0.0100 (ratio 0.05)" in answer
    assert "the MLP studies' init finding carries over" in answer
    assert ("Scope: MI under shift, attention shared (BE in the patch embedding, MLP blocks and head) vs BE "
            "everywhere" in answer)
    assert "BE with shared attention is below BE everywhere (the CI excludes 0)" in answer


def test_classification_report_points_to_the_vit_and_regression_presets(tmp_path):
    fake_study(tmp_path)
    assert "`vit-mnist`" in report.question_other_models(report.load_summary(tmp_path))


def test_the_scale_paragraph_finds_the_single_model_with_as_many_parameters_as_the_batchensemble():
    """mlp-scale's single-matched-w4 (widths from matching_widths for be-r1-w4's parameter count) is be-r1-w4's
    baseline; a single model of other widths, or of be-r1-w1's, is not."""
    preset = study.load_preset("mlp-scale")
    runs = {name: {"fields": preset.runs[name]} for name in ("be-r1-w4", "single-matched-w1", "single-matched-w4")}
    assert report.matched_single({"runs": runs}, "be-r1-w4") == "single-matched-w4"
    del runs["single-matched-w4"]
    assert report.matched_single({"runs": runs}, "be-r1-w4") is None


def test_the_cost_table_gives_minutes_per_phase_and_a_dash_for_a_phase_not_recorded():
    """run_seconds 600 ± 60 s of training and 30 s of evaluation: 10.0 ± 1.0 and 0.5 ± 0.0 minutes; no analysis time
    recorded: '–'."""
    seconds = {"be-r1": {"train": {"mean": 600.0, "std": 60.0}, "evaluate": {"mean": 30.0, "std": 0.0}}}
    header, rows = report.cost_table({"run_seconds": seconds})
    assert header == ["run", "train", "evaluate", "analyse"]
    assert rows == [["be-r1", "10.0 ± 1.0", "0.5 ± 0.0", "–"]]


def test_the_architecture_of_a_vit_is_its_shape_not_a_resnet_width_multiplier():
    """A ViT is named by patch size, token width, depth, heads and MLP ratio (ResNet's width_mult means nothing for
    it); a ResNet keeps its width multiplier and an MLP its widths."""
    vit = {"arch": "vit", "patch_size": 7, "vit_width": 64, "depth": 4, "heads": 4, "mlp_ratio": 2}
    assert report._architecture(vit) == "vit (7×7 patches, width 64, depth 4, 4 heads, MLP ratio 2)"
    assert "×1.0" not in report._architecture({**vit, "width_mult": 1.0})
    assert report._architecture({"arch": "resnet18", "width_mult": 0.25}) == "resnet18×0.25"
    assert report._architecture({"widths": [64, 32, 16]}) == "64-32-16"


def test_the_training_time_paragraph_prints_the_configured_sample_count_and_pairs_epochs_within_a_run():
    """trajectory_samples = 250 is printed (not a typed 1,000); the ratio of ratios pairs the two epochs of one run by
    seed and treats BE and DE as independent, which the paragraph says (not "runs paired by seed"):
    (0.05 / 0.1) / (0.2 / 0.2) = 0.500."""
    def run(method: str, first: float, last: float) -> dict:
        values = {"traj/shift/mutual_information@1": first, "traj/shift/mutual_information@30": last}
        return {"fields": {"method": method, "trajectory": True, "trajectory_samples": 250, "epochs": 30},
                "seeds": [0, 1], "metrics": {key: {"mean": value, "std": 0.0, "values": [value, value]}
                                             for key, value in values.items()}}
    paragraph = report.question_training_time({"runs": {"be-r1": run("batchensemble", 0.1, 0.05),
                                                         "de": run("deep-ensemble", 0.2, 0.2)}})
    assert "Trajectory (250 fixed shifted test images" in paragraph and "1,000" not in paragraph
    assert "the two epochs paired within a run and BE and DE independent" in paragraph
    assert "runs paired by seed" not in paragraph and "be-r1: 0.500 [0.500, 0.500]" in paragraph


def test_the_scale_paragraph_prints_both_parameter_counts_and_their_relative_gap():
    """mlp-scale at width ×4: the BE and its parameter-matched single model are named with count_parameters of each
    and the gap (n_single − n_BE) / n_BE, recomputed here from the models themselves."""
    from empirics.models.ensembles import count_parameters
    from empirics.runs.config import Config

    preset = study.load_preset("mlp-scale")
    runs = {name: {"fields": preset.runs[name], "seeds": [0], "metrics": {}}
            for name in ("be-r1-w4", "de-w4", "single-matched-w4", "be-r1-w1", "de-w1")}
    counts = {name: count_parameters(Config.from_dict(preset.runs[name]).model_spec())
              for name in ("be-r1-w4", "single-matched-w4")}
    gap = (counts["single-matched-w4"] - counts["be-r1-w4"]) / counts["be-r1-w4"]
    paragraph = report.question_scale({"runs": runs})
    assert (f"(single-matched-w4; BE {counts['be-r1-w4']:,} vs single {counts['single-matched-w4']:,} parameters, "
            f"gap {gap:+.2%})") in paragraph
    assert abs(gap) < 0.05, "matching_widths should match the count to within a few percent"


def test_the_init_factors_compare_zero_mean_with_random_signs_at_the_same_second_moment():
    """N(0, 1) (multiplier second moment 1, as random signs) over random signs: 0.08 / 0.1 = 0.80×; N(0, 0.5)
    (second moment 0.0625) over random signs 0.02 / 0.1 = 0.20×; N(0, 1) over N(0, 0.5): 4.00×."""
    def run(fields: dict, mi: float) -> dict:
        return {"fields": {"method": "batchensemble", "rank": 1, **fields}, "seeds": [0, 1],
                "metrics": {"shift/mutual_information": {"mean": mi, "std": 0.0, "values": [mi, mi]}}}
    summary = {"runs": {"be-r1-init-sign": run({"init": "random_sign"}, 0.1),
                        "be-r1-init-normal0": run({"init_mean": 0.0, "init_std": 0.5}, 0.02),
                        "be-r1-init-normal0-std1": run({"init_mean": 0.0, "init_std": 1.0}, 0.08)}}
    paragraph = report.question_init(summary)
    assert ("at the signs' multiplier second moment (E[(r·s)²] = 1): N(0, 1) over random signs p = 0.5 0.80× "
            "[0.80, 0.80]") in paragraph
    assert "(0.25² = 0.0625): N(0, 0.5) over random signs p = 0.5 0.20× [0.20, 0.20]" in paragraph
    assert "scale at zero mean: N(0, 1) over N(0, 0.5) 4.00× [4.00, 4.00]" in paragraph
