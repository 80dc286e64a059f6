"""The report of a study, generated from its ``summary.json`` (every number is read from the results, none is typed).

``python -m empirics report PRESET [--out DIR]`` writes ``<out>/report.md`` and ``<out>/report.tex`` (booktabs tables):
mean ± std over seeds (sample std, ddof = 1) for every metric, the paper's reference numbers (docs/paper.md §4)
beside ours, the figures
of ``paper_figs/`` made from this study, the parameter ↔ function-space link, and one paragraph per open question of
the paper (docs/paper.md §3) stating what this study's evidence shows (or which preset addresses it).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
from pathlib import Path
from typing import Any

from empirics.analysis import effects
from empirics.analysis.diversity import (LINK, LINK_STRATA, LINK_WITHOUT_MCD, WITHOUT_MCD_REASON, link_key, link_pair,
                                         link_strata)
from empirics.data.datasets import task_of
from empirics.data.regression import TABULAR_DATASETS
from empirics.models.ensembles import count_parameters, matching_widths
from empirics.models.layers import output_factor_spread, rank_one_moments
from empirics.runs.config import EXECUTION_KEYS, Config
from empirics.studies import paper_claims, parity
from infra.errors import BadInput
from infra.files import atomic_write_text
from theory.batchensemble import FULL_RANK

SUMMARY_FILE = "summary.json"
FIGURES_DIR = Path(__file__).resolve().parents[2] / "paper_figs"
MEMBER_KEY = re.compile(r"/member_\d+/")

SPLIT_COLUMNS: dict[str, list[tuple[str, str]]] = {
    split: [("ens. accuracy", f"{split}/ensemble/accuracy"), ("member accuracy", f"{split}/members_mean/accuracy"),
            ("NLL", f"{split}/ensemble/nll"),
            ("ECE", f"{split}/ensemble/ece"), ("Brier", f"{split}/ensemble/brier"),
            ("MI", f"{split}/mutual_information"), ("JSD", f"{split}/pairwise_jsd"),
            ("disagreement", f"{split}/disagreement"), ("feature CKA", f"features/{split}/mean_cka")]
    for split in ("test", "shift")
}
SPLIT_COLUMNS["ood"] = [("test ens. acc.", "test/ensemble/accuracy"), ("AUROC", "ood/max_prob/auroc"), ("AUPR", "ood/max_prob/aupr"), ("FPR95", "ood/max_prob/fpr95"),
                        ("AUROC (MI)", "ood/mutual_information/auroc"), ("MI", "ood/mutual_information"),
                        ("JSD", "ood/pairwise_jsd"), ("disagreement", "ood/disagreement"),
                        ("feature CKA", "features/ood/mean_cka")]
SPLIT_TITLES = {"test": "test set", "shift": "shifted test set (corruptions)",
                "ood": "OOD detection (OOD = positive; score −max p unless stated)"}
DIVERSITY_COLUMNS = [("weight cosine", "weights/network/mean_cosine"),
                     ("relative distance", "weights/network/mean_relative_distance"),
                     ("aligned rel. distance", "aligned/network/mean_relative_distance"),
                     ("dist. to rank-1 BE, own variant (rel.)", "distance/network/rank1/relative_residual"),
                     ("reachable fraction (theory)", "theory/reachable_fraction"),
                     ("shift MI", "shift/mutual_information"), ("shift disagreement", "shift/disagreement"),
                     ("shift member acc.", "shift/members_mean/accuracy"),
                     ("shift ens. acc.", "shift/ensemble/accuracy")]
PARAMETER_MEASURES_NOTE = (
    "Raw weight cosine compares members coordinate by coordinate: it is ≈ 0 for any two independently initialised "
    "networks, whatever they compute, because their hidden units come in arbitrary order, so it separates BE (shared "
    "slow weights, cosine near 1) from DE but cannot rank DE members against each other. The aligned relative distance "
    "first matches each pair's hidden units by weight matching (Ainsworth et al. 2023; one linear assignment per "
    "hidden layer, `empirics.analysis.diversity.aligned_weight_geometry`), so it measures distance up to that symmetry and can "
    "compare independently initialised members; it ignores other symmetries (ReLU rescaling), is a local optimum (an "
    "upper bound) beyond one hidden layer, and needs the trained weights, so it exists only for MLP runs analysed "
    "after it was added (the committed paper-mnist, rank-ablation and quick runs have no checkpoints: '–'). Neither "
    "says what the members compute: feature CKA, MI and disagreement do. The distance to the rank-1 BE set is to "
    "the set of the run's own variant (channel-wise for every method but a BE run of another variant): a "
    "flattened-kernel BE lies on its own set by construction, not on the channel-wise one.")
REGRESSION_SPLIT_COLUMNS: dict[str, list[tuple[str, str]]] = {
    split: [("RMSE", f"{split}/ensemble/rmse"), ("NLL", f"{split}/ensemble/nll"),
            ("coverage 90%", f"{split}/ensemble/coverage_90"),
            ("interval cal. error", f"{split}/ensemble/interval_calibration_error"),
            ("aleatoric", f"{split}/aleatoric_variance"), ("epistemic", f"{split}/epistemic_variance"),
            ("epistemic fraction", f"{split}/epistemic_fraction"), ("feature CKA", f"features/{split}/mean_cka")]
    for split in ("test", "shift")
}
REGRESSION_SHIFT_COLUMNS = [("shift epistemic variance", "shift/epistemic_variance"),
                            ("shift RMSE", "shift/ensemble/rmse"), ("shift NLL", "shift/ensemble/nll"),
                            ("shift coverage 90%", "shift/ensemble/coverage_90")]
DIVERSITY_TITLES = {"classification": "Parameter-space diversity (whole network), with diversity and accuracy under shift",
                    "regression": "Parameter-space diversity (whole network), with epistemic variance, error and "
                                  "calibration under shift"}
REGRESSION_SPLIT_TITLES = {"test": "test set (Gaussian heads; diamonds: standardised log price, toy-gap: raw y)",
                           "shift": "shifted split (toy: the gap; diamonds: carat above its 80% quantile)"}
SHIFT_EPISTEMIC = "shift/epistemic_variance"
SHIFT_MI = "shift/mutual_information"
SHIFT_DISAGREEMENT = "shift/disagreement"
SHIFT_JSD = "shift/pairwise_jsd"
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


DEFAULTS = {"rank": 1, "init": "normal", "init_std": 0.5, "variant": "channel-wise", "arch": "mlp", "members": 4,
            "batch_regime": "repeat", "init_mean": 1.0, "dataset": "mnist", "be_scope": "all", "sign_prob": 0.5}


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
    """A study of regression data sets (``empirics.data.datasets.task_of``): its tables and questions use the regression
    metrics of ``empirics.data.regression``."""
    return any(task_of(run["fields"].get("dataset", DEFAULTS["dataset"])) == "regression"
               for run in summary["runs"].values())


def study_task(summary: dict) -> str:
    """``"regression"`` for a study of regression data sets (``is_regression``), else ``"classification"``."""
    return "regression" if is_regression(summary) else "classification"


def split_sections(summary: dict) -> tuple[dict[str, list[tuple[str, str]]], dict[str, str]]:
    """(columns per split, titles per split) for the study's task."""
    if is_regression(summary):
        return REGRESSION_SPLIT_COLUMNS, REGRESSION_SPLIT_TITLES
    return SPLIT_COLUMNS, SPLIT_TITLES


