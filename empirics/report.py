"""The report of a study, generated from its ``summary.json`` (every number is read from the results, none is typed).

``python -m empirics report PRESET [--out DIR]`` writes ``<out>/report.md`` and ``<out>/report.tex`` (booktabs tables):
mean ± std over seeds (sample std, ddof = 1) for every metric, the paper's reference numbers (docs/paper.md §4)
beside ours, the figures
of ``paper_figs/`` made from this study, the parameter ↔ function-space link, and one paragraph per open question of
the paper (docs/paper.md §3) stating what this study's evidence shows (or which preset addresses it).
"""
from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

from empirics import paper_claims, parity
from empirics.data import task_of
from empirics.diversity import LINK_WITHOUT_MCD, RANK1_LINK, WITHOUT_MCD_REASON
from empirics.layers import output_factor_spread, rank_one_moments
from theory.cli_support import BadInput
from theory.records import atomic_write_text

SUMMARY_FILE = "summary.json"
FIGURES_DIR = Path(__file__).resolve().parent.parent / "paper_figs"
MEMBER_KEY = re.compile(r"/member_\d+/")

SPLIT_COLUMNS: dict[str, list[tuple[str, str]]] = {
    split: [("accuracy", f"{split}/ensemble/accuracy"), ("NLL", f"{split}/ensemble/nll"),
            ("ECE", f"{split}/ensemble/ece"), ("Brier", f"{split}/ensemble/brier"),
            ("MI", f"{split}/mutual_information"), ("JSD", f"{split}/pairwise_jsd"),
            ("disagreement", f"{split}/disagreement"), ("feature CKA", f"features/{split}/mean_cka")]
    for split in ("test", "shift")
}
SPLIT_COLUMNS["ood"] = [("AUROC", "ood/max_prob/auroc"), ("AUPR", "ood/max_prob/aupr"), ("FPR95", "ood/max_prob/fpr95"),
                        ("AUROC (MI)", "ood/mutual_information/auroc"), ("MI", "ood/mutual_information"),
                        ("JSD", "ood/pairwise_jsd"), ("disagreement", "ood/disagreement"),
                        ("feature CKA", "features/ood/mean_cka")]
SPLIT_TITLES = {"test": "test set", "shift": "shifted test set (corruptions)",
                "ood": "OOD detection (OOD = positive; score −max p unless stated)"}
DIVERSITY_COLUMNS = [("weight cosine", "weights/network/mean_cosine"),
                     ("centred cosine", "weights/network/mean_centered_cosine"),
                     ("relative distance", "weights/network/mean_relative_distance"),
                     ("dist. to rank-1 BE (rel.)", "distance/network/rank1/relative_residual"),
                     ("reachable fraction (theory)", "theory/reachable_fraction")]
REGRESSION_SPLIT_COLUMNS: dict[str, list[tuple[str, str]]] = {
    split: [("RMSE", f"{split}/ensemble/rmse"), ("NLL", f"{split}/ensemble/nll"),
            ("coverage 90%", f"{split}/ensemble/coverage_90"),
            ("interval cal. error", f"{split}/ensemble/interval_calibration_error"),
            ("aleatoric", f"{split}/aleatoric_variance"), ("epistemic", f"{split}/epistemic_variance"),
            ("epistemic fraction", f"{split}/epistemic_fraction"), ("feature CKA", f"features/{split}/mean_cka")]
    for split in ("test", "shift")
}
REGRESSION_SPLIT_TITLES = {"test": "test set (Gaussian heads; diamonds: standardised log price, toy-gap: raw y)",
                           "shift": "shifted split (toy: the gap; diamonds: carat above its 80% quantile)"}
SHIFT_EPISTEMIC = "shift/epistemic_variance"
SHIFT_MI = "shift/mutual_information"
WEIGHT_COSINE = "weights/network/mean_cosine"
REACHABLE = "theory/reachable_fraction"
DISTANCE_R1 = "distance/network/rank1/relative_residual"
TEST_ACCURACY = "test/ensemble/accuracy"
SHIFT_ECE = "shift/ensemble/ece"


# ---------------------------------------------------------------- reading the summary

