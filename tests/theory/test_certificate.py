"""Certificates (theory.certificate): every fast route against a slow, obvious rank, and the bounds they claim."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from theory import certificate as ct
from theory import dimension
from theory.batchensemble import VARIANTS, BatchEnsembleSpec, jacobian, random_factors
from theory.exact_rank import PRIMES, float_rank, modular_rank, rational_rank

P = PRIMES[0]
SMALL = [BatchEnsembleSpec((3, 4), 3), BatchEnsembleSpec((4, 4), 3, 2), BatchEnsembleSpec((3, 3), 2, 3),
         BatchEnsembleSpec((3, 2, 2, 2), 3, 2), BatchEnsembleSpec((3, 3, 2, 1), 2, 2, "cp-spatial"),
         BatchEnsembleSpec((3, 2, 2, 1), 3, 1, "output-scale"), BatchEnsembleSpec((2, 3, 2, 1), 3, 2, "flattened-kernel")]


def _point(spec, seed=0):
    return ct.random_integer_point(spec, P, np.random.default_rng(seed))


@pytest.mark.parametrize("spec", SMALL, ids=str)
def test_sparse_jacobian_equals_dense_jacobian_mod_p(spec):
    """The sparse COO Jacobian equals batchensemble.jacobian (the tested analytic one) entry by entry mod p."""
    weight, factors = _point(spec)
    dense = jacobian(spec, torch.from_numpy(weight.reshape(spec.kernel_shape)),
                     tuple(torch.from_numpy(f) for f in factors), modulus=P).numpy()
    assert np.array_equal(ct.sparse_jacobian(spec, weight, factors, P).toarray() % P, dense % P)


@pytest.mark.parametrize("spec", SMALL, ids=str)
def test_schur_eliminations_preserve_rank(spec):
    """rank J = D + rank S (W eliminated) = D + (k−1)r(D1+D2−r) + rank K (B_i eliminated too), all mod p."""
    weight, factors = _point(spec)
    jac = ct.sparse_jacobian(spec, weight, factors, P)
    plain = modular_rank(jac.toarray(), P)
    assert plain == spec.kernel_size + modular_rank(ct.schur_complement(spec, jac, P).toarray(), P)
    if len(spec.block_sizes) == 2:
        assert ct.two_block_rank(spec, factors, P, np.random.default_rng(1))[0] == plain


def test_two_block_sketch_keeps_rank(monkeypatch):
    """With K sketched (forced by a tiny limit) the two-block lower bound still equals the plain rank."""
    spec = BatchEnsembleSpec((8, 7), 4, 2)  # K has 3·6·5 = 90 rows, 30 columns: tall enough to sketch
    weight, factors = _point(spec)
    plain = modular_rank(ct.sparse_jacobian(spec, weight, factors, P).toarray(), P)
    monkeypatch.setattr(ct, "SKETCH_ENTRY_LIMIT", 10)
    rank, details = ct.two_block_rank(spec, factors, P, np.random.default_rng(1))
    assert details["sketch"] is not None and rank == plain


def test_sketched_rank_equals_dense_rank_on_tall_matrix(monkeypatch):
    """The sparse row sketch keeps the rank of a tall S (a lower bound always; equal here)."""
    spec = BatchEnsembleSpec((8, 8), 4, 1)
    weight, factors = _point(spec)
    schur = ct.schur_complement(spec, ct.sparse_jacobian(spec, weight, factors, P), P)
    dense = modular_rank(schur.toarray(), P)
    monkeypatch.setattr(ct, "SKETCH_ENTRY_LIMIT", 10)
    sketched, details = ct.sketched_rank(schur, P, np.random.default_rng(0))
    assert details["sketch"] is not None and sketched == dense


@pytest.mark.parametrize("spec", [BatchEnsembleSpec((3, 4), 3)] + [BatchEnsembleSpec((2, 3, 2, 2), 3, 1, v)
                                                                  for v in VARIANTS], ids=str)
def test_toric_bounds_equal_exponent_matrix_rank(spec):
    """The toric certificate's ρ equals rank A mod p and over QQ, and the float Jacobian rank at a torus point."""
    certificate = ct.toric_certificate(spec)
    matrix = ct.exponent_matrix(spec)
    assert certificate.status == "certified"
    assert certificate.lower == modular_rank(matrix, P) == rational_rank(matrix) == float_rank(
        jacobian(spec, *random_factors(spec, torch.Generator().manual_seed(3))).numpy()).rank