def split_table(summary: dict, split: str) -> tuple[list[str], list[list[str]]]:
    columns = split_sections(summary)[0][split]
    return ["run"] + [label for label, _ in columns], [[run] + [cell(summary, run, key) for _, key in columns]
                                                       for run in summary["runs"]]


def diversity_columns(summary: dict) -> list[tuple[str, str]]:
    """The parameter-space columns, then the shift columns of the study's task: MI, disagreement and accuracies for
    classification; epistemic variance, RMSE, NLL and 90% coverage (``empirics.data.regression`` keys) for
    regression."""
    if not is_regression(summary):
        return DIVERSITY_COLUMNS
    return [column for column in DIVERSITY_COLUMNS if not column[1].startswith("shift/")] + REGRESSION_SHIFT_COLUMNS


def parameter_measures_note(summary: dict) -> str:
    """``PARAMETER_MEASURES_NOTE``, naming the regression study's function-space measures for a regression study."""
    if not is_regression(summary):
        return PARAMETER_MEASURES_NOTE
    return PARAMETER_MEASURES_NOTE.replace("feature CKA, MI and disagreement do",
                                           "feature CKA and the epistemic variance (variance of the member means) do")


def diversity_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    columns = diversity_columns(summary)
    return ["run"] + [label for label, _ in columns], [
        [run] + [cell(summary, run, key) for _, key in columns] for run in summary["runs"]]


def reference_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """One row per (run, metric) with a reference number: ours (mean ± std, n seeds) beside the reference."""
    rows = []
    for run, values in summary.get("reference", {}).items():
        for key, reference in values.items():
            found = stat(summary, run, key)
            seeds = "–" if found is None else str(found["n"])
            rows.append([run, key, cell(summary, run, key), seeds, fmt(reference, 3)])
    return ["run", "metric", "ours (mean ± std)", "seeds", "reference (docs/paper.md §4)"], rows


def rho_cell(entry: dict | None) -> str:
    """'ρ [low, high]' of a correlation entry, '–' when undefined."""
    if not entry or entry.get("rho") is None:
        return "–"
    if entry.get("ci_low") is None:
        return f"{fmt(entry['rho'], 2)} (no CI)"
    return f"{fmt(entry['rho'], 2)} [{fmt(entry['ci_low'], 2)}, {fmt(entry['ci_high'], 2)}]"


def link_method(summary: dict) -> str:
    """How every link analysis of the study was computed, and why a study on several data sets has one per data set."""
    key = link_sections(summary)[0][0]
    text = summary[key]["method"] + "."
    if summary.get(LINK_STRATA):
        text += (" One analysis per data set, never pooled: a function-space measure has each data set's scale, so "
                 "pooled ranks would order the data sets, not the ensembles.")
    return text


def link_table(summary: dict, key: str = LINK) -> tuple[list[str], list[list[str]]]:
    rows = [[pair["parameter"], pair["function"], rho_cell(pair), rho_cell(pair.get("between")),
             rho_cell(pair.get("within")), str(pair.get("n_configs", "–")), str(pair["n"])]
            for pair in summary[key]["pairs"] if pair["n"]]  # a measure no run has (older runs) is left out
    return ["parameter-space diversity", "function-space diversity", "pooled ρ [cluster CI]",
            "between configs ρ [CI]", "within configs ρ [CI]", "configs", "runs"], rows


def effect_cell(entry: dict) -> str:
    if entry.get("estimate") is None:
        return "undefined (missing runs or epochs)"
    if entry.get("ci_low") is None:
        return f"{fmt(entry['estimate'], 3)} (one seed: no CI)"
    return f"{fmt(entry['estimate'], 3)} [{fmt(entry['ci_low'], 3)}, {fmt(entry['ci_high'], 3)}]"


def contrast_description(entry: dict) -> str:
    """'a:metric / b:metric' (or the ratio of ratios / difference) of a contrast, in words."""
    side = lambda s: f"{entry[s]}:{entry.get(f'metric_{s}', entry['metric'])}"  # noqa: E731
    if entry["statistic"] == "difference":
        return f"{side('a')} − {side('b')}"
    if entry["statistic"] == "ratio":
        return f"{side('a')} / {side('b')}"
    return f"({side('a')} / {side('b')}) / ({side('c')} / {side('d')})"


def contrast_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The headline test (first) and the other contrasts: statistic, estimate [95% Welch t-interval], test, verdict."""
    entries = ([{**summary["headline"], "name": "headline (pre-registered)"}] if summary.get("headline") else []) + \
        list(summary.get("contrasts", []))
    rows = [[entry["name"], contrast_description(entry), effect_cell(entry),
             f"CI {entry['expect']} {fmt(entry['value'], 2)}", entry["verdict"]] for entry in entries]
    return ["contrast", "statistic", "estimate [95% CI]", "test", "verdict"], rows


def every_metric_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Every metric except per-member ones (``members_mean`` summarises them; ``summary.json`` keeps them all)."""
    keys = sorted({key for run in summary["runs"].values() for key in run["metrics"]
                   if not MEMBER_KEY.search(key) and not key.startswith("traj/")})
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

SHIFT_MEMBER_ACC = "shift/members_mean/accuracy"
SHIFT_ENS_ACC = "shift/ensemble/accuracy"
TRAJ_MI = "traj/shift/mutual_information"
TRAJ_MEMBER_ACC = "traj/shift/members_mean/accuracy"
BUDGETS = (1, 3, 10, 30)  # the fixed training budgets (epochs) the trajectory paragraph reads off
PRIOR_PRACTICE = ("Random-sign fast weights are prior practice, not a finding of this project: edward2 / "
                  "uncertainty-baselines initialise rank-1 BNN and BatchEnsemble fast weights with `random_sign_init`, "
                  "and TabM uses random-sign adapters by default; the source paper's verdict (\"BE is a single model\") "
                  "was measured at torch-uncertainty's N(1, 0.5) default, so what is tested here is whether that "
                  "verdict depends on the init.")


def _compare(summary: dict, runs: list[str], key: str, label: str) -> str:
    parts = [f"{run} {cell(summary, run, key)}" for run in runs if stat(summary, run, key)]
    return f"{label}: " + "; ".join(parts) if parts else ""


def _direction(a: float | None, b: float | None, more: str, less: str) -> str:
    if a is None or b is None:
        return "not comparable"
    return more if a > b else less


def _ratio(summary: dict, run: str, other: str, key: str) -> float | None:
    a, b = mean_of(summary, run, key), mean_of(summary, other, key)
    return None if a is None or not b else a / b


def canonical(fields: dict[str, Any]) -> dict[str, Any]:
    """A run's complete config (defaults filled in: run folders and presets written before a key existed read as its
    default), without the seed and execution keys: two runs with equal canonical fields differ only by seed."""
    values = Config.from_dict({key: value for key, value in fields.items()}).to_dict()
    return {key: value for key, value in values.items() if key not in EXECUTION_KEYS and key != "seed"}


