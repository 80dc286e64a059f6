"""Classification, calibration, diversity and OOD metrics for an ensemble, per member and for the ensemble.

Inputs are probabilities, never logits: ``member_probs`` of shape ``(k, N, C)`` (k members, N inputs, C classes,
rows summing to 1); the ensemble predicts p̄ = mean over members. All logarithms are natural (nats).

Flat keys (``prefix`` is the split, e.g. ``test``, ``val``, ``shift``, ``shift/fog``):

* ``{prefix}/{model}/{metric}`` with model ∈ {``ensemble``, ``member_0`` … ``member_{k−1}``, ``members_mean``} and
  metric ∈ {``accuracy``, ``nll``, ``brier``, ``ece``, ``mce``}; ``members_mean`` averages the members' values;
* ``{prefix}/{quantity}`` for the ensemble as a whole: ``predictive_entropy`` = mean_n H(p̄_n),
  ``expected_entropy`` = mean_n mean_m H(p_mn), ``mutual_information`` = their difference (the generalised
  Jensen-Shannon divergence of the members), and, for k ≥ 2, ``pairwise_jsd`` (mean over member pairs and inputs of
  JSD(p_i, p_j), torchmetrics, ≤ ln 2) and ``disagreement`` (mean over inputs of the fraction of member pairs whose
  argmax differ); ``label_free_metrics`` gives just these (for OOD inputs, whose labels mean nothing);
* OOD (``ood_metrics``), OOD inputs as the positive class: ``{prefix}/{score}/{auroc|aupr|fpr95}`` for the scores
  ``max_prob`` (score = −max_c p̄_c), ``entropy`` (H(p̄)) and, for k ≥ 2, ``mutual_information``.

Definitions: accuracy = mean[argmax p = y]; NLL = mean −ln max(p_y, PROB_FLOOR) (the clamp keeps a confidently
wrong prediction finite: NLL ≤ −ln 1e-12 ≈ 27.6); Brier = mean Σ_c (p_c − [c = y])² (range [0, 2]); ECE / MCE =
torchmetrics ``multiclass_calibration_error`` with 15 equal-width confidence bins, norm ``l1`` (Σ_b |B_b|/N ·
|acc_b − conf_b|) / ``max`` (max_b |acc_b − conf_b|); AUROC / AUPR (average precision) / ROC from torchmetrics'
binary functions; FPR95 = the smallest false-positive rate on the ROC curve at a true-positive rate ≥ 0.95.
"""
from __future__ import annotations

import itertools

import torch
from torchmetrics.functional.classification import (binary_auroc, binary_average_precision, binary_roc,
                                                    multiclass_calibration_error)
from torchmetrics.functional.regression import jensen_shannon_divergence

from infra.errors import BadInput, require

PROB_FLOOR = 1e-12
N_BINS = 15
TPR_LEVEL = 0.95
ROW_SUM_TOLERANCE = 1e-3  # float32 softmax rows sum to 1 within ~1e-6; logits or garbage miss this by far more


