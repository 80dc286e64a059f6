"""Distance to the BatchEnsemble set: zero on BE points, positive on DE points, monotone in rank, log-contrasts."""
import time

import numpy as np
import pytest
import torch

from infra.errors import BadInput
from theory import dimension
from theory.batchensemble import DENSE_VARIANTS, VARIANTS, BatchEnsembleSpec, member_weights, random_factors
from theory.distance import (_update_factor, distance_by_rank, distance_to_batchensemble, log_contrasts,
                             rank1_dense_distances, validate_weights)

BE_ZERO_TOL = 1e-10  # float64 round-off gives ~1e-15; 1e-10 allows for the solver's stopping rule, far below DE values
DE_POSITIVE_TOL = 1e-3  # generic DE points sit at relative residual 0.05–0.7 from every non-filling BE set


def _cases():
    for shape, k in (((4, 5), 3), ((2, 3, 2, 2), 2)):
        for variant in (DENSE_VARIANTS if len(shape) == 2 else VARIANTS):
            top = BatchEnsembleSpec(shape, k, 1, variant)
            ranks = range(1, top.max_rank + 1) if len(top.blocks) <= 2 else (1,)
            for rank in ranks:
                yield pytest.param(shape, k, variant, rank, id=f"{shape}-{variant}-r{rank}")


@pytest.mark.parametrize("shape,k,variant,rank", list(_cases()))
def test_distance_of_random_be_point_is_zero_and_of_de_point_positive(shape, k, variant, rank, generator):
    """dist(X, BE_r) ≈ 0 for X = Φ(W, F) and > 0 for a Gaussian DE point whenever codim > 0 (= 0 when BE_r fills)."""
    spec = BatchEnsembleSpec(shape, k, rank, variant)
    be = member_weights(spec, *random_factors(spec, generator))
    de = torch.randn((k, *shape), generator=generator, dtype=torch.float64)
    at_be = distance_to_batchensemble(be, rank, variant)
    at_de = distance_to_batchensemble(de, rank, variant)
    assert at_be.relative_residual < BE_ZERO_TOL
    assert torch.allclose(at_be.projection, be, atol=1e-9 * float(be.abs().max()))  # same tolerance, entrywise
    if dimension.codim(spec) > 0:
        assert at_de.relative_residual > DE_POSITIVE_TOL
    else:
        assert at_de.relative_residual < BE_ZERO_TOL


def test_result_fields_are_consistent(generator):
    """projection = Φ(weight, factors), distance = ‖X − projection‖, factors in the (k, r, D_j) layout."""
    spec = BatchEnsembleSpec((3, 4, 2, 2), 3, 2, "channel-wise")
    weights = torch.randn(3, 3, 4, 2, 2, generator=generator, dtype=torch.float64)
    result = distance_to_batchensemble(weights, rank=2)
    assert [tuple(f.shape) for f in result.factors] == list(spec.factor_shapes)
    assert torch.allclose(member_weights(spec, result.weight, result.factors), result.projection, atol=1e-12)
    assert result.distance == pytest.approx(float((weights - result.projection).norm()), rel=1e-12)
    assert result.relative_residual == pytest.approx(result.distance / float(weights.norm()), rel=1e-12)


@pytest.mark.parametrize("shape", [(4, 5), (4, 3, 2, 2)])
def test_distance_is_monotone_in_rank(shape, generator):
    """dist(X, BE_{r+1}) <= dist(X, BE_r): rank r+1 is warm-started from rank r and every step is a descent step."""
    weights = torch.randn((3, *shape), generator=generator, dtype=torch.float64)
    distances = [r.distance for r in distance_by_rank(weights, min(shape[:2]))]
    assert all(later <= earlier for earlier, later in zip(distances, distances[1:])), distances
    assert distances[0] > distances[-1]


def test_factor_update_is_the_exact_least_squares_minimiser(generator):
    """The vectorised ALS factor step equals a per-(member, block index) numpy least-squares loop."""
    spec = BatchEnsembleSpec((3, 4, 2, 2), 2, 2, "channel-wise")
    weights = torch.randn(2, 3, 4, 2, 2, generator=generator, dtype=torch.float64)
    weight, factors = random_factors(spec, generator)
    for j in range(2):
        fast = _update_factor(spec, weights, weight, list(factors), j)
        for i in range(2):
            for c in range(spec.block_sizes[j]):
                columns = []
                for q in range(spec.rank):
                    other = factors[1 - j][i, q]
                    entries = weight * (other[None, :, None, None] if j == 0 else other[:, None, None, None])
                    columns.append((entries[c] if j == 0 else entries[:, c]).reshape(-1))
                target = (weights[i][c] if j == 0 else weights[i][:, c]).reshape(-1)
                slow = np.linalg.lstsq(torch.stack(columns, 1).numpy(), target.numpy(), rcond=None)[0]
                assert np.allclose(fast[i, :, c].numpy(), slow, atol=1e-10)  # both solve the same 2×2 system


def _slow_dense_contrasts(weights: torch.Tensor) -> torch.Tensor:
    """g_iab of docs/theory.md §7 entry by entry (0-indexed reference member and row/column 0)."""
    L = torch.log(weights.abs())
    k, m, n = weights.shape
    out = torch.zeros(k - 1, m - 1, n - 1, dtype=torch.float64)
    for i in range(1, k):
        for a in range(1, m):
            for b in range(1, n):
                out[i - 1, a - 1, b - 1] = (L[i, a, b] - L[i, a, 0] - L[i, 0, b] + L[i, 0, 0]
                                            - (L[0, a, b] - L[0, a, 0] - L[0, 0, b] + L[0, 0, 0]))
    return out