def partner(summary: dict, run: str, **changes: Any) -> str | None:
    """The run whose config is ``run``'s with ``changes`` applied (and nothing else changed), if the study has it."""
    try:
        wanted = canonical({**canonical(summary["runs"][run]["fields"]), **changes})
    except BadInput:  # the change is not valid for this run (e.g. the split regime for a single model)
        return None
    return next((name for name, entry in summary["runs"].items() if canonical(entry["fields"]) == wanted), None)


def effect(summary: dict, sides: dict[str, tuple[str, str]], statistic: str) -> dict[str, Any]:
    """``empirics.analysis.effects.contrast_of_runs`` of sides {a: (run, metric), ...} of this study."""
    return effects.contrast_of_runs(summary["runs"], sides, statistic)


def seed_effect_text(summary: dict, a: str, b: str, key: str, statistic: str) -> str:
    """``mean_a / mean_b`` ('0.10× [0.08, 0.13]', ``statistic="ratio"``) or ``mean_a − mean_b``
    ('−0.039 [−0.050, −0.030]', ``"difference"``) of ``key``, with its 95% Welch t-interval (``empirics.analysis.effects.contrast``)."""
    found = effect(summary, {"a": (a, key), "b": (b, key)}, statistic)
    if found["estimate"] is None:
        return "undefined"
    number = (lambda value: fmt(value, 2)) if statistic == "ratio" else (lambda value: f"{value:+.3f}")
    estimate = number(found["estimate"]) + ("×" if statistic == "ratio" else "")
    if found["ci_low"] is None:
        return f"{estimate} (one seed: no CI)"
    return f"{estimate} [{number(found['ci_low'])}, {number(found['ci_high'])}]"


def ratio_text(summary: dict, a: str, b: str, key: str = SHIFT_MI) -> str:
    return seed_effect_text(summary, a, b, key, "ratio")


def seed_difference_text(summary: dict, a: str, b: str, key: str) -> str:
    return seed_effect_text(summary, a, b, key, "difference")


def init_label(fields: dict[str, Any]) -> str:
    config = canonical(fields)
    if config["init"] == "random_sign":
        return f"random signs p = {config['sign_prob']}"
    return f"N({config['init_mean']:g}, {config['init_std']:g})"


def reference_runs(summary: dict, **extra: Any) -> list[str]:
    """BE rank-1 runs with the default k, regime, decay and fast LR (and ``extra`` fields), in the preset's order."""
    base = {"method": "batchensemble", "rank": 1, "members": 4, "batch_regime": "repeat", "fast_weight_decay": True,
            "fast_lr_mult": 1.0, **extra}
    return [name for name, entry in summary["runs"].items()
            if all(canonical(entry["fields"])[key] == value for key, value in base.items())]


def _default_be_and_de(summary: dict, runs: list[str] | None = None) -> tuple[str | None, str | None]:
    names = runs if runs is not None else list(summary["runs"])
    be = next((run for run in names if run in reference_runs(summary, init="normal", init_std=0.5, init_mean=1.0)),
              None)
    de = next((run for run in names if canonical(summary["runs"][run]["fields"])["method"] == "deep-ensemble"), None)
    return be, de


def training_length(summary: dict) -> str:
    """How long the runs actually trained: epochs run (median, range) against the configured maximum, and how many
    stopped early (from metrics.json)."""
    runs = [entry["metrics"] for entry in summary["runs"].values() if "train/epochs_run" in entry["metrics"]]
    if not runs:
        return ""
    epochs = [value for metrics in runs for value in metrics["train/epochs_run"]["values"]]
    stopped = sum(value for metrics in runs for value in metrics["train/stopped_early"]["values"])
    limit = max(canonical(entry["fields"])["epochs"] for entry in summary["runs"].values())
    return (f"epochs trained: median {statistics.median(epochs):g} (range {min(epochs):g}–{max(epochs):g}) of at most "
            f"{limit}; {stopped:g} of {len(epochs)} runs stopped early on validation NLL")


def runs_at_the_cap(summary: dict, runs: list[str]) -> list[str]:
    """The ``runs`` whose every seed trained the configured maximum of epochs without early stopping (from metrics.json:
    ``train/epochs_run``, ``train/stopped_early``)."""
    capped = []
    for run in runs:
        metrics, limit = summary["runs"][run]["metrics"], canonical(summary["runs"][run]["fields"])["epochs"]
        epochs, stopped = metrics.get("train/epochs_run"), metrics.get("train/stopped_early")
        if epochs and stopped and all(value >= limit for value in epochs["values"]) and not any(stopped["values"]):
            capped.append(run)
    return capped


def _architecture(fields: dict[str, Any]) -> str:
    """The network's shape: an MLP's widths, a ViT's patch size, token width, depth, heads and MLP ratio, a ResNet's
    width multiplier (meaningful only for ResNets)."""
    config = canonical(fields)
    if config["arch"] == "mlp":
        return "-".join(map(str, config["widths"]))
    if config["arch"] == "vit":
        return (f"vit ({config['patch_size']}×{config['patch_size']} patches, width {config['vit_width']}, depth "
                f"{config['depth']}, {config['heads']} heads, MLP ratio {config['mlp_ratio']})")
    return f"{config['arch']}×{config['width_mult']}"


def question_scale(summary: dict) -> str:
    groups: dict[str, list[str]] = {}
    for run, entry in summary["runs"].items():
        groups.setdefault(_architecture(entry["fields"]), []).append(run)
    pairs = {arch: _default_be_and_de(summary, runs) for arch, runs in groups.items()}
    pairs = {arch: pair for arch, pair in pairs.items() if all(pair)}
    length = training_length(summary)
    if len(pairs) < 2:
        be, de = _default_be_and_de(summary)
        text = f"Architecture(s) here: {', '.join(groups)}" + (f"; {length}" if length else "") + "."
        if be and de:
            text += (f" BE rank 1 (N(1, 0.5)) has {ratio_text(summary, be, de)} the Deep Ensemble's mutual information "
                     f"under shift ({cell(summary, be, SHIFT_MI)} vs {cell(summary, de, SHIFT_MI)}; ratio of means "
                     f"with its 95% Welch t-interval over seeds), with shift member accuracy {cell(summary, be, SHIFT_MEMBER_ACC)} vs "
                     f"{cell(summary, de, SHIFT_MEMBER_ACC)}.")
        if has_trajectory(summary):
            return text + (" One architecture cannot say whether width or depth change this: `mlp-scale` (widths ×1, "
                           "×4, ×16; depths 2, 3, 5) tests it; training time is this study's question (next "
                           "paragraph).")
        return text + (" One architecture trained for one budget cannot say whether width, depth or training "
                       "time change this: `mlp-scale` (widths ×1, ×4, ×16; depths 2, 3, 5) and `mlp-training-time` "
                       "(fixed budgets, per-epoch trajectory) test it.")
    lines = []
    for arch, (be, de) in pairs.items():
        single = matched_single(summary, be)
        sign = next((run for run in groups[arch] if run in reference_runs(summary, init="random_sign")), None)
        line = (f"{arch}: BE N(1, 0.5) has {ratio_text(summary, be, de)} DE's MI under shift"
                + (f", random signs {ratio_text(summary, sign, de)}" if sign else "")
                + f"; shift ensemble accuracy BE {cell(summary, be, SHIFT_ENS_ACC)}, DE {cell(summary, de, SHIFT_ENS_ACC)}"
                + (f", single model with as many parameters as the BE ({single}; "
                   f"{parameter_match_text(summary, be, single)}) {cell(summary, single, SHIFT_ENS_ACC)}"
                   if single else ""))
        lines.append(line)
    return (f"Scale (ratios of means, {effects.CONTRAST_CI}) — " + "; ".join(lines) + "."
            + (f" Training: {length}." if length else "") + _headline_sentence(summary))