def _as_members(probs: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` → ``(1, N, C)``; ``(k, N, C)`` unchanged; float64; rows checked to be distributions."""
    require(probs.ndim in (2, 3), f"probabilities of shape {tuple(probs.shape)}: expected (N, C) or (k, N, C)")
    probs = (probs if probs.ndim == 3 else probs.unsqueeze(0)).to(torch.float64)
    require(probs.shape[1] > 0 and probs.shape[2] >= 2,
            f"probabilities of shape {tuple(probs.shape)}: expected at least one input and two classes")
    if probs.min() < 0 or (probs.sum(-1) - 1).abs().max() > ROW_SUM_TOLERANCE:
        sums = probs.sum(-1)
        raise BadInput(f"probabilities must be non-negative with rows summing to 1 (±{ROW_SUM_TOLERANCE}); got "
                       f"minimum {probs.min():.3g} and row sums in [{sums.min():.4g}, {sums.max():.4g}]"
                       " (pass softmax outputs, not logits)")
    return probs


def _check_labels(labels: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    n, classes = probs.shape[-2:]
    require(labels.shape == (n,), f"labels of shape {tuple(labels.shape)}: expected ({n},) to match the probabilities")
    require(bool(((labels >= 0) & (labels < classes)).all()), f"labels must lie in 0..{classes - 1}")
    return labels.to(torch.int64)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """H(p) = −Σ_c p_c ln p_c over the last axis (0 ln 0 = 0)."""
    return -torch.special.xlogy(probs, probs).sum(-1)


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return (probs.argmax(-1) == labels).to(torch.float64).mean().item()


def nll(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """mean −ln max(p_y, PROB_FLOOR)."""
    picked = probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return (-torch.log(picked.clamp(min=PROB_FLOOR))).mean().item()


def brier(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """mean Σ_c (p_c − [c = y])²."""
    one_hot = torch.nn.functional.one_hot(labels, probs.shape[-1]).to(probs)
    return ((probs - one_hot) ** 2).sum(-1).mean().item()


def calibration_error(probs: torch.Tensor, labels: torch.Tensor, norm: str) -> float:
    """torchmetrics' multiclass calibration error, 15 bins; ``norm='l1'`` is ECE, ``'max'`` is MCE."""
    return multiclass_calibration_error(probs, labels, num_classes=probs.shape[-1], n_bins=N_BINS, norm=norm).item()


def model_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """accuracy, nll, brier, ece, mce of one predictive distribution ``(N, C)``."""
    return {"accuracy": accuracy(probs, labels), "nll": nll(probs, labels), "brier": brier(probs, labels),
            "ece": calibration_error(probs, labels, "l1"), "mce": calibration_error(probs, labels, "max")}


def mutual_information(member_probs: torch.Tensor) -> torch.Tensor:
    """Per input: H(mean_m p_m) − mean_m H(p_m) ≥ 0 (the generalised JSD of the members), shape (N,)."""
    return entropy(member_probs.mean(0)) - entropy(member_probs).mean(0)


def pairwise_jsd(member_probs: torch.Tensor) -> float:
    """mean over pairs i < j and inputs of JSD(p_i, p_j) (torchmetrics, natural log); needs k ≥ 2."""
    pairs = list(itertools.combinations(range(member_probs.shape[0]), 2))
    require(len(pairs) > 0, "pairwise JSD needs at least two members")
    first, second = (member_probs[[pair[j] for pair in pairs]] for j in (0, 1))
    classes = member_probs.shape[-1]
    return jensen_shannon_divergence(first.reshape(-1, classes), second.reshape(-1, classes)).item()


def disagreement(member_probs: torch.Tensor) -> float:
    """mean over inputs of #{pairs i < j : argmax p_i ≠ argmax p_j} / (k choose 2); needs k ≥ 2.

    Counted per input as 1 − Σ_c (n_c choose 2) / (k choose 2), n_c = number of members predicting class c."""
    k, _, classes = member_probs.shape
    require(k >= 2, "disagreement needs at least two members")
    votes = torch.nn.functional.one_hot(member_probs.argmax(-1), classes).sum(0).to(torch.float64)  # (N, C)
    agreeing_pairs = (votes * (votes - 1) / 2).sum(-1)
    return (1 - agreeing_pairs / (k * (k - 1) / 2)).mean().item()


def member_and_ensemble_metrics(member_probs: torch.Tensor, labels: torch.Tensor, prefix: str) -> dict[str, float]:
    """All classification, calibration and diversity metrics under flat keys (see the module docstring)."""
    member_probs = _as_members(member_probs)
    labels = _check_labels(labels, member_probs)
    k = member_probs.shape[0]
    ensemble = member_probs.mean(0)
    out = {f"{prefix}/ensemble/{name}": value for name, value in model_metrics(ensemble, labels).items()}
    per_member = [model_metrics(member_probs[m], labels) for m in range(k)]
    for m, values in enumerate(per_member):
        out.update({f"{prefix}/member_{m}/{name}": value for name, value in values.items()})
    for name in per_member[0]:
        out[f"{prefix}/members_mean/{name}"] = sum(values[name] for values in per_member) / k
    return {**out, **label_free_metrics(member_probs, prefix)}


def label_free_metrics(member_probs: torch.Tensor, prefix: str) -> dict[str, float]:
    """The quantities that need no labels (also for OOD inputs): ``{prefix}/predictive_entropy``,
    ``expected_entropy``, ``mutual_information`` and, for k ≥ 2, ``pairwise_jsd`` and ``disagreement``."""
    member_probs = _as_members(member_probs)
    out = {f"{prefix}/predictive_entropy": entropy(member_probs.mean(0)).mean().item(),
           f"{prefix}/expected_entropy": entropy(member_probs).mean().item(),
           f"{prefix}/mutual_information": mutual_information(member_probs).mean().item()}
    if member_probs.shape[0] >= 2:
        out[f"{prefix}/pairwise_jsd"] = pairwise_jsd(member_probs)
        out[f"{prefix}/disagreement"] = disagreement(member_probs)
    return out


# ---------------------------------------------------------------- OOD detection (OOD = positive class)

def ood_scores(member_probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-input scores, larger = more likely OOD: −max_c p̄_c, H(p̄), and (k ≥ 2) the mutual information."""
    member_probs = _as_members(member_probs)
    ensemble = member_probs.mean(0)
    scores = {"max_prob": -ensemble.amax(-1), "entropy": entropy(ensemble)}
    if member_probs.shape[0] >= 2:
        scores["mutual_information"] = mutual_information(member_probs)
    return scores


def _to_unit_interval(scores: torch.Tensor) -> torch.Tensor:
    """Dense ranks scaled to [0, 1]: order and ties kept exactly, so torchmetrics never applies its sigmoid (which
    it does to scores outside [0, 1], merging nearby float32 values into ties)."""
    distinct, rank = torch.unique(scores, return_inverse=True)
    return rank.to(torch.float64) / max(1, len(distinct) - 1)


def _detection_inputs(scores_in: torch.Tensor, scores_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    require(scores_in.numel() > 0 and scores_out.numel() > 0, "OOD metrics need in- and out-of-distribution inputs")
    preds = _to_unit_interval(torch.cat([scores_in, scores_out]))
    target = torch.cat([torch.zeros(len(scores_in), dtype=torch.int64), torch.ones(len(scores_out), dtype=torch.int64)])
    return preds, target


def fpr_at_tpr(preds: torch.Tensor, target: torch.Tensor, tpr_level: float = TPR_LEVEL) -> float:
    """The smallest false-positive rate among ROC points whose true-positive rate is ≥ ``tpr_level``."""
    fpr, tpr, _ = binary_roc(preds, target)
    return fpr[tpr >= tpr_level].min().item()


def detection_metrics(scores_in: torch.Tensor, scores_out: torch.Tensor) -> dict[str, float]:
    """AUROC, AUPR (average precision) and FPR95 of a score that should be larger on OOD inputs."""
    preds, target = _detection_inputs(scores_in, scores_out)
    return {"auroc": binary_auroc(preds, target).item(), "aupr": binary_average_precision(preds, target).item(),
            "fpr95": fpr_at_tpr(preds, target)}


def ood_metrics(probs_in: torch.Tensor, probs_out: torch.Tensor, prefix: str) -> dict[str, float]:
    """``{prefix}/{score}/{auroc|aupr|fpr95}`` for every score of ``ood_scores``; both inputs ``(k, ·, C)``."""
    probs_in, probs_out = _as_members(probs_in), _as_members(probs_out)
    require(probs_in.shape[0] == probs_out.shape[0] and probs_in.shape[2] == probs_out.shape[2],
            f"in-distribution probabilities {tuple(probs_in.shape)} and OOD {tuple(probs_out.shape)} must share "
            "members and classes")
    scores_in, scores_out = ood_scores(probs_in), ood_scores(probs_out)
    return {f"{prefix}/{score}/{name}": value for score in scores_in
            for name, value in detection_metrics(scores_in[score], scores_out[score]).items()}


# ---------------------------------------------------------------- data for figures

def reliability_diagram_data(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> dict[str, list]:
    """Per confidence bin [b/n, (b+1)/n) (the last one closed): mean confidence, accuracy and count of the
    predictive distribution (``(k, N, C)`` is averaged over members first). Empty bins have confidence and accuracy
    0. Σ_b count_b/N · |accuracy_b − confidence_b| is the ECE, except that torchmetrics puts confidence exactly 1 in
    a bin of its own."""
    probs = _as_members(probs).mean(0)
    labels = _check_labels(labels, probs)
    confidence, predicted = probs.max(-1)
    correct = (predicted == labels).to(torch.float64)
    bins = (confidence * n_bins).floor().clamp(max=n_bins - 1).to(torch.int64)
    counts = torch.bincount(bins, minlength=n_bins).to(torch.float64)
    mean_of = lambda values: torch.bincount(bins, values, minlength=n_bins) / counts.clamp(min=1)  # noqa: E731
    return {"bin_edges": torch.linspace(0, 1, n_bins + 1).tolist(), "confidence": mean_of(confidence).tolist(),
            "accuracy": mean_of(correct).tolist(), "count": counts.to(torch.int64).tolist()}


def roc_curve_data(probs_in: torch.Tensor, probs_out: torch.Tensor, score: str = "max_prob") -> dict[str, list]:
    """ROC curve (OOD = positive) of one score of ``ood_scores``: ``fpr`` and ``tpr`` lists from torchmetrics."""
    scores_in, scores_out = ood_scores(probs_in), ood_scores(probs_out)
    require(score in scores_in, f"score={score!r} is not available: expected one of {', '.join(scores_in)}")
    fpr, tpr, _ = binary_roc(*_detection_inputs(scores_in[score], scores_out[score]))
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