def test_log_contrasts_equal_the_theory_formula_for_dense_layers(generator):
    """The vectorised contrasts are the (k−1)(m−1)(n−1) values g_iab of docs/theory.md §7."""
    weights = torch.randn(3, 4, 5, generator=generator, dtype=torch.float64)
    contrasts = log_contrasts(weights)
    assert torch.allclose(contrasts.values, _slow_dense_contrasts(weights).reshape(2, -1), atol=1e-12)


@pytest.mark.parametrize("shape,variant", [((3, 4), v) for v in DENSE_VARIANTS] + [((2, 3, 3, 3), v) for v in VARIANTS])
def test_log_contrasts_vanish_on_be_points(shape, variant, generator):
    """On rank-1 BE torus points every contrast is 0 (|g| <= 1e-12: round-off of logs below 10 in magnitude), the
    signs are consistent, and the number of contrasts is the codimension."""
    spec = BatchEnsembleSpec(shape, 3, 1, variant)
    contrasts = log_contrasts(member_weights(spec, *random_factors(spec, generator)), variant)
    assert contrasts.num_contrasts == dimension.codim(spec)
    assert contrasts.max_abs <= 1e-12
    assert contrasts.signs_consistent and contrasts.on_torus


def test_sign_condition_catches_what_log_contrasts_miss(generator):
    """Flipping the sign of one dependent entry keeps |g| = 0 but violates the sign condition: not a BE point."""
    spec = BatchEnsembleSpec((3, 3), 2)
    point = member_weights(spec, *random_factors(spec, generator))
    point[1, 2, 2] = -point[1, 2, 2]
    contrasts = log_contrasts(point)
    assert contrasts.max_abs <= 1e-12
    assert not contrasts.signs_consistent
    assert distance_to_batchensemble(point).relative_residual > DE_POSITIVE_TOL


@pytest.mark.parametrize("weights,match", [
    (torch.zeros(2, 3), "shape"), (torch.zeros(1, 3, 3), "k=1"), (torch.full((2, 2, 2), float("nan")), "NaN"),
    (torch.zeros(2, 0, 3), "empty"), ("not a tensor", "tensor"),
])
def test_bad_weights_are_rejected_with_one_line(weights, match):
    """Wrong shapes, k < 2, NaN/Inf: BadInput naming the value and the accepted range."""
    with pytest.raises(BadInput, match=match):
        validate_weights(weights)


@pytest.mark.slow
def test_distance_handles_a_512x512x3x3_layer_in_seconds(generator):
    """A k = 4 ResNet-sized conv layer (9.4M entries) projects in under a minute and is exact on a BE point."""
    spec = BatchEnsembleSpec((512, 512, 3, 3), 4)
    point = member_weights(spec, *random_factors(spec, generator))
    start = time.perf_counter()
    result = distance_to_batchensemble(point, starts=1)
    assert time.perf_counter() - start < 60
    assert result.relative_residual < BE_ZERO_TOL


def _be_point64(spec: BatchEnsembleSpec, generator: torch.Generator) -> torch.Tensor:
    weight, factors = random_factors(spec, generator)
    return member_weights(spec, weight.double(), tuple(f.double() for f in factors))


@pytest.mark.parametrize("case", [(2, 2, 2), (3, 2, 3), (4, 2, 2), (2, 3, 3)])
def test_batched_rank1_distances_match_the_per_point_projection_near_the_set(case, generator):
    """rank1_dense_distances (vectorised over N points) against distance_to_batchensemble point by point, near the
    set (BE point + 0.03 noise), where the ε-tube estimate needs it. Both are least-squares residuals (upper bounds
    on the distance): the batched one is never larger (rtol 1e-6: both stop at a relative decrease of 1e-9 per
    sweep) and equal on at least 10 of 12 points (the per-point ALS can stop early in a swamp; the batched one runs
    more sweeps and an extra SVD start)."""
    k, m, n = case
    spec = BatchEnsembleSpec((m, n), k)
    be = torch.stack([_be_point64(spec, generator) for _ in range(12)])
    points = be + 0.03 * torch.randn(be.shape, generator=generator, dtype=torch.float64)
    batched = rank1_dense_distances(points)
    looped = torch.tensor([distance_to_batchensemble(p, seed=0).distance for p in points], dtype=torch.float64)
    assert bool((batched <= looped * (1 + 1e-6)).all())
    assert int(torch.isclose(batched, looped, rtol=1e-6, atol=0).sum()) >= 10


def test_batched_rank1_distances_are_zero_on_be_points_and_upper_bounds_elsewhere(generator):
    """Near zero on BE points; on Gaussian points a least-squares residual of a point of the set: 0 <= d <= ‖X‖."""
    spec = BatchEnsembleSpec((3, 4), 3)
    be = torch.stack([_be_point64(spec, generator) for _ in range(8)])
    # ALS from a start exact in the column factors only converges linearly: 300 sweeps reach relative residuals
    # ≤ 1e-9 (observed 1.6e-10), far below the smallest ε of any tube fit (≥ 1e-3 of ‖X‖)
    assert float(rank1_dense_distances(be).max() / be.flatten(1).norm(dim=1).min()) <= 1e-8
    points = torch.randn(50, 3, 3, 4, generator=generator, dtype=torch.float64)
    distances = rank1_dense_distances(points)
    assert bool((distances >= 0).all()) and bool((distances <= points.flatten(1).norm(dim=1)).all())


def test_batched_distances_reject_a_bad_shape():
    with pytest.raises(BadInput, match=r"points shape \(3, 4\)"):
        rank1_dense_distances(torch.zeros(3, 4))
