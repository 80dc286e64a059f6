"""Exact symbolic checks (theory.symbolic): identities asserted with sympy, no tolerance."""
from __future__ import annotations

import pytest

from theory import symbolic
from theory.batchensemble import VARIANTS, BatchEnsembleSpec


@pytest.mark.parametrize("variant", VARIANTS)
def test_rank1_entries_are_monomials_with_exponent_matrix(variant):
    """Every rank-1 entry is one monomial with coefficient 1 whose exponent vector is its column of A."""
    shape = (2, 3) if variant in ("channel-wise", "output-scale", "per-kernel-scalar") else (2, 2, 2, 1)
    assert symbolic.log_map_is_linear_with_exponent_matrix(BatchEnsembleSpec(shape, 2, 1, variant))


def test_rank2_entries_are_not_monomials():
    """The monomial check can fail: rank-2 entries are sums of two monomials."""
    spec = BatchEnsembleSpec((2, 2), 2, 2)
    weight, factors, _ = symbolic.symbolic_point(spec)
    assert len(symbolic.symbolic_entries(spec, weight, factors)[0].expand().args) == 2


def test_cross_ratio_binomials_vanish_on_be_points():
    """The 54 degree-4 binomials of (k,m,n) = (3,3,3) expand to 0 at a symbolic BE point."""
    x = symbolic.member_symbols(3, 3, 3)
    binomials = symbolic.cross_ratio_binomials(x)
    assert len(binomials) == 3 * 6 * 3 and symbolic.vanishes_on_be(binomials, 3, 3, 3)


def test_cross_ratio_binomials_do_not_vanish_on_generic_points():
    """Control: at a generic (non-BE) point the binomial is nonzero, so vanishing above is informative."""
    x = symbolic.member_symbols(2, 2, 2)
    binomial = symbolic.cross_ratio_binomials(x)[0]
    values = dict(zip(x.ravel(), [2, 3, 5, 7, 11, 13, 17, 19]))
    assert binomial.xreplace(values) != 0


def test_torus_only_counterexample_of_theory():
    """k=2, m=n=3 point: all 18 degree-4 binomials are 0, the degree-6 binomial is 30030 = 2·3·5·7·11·13 there
    while it vanishes identically on BE points."""
    result = symbolic.torus_counterexample()
    assert result["degree4_count"] == 18 and set(result["degree4_values"]) == {0}
    assert result["degree6_value"] == 2 * 3 * 5 * 7 * 11 * 13
    assert result["degree6_vanishes_on_be"]


@pytest.mark.parametrize("spec", [BatchEnsembleSpec((2, 3), 2, 2), BatchEnsembleSpec((3, 2), 3, 1),
                                  BatchEnsembleSpec((2, 2, 2, 1), 2, 2, "cp-spatial"),
                                  BatchEnsembleSpec((2, 3, 2, 1), 2, 1, "per-kernel-scalar")], ids=str)
def test_symmetry_tangents_lie_in_jacobian_kernel(spec):
    """J(θ)·v(θ) = 0 identically for every symmetry tangent (torus, GL_r, term rescalings)."""
    assert symbolic.tangents_in_jacobian_kernel(spec)


def test_rank_and_threshold_identities():
    """mn − r(m+n−r) = (m−r)(n−r); bound − kmn = (m−1)(n−1) − k(m−r)(n−r)."""
    assert symbolic.rank_identity_holds() and symbolic.threshold_identity_holds()