def matched_single(summary: dict, be: str) -> str | None:
    """The study's single model with as many parameters as BE run ``be``: an MLP of the same setting and depth whose
    widths are ``empirics.models.ensembles.matching_widths`` of ``be``'s for its parameter count (the baseline of Abe
    et al. 2022); ``None`` when the study has none."""
    config = Config.from_dict(canonical(summary["runs"][be]["fields"]))
    if config.arch != "mlp":
        return None
    target = None
    for run, entry in summary["runs"].items():
        fields = canonical(entry["fields"])
        if fields["method"] != "single" or len(fields["widths"]) != len(config.widths) or any(
                fields[key] != getattr(config, key) for key in SETTING_KEYS if key != "widths"):
            continue
        target = target if target is not None else count_parameters(config.model_spec())
        single = Config.from_dict(fields).model_spec()
        if tuple(fields["widths"]) == matching_widths(dataclasses.replace(single, widths=config.widths), target):
            return run
    return None


def run_parameters(summary: dict, run: str) -> int:
    """Trainable parameters of ``run``'s model (``empirics.models.ensembles.count_parameters``; every member)."""
    return count_parameters(Config.from_dict(canonical(summary["runs"][run]["fields"])).model_spec())


def parameter_match_text(summary: dict, be: str, single: str) -> str:
    """'BE 12,345 vs single 12,340 parameters, gap −0.04%': both counts and the single model's relative gap
    (n_single − n_BE) / n_BE."""
    n_be, n_single = run_parameters(summary, be), run_parameters(summary, single)
    return f"BE {n_be:,} vs single {n_single:,} parameters, gap {(n_single - n_be) / n_be:+.2%}"


def _headline_sentence(summary: dict) -> str:
    head = summary.get("headline")
    if not head:
        return ""
    return (f" Pre-registered test: {head['hypothesis']} Estimate {effect_cell(head)}: {head['verdict']}.")


def _trajectory_epochs(summary: dict, run: str) -> list[int]:
    prefix = f"{TRAJ_MI}@"
    return sorted(int(key[len(prefix):]) for key in summary["runs"][run]["metrics"] if key.startswith(prefix))


def has_trajectory(summary: dict) -> bool:
    """Some run recorded its diversity after every epoch (``empirics.analysis.trajectory``)."""
    return any(_trajectory_epochs(summary, run) for run in summary["runs"])


def question_training_time(summary: dict) -> str:
    runs = [run for run in summary["runs"] if _trajectory_epochs(summary, run)]
    length = training_length(summary)
    if not runs:
        return ("This study records no per-epoch diversity trajectory" + (f" ({length})" if length else "") +
                ", so it cannot say whether BE's diversity collapses with training; comparing studies trained for "
                "different lengths (quick: at most 5 epochs on 10,000 images; paper-mnist: early stopping on full "
                "MNIST) confounds length with data size and seeds. `mlp-training-time` tests it with fixed budgets.")
    parts = []
    for run in runs:
        epochs = [e for e in BUDGETS if e in _trajectory_epochs(summary, run)]
        values = ", ".join(f"{e}: {cell(summary, run, f'{TRAJ_MI}@{e}')}" for e in epochs)
        accuracy = ", ".join(f"{e}: {cell(summary, run, f'{TRAJ_MEMBER_ACC}@{e}')}" for e in epochs)
        parts.append(f"{run} — MI under shift by epoch {values}; member accuracy {accuracy}")
    shares = []
    for run in runs:
        config = canonical(summary["runs"][run]["fields"])
        if config["method"] != "batchensemble":
            continue
        de = next((other for other in runs if canonical(summary["runs"][other]["fields"])["method"] == "deep-ensemble"
                   and canonical(summary["runs"][other]["fields"])["n_train"] == config["n_train"]), None)
        epochs = _trajectory_epochs(summary, run)
        if de is None or len(epochs) < 2:
            continue
        first, last = epochs[0], epochs[-1]
        found = effect(summary, {"a": (run, f"{TRAJ_MI}@{last}"), "b": (run, f"{TRAJ_MI}@{first}"),
                                 "c": (de, f"{TRAJ_MI}@{last}"), "d": (de, f"{TRAJ_MI}@{first}")}, "ratio_of_ratios")
        shares.append(f"{run}: {effect_cell(found)}")
    samples = sorted({canonical(summary["runs"][run]["fields"])["trajectory_samples"] for run in runs})
    text = (f"Trajectory ({' or '.join(f'{count:,}' for count in samples)} fixed shifted test images, config key "
            f"trajectory_samples; mean ± std over seeds) — " + "; ".join(parts) + ".")
    if shares:
        text += (" BE's share of DE's MI under shift at the last epoch over its share at the first (ratio of ratios, "
                 "95% Welch t-interval over seeds by the delta method, the two epochs paired within a run and BE and "
                 "DE independent; below 1 = BE's relative diversity falls with training): "
                 + "; ".join(shares) + ".")
    return text + _headline_sentence(summary) if summary.get("headline", {}).get("metric", "").startswith("traj/") \
        else text


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


SHARED_ATTENTION = "attention shared (BE in the patch embedding, MLP blocks and head)"  # be_scope="mlp"


