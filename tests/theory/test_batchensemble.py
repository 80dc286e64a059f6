"""The foundation's BatchEnsemble map (theory.batchensemble): vectorised map and analytic Jacobian against slow,
obvious references (per-member loop, torch.func.jacrev), and rank 1 as the explicit W ∘ r sᵀ."""
from __future__ import annotations

import pytest
import torch

from theory.batchensemble import (VARIANTS, BatchEnsembleSpec, flatten_params, jacobian, member_weights,
                                  member_weights_loop, random_factors, unflatten_params)
from theory.cli_support import BadInput

SPECS = [BatchEnsembleSpec((3, 4), 2), BatchEnsembleSpec((3, 4), 3, 2)] + [
    BatchEnsembleSpec((2, 3, 2, 2), 2, 1, variant) for variant in VARIANTS] + [
    BatchEnsembleSpec((3, 2, 2, 2), 2, 2, "cp-spatial")]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_member_weights_equal_per_member_loop(spec, generator):
    """Φ(W, F) vectorised equals the entry-by-entry loop W_i[x] = W[x]·Σ_q Π_j F_j[i,q,x|B_j] (float64 round-off)."""
    weight, factors = random_factors(spec, generator)
    torch.testing.assert_close(member_weights(spec, weight, factors), member_weights_loop(spec, weight, factors),
                               rtol=1e-12, atol=1e-12)  # same products in another order: float64 round-off only


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_analytic_jacobian_equals_jacrev(spec, generator):
    """∂Φ/∂θ in closed form equals torch.func.jacrev of member_weights (float64 round-off)."""
    weight, factors = random_factors(spec, generator)
    theta = flatten_params(weight, factors)
    automatic = torch.func.jacrev(lambda t: member_weights(spec, *unflatten_params(spec, t)).reshape(-1))(theta)
    torch.testing.assert_close(jacobian(spec, weight, factors), automatic, rtol=1e-12, atol=1e-12)


def test_rank1_dense_is_hadamard_with_outer_product(generator):
    """rank = 1 dense: W_i = W ∘ r_i s_iᵀ exactly."""
    spec = BatchEnsembleSpec((4, 3), 3)
    weight, (r, s) = random_factors(spec, generator)
    explicit = torch.stack([weight * torch.outer(r[i, 0], s[i, 0]) for i in range(3)])
    torch.testing.assert_close(member_weights(spec, weight, (r, s)), explicit, rtol=1e-14, atol=1e-14)


def test_modular_jacobian_equals_float_jacobian_reduced(generator):
    """At an integer point, the mod-p Jacobian is the exact integer Jacobian reduced mod p."""
    spec = BatchEnsembleSpec((2, 3, 2, 1), 2, 2)
    weight = torch.randint(-5, 6, spec.kernel_shape, generator=generator, dtype=torch.int64)
    factors = tuple(torch.randint(-5, 6, shape, generator=generator, dtype=torch.int64) for shape in spec.factor_shapes)
    exact = jacobian(spec, weight.double(), tuple(f.double() for f in factors)).round().long()
    assert torch.equal(jacobian(spec, weight, factors, modulus=97), torch.remainder(exact, 97))


@pytest.mark.parametrize("kwargs", [dict(kernel_shape=(3, 2), members=0), dict(kernel_shape=(3, 2), members=2, rank=3),
                                    dict(kernel_shape=(3, 2), members=2, variant="cp-spatial"),
                                    dict(kernel_shape=(3, 2, 1), members=2)])
def test_bad_spec_raises_one_line_error(kwargs):
    """Invalid shapes, ranks, member counts and variants raise BadInput naming the value."""
    with pytest.raises(BadInput):
        BatchEnsembleSpec(**kwargs)
