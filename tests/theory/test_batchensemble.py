"""The foundation's BatchEnsemble map (theory.batchensemble): vectorised map and analytic Jacobian against slow,
obvious references (per-member loop, torch.func.jacrev), and rank 1 as the explicit W ∘ r sᵀ."""
from __future__ import annotations

import pytest
import torch

from infra.errors import BadInput
from theory.batchensemble import (VARIANTS, BatchEnsembleSpec, flatten_params, jacobian, member_weights,
                                  member_weights_loop, network_layer_spec, random_factors, spec_at_rank,
                                  unflatten_params)

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


def test_spec_at_rank_resolves_full_and_names_the_kernel_of_a_bad_rank():
    """``"full"`` is the layer's max_rank (min(out, in) channel-wise: 3 for (8, 3, 3, 3)); a rank above it, below 1
    or a word other than ``"full"`` is a BadInput naming the kernel."""
    assert spec_at_rank((8, 3, 3, 3), 4, "full").rank == 3
    assert spec_at_rank((8, 3, 3, 3), 4, 2).rank == 2
    for bad in (4, 0, "max"):
        with pytest.raises(BadInput, match=r"kernel \(8, 3, 3, 3\)"):
            spec_at_rank((8, 3, 3, 3), 4, bad)


@pytest.mark.parametrize("shape, rank, variant, expected", [
    ((8, 1, 3, 3), 4, "channel-wise", (1, "channel-wise")),       # a 1-channel stem is already at full rank
    ((8, 1, 3, 3), 4, "flattened-kernel", (4, "flattened-kernel")),  # min(8, 1·3·3) = 8 >= 4: not capped
    ((10, 16), 2, "cp-spatial", (2, "channel-wise")),              # dense kernel: conv-only variant → channel-wise
    ((10, 16), "full", "flattened-kernel", (10, "channel-wise")),
    ((10, 16), 1, "output-scale", (1, "output-scale")),           # a dense variant is kept
])
def test_network_layer_spec_caps_the_rank_and_falls_back_on_dense_kernels(shape, rank, variant, expected):
    spec = network_layer_spec(shape, 4, rank, variant)
    assert (spec.rank, spec.variant) == expected


def test_network_layer_spec_still_rejects_what_no_layer_accepts():
    """Capping is for ranks above a layer's maximum only: rank 0, an unknown word or an unknown variant stay errors."""
    for rank, variant in ((0, "channel-wise"), ("max", "channel-wise"), (1, "kernel-wise")):
        with pytest.raises(BadInput):
            network_layer_spec((8, 3, 3, 3), 4, rank, variant)