def _init_label(summary: dict, run: str) -> str:
    fields = summary["runs"][run]["fields"]
    return init_label(fields) + (f", {SHARED_ATTENTION}" if canonical(fields)["be_scope"] == "mlp" else "")


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
    BE with shared attention (``be_scope="mlp"``), and the init comparison."""
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
                                                   f"MI under shift, {SHARED_ATTENTION} vs BE everywhere",
                                                   ("BE with shared attention", "BE everywhere")) + ".")
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
        capped = runs_at_the_cap(summary, runs_where(summary, dataset=dataset))
        if capped:
            limit = canonical(summary["runs"][capped[0]]["fields"])["epochs"]
            text += (f" Training: {', '.join(capped)} ran all {limit} epochs in every seed (early stopping never "
                     "triggered), so they may be under-trained beside the runs that stopped early.")
        sign = _dataset_runs(summary, dataset, "batchensemble", init="random_sign")
        if sign and dataset in TABULAR_DATASETS:
            text += " " + tabm_sentence(summary, sign[0], de[0])
        parts.append(text)
    return "Regression (Gaussian heads; diamonds in standardised log price, toy-gap in raw y) — " + " ".join(parts)


TABM_CLAIM = ("TabM's claim (Gorishniy et al., ICLR 2025; docs/peers.md §3): random-sign BatchEnsemble-style MLPs have "
              "lower test RMSE than a Deep Ensemble on tabular regression (California housing 0.441 vs 0.488 for a "
              "Deep Ensemble of 5 MLPs, in that data set's units; TabM has k = 32 members)")
TABM_VERDICTS = {"holds": "TabM's claim holds here (the CI lies below 0)",
                 "contradicted": "TabM's claim is contradicted here (the CI lies above 0: random-sign BE has the "
                                 "higher test RMSE)",
                 "not resolved": "TabM's claim is not resolved here (the CI includes 0)",
                 "no CI": "TabM's claim is not resolved here (no CI)"}


def tabm_sentence(summary: dict, sign: str, de: str) -> str:
    """TabM's claim (random-sign BE has lower test RMSE than DE) tested on one tabular data set's runs: the means, the
    difference sign − de with its Welch 95% interval (``difference_text``) and ``paper_claims.verdict`` with the
    predicted direction −1 (lower RMSE is better)."""
    key = "test/ensemble/rmse"
    a, b = paper_claims.seed_values(summary, sign, key), paper_claims.seed_values(summary, de, key)
    if a is None or b is None:
        return f"{TABM_CLAIM}: not measured here ({sign} or {de} has no test RMSE)."
    members = canonical(summary["runs"][sign]["fields"])["members"]
    difference = paper_claims.welch_difference(a, b)
    verdict = "no CI" if difference["ci_low"] is None else paper_claims.verdict(difference, -1)
    return (f"{TABM_CLAIM}. Here (k = {members}), test RMSE {sign} {cell(summary, sign, key)} vs {de} "
            f"{cell(summary, de, key)}, {difference_text(summary, sign, de, key)[0]}: {TABM_VERDICTS[verdict]}.")


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


def theory_clause(summary: dict, stratum: str | None) -> str | None:
    """Where the rank-1 BE set sits, for the runs of one data set (``stratum``; every run for ``None``): the first
    rank-1 BE run's reachable fraction and distance to the set, the first Deep Ensemble's distance to it."""
    where = {} if stratum is None else {"dataset": stratum}
    be = runs_where(summary, method="batchensemble", rank=1, **where)
    de = runs_where(summary, method="deep-ensemble", **where)
    parts = []
    if be:
        parts.append(f"rank-1 BE reaches a fraction {cell(summary, be[0], REACHABLE)} of the Deep-Ensemble space of its "
                     f"network ({be[0]}; a measure-zero set); the trained BE members lie on it (relative distance to "
                     f"the rank-1 set {cell(summary, be[0], DISTANCE_R1)}, zero by construction)")
    if de:
        parts.append(f"the trained Deep Ensemble ({de[0]}) lies at relative distance "
                     f"{cell(summary, de[0], DISTANCE_R1)} from " + ("it" if be else "the rank-1 BE set of its network"))
    if not parts:
        return None
    return (f"on {stratum}, " if stratum else "") + "; ".join(parts)


def question_link(summary: dict) -> str:
    clauses = [clause for clause in (theory_clause(summary, stratum) for stratum in link_strata(summary)) if clause]
    theory = "Theory: " + "; ".join(clauses) + ". " if clauses else ""
    text, heads = [], []
    for key, units in link_sections(summary):
        link = summary[key]
        pairs = [pair for pair in (link["headline"], rank_one_link(link, study_task(summary))) if pair is not None]
        heads += pairs
        text.append(f"across {pairs[0]['n']} {units} (runs × seeds in {pairs[0].get('n_configs', '?')} "
                    f"configurations): " + "; ".join(link_sentence(pair) for pair in pairs))
    across = any(link_established(head) for head in heads)
    within = any(link_established(head.get("within") or {}) for head in heads)
    verdict = ("CIs come from a cluster bootstrap over configurations, then seeds (runs of one configuration are not "
               "independent). " + (
                   "An association across configurations whose CI excludes 0 is not the formal link the paper asks "
                   "for: with a handful of configurations it mostly reflects how the configurations are ordered (the "
                   "between-configuration ρ), and these tests are not corrected for multiplicity. " if across else
                   "For these pairs this study establishes no association across configurations. ") + (
                   "Within configurations, among seeds, an association's CI also excludes 0." if within else
                   "For these pairs, within configurations (among the seeds of one configuration) no association is "
                   "established; the tables above give every other pair."))
    return theory + ("Link: " + "; ".join(text) + ". " if text else "") + verdict


def link_sections(summary: dict) -> list[tuple[str, str]]:
    """(summary key, the ensembles it covers) of every link analysis of a study, in report order: all ensembles, then
    without MC Dropout; per data set when the study has several (``empirics.studies.runner.link_analyses``)."""
    sections = []
    for stratum in link_strata(summary):
        where = f" on {stratum}" if stratum else ""
        sections.append((link_key(LINK, stratum), f"trained ensembles{where}"))
        if link_key(LINK_WITHOUT_MCD, stratum) in summary:
            sections.append((link_key(LINK_WITHOUT_MCD, stratum),
                             f"ensembles{where} without MC Dropout ({WITHOUT_MCD_REASON})"))
    return sections


def rank_one_link(link: dict, task: str = "classification") -> dict | None:
    """The task's rank-1 pair of a link analysis (``empirics.analysis.diversity.link_pair``: distance to the rank-1 BE
    set vs MI under shift, or vs the epistemic variance under shift for regression), if it was measured."""
    wanted = link_pair(task, "rank1")
    return next((pair for pair in link["pairs"] if (pair["parameter_key"], pair["function_key"]) == wanted), None)


def link_established(head: dict) -> bool:
    return head.get("rho") is not None and head.get("ci_low") is not None and (head["ci_low"] > 0 or
                                                                                head["ci_high"] < 0)


def link_sentence(head: dict) -> str:
    """'<parameter> and <function>: pooled ρ … [cluster CI]; between …; within …' with what the pooled CI says."""
    if head["rho"] is None:
        return f"{head['parameter']} and {head['function']}: undefined (too few runs with both measures)"
    interval = " (95% cluster-bootstrap CI)" if head["ci_low"] is not None else ""
    return (f"{head['parameter']} and {head['function']} have pooled Spearman ρ = {rho_cell(head)}{interval}, "
            f"between configurations {rho_cell(head.get('between'))}, within configurations "
            f"{rho_cell(head.get('within'))}: "
            + (f"no CI with {head.get('n_configs')} configurations (a cluster bootstrap needs at least "
               f"{effects.MIN_CLUSTERS}), so no association is established" if head["ci_low"] is None else
               "the pooled CI excludes 0 (positive)" if head["ci_low"] > 0 else
               "the pooled CI excludes 0 (negative)" if head["ci_high"] < 0 else
               "the pooled CI includes 0, so no monotone association is established"))


def rank_sweeps(summary: dict) -> list[list[str]]:
    """Groups of BE runs equal in every config key but the rank (at any init, variant, k or regime), each with at least
    two ranks, sorted by rank; groups in the preset's order."""
    groups: dict[str, list[str]] = {}
    for run, entry in summary["runs"].items():
        fields = canonical(entry["fields"])
        if fields["method"] == "batchensemble":
            rest = {key: value for key, value in fields.items() if key != "rank"}
            groups.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(run)
    rank_of = lambda run: _rank_order(canonical(summary["runs"][run]["fields"])["rank"])  # noqa: E731
    return [sorted(runs, key=rank_of) for runs in groups.values() if len({rank_of(run) for run in runs}) >= 2]