def load_summary(out: Path) -> dict[str, Any]:
    path = Path(out) / SUMMARY_FILE
    if not path.is_file():
        raise BadInput(f"{path} does not exist: run `python -m empirics study PRESET` first")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def stat(summary: dict, run: str, key: str) -> dict[str, Any] | None:
    return summary["runs"].get(run, {}).get("metrics", {}).get(key)


def fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def cell(summary: dict, run: str, key: str) -> str:
    """``mean ± std`` of ``key`` over the run's seeds, or ``–`` when the run has no such metric."""
    found = stat(summary, run, key)
    return "–" if found is None else f"{fmt(found['mean'])} ± {fmt(found['std'])}"


def mean_of(summary: dict, run: str, key: str) -> float | None:
    found = stat(summary, run, key)
    return None if found is None else found["mean"]


def runs_where(summary: dict, **fields: Any) -> list[str]:
    """Runs whose fields match (``method="batchensemble"`` ...), in the preset's order."""
    return [name for name, run in summary["runs"].items()
            if all(run["fields"].get(key, DEFAULTS.get(key)) == value for key, value in fields.items())]


DEFAULTS = {"rank": 1, "init": "normal", "init_std": 0.5, "variant": "channel-wise", "arch": "mlp",
            "dataset": "mnist", "be_scope": "all", "sign_prob": 0.5}


# ---------------------------------------------------------------- tables

def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def latex_table(header: list[str], rows: list[list[str]], caption: str) -> str:
    escape = lambda text: (text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%")  # noqa: E731
                           .replace("±", r"$\pm$").replace("−", "$-$").replace("&", r"\&"))
    body = [" & ".join(escape(c) for c in row) + r" \\" for row in rows]
    return "\n".join([r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{escape(caption)}}}",
                      rf"\begin{{tabular}}{{l{'r' * (len(header) - 1)}}}", r"\toprule",
                      " & ".join(escape(h) for h in header) + r" \\", r"\midrule", *body, r"\bottomrule",
                      r"\end{tabular}", r"\end{table}"])


def is_regression(summary: dict) -> bool:
    """A study of regression data sets (``empirics.data.task_of``): its tables and questions use the regression
    metrics of ``empirics.regression``."""
    return any(task_of(run["fields"].get("dataset", DEFAULTS["dataset"])) == "regression"
               for run in summary["runs"].values())


def split_sections(summary: dict) -> tuple[dict[str, list[tuple[str, str]]], dict[str, str]]:
    """(columns per split, titles per split) for the study's task."""
    if is_regression(summary):
        return REGRESSION_SPLIT_COLUMNS, REGRESSION_SPLIT_TITLES
    return SPLIT_COLUMNS, SPLIT_TITLES


def split_table(summary: dict, split: str) -> tuple[list[str], list[list[str]]]:
    columns = split_sections(summary)[0][split]
    return ["run"] + [label for label, _ in columns], [[run] + [cell(summary, run, key) for _, key in columns]
                                                       for run in summary["runs"]]


def diversity_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    return ["run"] + [label for label, _ in DIVERSITY_COLUMNS], [
        [run] + [cell(summary, run, key) for _, key in DIVERSITY_COLUMNS] for run in summary["runs"]]


def reference_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """One row per (run, metric) with a reference number: ours (mean ± std, n seeds) beside the reference."""
    rows = []
    for run, values in summary.get("reference", {}).items():
        for key, reference in values.items():
            found = stat(summary, run, key)
            seeds = "–" if found is None else str(found["n"])
            rows.append([run, key, cell(summary, run, key), seeds, fmt(reference, 3)])
    return ["run", "metric", "ours (mean ± std)", "seeds", "reference (docs/paper.md §4)"], rows


def link_table(summary: dict, key: str = "link") -> tuple[list[str], list[list[str]]]:
    rows = [[pair["parameter"], pair["function"], fmt(pair["rho"], 3),
             "–" if pair["rho"] is None else f"[{fmt(pair['ci_low'], 3)}, {fmt(pair['ci_high'], 3)}]",
             fmt(pair["p_value"], 4), str(pair["n"])] for pair in summary[key]["pairs"]]
    return ["parameter-space diversity", "function-space diversity", "Spearman ρ", "95% CI", "p", "runs"], rows