def test_toric_checks_reject_broken_witnesses():
    """The structural checks can fail: a non-kernel vector, a dependent pivot set and a non-triangular pairing."""
    spec = BatchEnsembleSpec((3, 4), 3)
    ids, cols, vals = ct.toric_kernel_vectors(spec)
    broken = vals.copy()
    broken[0] = -broken[0]
    assert ct.kernel_vectors_annihilate(spec, ids, cols, vals)
    assert not ct.kernel_vectors_annihilate(spec, ids, cols, broken)
    pivots = ct.toric_pivots(spec)
    assert ct.kernel_vectors_independent(ids, cols, vals, pivots)
    assert not ct.kernel_vectors_independent(ids, cols, vals, pivots[::-1].copy())
    entries, params = ct.toric_pairs(spec)
    assert ct.pairs_are_unit_triangular(spec, entries, params)
    assert not ct.pairs_are_unit_triangular(spec, entries[::-1].copy(), params[::-1].copy())


@pytest.mark.parametrize("spec", SMALL[:4], ids=str)
def test_modular_lower_bound_equals_exact_rational_rank(spec):
    """Cross-check: the rank of J over QQ at a small integer point equals the certified dimension."""
    generator = torch.Generator().manual_seed(5)
    weight = torch.randint(1, 50, spec.kernel_shape, generator=generator, dtype=torch.int64)
    factors = tuple(torch.randint(1, 50, s, generator=generator, dtype=torch.int64) for s in spec.factor_shapes)
    exact = rational_rank(jacobian(spec, weight.double(), tuple(f.double() for f in factors)).round().long().numpy())
    assert exact == ct.certify(spec, "schur").lower == ct.certify(spec, "modular").lower


@pytest.mark.parametrize("spec", SMALL, ids=str)
def test_symmetry_tangents_are_verified_kernel_vectors(spec):
    """J·v ≡ 0 mod p for every tangent, and their orbit rank reaches the orbit formula of theory.dimension."""
    weight, factors = _point(spec)
    jac = ct.sparse_jacobian(spec, weight, factors, P)
    upper, details = ct.symmetry_upper_bound(spec, weight, factors, jac, P)
    assert details["tangents_in_kernel"] and details["orbit_rank"] == dimension.orbit_dim(spec)
    assert upper == dimension.upper_bound(spec)


def test_float_rank_tolerance_bracketed_from_both_sides():
    """Float SVD rank of J at a float point: tolerances just inside σ_ρ and σ_{ρ+1} give ρ; just outside change it.

    Brackets are ±1% of the singular value itself; the gap σ_ρ/σ_{ρ+1} (≥ 1e10 seen, docs/theory.md §6) is ≥ 1e8 here.
    """
    spec = BatchEnsembleSpec((4, 5), 3, 2)
    diagnostic = ct.float_jacobian_rank(spec, seed=2)
    rho, sigma = diagnostic.rank, diagnostic.singular_values
    assert rho == dimension.image_dim(spec)
    assert diagnostic.rank_at(0.99 * sigma[rho - 1]) == rho and diagnostic.rank_at(1.01 * sigma[rho - 1]) == rho - 1
    assert diagnostic.rank_at(1.01 * sigma[rho]) == rho and diagnostic.rank_at(0.99 * sigma[rho]) == rho + 1
    assert diagnostic.gap >= 1e8


def test_shortfall_is_retried_then_reported_as_candidate_defect(monkeypatch):
    """A lower bound short of the upper bound triggers a second prime, then candidate-defect with a tiny
    Schwartz–Zippel miss probability (two tries: ≤ (t·ρ/(p−1))²)."""
    real = ct._lower_bound
    monkeypatch.setattr(ct, "_lower_bound", lambda *a, **k: (real(*a, **k)[0] - 1, {}))
    certificate = ct.certify(BatchEnsembleSpec((4, 4), 3, 2), "schur")
    assert certificate.status == "candidate-defect" and certificate.primes == PRIMES
    assert certificate.lower == certificate.upper - 1
    assert 0 < certificate.details["schwartz_zippel_miss_probability"] <= (2 * 45 / (PRIMES[1] - 1)) ** 2