def question_rank(summary: dict) -> str:
    sweeps = rank_sweeps(summary)
    if not sweeps:
        return ("This study has no BE runs that differ only in the rank: `rank-ablation` (and `quick`) address "
                "rank > 1.")
    return "Rank sweeps (runs that differ only in the rank) — " + " ".join(rank_sweep_text(summary, runs)
                                                                         for runs in sweeps)


def rank_sweep_text(summary: dict, be: list[str]) -> str:
    """One sweep: every run's MI under shift, weight cosine, reachable fraction and accuracy, the rise from the lowest
    to the highest rank (ratio of means with its Welch t-interval), the highest rank against the Deep Ensemble of the
    same setting, and the variance-matched init of that sweep's init."""
    fields = canonical(summary["runs"][be[0]]["fields"])
    rank = lambda run: canonical(summary["runs"][run]["fields"])["rank"]  # noqa: E731
    lines = [f"{run} (r = {rank(run)}): MI under shift "
             f"{cell(summary, run, SHIFT_MI)}, weight cosine {cell(summary, run, WEIGHT_COSINE)}, reachable fraction "
             f"{cell(summary, run, REACHABLE)}, test accuracy {cell(summary, run, TEST_ACCURACY)}, shift member "
             f"accuracy {cell(summary, run, SHIFT_MEMBER_ACC)}" for run in be]
    bottom, top = be[0], be[-1]
    change = _versus_de(effect(summary, {"a": (top, SHIFT_MI), "b": (bottom, SHIFT_MI)}, "ratio"), 1.0,
                        "a rise (the CI lies above 1) whose size is that ratio, not 'barely'",
                        "the CI includes 1, so no change is established", "a fall (the CI lies below 1)")
    verdict = (f" From {bottom} to {top} the MI under shift changes by {ratio_text(summary, top, bottom)} (ratio of "
               f"means, 95% Welch t-interval): {change}.")
    de = [run for run in runs_where(summary, method="deep-ensemble") if _same_setting(summary, run, top)] or \
        runs_where(summary, method="deep-ensemble")
    if de:
        above = _direction(mean_of(summary, top, WEIGHT_COSINE), mean_of(summary, de[0], WEIGHT_COSINE), "above",
                           "at or below")
        verdict += (f" The highest rank ({top}) reaches {ratio_text(summary, top, de[0])} the Deep Ensemble's MI under "
                    f"shift ({cell(summary, de[0], SHIFT_MI)}) with a weight cosine {above} the Deep Ensemble's "
                    f"({cell(summary, de[0], WEIGHT_COSINE)}).")
    mean, second = rank_one_moments(fields["init"], fields["init_std"], fields["sign_prob"], fields["init_mean"])
    spreads = ", ".join(f"r = {rank(run)}: {output_factor_spread(rank(run), 2, mean, second):.3f}"
                        for run in be if rank(run) != FULL_RANK)
    init_note = (f" Init ({init_label(fields)}, X its rank-1 draw, mean μ = {mean:g}, E[X²] = {second:g}): the "
                 f"engine's rank-r init is variance-matched (empirics.models.layers.init_fast_factors): the output "
                 f"factor is μ/r + ρ_r (X − μ) (ρ_r: {spreads}), so every multiplier entry starts with mean "
                 f"μ² = {mean ** 2:g} and std √(E[X²]² − μ⁴) = {init_multiplier_std(mean, second):.3f} at every "
                 f"rank: rank is not confounded with the initial member spread.")
    return "; ".join(lines) + "." + verdict + init_note


def init_multiplier_std(mean: float, second_moment: float) -> float:
    """Std of one channel-wise multiplier entry (a product of two independent factor entries of mean μ and second
    moment e) at any rank under the variance-matched init: the rank-1 value √(e² − μ⁴)
    (``empirics.models.layers.output_factor_spread``); N(1, 0.5): √((1 + 0.5²)² − 1)."""
    return (second_moment ** 2 - mean ** 4) ** 0.5


def _rank_order(rank: int | str) -> float:
    return float("inf") if rank == FULL_RANK else float(rank)


def question_variant(summary: dict) -> str:
    """Each rank-1 BE run of another variant beside its channel-wise partner (the same config but the variant: same
    init, rank and k), so the comparison changes one thing."""
    pairs = [(run, partner(summary, run, variant="channel-wise"))
             for run in runs_where(summary, method="batchensemble", rank=1)
             if summary["runs"][run]["fields"].get("variant", "channel-wise") != "channel-wise"]
    pairs = [(run, reference) for run, reference in pairs if reference is not None]
    if not pairs:
        return ("This study has no rank-1 BE run of another variant beside a channel-wise run of the same config "
                "(dense layers have no kernel-wise form): `resnet18-mnist` compares channel-wise with "
                "flattened-kernel fast weights.")

    def described(run: str) -> str:
        return (f"{summary['runs'][run]['fields'].get('variant', 'channel-wise')} ({run}): MI under shift "
                f"{cell(summary, run, SHIFT_MI)}, weight cosine {cell(summary, run, WEIGHT_COSINE)}, reachable "
                f"fraction {cell(summary, run, REACHABLE)}, shift ensemble accuracy {cell(summary, run, SHIFT_ENS_ACC)}")

    return "Variants at rank 1, each beside the channel-wise run of the same config — " + "; ".join(
        f"{described(run)} vs {described(reference)}: MI under shift {ratio_text(summary, run, reference)} of the "
        f"channel-wise run's, shift ensemble accuracy {seed_difference_text(summary, run, reference, SHIFT_ENS_ACC)}"
        for run, reference in pairs) + "."


CONTROLS = (  # (label, change from the reference run): the init controls of mlp-init
    ("fast-weight decay off", {"fast_weight_decay": False}),
    ("frozen fast weights (fast LR 0)", {"fast_lr_mult": 0.0}),
    ("k = 2", {"members": 2}),
    ("k = 8", {"members": 8}),
    ("rank 4", {"rank": 4}),
    ("each member sees 1/k of the batch", {"batch_regime": "split"}),
)


INIT_KEYS = ("init", "init_mean", "init_std", "sign_prob")


def init_sweep(summary: dict) -> list[str]:
    """The reference BE runs (``reference_runs``) that differ only in the fast-weight init: of the groups of runs equal
    in every other key (architecture, data size, variant, BE scope, ...), the one with the most distinct inits (the
    first in the preset's order on ties)."""
    groups: dict[str, list[str]] = {}
    for run in reference_runs(summary):
        rest = {key: value for key, value in canonical(summary["runs"][run]["fields"]).items() if key not in INIT_KEYS}
        groups.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(run)
    return max(groups.values(), key=lambda runs: len({init_label(summary["runs"][run]["fields"]) for run in runs}),
               default=[])


