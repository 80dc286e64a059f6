"""Batch functional dimension of single models, Deep Ensembles and BatchEnsembles of MLPs (docs/theory.md §9)."""
import itertools

import numpy as np
import pytest
import torch
from torch.func import jacrev

from infra.errors import BadInput
from theory.batchensemble import member_weights
from theory.exact_rank import float_rank
from theory.functional import (MLPSpec, be_point, forward, functional_dimension, linear_fills, linear_functional_codim,
                               linear_symmetry_bound, member_jacobian, parameter_map_jacobian)

SEED = 11


def test_be_jacobian_chain_rule_matches_autograd_of_the_be_network(rng):
    """J_DE(Φ(θ))·JΦ(θ) equals jacrev of all members' outputs taken directly w.r.t. the BE parameters."""
    spec = MLPSpec((3, 4, 2), "tanh", 3, rank=2)
    slow, factors, biases = be_point(spec, rng, exact=False)
    inputs = torch.tensor(rng.standard_normal((5, 3)))
    layers = spec.layer_specs

    def outputs(theta: torch.Tensor) -> torch.Tensor:
        pieces, offset, results = [], 0, []
        for layer in layers:
            sizes = [layer.kernel_size] + [int(np.prod(s)) for s in layer.factor_shapes] + [spec.members * layer.kernel_shape[0]]
            parts = torch.split(theta[offset:offset + sum(sizes)], sizes)
            offset += sum(sizes)
            weight = parts[0].reshape(layer.kernel_shape)
            fac = tuple(p.reshape(s) for p, s in zip(parts[1:-1], layer.factor_shapes))
            pieces.append((member_weights(layer, weight, fac), parts[-1].reshape(spec.members, -1)))
        for i in range(spec.members):
            results.append(forward([w[i] for w, _ in pieces], [b[i] for _, b in pieces], inputs, "tanh").reshape(-1))
        return torch.cat(results)

    theta = torch.cat([torch.cat([w.reshape(-1)] + [f.reshape(-1) for f in fac] + [b.reshape(-1)])
                       for w, fac, b in zip(slow, factors, biases)])
    direct = jacrev(outputs)(theta)
    members = [member_weights(layer, w, f) for layer, w, f in zip(layers, slow, factors)]
    map_jac = parameter_map_jacobian(spec, slow, factors)
    P = spec.params_per_member
    chained = torch.cat([member_jacobian([w[i] for w in members], [b[i] for b in biases], inputs, "tanh")
                         @ map_jac[i * P:(i + 1) * P] for i in range(spec.members)])
    assert torch.allclose(direct, chained, atol=1e-12)  # same float64 products, summed in a different order


@pytest.mark.parametrize("widths,k", [((3, 3, 3), 2), ((4, 4, 4), 2), ((4, 4, 4), 3)])
def test_relu_functional_codim_equals_parameter_codim(widths, k):
    """ReLU MLPs, generic integer points: fdim_DE = k(P−H) and fdim_BE = dim Im Φ − kH are both certified (modular
    rank = proved upper bound), hence functional codim = parameter codim."""
    result = functional_dimension(MLPSpec(widths, "relu", k), seed=SEED)
    assert result.de.status == result.be.status == "certified"
    assert result.functional_codim == result.spec.parameter_codim > 0


@pytest.mark.parametrize("widths,k", [((3, 3, 3), 2), ((3, 3, 3), 3), ((3, 3, 3, 3), 2)])
def test_linear_be_fills_the_de_function_space(widths, k):
    """Deep linear MLPs: fdim_BE = fdim_DE = k·(ρ(n_0+n_L−ρ)+n_L) (certified) although parameter codim > 0."""
    result = functional_dimension(MLPSpec(widths, "identity", k), seed=SEED)
    assert result.certified
    assert result.functional_codim == 0 < result.spec.parameter_codim


def test_linear_be_does_not_fill_at_width_4_with_4_members():
    """Refutes 'functional codim 0 for every deep linear net': [4,4,4], k = 4 has certified fdim_BE = 74 (modular
    rank = the diagonal-rescaling bound) < 80 = fdim_DE, and float rank 74 at a Gaussian point with a clean gap."""
    spec = MLPSpec((4, 4, 4), "identity", 4)
    exact = functional_dimension(spec, seed=SEED)
    assert exact.de.status == "certified" and exact.de.value == 80
    assert exact.be.status == "certified" and exact.be.lower == exact.be.upper == 74
    assert exact.functional_codim == linear_functional_codim(4, 2, 4) == 6
    floating = functional_dimension(spec, seed=SEED, certify=False)
    assert floating.be.float_rank == 74
    assert floating.be.gap >= 1e6  # a clean gap: the rank does not hinge on the cutoff


