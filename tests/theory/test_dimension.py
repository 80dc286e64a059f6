"""Closed-form counts of theory.dimension: docs/theory.md formulas on hand-checked shapes, internal consistency."""
from __future__ import annotations

import itertools

import pytest

from infra.errors import BadInput
from theory import dimension
from theory.batchensemble import VARIANTS, BatchEnsembleSpec


def test_rank1_dense_closed_form_on_512():
    """Rank-1 dense 512×512, k = 4: codim (k−1)(m−1)(n−1) = 3·511·511 = 783,363; redundancy k+m+n−1."""
    spec = BatchEnsembleSpec((512, 512), 4)
    assert dimension.codim(spec) == 3 * 511 * 511 == 783_363
    assert dimension.redundancy(spec) == 4 + 512 + 512 - 1


def test_conv_table_of_theory_section_2():
    """Each row of the docs/theory.md §3 table for c_out=3, c_in=4, 2×2 kernel, k=3."""
    c_out, c_in, hw, k = 3, 4, 4, 3
    d = c_out * c_in * hw
    expected = {"channel-wise": (k - 1) * ((c_out - 1) * (c_in - 1) + c_out * c_in * (hw - 1)),
                "flattened-kernel": (k - 1) * (c_out - 1) * (c_in * hw - 1),
                "per-kernel-scalar": (k - 1) * c_out * c_in * (hw - 1),
                "cp-spatial": (k - 1) * (d - c_out - c_in - hw + 2),
                "output-scale": (k - 1) * (d - c_out)}
    for variant, codim in expected.items():
        assert dimension.codim(BatchEnsembleSpec((c_out, c_in, 2, 2), k, 1, variant)) == codim, variant


def test_rank_r_dense_formula_and_upper_bound_agree():
    """For dense layers the closed form is min(kmn, mn + k·r(m+n−r) − (m+n−1)) and equals the proved bound."""
    for m, n, k in itertools.product(range(1, 7), range(1, 7), range(1, 5)):
        for r in range(1, min(m, n) + 1):
            spec = BatchEnsembleSpec((m, n), k, r)
            formula = min(k * m * n, m * n + k * r * (m + n - r) - (m + n - 1))
            assert dimension.image_dim(spec) == formula == dimension.upper_bound(spec)


def test_rank_r_conv_formula_of_theory_section_3():
    """Channel-wise conv rank r: min(kD, D + k r(c_out+c_in−r) − max(c_out+c_in−1, c_out c_in − k(c_out−r)(c_in−r)))."""
    for c_out, c_in, hw, k in itertools.product(range(1, 5), range(1, 5), (1, 4, 9), range(1, 4)):
        for r in range(1, min(c_out, c_in) + 1):
            d = c_out * c_in * hw
            formula = min(k * d, d + k * r * (c_out + c_in - r)
                          - max(c_out + c_in - 1, c_out * c_in - k * (c_out - r) * (c_in - r)))
            assert dimension.image_dim(BatchEnsembleSpec((c_out, c_in, hw, 1), k, r)) == formula


def test_rank1_general_rule_equals_symmetry_bound():
    """At rank 1 the toric codim (k−1)(D−1−Σ(D_j−1)) equals the symmetry-group bound for every variant."""
    for variant, k in itertools.product(VARIANTS, range(1, 5)):
        spec = BatchEnsembleSpec((3, 2, 2, 3), k, 1, variant)
        assert dimension.image_dim(spec) == dimension.symmetry_bound(spec)


def test_cp_spatial_rank2_has_no_closed_form_flag():
    """cp-spatial at rank >= 2: image_dim is the proved upper bound and the flag says so."""
    spec = BatchEnsembleSpec((3, 3, 2, 2), 2, 2, "cp-spatial")
    counts = dimension.layer_counts(spec)
    assert not dimension.has_closed_form(spec) and not counts.closed_form
    assert counts.image_dim == dimension.upper_bound(spec)


def test_filling_rank_is_first_rank_that_fills():
    """filling_rank(m,n,k) is the smallest r whose closed-form dimension is kmn."""
    for m, n, k in itertools.product(range(1, 9), range(1, 9), range(1, 6)):
        first = next(r for r in range(1, min(m, n) + 1) if dimension.fills(BatchEnsembleSpec((m, n), k, r)))
        assert dimension.filling_rank(m, n, k) == first


def test_conv_filling_rank_none_when_spatial_and_several_members():
    """With hw > 1 and k >= 2 no channel-wise rank fills; with hw = 1 it matches the dense filling rank."""
    assert dimension.conv_filling_rank(4, 4, 9, 2) is None
    assert dimension.conv_filling_rank(5, 4, 1, 3) == dimension.filling_rank(5, 4, 3)


def test_layer_counts_bias_and_roles():
    """Per-member bias costs nothing; shared bias costs (k−1)m; shared layer codim (k−1)D; per-member fills."""
    spec = BatchEnsembleSpec((5, 3), 4)
    bare = dimension.layer_counts(spec)
    assert dimension.layer_counts(spec, bias="per-member").codim == bare.codim
    assert dimension.layer_counts(spec, bias="shared").codim == bare.codim + 3 * 5
    assert dimension.layer_counts(spec, role="shared").codim == 3 * 15
    assert dimension.layer_counts(spec, role="per-member").fills
    assert bare.redundancy == bare.params - bare.image_dim


@pytest.mark.parametrize("call", [lambda: dimension.filling_rank(0, 3, 2), lambda: dimension.filling_rank(3, 3, 1.5),
                                  lambda: dimension.layer_counts(BatchEnsembleSpec((2, 2), 2), bias="sometimes")])
def test_bad_input_raises(call):
    """Non-positive or non-integer sizes and unknown bias modes raise BadInput."""
    with pytest.raises(BadInput):
        call()
