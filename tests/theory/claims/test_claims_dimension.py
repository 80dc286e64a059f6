"""One test per registered claim of theory.claims.dimension, named after it; sweeps run on smaller sizes than
``python -m theory check`` (which runs the default sweeps) so the suite stays fast."""
from __future__ import annotations

import pytest

from theory.claims import dimension as cd
from theory.claims import registry as claims


def _certified(evidence):
    assert evidence.verdict == "certified", evidence.details


def test_claims_registered_with_statements():
    """Every claim of this module is registered once, with a statement and a method."""
    registry = claims.load_all()
    ids = ["rank1-dense-codim", "degenerate-fills", "parameter-counting-insufficient", "rank-r-dense-dim",
           "rank-r-fills-iff", "naive-threshold-wrong", "conv-rank1-codim", "conv-rank-r-dim", "resnet18-layers-rank1",
           "network-totals", "be-entries-monomial", "cross-ratio-binomials-vanish", "torus-only-caveat",
           "symmetry-tangents-in-kernel", "rank-identities"]
    assert all(registry[i].statement and registry[i].method for i in ids)


def test_rank1_dense_codim_is_k_minus_1_m_minus_1_n_minus_1():
    """rank-1 dense BE: codim = (k−1)(m−1)(n−1), toric certificates for m,n ≤ 7, k ≤ 4."""
    _certified(cd.check_rank1_dense(7, 4))


def test_degenerate_fills_iff_k1_or_m1_or_n1():
    """rank-1 dense BE fills iff k = 1, m = 1 or n = 1."""
    _certified(cd.check_degenerate_fills(6, 4))


def test_parameter_counting_insufficient_for_2x2():
    """m = n = 2: parameters exceed the DE dimension, yet codim = k − 1."""
    evidence = cd.check_parameter_counting(6)
    _certified(evidence)
    assert [row["codim"] for row in evidence.details["rows"]] == [1, 2, 3, 4, 5]


def test_rank_r_dense_dim_is_min_kmn_and_symmetry_bound():
    """rank-r dense BE: dim = min(kmn, mn + k r(m+n−r) − (m+n−1)), m,n ≤ 6, k ≤ 4."""
    _certified(cd.check_rank_r_dense(6, 4))


def test_rank_r_fills_iff_k_m_minus_r_n_minus_r_at_most_m_minus_1_n_minus_1():
    """rank-r dense BE fills R^{kmn} iff k(m−r)(n−r) ≤ (m−1)(n−1), m,n ≤ 6, k ≤ 4."""
    _certified(cd.check_filling_threshold(6, 4))


def test_naive_threshold_wrong_at_4_4_3_2():
    """(4,4,3,2): naive k(m−r)(n−r) ≤ mn predicts filling, but the certified dim is 45 < 48."""
    evidence = cd.naive_threshold_wrong(False)
    _certified(evidence)
    assert evidence.details["lower"] == 45


def test_conv_rank1_codim_of_every_variant():
    """Rank-1 block variants: codim = (k−1)(D − 1 − Σ_j (D_j − 1)), c ≤ 3, hw ∈ {1, 4, 9}, k ≤ 3."""
    _certified(cd.check_conv_rank1(3, (1, 4, 9), 3))


def test_conv_rank_r_dim_formula():
    """Rank-r channel-wise and flattened conv match the docs/theory.md §4 formula, c ≤ 3, hw ∈ {1, 4}, k ≤ 3."""
    _certified(cd.check_conv_rank_r(3, (1, 4), 3))


@pytest.mark.slow
def test_resnet18_layers_rank1_codim():
    """Every ResNet-18 layer shape, rank 1, k = 4: certified toric codim equals the closed form."""
    _certified(cd.resnet18_layers_rank1(False))


def test_network_totals_certified_and_match_theory():
    """MLP 784-400-400-10 numbers of docs/theory.md §5 and certified totals (MLPs, both ResNet-18s)."""
    _certified(cd.network_totals(False))


def test_be_entries_monomial_log_linear():
    """Rank-1 entries are monomials; the log map is linear with Aᵀ (sympy)."""
    _certified(cd.be_entries_monomial(False))


def test_cross_ratio_binomials_vanish_on_be():
    """Degree-4 cross-ratio binomials vanish identically on BE points (sympy)."""
    _certified(cd.cross_ratio_binomials_vanish(False))


def test_torus_only_caveat_counterexample():
    """k=2, m=n=3: degree-4 binomials vanish, degree-6 = 30030 (sympy)."""
    _certified(cd.torus_only_caveat(False))


def test_symmetry_tangents_in_kernel():
    """Symmetry tangents are in ker JΦ identically (sympy)."""
    _certified(cd.symmetry_tangents_in_kernel(False))


def test_rank_identities():
    """mn − r(m+n−r) = (m−r)(n−r) and the threshold identity (sympy)."""
    _certified(cd.rank_identities(False))
