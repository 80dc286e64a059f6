"""Checked steps of the all-sizes rank-1 proof (docs/proofs.md §1) and the randomised rank-r search."""
import pytest

from theory import dimension
from theory.batchensemble import VARIANTS, BatchEnsembleSpec
from theory.proofs import (anova_dimension_identity, anova_projector_sum, certify_against_closed_form, factor_groups,
                           jacobian_is_diag_a_diag, log_image_is_anova_sum, random_rank_r_specs, search_summary)

SEED = 5


@pytest.mark.parametrize("variant", VARIANTS)
def test_rank1_jacobian_is_diag_x_a_transpose_diag_inverse_theta_(variant):
    """J = diag(x)·Aᵀ·diag(1/θ) as rational functions, every variant."""
    assert jacobian_is_diag_a_diag(BatchEnsembleSpec((2, 2, 2, 1), 2, 1, variant))


@pytest.mark.parametrize("shape,k,variant", [((3, 4), 3, "channel-wise"), ((2, 3, 2, 2), 2, "channel-wise"),
                                             ((2, 3, 2, 2), 3, "cp-spatial"), ((3, 2, 2, 2), 2, "flattened-kernel"),
                                             ((2, 2, 3, 1), 2, "per-kernel-scalar"), ((3, 3), 4, "output-scale")])
def test_log_image_is_the_anova_sum_and_rank_a_is_the_closed_form(shape, k, variant):
    """col(Aᵀ) = ⊕_{S∈𝓕} V_S (exact integer ranks), and that rank is D + (k−1)(1 + Σ_j (D_j − 1))."""
    spec = BatchEnsembleSpec(shape, k, 1, variant)
    result = log_image_is_anova_sum(spec)
    assert result["holds"]
    assert result["ranks"]["A"] == spec.ambient_dim - dimension.rank1_codim(spec)


def test_anova_check_can_fail_with_a_wrong_family():
    """Dropping the {member} component from 𝓕 changes the rank: the check is not vacuous."""
    spec = BatchEnsembleSpec((3, 3), 2)
    full = anova_projector_sum(spec)
    from theory import proofs
    original = proofs.anova_family
    try:
        proofs.anova_family = lambda s: [f for f in original(s) if f != frozenset({"member"})]
        assert not log_image_is_anova_sum(spec)["holds"]
    finally:
        proofs.anova_family = original
    assert (anova_projector_sum(spec) == full).all()


def test_anova_dimension_identity_is_the_binomial_theorem():
    assert anova_dimension_identity(4)


def test_factor_groups_are_consecutive_for_every_variant():
    for variant in VARIANTS:
        groups = factor_groups(BatchEnsembleSpec((2, 3, 2, 2), 2, 1, variant))
        modes = [m for _, group in groups for m in group]
        assert modes == [0, 1, 2, 3]


def test_random_rank_r_search_certifies_the_closed_form_on_larger_shapes():
    """Three random shapes beyond the m, n ≤ 12 grid: certified and equal to the closed form; the summary names the
    largest certified shape."""
    specs = random_rank_r_specs(3, (13, 20), 5, SEED)
    assert all(s.rank >= 2 and max(s.kernel_shape[:2]) >= 6 for s in specs)
    summary = search_summary(certify_against_closed_form(specs, SEED))
    assert summary["all_agree"]
    assert summary["largest_certified"]["ambient_dim"] == max(s.ambient_dim for s in specs)