SETTING_KEYS = ("dataset", "n_train", "arch", "widths", "activation", "width_mult", "patch_size", "vit_width", "depth",
                "heads", "mlp_ratio", "epochs")  # the data, network and budget, whatever the method


def _same_setting(summary: dict, run: str, other: str) -> bool:
    one, two = canonical(summary["runs"][run]["fields"]), canonical(summary["runs"][other]["fields"])
    return all(one[key] == two[key] for key in SETTING_KEYS)


def question_init(summary: dict) -> str:
    be = init_sweep(summary)
    labels = {run: init_label(summary["runs"][run]["fields"]) for run in be}
    if len(set(labels.values())) < 2:
        return ("This study has no BE runs that differ only in the fast-weight init: `rank-ablation` compares "
                "N(1, 0.5), N(1, 1) and random signs, and `mlp-init` separates sign, mean and spread. "
                + PRIOR_PRACTICE)
    de = next((run for run in summary["runs"] if canonical(summary["runs"][run]["fields"])["method"] == "deep-ensemble"
               and _same_setting(summary, run, be[0])), None)
    rows = []
    for run, label in labels.items():
        row = (f"{label} ({run}): MI under shift {cell(summary, run, SHIFT_MI)}"
               + (f" = {ratio_text(summary, run, de)} DE's" if de else "")
               + f", shift member accuracy {cell(summary, run, SHIFT_MEMBER_ACC)}, shift ensemble accuracy "
               f"{cell(summary, run, SHIFT_ENS_ACC)}, weight cosine {cell(summary, run, WEIGHT_COSINE)}")
        rows.append(row)
    text = f"Fast-weight init at rank 1 (ratios of means, {effects.CONTRAST_CI}) — " + "; ".join(rows) + "."
    if de:
        top = max(labels, key=lambda run: mean_of(summary, run, SHIFT_MI) or 0.0)
        single = next((run for run in summary["runs"] if canonical(summary["runs"][run]["fields"])["method"] == "single"
                       and _same_setting(summary, run, be[0])), None)
        text += (f" The init with the highest mean MI under shift, {labels[top]} ({top}), has {ratio_text(summary, top, de)} the Deep "
                 f"Ensemble's MI under shift; its shift ensemble accuracy is {cell(summary, top, SHIFT_ENS_ACC)} vs "
                 f"DE {cell(summary, de, SHIFT_ENS_ACC)} (difference {seed_difference_text(summary, top, de, SHIFT_ENS_ACC)})"
                 + (f" and the single model's {cell(summary, single, SHIFT_ENS_ACC)}" if single else "")
                 + f"; shift ECE {cell(summary, top, SHIFT_ECE)} vs DE {cell(summary, de, SHIFT_ECE)}. It stays on the "
                 f"rank-1 BE set (relative distance {cell(summary, top, DISTANCE_R1)}) with "
                 + _versus_de(effect(summary, {"a": (top, SHIFT_MI), "b": (de, SHIFT_MI)}, "ratio"), 1.0,
                              "more MI under shift than DE", "MI under shift not distinguishable from DE's",
                              "less MI under shift than DE") + " and "
                 + _versus_de(effect(summary, {"a": (top, SHIFT_ENS_ACC), "b": (de, SHIFT_ENS_ACC)}, "difference"),
                              0.0, "higher shift accuracy than DE", "shift accuracy not distinguishable from DE's",
                              "lower shift accuracy than DE") + " (95% CIs).")
    text += _init_factors(summary, labels)
    controls = [control_text(summary, run, other, f"{label} at {labels[run]}", "members" in change)
                for run in be for label, change in CONTROLS if (other := partner(summary, run, **change))]
    if controls:
        text += (" Controls (run with the change over the run without, ratio of means; accuracy difference; the k "
                 "controls compare mean pairwise disagreement and JSD instead of MI, because the plug-in MI "
                 "H(mean p) − mean H(p) grows with k for the same spread of members and means over member pairs do "
                 "not) — " + "; ".join(controls) + ".")
    return text + " " + PRIOR_PRACTICE


def control_text(summary: dict, run: str, other: str, label: str, changes_k: bool) -> str:
    """'<label>: <diversity> <ratio> of <run>'s, shift member accuracy <difference>': MI under shift, or for a change
    of k the mean pairwise disagreement and JSD under shift (means over member pairs, comparable across k)."""
    if changes_k:
        diversity = (f"pairwise disagreement under shift {ratio_text(summary, other, run, SHIFT_DISAGREEMENT)}, "
                     f"pairwise JSD under shift {ratio_text(summary, other, run, SHIFT_JSD)}")
    else:
        diversity = f"MI under shift {ratio_text(summary, other, run)}"
    return (f"{label}: {diversity} of {run}'s, shift member accuracy "
            f"{seed_difference_text(summary, other, run, SHIFT_MEMBER_ACC)}")


def _versus_de(found: dict[str, Any], value: float, above: str, overlap: str, below: str) -> str:
    """The wording that a CI supports: entirely above ``value``, entirely below, or overlapping it."""
    if found.get("ci_low") is None:
        return "no CI (one seed)"
    return above if found["ci_low"] > value else below if found["ci_high"] < value else overlap


def _init_factors(summary: dict, labels: dict[str, str]) -> str:
    """Sign vs mean vs spread, from the runs that isolate each (when the study has them)."""
    by_label = {label: run for run, label in labels.items()}
    checks = [("zero mean without the ±1 draw at the signs' multiplier second moment (E[(r·s)²] = 1): N(0, 1) over "
               "random signs p = 0.5", "N(0, 1)", "random signs p = 0.5"),
              ("zero mean at 1/16 of that second moment (0.25² = 0.0625): N(0, 0.5) over random signs p = 0.5",
               "N(0, 0.5)", "random signs p = 0.5"),
              ("scale at zero mean: N(0, 1) over N(0, 0.5)", "N(0, 1)", "N(0, 0.5)"),
              ("spread at mean 1: N(1, 2) over N(1, 0.5)", "N(1, 2)", "N(1, 0.5)"),
              ("spread at mean 1: N(1, 1) over N(1, 0.5)", "N(1, 1)", "N(1, 0.5)"),
              ("sign balance: p = 0.75 over p = 0.5", "random signs p = 0.75", "random signs p = 0.5")]
    found = [f"{text} {ratio_text(summary, by_label[a], by_label[b])}" for text, a, b in checks
             if a in by_label and b in by_label]
    return (" What in the init matters (MI under shift, ratio of means, 95% CI) — " + "; ".join(found) + "."
            if found else "")


