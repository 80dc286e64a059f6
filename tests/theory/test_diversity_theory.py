"""Diversity theory: any cosine on the rank-1 BE set, and the second-order link (docs/proofs.md §5–6)."""
import numpy as np
import pytest
import torch

from infra.errors import BadInput
from theory.claims.diversity import link_errors
from theory.distance import distance_to_batchensemble
from theory.diversity_theory import (cosine_realising_tuple, logit_variance, member_logits, mutual_information,
                                     pairwise_cosines, random_bemlp, second_order)
from theory.functional import forward

SEED = 9


@pytest.mark.parametrize("cosine", [-1.0, -0.5, 0.0, 0.3, 1.0])
def test_rank1_be_set_contains_a_pair_with_cosine_(cosine):
    """Two members with weight cosine c, exactly on the rank-1 set (distance 0), for c across [−1, 1]."""
    members = cosine_realising_tuple(np.array([[1.0, cosine], [cosine, 1.0]]), 3, 2)
    assert abs(pairwise_cosines(members)[0, 1] - cosine) <= 1e-12  # round-off of two inner products
    assert distance_to_batchensemble(members).relative_residual <= 1e-10


def test_correlation_of_too_high_rank_is_rejected():
    with pytest.raises(BadInput, match="rank 3: expected rank <= cols=2"):
        cosine_realising_tuple(np.eye(3), 4, 2)


def test_member_logits_equal_a_per_member_loop():
    """The vectorised BE forward equals functional.forward on each member's effective weights W ∘ r sᵀ."""
    net = random_bemlp((5, 4, 3), 3, 0.3, torch.Generator().manual_seed(SEED))
    inputs = torch.randn(7, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    logits = member_logits(net, inputs)
    for i in range(3):
        weights = [w * (r[i, 0][:, None] * s[i, 0][None, :]) for w, (r, s) in zip(net.weights, net.factors)]
        expected = forward(weights, [b[i] for b in net.biases], inputs, "relu")
        assert torch.allclose(logits[i], expected, rtol=0, atol=1e-12)


def test_diversity_of_identical_members_is_zero():
    """Visible arithmetic: identical members have MI 0 and logit variance 0."""
    logits = torch.tensor([[[1.0, 2.0, 0.5]]]).repeat(4, 1, 1)
    assert float(mutual_information(logits).abs().max()) <= 1e-7
    assert float(logit_variance(logits).max()) == 0.0


def test_second_order_relative_error_halves_with_the_spread():
    """Proposition 4: the relative error of the predicted MI and logit variance is O(σ): on the claim's BE MLP
    10-16-16-3 halving σ (0.2 → … → 0.025) halves it (ratio ≤ 0.65 allows the O(σ²) term), and at σ = 0.025 it is
    below 5%. (ReLU nets are only piecewise smooth: on a tiny net a member crossing a kink can break the trend.)"""
    rows = link_errors()
    for before, after in zip(rows, rows[1:]):
        assert after["mi_error"] <= 0.65 * before["mi_error"]
        assert after["variance_error"] <= 0.65 * before["variance_error"]
    assert rows[-1]["mi_error"] <= 0.05 and rows[-1]["variance_error"] <= 0.05


def test_second_order_breaks_for_random_sign_members():
    """Random-sign fast weights sit far from their mean: the second-order prediction misses by more than 2x."""
    inputs = torch.randn(100, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    result = second_order(random_bemlp((6, 8, 8, 3), 4, 0.5, torch.Generator().manual_seed(SEED), init="random_sign"),
                          inputs)
    ratio = result.variance_predicted / result.variance_measured
    assert not 0.5 <= ratio <= 2.0
