"""Metric values on hand-made inputs, written as visible arithmetic (STYLE habit 9), and fast vs slow references."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from empirics.analysis.metrics import (PROB_FLOOR, detection_metrics, disagreement, label_free_metrics,
                                       member_and_ensemble_metrics, mutual_information, ood_metrics, pairwise_jsd,
                                       reliability_diagram_data, roc_curve_data)
from infra.errors import BadInput

# EXACT: float64 arithmetic on a handful of numbers; FLOAT32: torchmetrics returns calibration error, JSD and ROC
# points in float32 (relative rounding ~6e-8, so 1e-6 absolute on values <= ln 2 or 1).
EXACT = 1e-12
FLOAT32 = 1e-6


def two_class(confidences_for_class_0: list[float]) -> torch.Tensor:
    p = torch.tensor(confidences_for_class_0, dtype=torch.float64)
    return torch.stack([p, 1 - p], dim=-1)


def random_member_probs(generator: torch.Generator, k: int = 4, n: int = 50, classes: int = 5) -> torch.Tensor:
    concentration = torch.full((classes,), 0.7, dtype=torch.float64)
    gamma = torch._standard_gamma(concentration.expand(k, n, classes).contiguous(), generator=generator)
    return gamma / gamma.sum(-1, keepdim=True)


def test_ece_and_mce_on_five_predictions():
    """ECE = Σ_b |B_b|/N |acc_b − conf_b| and MCE = max_b |acc_b − conf_b| over 15 bins, on five predictions."""
    probs = two_class([0.9, 0.9, 0.7, 0.7, 0.45])  # confidences .9 .9 .7 .7 .55 (the last predicts class 1)
    labels = torch.tensor([0, 1, 0, 0, 0])  # correct: yes no | yes yes | no
    metrics = member_and_ensemble_metrics(probs.unsqueeze(0), labels, "test")
    gaps = {"bin .9": abs(0.5 - 0.9), "bin .7": abs(1.0 - 0.7), "bin .55": abs(0.0 - 0.55)}
    expected_ece = 2 / 5 * gaps["bin .9"] + 2 / 5 * gaps["bin .7"] + 1 / 5 * gaps["bin .55"]  # = 0.39
    assert metrics["test/ensemble/ece"] == pytest.approx(expected_ece, abs=FLOAT32)
    assert metrics["test/ensemble/mce"] == pytest.approx(0.55, abs=FLOAT32)


def test_accuracy_nll_and_brier_by_hand():
    """accuracy = mean[argmax p = y]; NLL = mean −ln p_y; Brier = mean Σ_c (p_c − [c = y])²."""
    probs = two_class([0.7, 0.2])
    labels = torch.tensor([0, 0])
    metrics = member_and_ensemble_metrics(probs.unsqueeze(0), labels, "val")
    assert metrics["val/ensemble/accuracy"] == pytest.approx(1 / 2, abs=EXACT)
    assert metrics["val/ensemble/nll"] == pytest.approx((-math.log(0.7) - math.log(0.2)) / 2, abs=EXACT)
    assert metrics["val/ensemble/brier"] == pytest.approx(((0.3**2 + 0.3**2) + (0.8**2 + 0.8**2)) / 2, abs=EXACT)


def test_nll_clamps_a_zero_probability_to_the_floor():
    """A zero probability on the true class costs −ln(1e-12) = 12 ln 10 ≈ 27.63, not infinity."""
    probs = two_class([0.5, 0.0])
    metrics = member_and_ensemble_metrics(probs.unsqueeze(0), torch.tensor([0, 0]), "test")
    assert PROB_FLOOR == 1e-12
    assert metrics["test/ensemble/nll"] == pytest.approx((math.log(2) + 12 * math.log(10)) / 2, abs=EXACT)


def test_mutual_information_is_entropy_of_mean_minus_mean_entropy_on_two_classes():
    """MI = H((.9+.5)/2, (.1+.5)/2) − (H(.9, .1) + H(.5, .5)) / 2, and for two members it equals their JSD."""
    members = torch.stack([two_class([0.9]), two_class([0.5])])  # (k=2, N=1, C=2)
    h = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731  binary entropy in nats
    expected = h(0.7) - (h(0.9) + math.log(2)) / 2
    metrics = member_and_ensemble_metrics(members, torch.tensor([0]), "test")
    assert metrics["test/mutual_information"] == pytest.approx(expected, abs=EXACT)
    assert metrics["test/predictive_entropy"] == pytest.approx(h(0.7), abs=EXACT)
    assert metrics["test/expected_entropy"] == pytest.approx((h(0.9) + math.log(2)) / 2, abs=EXACT)
    assert metrics["test/pairwise_jsd"] == pytest.approx(expected, abs=FLOAT32)


def test_jsd_of_disjoint_one_hot_members_is_ln2():
    """JSD((1, 0), (0, 1)) = ln 2, the maximum."""
    members = torch.stack([two_class([1.0]), two_class([0.0])])
    assert pairwise_jsd(members) == pytest.approx(math.log(2), abs=FLOAT32)


def test_identical_members_have_zero_disagreement_jsd_and_mutual_information(generator):
    """Copies of one member: disagreement 0, pairwise JSD 0, MI 0."""
    one = random_member_probs(generator, k=1)
    metrics = member_and_ensemble_metrics(one.expand(3, -1, -1), torch.zeros(50, dtype=torch.int64), "test")
    assert metrics["test/disagreement"] == 0.0
    assert metrics["test/pairwise_jsd"] == pytest.approx(0.0, abs=FLOAT32)
    assert metrics["test/mutual_information"] == pytest.approx(0.0, abs=EXACT)


def test_disagreement_is_the_fraction_of_pairs_that_differ_on_a_hand_case():
    """Three members voting (0, 0, 1) on input 1 (2 of 3 pairs differ) and (0, 1, 2) on input 2 (3 of 3):
    disagreement = (2/3 + 3/3) / 2 = 5/6."""
    votes = torch.tensor([[0, 0], [0, 1], [1, 2]])  # (k=3, N=2)
    members = torch.nn.functional.one_hot(votes, 3).to(torch.float64) * 0.7 + 0.1  # argmax = vote, rows sum to 1
    assert disagreement(members) == pytest.approx((2 / 3 + 3 / 3) / 2, abs=EXACT)


def test_vectorised_disagreement_and_mutual_information_match_per_pair_loops(generator):
    """The vote-count disagreement and the entropy-difference MI equal their definitions computed pair by pair /
    member by member."""
    members = random_member_probs(generator, k=4)
    predicted = members.argmax(-1)
    pairs = list(itertools.combinations(range(4), 2))
    slow_disagreement = sum((predicted[i] != predicted[j]).double().mean().item() for i, j in pairs) / len(pairs)
    mean = members.mean(0)
    kl_to_mean = [(members[m] * (members[m] / mean).log()).sum(-1) for m in range(4)]  # MI = mean_m KL(p_m || p̄)
    slow_mi = torch.stack(kl_to_mean).mean(0)
    assert disagreement(members) == pytest.approx(slow_disagreement, abs=EXACT)
    torch.testing.assert_close(mutual_information(members), slow_mi, rtol=0, atol=EXACT)


def test_key_scheme_lists_every_member_the_ensemble_and_the_member_mean(generator):
    """Keys are ``prefix/model/metric`` for ensemble, member_i, members_mean, plus ``prefix/quantity``; a single
    model has no pairwise keys."""
    members = random_member_probs(generator, k=2)
    labels = torch.randint(0, 5, (50,), generator=generator)
    metrics = member_and_ensemble_metrics(members, labels, "shift/fog")
    per_model = {"accuracy", "nll", "brier", "ece", "mce"}
    models = {"ensemble", "member_0", "member_1", "members_mean"}
    expected = {f"shift/fog/{m}/{name}" for m in models for name in per_model} | {
        f"shift/fog/{q}" for q in ("predictive_entropy", "expected_entropy", "mutual_information", "pairwise_jsd",
                                   "disagreement")}
    assert set(metrics) == expected
    assert metrics["shift/fog/members_mean/nll"] == pytest.approx(
        (metrics["shift/fog/member_0/nll"] + metrics["shift/fog/member_1/nll"]) / 2, abs=EXACT)
    single = member_and_ensemble_metrics(members[:1], labels, "test")
    assert "test/disagreement" not in single and "test/pairwise_jsd" not in single
    label_free = label_free_metrics(members, "ood")
    assert set(label_free) == {f"ood/{q}" for q in ("predictive_entropy", "expected_entropy", "mutual_information",
                                                    "pairwise_jsd", "disagreement")}
    assert label_free["ood/mutual_information"] == metrics["shift/fog/mutual_information"]


def test_perfectly_separated_ood_scores_give_auroc_1_aupr_1_fpr95_0():
    """In-distribution inputs confident (max p = .99), OOD inputs uniform: every score separates them perfectly."""
    confident = two_class([0.99] * 6).unsqueeze(0).expand(2, -1, -1)
    uniform = two_class([0.5] * 4).unsqueeze(0).expand(2, -1, -1)
    metrics = ood_metrics(confident, uniform, "ood")
    for score in ("max_prob", "entropy"):
        assert metrics[f"ood/{score}/auroc"] == 1.0
        assert metrics[f"ood/{score}/aupr"] == 1.0
        assert metrics[f"ood/{score}/fpr95"] == 0.0
    # identical members: MI is 0 for every input, all tied: AUROC 1/2, and TPR ≥ .95 needs FPR 1
    assert metrics["ood/mutual_information/auroc"] == 0.5
    assert metrics["ood/mutual_information/fpr95"] == 1.0


def test_fpr95_on_a_hand_case():
    """OOD scores 1..20: TPR ≥ 19/20 = .95 first at threshold 2; in-distribution scores ≥ 2 are 2.5 and 30:
    FPR95 = 2/10."""
    scores_out = torch.arange(1, 21, dtype=torch.float64)
    scores_in = torch.tensor([0.0] * 8 + [2.5, 30.0], dtype=torch.float64)
    fpr95 = detection_metrics(scores_in, scores_out)["fpr95"]
    assert fpr95 == pytest.approx(2 / 10, abs=FLOAT32)  # torchmetrics' ROC points are float32


def test_auroc_equals_the_pairwise_count_with_ties_and_scores_far_outside_unit_interval(generator):
    """AUROC = P(s_out > s_in) + P(s_out = s_in) / 2 over all pairs, also for scores near 40 that differ by 1e-5
    (where a sigmoid would merge them into ties)."""
    scores_in = 40 + torch.randint(0, 6, (30,), generator=generator).double() * 1e-5
    scores_out = 40 + torch.randint(2, 9, (25,), generator=generator).double() * 1e-5
    greater = (scores_out.view(-1, 1) > scores_in.view(1, -1)).double().mean().item()
    tied = (scores_out.view(-1, 1) == scores_in.view(1, -1)).double().mean().item()
    assert detection_metrics(scores_in, scores_out)["auroc"] == pytest.approx(greater + tied / 2, abs=FLOAT32)


def test_reliability_bins_reproduce_counts_and_the_ece(generator):
    """Five predictions fall in bins 13, 13, 10, 10, 8; Σ_b count_b/N |acc_b − conf_b| equals torchmetrics' ECE."""
    probs = two_class([0.9, 0.9, 0.7, 0.7, 0.45])
    labels = torch.tensor([0, 1, 0, 0, 0])
    data = reliability_diagram_data(probs, labels)
    assert [b for b, c in enumerate(data["count"]) if c] == [8, 10, 13]
    assert data["count"][13] == 2 and data["accuracy"][13] == 0.5 and data["confidence"][13] == pytest.approx(0.9)
    members = random_member_probs(generator, k=3, n=200)
    labels = torch.randint(0, 5, (200,), generator=generator)
    data = reliability_diagram_data(members, labels)
    ece = sum(c / 200 * abs(a - f) for c, a, f in zip(data["count"], data["accuracy"], data["confidence"]))
    assert ece == pytest.approx(member_and_ensemble_metrics(members, labels, "t")["t/ensemble/ece"], abs=FLOAT32)