def question_batch_regime(summary: dict) -> str:
    pairs = [(run, partner(summary, run, batch_regime="split")) for run in summary["runs"]
             if canonical(summary["runs"][run]["fields"])["batch_regime"] == "repeat"]
    pairs = [(run, other) for run, other in pairs if other]
    if not pairs:
        return ("Every run here feeds every member the whole batch (edward2's BatchEnsemble); torch-uncertainty (since "
                "0.9) trains BatchEnsemble with each member seeing 1/k of the batch (repeat_strategy=\"paper\"), so "
                "this study says nothing about that regime: `mlp-init` compares the two (config key batch_regime).")
    return "Batch regime (each member sees 1/k of the batch vs the whole batch) — " + "; ".join(
        f"{other} over {run}: MI under shift {ratio_text(summary, other, run)}, disagreement under shift "
        f"{ratio_text(summary, other, run, 'shift/disagreement')}, shift member accuracy "
        f"{seed_difference_text(summary, other, run, SHIFT_MEMBER_ACC)}, shift ensemble accuracy "
        f"{seed_difference_text(summary, other, run, SHIFT_ENS_ACC)}" for run, other in pairs) + \
        (f" (ratios / differences of means, {effects.CONTRAST_CI}). Confound: at the same number of epochs each "
         "member sees 1/k of the training data per epoch in the split regime, so the regimes differ in examples per "
         "member as well as in batch composition.")


OPEN_QUESTIONS = (
    ("Does scale (width, depth) restore diversity?", question_scale),
    ("Does BE's diversity collapse with training?", question_training_time),
    ("Do the limits hold for Transformers and regression?", question_other_models),
    ("Is there a link from the rank-1 parametrisation to functional diversity?", question_link),
    ("Does rank > 1 reach distinct modes while staying efficient?", question_rank),
    ("Kernel-wise vs channel-wise fast weights?", question_variant),
    ("What in the fast-weight init matters (sign, mean, spread)?", question_init),
    ("What does the batch regime do?", question_batch_regime),
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
             f"Generated from `{SUMMARY_FILE}` (summarised at git commit `{commit}`; {trained_at_text(summary)}); up "
             f"to {seeds} seed(s) per run; "
             f"mean ± sample std over seeds. Missing (unfinished) runs: {', '.join(summary['missing']) or 'none'}."]
    if summary.get("reference"):
        parts += ["", "## Ours vs reference (docs/paper.md §4)", "", markdown_table(*reference_table(summary))]
    for split, title in split_sections(summary)[1].items():
        parts += ["", f"## {title[:1].upper() + title[1:]}", "", markdown_table(*split_table(summary, split))]
    parity_rows = parity.parity_rows(summary)
    if parity_rows:
        parts += ["", "## Precision parity: bf16 against fp32 (empirics.studies.parity)", "", parity.parity_markdown(parity_rows)]
    claims = paper_claims.claims_table(summary)
    if claims[1]:
        parts += ["", "## The paper's claims at this scale (docs/paper.md §2 claim 2), one by one", "",
                  paper_claims.METHOD, "", markdown_table(*claims)]
    if summary.get("headline") or summary.get("contrasts"):
        parts += ["", "## Pre-registered headline test and contrasts", ""]
        if summary.get("headline"):
            parts += [f"**Headline (written in the preset before the study ran).** {summary['headline']['hypothesis']}",
                      ""]
        parts += [f"Estimates are ratios or differences of means over seeds with {effects.CONTRAST_CI} "
                  "(sides from the same run paired by seed); a test is *supported* when the CI lies on the stated side "
                  "of the value, *contradicted* when it lies on the other side, *inconclusive* otherwise. The "
                  "contrasts after the headline are reported, not pre-registered as the study's test.", "",
                  markdown_table(*contrast_table(summary))]
    parts += ["", f"## {DIVERSITY_TITLES[study_task(summary)]}", "",
              markdown_table(*diversity_table(summary)), "", parameter_measures_note(summary),
              "", "## Parameter ↔ function-space link", "", link_method(summary)]
    for key, units in link_sections(summary):
        parts += ["", f"Over the {units}:", "", markdown_table(*link_table(summary, key))]
    parts += ["", "## Figures", ""]
    figures = figure_paths(preset, out)
    parts += [f"![{Path(path).stem}]({path})" for path in figures] or ["(none yet: run `make figures`)"]
    parts += ["", "## Open questions of the paper (docs/paper.md §3): what this study shows", ""]
    for question, answer in open_questions(summary):
        parts += [f"**{question}** {answer(summary)}", ""]
    if any(summary.get("run_seconds", {}).values()):
        parts += ["## Cost (wall minutes per run on the machine that ran it, mean ± std over seeds)", "",
                  "Timings of a shared machine, not results (`empirics.studies.runner.run_seconds`); training is summed "
                  "over the invocations that trained a run.", "", markdown_table(*cost_table(summary)), ""]
    parts += ["## Every metric (mean ± std over seeds; per-member values are in summary.json)", "",
              markdown_table(*every_metric_table(summary)), ""]
    return "\n".join(parts)


def short_commit(commit: str) -> str:
    """The first 10 hex digits of a commit, keeping a ``+dirty`` mark (``infra.provenance.git_commit``)."""
    sha, dirty, mark = commit.partition("+")
    return sha[:10] + dirty + mark


def trained_at_text(summary: dict) -> str:
    """'runs trained at `a` (3 runs), `b` (1 run)': the commits of the code that trained the finished runs
    (``summary["trained_at"]``, from each run's metrics.json / config.json), which need not be the summarising
    commit; a summary written before they were recorded says so."""
    commits = summary.get("trained_at")
    if commits is None:
        return "training commits not recorded in this summary"
    if not commits:
        return "no finished runs"
    return "runs trained at " + ", ".join(
        f"`{short_commit(commit)}` ({len(runs)} run{'s' if len(runs) != 1 else ''})" for commit, runs in commits.items())


COST_PHASES = ("train", "evaluate", "analyse")


def cost_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Minutes of training, evaluation and analysis per run (from ``summary["run_seconds"]``)."""
    def minutes(entry: dict | None) -> str:
        return "–" if entry is None else f"{entry['mean'] / 60:.1f} ± {entry['std'] / 60:.1f}"

    rows = [[run, *(minutes(phases.get(phase)) for phase in COST_PHASES)]
            for run, phases in summary["run_seconds"].items()]
    return ["run", *COST_PHASES], rows


def build_latex(summary: dict) -> str:
    preset = summary["preset"]
    tables = []
    if summary.get("reference"):
        tables.append(latex_table(*reference_table(summary), f"{preset}: ours vs the reference (docs/paper.md §4)"))
    for split, title in split_sections(summary)[1].items():
        tables.append(latex_table(*split_table(summary, split), f"{preset}: {title}, mean ± std over seeds"))
    if summary.get("headline") or summary.get("contrasts"):
        tables.append(latex_table(*contrast_table(summary), f"{preset}: headline test and contrasts, "
                                                            f"{effects.CONTRAST_CI}"))
    claims = paper_claims.claims_table(summary)
    if claims[1]:
        tables.append(latex_table(*claims, f"{preset}: the paper's claims, Welch 95 percent intervals over seeds"))
    tables.append(latex_table(*diversity_table(summary), f"{preset}: parameter-space diversity"))
    for index, (key, units) in enumerate(link_sections(summary)):
        method = f". {link_method(summary)}" if index == 0 else ""
        tables.append(latex_table(*link_table(summary, key), f"{preset}: the link over the {units}{method}"))
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