def every_metric_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Every metric except per-member ones (``members_mean`` summarises them; ``summary.json`` keeps them all)."""
    keys = sorted({key for run in summary["runs"].values() for key in run["metrics"] if not MEMBER_KEY.search(key)})
    runs = list(summary["runs"])
    return ["metric"] + runs, [[key] + [cell(summary, run, key) for run in runs] for key in keys]


def console_table(summary: dict) -> str:
    """The end-of-study printout: mean ± std over seeds of the headline metrics per run."""
    columns = [("test acc", TEST_ACCURACY), ("shift ECE", SHIFT_ECE), ("shift MI", SHIFT_MI),
               ("weight cos", WEIGHT_COSINE), ("OOD AUROC", "ood/max_prob/auroc")]
    if is_regression(summary):
        columns = [("test RMSE", "test/ensemble/rmse"), ("shift NLL", "shift/ensemble/nll"),
                   ("shift epistemic", SHIFT_EPISTEMIC), ("weight cos", WEIGHT_COSINE),
                   ("shift cov. 90%", "shift/ensemble/coverage_90")]
    header = ["run", "seeds"] + [label for label, _ in columns]
    rows = [[run, str(len(summary["runs"][run]["seeds"]))] + [cell(summary, run, key) for _, key in columns]
            for run in summary["runs"]]
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    return "\n".join("  ".join(text.ljust(width) for text, width in zip(row, widths)) for row in [header] + rows)


# ---------------------------------------------------------------- open questions (docs/paper.md §3), generated text

def _compare(summary: dict, runs: list[str], key: str, label: str) -> str:
    parts = [f"{run} {cell(summary, run, key)}" for run in runs if stat(summary, run, key)]
    return f"{label}: " + "; ".join(parts) if parts else ""


def _direction(a: float | None, b: float | None, more: str, less: str) -> str:
    if a is None or b is None:
        return "not comparable"
    return more if a > b else less


def question_scale(summary: dict) -> str:
    archs = ", ".join(sorted({run["fields"].get("arch", "mlp") for run in summary["runs"].values()}))
    epochs = max(run["fields"].get("epochs", 0) for run in summary["runs"].values())
    be, de = runs_where(summary, method="batchensemble", rank=1), runs_where(summary, method="deep-ensemble")
    if not be or not de:
        return (f"This study trains {archs} (at most {epochs} epochs) without both BE rank 1 and DE: no evidence on "
                "scale. The ResNet-18 presets (`resnet18-mnist`, `resnet18-cifar10`) address it.")
    ratio = _ratio(summary, be[0], de[0], SHIFT_MI)
    return (f"Architecture(s) here: {archs}, at most {epochs} epochs. At this scale BE rank 1 keeps "
            f"{fmt(ratio, 2)}× the Deep Ensemble's mutual information under shift "
            f"({cell(summary, be[0], SHIFT_MI)} vs {cell(summary, de[0], SHIFT_MI)}) and a weight cosine of "
            f"{cell(summary, be[0], WEIGHT_COSINE)} vs {cell(summary, de[0], WEIGHT_COSINE)}. Whether larger widths, "
            f"depth or training time change this is answered by comparing this report with the ResNet-18 presets' "
            f"reports; a single study cannot.")


def _ratio(summary: dict, run: str, other: str, key: str) -> float | None:
    a, b = mean_of(summary, run, key), mean_of(summary, other, key)
    return None if a is None or not b else a / b


def question_other_models(summary: dict) -> str:
    if is_regression(summary):
        return question_regression_diversity(summary)
    if "vit" in {run["fields"].get("arch", DEFAULTS["arch"]) for run in summary["runs"].values()}:
        return question_attention_diversity(summary)
    return ("This study trains classification MLPs / ResNet-18 only: it gives no evidence either way. The presets "
            "`vit-mnist` (BatchEnsemble attention in a small ViT) and `regression` (Gaussian heads on a 1-D toy with a "
            "gap and on the diamonds data) answer it in their reports.")


# ---------------------------------------------------------------- attention and regression (issue 15), generated text

def difference_text(summary: dict, run: str, other: str, key: str) -> tuple[str, int]:
    """'difference +d (95% Welch CI [lo, hi])' of the seed means of ``key`` (run − other,
    ``paper_claims.welch_difference``) and its sign: +1 / −1 when the CI excludes 0 above / below, 0 otherwise (or
    when there are too few seeds or no spread for a CI)."""
    a, b = paper_claims.seed_values(summary, run, key), paper_claims.seed_values(summary, other, key)
    if a is None or b is None:
        return "difference not measured", 0
    difference = paper_claims.welch_difference(a, b)
    delta, low, high = difference["delta"], difference["ci_low"], difference["ci_high"]
    if low is None or high is None:
        return f"difference {delta:+.4f} (no CI: fewer than 2 seeds or no spread)", 0
    sign = 1 if low > 0 else -1 if high < 0 else 0
    return f"difference {delta:+.4f} (95% Welch CI [{low:.4f}, {high:.4f}], n = {len(a)} and {len(b)} seeds)", sign


def comparison_sentence(summary: dict, run: str, other: str, key: str, label: str, names: tuple[str, str]) -> str:
    """'<label>: run X vs other Y, ratio, difference (CI): <what the CI says>'."""
    text, sign = difference_text(summary, run, other, key)
    ratio = _ratio(summary, run, other, key)
    verdict = {1: f"{names[0]} is above {names[1]} (the CI excludes 0)",
               -1: f"{names[0]} is below {names[1]} (the CI excludes 0)",
               0: "no difference established at this number of seeds"}[sign]
    return (f"{label}: {run} {cell(summary, run, key)} vs {other} {cell(summary, other, key)} "
            f"(ratio {fmt(ratio, 2)}), {text}: {verdict}")


def _be_runs(summary: dict, **fields: Any) -> list[str]:
    return runs_where(summary, method="batchensemble", **fields)


def _init_label(summary: dict, run: str) -> str:
    fields = {**DEFAULTS, **summary["runs"][run]["fields"]}
    init = (f"random signs p = {fields['sign_prob']}" if fields["init"] == "random_sign" else
            f"N(1, {fields['init_std']})")
    return init + (", BE in the MLP blocks only" if fields["be_scope"] == "mlp" else "")


def init_carries_over(summary: dict, normal: str, sign: str, key: str, measure: str) -> str:
    """Whether random signs diversify more than N(1, 0.5) here (the MLP studies' finding), from the CI."""
    text, direction = difference_text(summary, sign, normal, key)
    verdict = {1: "the MLP studies' init finding carries over (random signs diversify more; the CI excludes 0)",
               -1: "the MLP studies' init finding is reversed here (random signs diversify less; the CI excludes 0)",
               0: "the MLP studies' init finding is not established here (the CI includes 0 or no CI)"}[direction]
    return (f"Init: {measure} with random signs ({sign}) {cell(summary, sign, key)} vs N(1, 0.5) ({normal}) "
            f"{cell(summary, normal, key)}, {text}: {verdict}.")


def question_attention_diversity(summary: dict) -> str:
    """ViT: BE's function-space diversity (MI under shift) and weight cosine against the Deep Ensemble's, per BE run,
    the BE-in-MLP-only scope, and the init comparison."""
    de = runs_where(summary, method="deep-ensemble")
    be = _be_runs(summary, arch="vit")
    if not be or not de:
        return "This ViT study lacks BE or DE runs: no comparison."
    lines = [comparison_sentence(summary, run, de[0], SHIFT_MI, f"MI under shift ({_init_label(summary, run)})",
                                 ("BE", "the Deep Ensemble"))
             + f"; weight cosine {cell(summary, run, WEIGHT_COSINE)} vs {cell(summary, de[0], WEIGHT_COSINE)}; "
               f"reachable fraction (theory) {cell(summary, run, REACHABLE)}"
             for run in be]
    text = "Attention (ViT; every BE run's attention projections are BE dense layers unless stated) — " +         "; ".join(lines) + "."
    normal = _be_runs(summary, arch="vit", init="normal", be_scope="all")
    sign = _be_runs(summary, arch="vit", init="random_sign", be_scope="all")
    if normal and sign:
        text += " " + init_carries_over(summary, normal[0], sign[0], SHIFT_MI, "MI under shift")
    scoped = _be_runs(summary, arch="vit", init="random_sign", be_scope="mlp")
    if scoped and sign:
        text += (" Scope: " + comparison_sentence(summary, scoped[0], sign[0], SHIFT_MI,
                                                   "MI under shift, BE in the MLP blocks only vs everywhere",
                                                   ("MLP-only BE", "BE everywhere")) + ".")
    return text


def _dataset_runs(summary: dict, dataset: str, method: str, **fields: Any) -> list[str]:
    return runs_where(summary, dataset=dataset, method=method, **fields)


def question_regression_diversity(summary: dict) -> str:
    """Per regression data set: BE's epistemic variance (variance of member means) under shift against the Deep
    Ensemble's, the epistemic fraction, NLL and 90% coverage under shift, and TabM's claim (test RMSE of random-sign BE
    vs DE)."""
    datasets = sorted({run["fields"].get("dataset") for run in summary["runs"].values()})
    parts = []
    for dataset in datasets:
        de = _dataset_runs(summary, dataset, "deep-ensemble")
        be = _dataset_runs(summary, dataset, "batchensemble")
        if not de or not be:
            parts.append(f"{dataset}: no BE and DE pair.")
            continue
        lines = [comparison_sentence(summary, run, de[0], SHIFT_EPISTEMIC,
                                     f"epistemic variance under shift ({_init_label(summary, run)})",
                                     ("BE", "the Deep Ensemble"))
                 + f"; epistemic fraction {cell(summary, run, 'shift/epistemic_fraction')} vs "
                   f"{cell(summary, de[0], 'shift/epistemic_fraction')}; shift NLL "
                   f"{cell(summary, run, 'shift/ensemble/nll')} vs {cell(summary, de[0], 'shift/ensemble/nll')}; "
                   f"shift coverage of the 90% interval {cell(summary, run, 'shift/ensemble/coverage_90')} vs "
                   f"{cell(summary, de[0], 'shift/ensemble/coverage_90')}"
                 for run in be]
        text = f"{dataset} — " + "; ".join(lines) + "."
        sign = _dataset_runs(summary, dataset, "batchensemble", init="random_sign")
        if sign:
            text += (" TabM's claim (random-sign BE beats DE on tabular regression), test RMSE: "
                     + comparison_sentence(summary, sign[0], de[0], "test/ensemble/rmse", "RMSE",
                                           ("random-sign BE", "the Deep Ensemble")) + ".")
        parts.append(text)
    return "Regression (Gaussian heads; diamonds in standardised log price, toy-gap in raw y) — " + " ".join(parts)


def question_regression_init(summary: dict) -> str:
    datasets = sorted({run["fields"].get("dataset") for run in summary["runs"].values()})
    parts = []
    for dataset in datasets:
        normal = _dataset_runs(summary, dataset, "batchensemble", init="normal")
        sign = _dataset_runs(summary, dataset, "batchensemble", init="random_sign")
        if normal and sign:
            parts.append(f"{dataset}: " + init_carries_over(summary, normal[0], sign[0], SHIFT_EPISTEMIC,
                                                            "epistemic variance under shift"))
    return " ".join(parts) or "This study has no pair of BE inits on one data set."


REGRESSION_QUESTIONS = (
    ("Do the limits hold for regression (does BE's epistemic variance stay near zero)?", question_regression_diversity),
    ("Does the init finding of the MLP studies (random signs diversify more) carry over?", question_regression_init),
    ("Is there a link from the rank-1 parametrisation to functional diversity?", None),
    ("Do the limits hold for Transformers?", None),
)


def question_link(summary: dict) -> str:
    be, de = runs_where(summary, method="batchensemble", rank=1), runs_where(summary, method="deep-ensemble")
    text = []
    if be:
        text.append(f"Theory: rank-1 BE reaches a fraction {cell(summary, be[0], REACHABLE)} of the Deep-Ensemble "
                    f"space of this network (a measure-zero set); the trained BE members lie on it (relative distance "
                    f"to the rank-1 set {cell(summary, be[0], DISTANCE_R1)}, zero by construction)")
    if de:
        text.append(f"the trained Deep Ensemble lies at relative distance {cell(summary, de[0], DISTANCE_R1)} from it")
    analyses = [(summary["link"], "trained ensembles (runs × seeds)")]
    if LINK_WITHOUT_MCD in summary:
        analyses.append((summary[LINK_WITHOUT_MCD], f"ensembles without MC Dropout ({WITHOUT_MCD_REASON})"))
    heads = []
    for link, units in analyses:
        pairs = [pair for pair in (link["headline"], rank_one_link(link)) if pair is not None]
        heads += pairs
        text.append(f"across {pairs[0]['n']} {units}: " + "; ".join(link_sentence(pair) for pair in pairs))
    verdict = ("An association whose CI excludes 0 is empirical evidence for a link, not the formal proof the paper "
               "asks for; with a handful of methods it largely reflects how the methods are ordered (the seeds of one "
               "method cluster), and the tests above are not corrected for multiplicity." if any(
                   link_established(head) for head in heads) else "So this study gives no evidence for such a link.")
    return "; ".join(text) + ". " + verdict


def rank_one_link(link: dict) -> dict | None:
    """The pair (distance to the rank-1 BE set, MI under shift) of a link analysis, if it was measured."""
    return next((pair for pair in link["pairs"] if (pair["parameter_key"], pair["function_key"]) == RANK1_LINK), None)


def link_established(head: dict) -> bool:
    return head["rho"] is not None and (head["ci_low"] > 0 or head["ci_high"] < 0)


def link_sentence(head: dict) -> str:
    """'<parameter> and <function> have Spearman ρ = … (CI, p): <what the CI says>'."""
    if head["rho"] is None:
        return f"{head['parameter']} and {head['function']}: undefined (too few runs with both measures)"
    return (f"{head['parameter']} and {head['function']} have Spearman ρ = {fmt(head['rho'], 3)} (95% bootstrap CI "
            f"[{fmt(head['ci_low'], 3)}, {fmt(head['ci_high'], 3)}], p = {fmt(head['p_value'], 4)}): "
            + ("a positive monotone association whose CI excludes 0" if head["ci_low"] > 0 else
               "a negative association whose CI excludes 0" if head["ci_high"] < 0 else
               "the CI includes 0, so no monotone association is established"))


def question_rank(summary: dict) -> str:
    be = sorted(runs_where(summary, method="batchensemble", init="normal", init_std=0.5, variant="channel-wise"),
                key=lambda run: _rank_order(summary["runs"][run]["fields"].get("rank", 1)))
    ranks = {summary["runs"][run]["fields"].get("rank", 1) for run in be}
    if len(ranks) < 2:
        return "This study has a single BE rank: `rank-ablation` (and `quick`) address rank > 1."
    de = runs_where(summary, method="deep-ensemble")
    lines = [f"{run} (r = {summary['runs'][run]['fields'].get('rank', 1)}): MI under shift "
             f"{cell(summary, run, SHIFT_MI)}, weight cosine {cell(summary, run, WEIGHT_COSINE)}, reachable fraction "
             f"{cell(summary, run, REACHABLE)}, test accuracy {cell(summary, run, TEST_ACCURACY)}" for run in be]
    top = max(be, key=lambda run: _rank_order(summary["runs"][run]["fields"].get("rank", 1)))
    verdict = ""
    if de:
        ratio = _ratio(summary, top, de[0], SHIFT_MI)
        above = _direction(mean_of(summary, top, WEIGHT_COSINE), mean_of(summary, de[0], WEIGHT_COSINE), "above",
                           "at or below")
        verdict = (f" The highest rank ({top}) reaches {fmt(ratio, 2)}× the Deep Ensemble's MI under shift "
                   f"({cell(summary, de[0], SHIFT_MI)}) with a weight cosine {above} the Deep Ensemble's "
                   f"({cell(summary, de[0], WEIGHT_COSINE)}).")
    spreads = ", ".join(f"r = {rank}: {output_factor_spread(rank, 2, *rank_one_moments('normal', 0.5, 0.5)):.3f}"
                        for rank in sorted(ranks, key=_rank_order) if rank != "full")
    init_note = (f" Init: the engine's rank-r init is variance-matched (empirics.layers.init_fast_factors): the output "
                 f"factor is 1/r + ρ_r (X − 1) with X ~ N(1, 0.5) (ρ_r: {spreads}), so every multiplier entry starts "
                 f"with mean 1 and std √((1 + 0.5²)² − 1) = {init_multiplier_std():.3f} at every rank: rank is not "
                 f"confounded with the initial member spread.")
    return "Rank sweep — " + "; ".join(lines) + "." + verdict + init_note


def init_multiplier_std(sigma: float = 0.5) -> float:
    """Std of one channel-wise multiplier entry at any rank under the variance-matched N(1, σ) init: the rank-1 value
    √(e² − μ⁴) = √((1 + σ²)² − 1) (``empirics.layers.output_factor_spread``)."""
    mean, second_moment = rank_one_moments("normal", sigma, 0.5)
    return (second_moment ** 2 - mean ** 4) ** 0.5


def _rank_order(rank: int | str) -> float:
    return float("inf") if rank == "full" else float(rank)


def question_variant(summary: dict) -> str:
    variants = {summary["runs"][run]["fields"].get("variant", "channel-wise"): run
                for run in runs_where(summary, method="batchensemble", rank=1)}
    if len(variants) < 2:
        return ("This study uses one BE variant (dense layers have no kernel-wise form): `resnet18-mnist` compares "
                "channel-wise with flattened-kernel fast weights.")
    return "Variants at rank 1 — " + "; ".join(
        f"{variant} ({run}): MI under shift {cell(summary, run, SHIFT_MI)}, weight cosine "
        f"{cell(summary, run, WEIGHT_COSINE)}, reachable fraction {cell(summary, run, REACHABLE)}"
        for variant, run in variants.items()) + "."


def question_init(summary: dict) -> str:
    be = runs_where(summary, method="batchensemble", rank=1, variant="channel-wise")
    inits = [(run, summary["runs"][run]["fields"]) for run in be]
    labels = {run: (f"random signs p = {fields.get('sign_prob', 0.5)}" if fields.get("init") == "random_sign" else
                    f"N(1, {fields.get('init_std', 0.5)})") for run, fields in inits}
    if len(set(labels.values())) < 2:
        return "This study uses one fast-weight init: `rank-ablation` (and `quick`) compare N(1, 0.5), N(1, 1) and " \
               "random signs."
    de = runs_where(summary, method="deep-ensemble")
    verdict = ""
    if de:
        top = max(labels, key=lambda run: mean_of(summary, run, SHIFT_MI) or 0.0)
        verdict = (f" The most diverse init, {labels[top]} ({top}), reaches "
                   f"{fmt(_ratio(summary, top, de[0], SHIFT_MI), 2)}× the Deep Ensemble's MI under shift "
                   f"({cell(summary, de[0], SHIFT_MI)}), shift ECE {cell(summary, top, SHIFT_ECE)} vs "
                   f"{cell(summary, de[0], SHIFT_ECE)}, while staying on the rank-1 BE set.")
    return "Fast-weight init at rank 1 — " + "; ".join(
        f"{labels[run]} ({run}): MI under shift {cell(summary, run, SHIFT_MI)}, weight cosine "
        f"{cell(summary, run, WEIGHT_COSINE)}, test accuracy {cell(summary, run, TEST_ACCURACY)}"
        for run in labels) + "." + verdict


OPEN_QUESTIONS = (
    ("Does scale (width, depth, training time) restore diversity?", question_scale),
    ("Do the limits hold for Transformers and regression?", question_other_models),
    ("Is there a link from the rank-1 parametrisation to functional diversity?", question_link),
    ("Does rank > 1 reach distinct modes while staying efficient?", question_rank),
    ("Kernel-wise vs channel-wise fast weights?", question_variant),
    ("Init scale N(1, 0.5) vs N(1, 1) or random signs?", question_init),
)


def open_questions(summary: dict) -> tuple[tuple[str, Any], ...]:
    """The questions the report answers: ``OPEN_QUESTIONS``, or for a regression study ``REGRESSION_QUESTIONS``
    (the link question as in ``OPEN_QUESTIONS``; Transformers pointed to `vit-mnist`)."""
    if not is_regression(summary):
        return OPEN_QUESTIONS
    pointer = lambda _: "This regression study has no attention layers: `vit-mnist` answers it."  # noqa: E731
    return tuple((question, answer or (question_link if "link" in question else pointer))
                 for question, answer in REGRESSION_QUESTIONS)


# ---------------------------------------------------------------- assembling the report

def figure_paths(preset: str, out: Path) -> list[str]:
    """The figures made from this study (``paper_figs/fig_empirics_*_<preset>.png``), relative to ``out``."""
    return [os.path.relpath(path, out) for path in sorted(FIGURES_DIR.glob(f"fig_empirics_*_{preset}.png"))]


def build_markdown(summary: dict, out: Path) -> str:
    preset = summary["preset"]
    commit, seeds = summary["provenance"]["git_commit"], max((len(r["seeds"]) for r in summary["runs"].values()),
                                                              default=0)
    parts = [f"# Study `{preset}`{' (tiny smoke run)' if summary.get('tiny') else ''}", "",
             f"**Claim tested.** {summary['claim']}", "", f"**Evidence produced.** {summary['evidence']}", "",
             f"Generated from `{SUMMARY_FILE}` (git commit `{commit}`); up to {seeds} seed(s) per run; "
             f"mean ± sample std over seeds. Missing (unfinished) runs: {', '.join(summary['missing']) or 'none'}."]
    if summary.get("reference"):
        parts += ["", "## Ours vs reference (docs/paper.md §4)", "", markdown_table(*reference_table(summary))]
    for split, title in split_sections(summary)[1].items():
        parts += ["", f"## {title.capitalize()}", "", markdown_table(*split_table(summary, split))]
    parity_rows = parity.parity_rows(summary)
    if parity_rows:
        parts += ["", "## Precision parity: bf16 against fp32 (empirics.parity)", "", parity.parity_markdown(parity_rows)]
    claims = paper_claims.claims_table(summary)
    if claims[1]:
        parts += ["", "## The paper's claims at this scale (docs/paper.md §2 claim 2), one by one", "",
                  paper_claims.METHOD, "", markdown_table(*claims)]
    parts += ["", "## Parameter-space diversity (whole network)", "", markdown_table(*diversity_table(summary)),
              "", "## Parameter ↔ function-space link", "", summary["link"]["method"] + ".", "",
              markdown_table(*link_table(summary))]
    if LINK_WITHOUT_MCD in summary:
        parts += ["", f"Sensitivity, without MC Dropout ({WITHOUT_MCD_REASON}):", "",
                  markdown_table(*link_table(summary, LINK_WITHOUT_MCD))]
    parts += ["", "## Figures", ""]
    figures = figure_paths(preset, out)
    parts += [f"![{Path(path).stem}]({path})" for path in figures] or ["(none yet: run `make figures`)"]
    parts += ["", "## Open questions of the paper (docs/paper.md §3): what this study shows", ""]
    for question, answer in open_questions(summary):
        parts += [f"**{question}** {answer(summary)}", ""]
    parts += ["## Every metric (mean ± std over seeds; per-member values are in summary.json)", "",
              markdown_table(*every_metric_table(summary)), ""]
    return "\n".join(parts)


def build_latex(summary: dict) -> str:
    preset = summary["preset"]
    tables = []
    if summary.get("reference"):
        tables.append(latex_table(*reference_table(summary), f"{preset}: ours vs the reference (docs/paper.md §4)"))
    for split, title in split_sections(summary)[1].items():
        tables.append(latex_table(*split_table(summary, split), f"{preset}: {title}, mean ± std over seeds"))
    claims = paper_claims.claims_table(summary)
    if claims[1]:
        tables.append(latex_table(*claims, f"{preset}: the paper's claims, Welch 95 percent intervals over seeds"))
    tables.append(latex_table(*diversity_table(summary), f"{preset}: parameter-space diversity"))
    tables.append(latex_table(*link_table(summary), f"{preset}: {summary['link']['method']}"))
    if LINK_WITHOUT_MCD in summary:
        tables.append(latex_table(*link_table(summary, LINK_WITHOUT_MCD),
                                  f"{preset}: the same without MC Dropout ({WITHOUT_MCD_REASON})"))
    return "% Generated by `python -m empirics report` from summary.json; needs \\usepackage{booktabs}.\n" + \
        "\n\n".join(tables) + "\n"


def write_report(out: str | os.PathLike) -> Path:
    """Write ``report.md`` and ``report.tex`` in ``out`` from its ``summary.json``; return the markdown path."""
    out = Path(out)
    summary = load_summary(out)
    atomic_write_text(out / "report.md", build_markdown(summary, out))
    atomic_write_text(out / "report.tex", build_latex(summary))
    return out / "report.md"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="regenerate a study's report.md/report.tex from its summary.json")
    parser.add_argument("preset", help="the study preset (its results folder is results/PRESET unless --out)")
    parser.add_argument("--out", type=Path, help="the study's output folder (default results/PRESET)")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    path = write_report(args.out or Path("results") / args.preset)
    print(f"wrote {path} and {path.with_suffix('.tex')}")
    return 0