def test_roc_curve_runs_from_0_to_1():
    """The ROC of the −max-probability score starts at (0, 0) and ends at (1, 1)."""
    curve = roc_curve_data(two_class([0.99, 0.8, 0.6]).unsqueeze(0), two_class([0.5, 0.7]).unsqueeze(0))
    assert (curve["fpr"][0], curve["tpr"][0]) == (0.0, 0.0)
    assert (curve["fpr"][-1], curve["tpr"][-1]) == (1.0, 1.0)


@pytest.mark.parametrize("bad, match", [
    (torch.tensor([[[2.0, -1.0]]]), "not logits"),
    (torch.tensor([[[0.5, 0.6]]]), "summing to 1"),
    (torch.tensor([0.5, 0.5]), "expected"),
])
def test_bad_probabilities_are_rejected_with_a_clear_message(bad, match):
    """Logits, rows not summing to 1 and wrong ranks raise BadInput naming what was expected."""
    with pytest.raises(BadInput, match=match):
        member_and_ensemble_metrics(bad, torch.tensor([0]), "test")


def test_labels_must_match_and_lie_in_range():
    """Labels of the wrong length or outside 0..C−1 raise BadInput."""
    probs = two_class([0.7, 0.2]).unsqueeze(0)
    with pytest.raises(BadInput, match="expected \\(2,\\)"):
        member_and_ensemble_metrics(probs, torch.tensor([0]), "test")
    with pytest.raises(BadInput, match="0..1"):
        member_and_ensemble_metrics(probs, torch.tensor([0, 2]), "test")
    with pytest.raises(BadInput, match="share members"):
        ood_metrics(probs, probs.expand(2, -1, -1), "ood")