def test_certificate_json_shape():
    """to_json() has exactly lower, upper, status; 3×3, k = 2: kmn − (k−1)(m−1)(n−1) = 18 − 4 = 14."""
    assert ct.certify(BatchEnsembleSpec((3, 3), 2)).to_json() == {"lower": 14, "upper": 14, "status": "certified"}


@pytest.mark.slow
def test_toric_certifies_512x512x3x3():
    """The largest ResNet-18 layer (512×512×3×3, k = 4) is certified by the toric route (structural, O(nnz), a few seconds)."""
    spec = BatchEnsembleSpec((512, 512, 3, 3), 4)
    certificate = ct.certify(spec)
    assert certificate.status == "certified" and certificate.lower == dimension.image_dim(spec)


# ---------------------------------------------------------------- property tests (>= 200 random shapes in total)

@settings(max_examples=120)
@given(m=st.integers(1, 5), n=st.integers(1, 5), k=st.integers(1, 4), data=st.data())
def test_property_dense_closed_form_certificate_and_float_rank_agree(m, n, k, data):
    """Random dense shapes and ranks: closed form = modular certificate = float SVD rank (numpy tolerance)."""
    r = data.draw(st.integers(1, min(m, n)))
    spec = BatchEnsembleSpec((m, n), k, r)
    certificate = ct.certify(spec, "schur", seed=m * 100 + n * 10 + k)
    assert certificate.status == "certified"
    assert certificate.lower == dimension.image_dim(spec) == ct.float_jacobian_rank(spec, seed=k).rank


@settings(max_examples=100)
@given(c_out=st.integers(1, 3), c_in=st.integers(1, 3), h=st.integers(1, 2), w=st.integers(1, 2),
       k=st.integers(1, 3), variant=st.sampled_from(VARIANTS), data=st.data())
def test_property_conv_closed_form_certificate_and_float_rank_agree(c_out, c_in, h, w, k, variant, data):
    """Random conv shapes, every variant and rank: certificate = float SVD rank; = closed form where one exists."""
    top = BatchEnsembleSpec((c_out, c_in, h, w), k, 1, variant).max_rank
    spec = BatchEnsembleSpec((c_out, c_in, h, w), k, data.draw(st.integers(1, top)), variant)
    certificate = ct.certify(spec, "schur", seed=c_out + c_in + h + w + k)
    diagnostic = ct.float_jacobian_rank(spec, seed=k)
    assert certificate.lower == diagnostic.rank
    if dimension.has_closed_form(spec):
        assert certificate.status == "certified" and certificate.lower == dimension.image_dim(spec)


@pytest.mark.parametrize("spec,route", [(BatchEnsembleSpec((300, 300), 4), "toric"),
                                        (BatchEnsembleSpec((64, 64, 3, 3), 4, 1, "cp-spatial"), "toric"),
                                        (BatchEnsembleSpec((24, 24), 3, 2), "schur")], ids=str)
def test_memory_estimate_brackets_the_measured_peak(spec, route):
    """Defect 2's guard rests on ``estimate_cost``: on layers large enough for the per-unit terms to dominate, the
    estimate is at least the measured peak (tracemalloc; numpy reports its buffers to it) and at most 3× it (the
    constants are measured and rounded up; a factor 3 is the precision the module docstring states)."""
    import tracemalloc
    tracemalloc.start()
    try:
        ct.certify(spec, route)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    estimate = ct.estimate_cost(spec, route).bytes
    assert peak <= estimate <= 3 * peak, (peak, estimate)


def test_limits_send_auto_to_the_closed_form_and_refuse_an_explicit_route():
    """Past the limits, ``auto`` returns a not-run certificate with the reason (and the proved bound as upper);
    an explicit route raises a one-line ``BadInput`` naming ``--route none``; within them nothing changes."""
    spec, tight = BatchEnsembleSpec((300, 300), 4), ct.CostLimits(memory_bytes=2**20, seconds=3600)
    skipped = ct.certify(spec, "auto", limits=tight)
    assert (skipped.status, skipped.route, skipped.upper) == ("not-run", "none", dimension.upper_bound(spec))
    assert "toric route" in skipped.details["reason"] and "closed form (proved for rank 1)" in skipped.details["reason"]
    with pytest.raises(ct.BadInput, match=r"--route toric for 300x300.* use --route none for the closed form"):
        ct.certify(spec, "toric", limits=tight)
    assert ct.certify(spec, "auto", limits=ct.CostLimits()).status == "certified"