@pytest.mark.parametrize("n,depth,k", [(2, 1, 3), (3, 2, 4), (4, 2, 2), (4, 3, 4), (5, 2, 3), (3, 3, 5)])
def test_linear_functional_codim_is_(n, depth, k):
    """(n−1)·max(0, k(n−L) − L(n−1)): certified (modular rank = symmetry bound) on cases either side of filling."""
    result = functional_dimension(MLPSpec((n,) * (depth + 1), "identity", k), seed=SEED)
    assert result.certified
    assert result.functional_codim == linear_functional_codim(n, depth, k)
    assert (result.functional_codim == 0) == linear_fills(n, depth, k)


def test_linear_symmetry_bound_equals_the_closed_form_algebra():
    """k(n² + n) − bound = (n−1)(k(n−L) − L(n−1)) whenever the bound is below k(n² + n) (exact integers)."""
    for n, depth, k in itertools.product(range(1, 7), range(1, 6), range(1, 6)):
        spec = MLPSpec((n,) * (depth + 1), "identity", k)
        de = k * (n * n + n)
        assert max(0, de - linear_symmetry_bound(spec)) == linear_functional_codim(n, depth, k)


def test_tanh_functional_codim_equals_parameter_codim():
    """tanh MLP at a Gaussian point: float ranks kP and dim Im Φ with singular-value gaps >= 1e6."""
    result = functional_dimension(MLPSpec((4, 4, 4), "tanh", 2), seed=SEED)
    assert result.de.status == "float" and result.de.gap >= 1e6 and result.be.gap >= 1e6
    assert result.de.value == 2 * result.spec.params_per_member
    assert result.functional_codim == result.spec.parameter_codim


def test_numerical_rank_is_stable_across_tolerances(rng):
    """The tanh BE rank is unchanged across 8 decades of tolerance centred (geometrically) in its singular-value gap,
    and equals the rank at numpy's default tolerance."""
    spec = MLPSpec((3, 4, 3), "tanh", 2)
    result = functional_dimension(spec, seed=SEED)
    slow, factors, biases = be_point(spec, np.random.default_rng(0), exact=False)
    members = [member_weights(layer, w, f) for layer, w, f in zip(spec.layer_specs, slow, factors)]
    inputs = torch.tensor(np.random.default_rng(1).standard_normal((result.batch, 3)))
    P = spec.params_per_member
    jac = torch.cat([member_jacobian([w[i] for w in members], [b[i] for b in biases], inputs, "tanh")
                     @ parameter_map_jacobian(spec, slow, factors)[i * P:(i + 1) * P] for i in range(2)])
    rank = float_rank(jac.numpy())
    middle = float(np.sqrt(rank.singular_values[rank.rank - 1] * rank.singular_values[rank.rank]))
    assert rank.rank_at(middle * 1e4) == rank.rank_at(middle / 1e4) == rank.rank == result.be.value


@pytest.mark.parametrize("widths,activation", [((3, 3, 3), "relu"), ((3, 3, 3, 3), "relu"), ((3, 3, 3), "identity")])
def test_certified_ranks_never_exceed_the_proved_bounds(widths, activation):
    """lower bound <= float rank <= proved upper bound for single, DE and BE (a bound violation would be a bug)."""
    result = functional_dimension(MLPSpec(widths, activation, 3), seed=SEED)
    for report in (result.single, result.de, result.be):
        assert report.lower <= report.upper
        assert report.float_rank <= report.upper


@pytest.mark.parametrize("kwargs,match", [
    ({"widths": (3,)}, "widths"), ({"activation": "gelu"}, "activation"), ({"members": 0}, "members"),
    ({"rank": 4}, "rank"), ({"widths": (3, 0, 3)}, "width"),
])
def test_bad_mlp_spec_is_rejected(kwargs, match):
    """Unknown activations, empty or zero widths, k < 1 and rank above the widths are BadInput one-liners."""
    arguments = {"widths": (3, 3, 3), "activation": "relu", "members": 2} | kwargs
    with pytest.raises(BadInput, match=match):
        MLPSpec(**arguments)


def test_tanh_cannot_be_certified():
    """Asking for an exact certificate of a tanh network is a BadInput (its Jacobian is not rational)."""
    with pytest.raises(BadInput, match="tanh"):
        functional_dimension(MLPSpec((3, 3, 3), "tanh", 2), certify=True)
