"""BatchEnsemble layers: vectorised forward = per-member loop of plain F.linear / F.conv2d on the effective weights,
effective weights = the theory's weight map, torch-uncertainty's rank-1 math, inits, BatchNorm, bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from empirics.models.layers import (BatchEnsembleConv2d, BatchEnsembleLinear, MemberBatchNorm, default_forward_mode,
                                    init_fast_factors, output_factor_spread)
from infra.errors import BadInput
from theory.batchensemble import DENSE_VARIANTS, VARIANTS, member_weights_loop
from theory.batchensemble import multipliers as theory_multipliers

K, BATCH = 3, 2
# float64 forward vs loop: the same products summed in a different order; relative error ~1e-15 per term, 1e-12 with
# headroom for the r-term sums and the convolution's accumulation order.
FLOAT64_TOL = 1e-12


def _conv(variant: str, rank, bias: str = "none", mode: str | None = None) -> BatchEnsembleConv2d:
    layer = BatchEnsembleConv2d(3, 4, 3, K, stride=2, padding=1, rank=rank, variant=variant, bias=bias).double()
    if mode:
        layer.forward_mode = mode
    return layer


def _linear(variant: str, rank, bias: str = "per-member", mode: str | None = None) -> BatchEnsembleLinear:
    layer = BatchEnsembleLinear(5, 4, K, rank=rank, variant=variant, bias=bias).double()
    if mode:
        layer.forward_mode = mode
    return layer


def _member_bias(layer, member: int) -> torch.Tensor | None:
    if layer.bias is None:
        return None
    return layer.bias[member] if layer.bias.dim() == 2 else layer.bias


def _modes(variant: str) -> list[str]:
    return ["factored", "materialised"] if variant == "channel-wise" else ["materialised"]


DENSE_CASES = [(v, r, m, b) for v in DENSE_VARIANTS for r in (1, 2, "full") for m in _modes(v)
               for b in ("per-member", "shared", "none") if not (r == 2 and v in ("per-kernel-scalar", "output-scale"))]
CONV_CASES = [(v, r, m) for v in VARIANTS for r in (1, 2, "full") for m in _modes(v)
              if not (r == 2 and v in ("per-kernel-scalar", "output-scale"))]


@pytest.mark.parametrize("variant,rank,mode,bias", DENSE_CASES)
def test_linear_forward_equals_per_member_loop_of_f_linear(variant, rank, mode, bias, generator):
    """Member i's rows of the vectorised output are F.linear(x_i, W_i, b_i) with W_i = effective_weights()[i]."""
    torch.manual_seed(0)
    layer = _linear(variant, rank, bias, mode)
    x = torch.randn(K * BATCH, 5, generator=generator, dtype=torch.float64)
    weights = layer.effective_weights()
    expected = torch.cat([F.linear(x[i * BATCH:(i + 1) * BATCH], weights[i], _member_bias(layer, i))
                          for i in range(K)])
    torch.testing.assert_close(layer(x), expected, rtol=FLOAT64_TOL, atol=FLOAT64_TOL)


@pytest.mark.parametrize("variant,rank,mode", CONV_CASES)
@pytest.mark.parametrize("bias", ["per-member", "none"])
def test_conv_forward_equals_per_member_loop_of_f_conv2d(variant, rank, mode, bias, generator):
    """Member i's rows are F.conv2d(x_i, W_i, b_i, stride, padding) with W_i = effective_weights()[i]."""
    torch.manual_seed(0)
    layer = _conv(variant, rank, bias, mode)
    x = torch.randn(K * BATCH, 3, 7, 7, generator=generator, dtype=torch.float64)
    weights = layer.effective_weights()
    expected = torch.cat([F.conv2d(x[i * BATCH:(i + 1) * BATCH], weights[i], _member_bias(layer, i), stride=2,
                                   padding=1) for i in range(K)])
    torch.testing.assert_close(layer(x), expected, rtol=FLOAT64_TOL, atol=FLOAT64_TOL)


@pytest.mark.parametrize("kind,variant,rank", [(kind, v, r) for kind, variants in (("conv", VARIANTS), ("dense", DENSE_VARIANTS))
                                               for v in variants for r in (1, 2, "full")
                                               if not (r == 2 and v in ("per-kernel-scalar", "output-scale"))])
def test_effective_weights_are_the_theory_weight_map(kind, variant, rank):
    """effective_weights() = W ∘ M_i computed entry by entry by theory's slow reference member_weights_loop, for
    every conv and dense variant and rank."""
    torch.manual_seed(1)
    layer = (_conv if kind == "conv" else _linear)(variant, rank)
    expected = member_weights_loop(layer.spec, layer.weight, tuple(layer.fast_factors))
    torch.testing.assert_close(layer.effective_weights(), expected, rtol=FLOAT64_TOL, atol=FLOAT64_TOL)
    assert tuple(f.shape for f in layer.fast_factors) == layer.spec.factor_shapes


def test_rank1_channel_wise_equals_torch_uncertainty_batch_linear_and_conv_math(generator):
    """Given r_group (M, in) = fast_factors[1][:, 0], s_group (M, out) = fast_factors[0][:, 0] and the per-member bias,
    torch-uncertainty's forward ``op(x * r) * s + bias`` (rows member-major, each group repeated B times) is ours."""
    torch.manual_seed(2)
    for layer, x, op in [
        (_linear("channel-wise", 1), torch.randn(K * BATCH, 5, generator=generator, dtype=torch.float64),
         lambda inp, w: F.linear(inp, w)),
        (_conv("channel-wise", 1, bias="per-member"),
         torch.randn(K * BATCH, 3, 7, 7, generator=generator, dtype=torch.float64),
         lambda inp, w: F.conv2d(inp, w, stride=2, padding=1)),
    ]:
        r_group, s_group, bias = layer.fast_factors[1][:, 0], layer.fast_factors[0][:, 0], layer.bias
        spatial = (1,) * (x.dim() - 2)
        r = torch.repeat_interleave(r_group, BATCH, dim=0).view(K * BATCH, -1, *spatial)
        s = torch.repeat_interleave(s_group, BATCH, dim=0).view(K * BATCH, -1, *spatial)
        b = torch.repeat_interleave(bias, BATCH, dim=0).view(K * BATCH, -1, *spatial)
        reference = op(x * r, layer.weight) * s + b
        assert layer.forward_mode == "factored"
        torch.testing.assert_close(layer(x), reference, rtol=FLOAT64_TOL, atol=FLOAT64_TOL)


def test_default_forward_mode_is_factored_only_for_low_rank_channel_wise():
    """Rank-1 channel-wise uses shared products; higher ranks and other variants materialise per-member weights."""
    assert default_forward_mode(_conv("channel-wise", 1).spec) == "factored"
    assert default_forward_mode(_conv("channel-wise", 2).spec) == "materialised"
    assert default_forward_mode(_conv("flattened-kernel", 1).spec) == "materialised"


@pytest.mark.parametrize("variant,mode", [("flattened-kernel", "factored"), ("channel-wise", "fused")])
def test_unavailable_forward_mode_is_a_clear_error(variant, mode):
    """The factored path exists only for channel-wise; an unknown mode names the accepted ones."""
    layer = _conv(variant, 1, mode=mode)
    with pytest.raises(BadInput, match="forward_mode="):
        layer(torch.zeros(K, 3, 5, 5, dtype=torch.float64))


def test_full_rank_is_the_spec_max_rank():
    """rank='full' resolves to min_j D_j: min(out=4, in=3) channel-wise, min(4, 3·3·3) flattened-kernel."""
    assert _conv("channel-wise", "full").rank == 3
    assert _conv("flattened-kernel", "full").rank == 4
    assert _conv("per-kernel-scalar", "full").rank == 1


@pytest.mark.parametrize("rank", [0, 4, "half"])
def test_rank_out_of_range_is_a_clear_error(rank):
    """Rank outside 1..max_rank (3 for a 4×3 channel-wise kernel) names the value, the range and the layer."""
    with pytest.raises(BadInput, match=r"kernel \(4, 3, 3, 3\).*rank|rank=.*'full'"):
        _conv("channel-wise", rank)


def test_batch_not_divisible_by_members_is_a_clear_error():
    """A batch of 7 rows for k = 3 members names both numbers."""
    with pytest.raises(BadInput, match="batch size 7 is not divisible by members k=3"):
        _linear("channel-wise", 1)(torch.zeros(7, 5, dtype=torch.float64))
    with pytest.raises(BadInput, match="batch size 7"):
        MemberBatchNorm(4, 3)(torch.zeros(7, 4))


@pytest.mark.parametrize("bad", [dict(init="uniform"), dict(bias="both"), dict(init_std=-1.0), dict(sign_prob=1.5),
                                 dict(variant="flattened-kernel")])
def test_bad_layer_arguments_are_clear_errors(bad):
    """Unknown init / bias, negative σ, a probability outside [0, 1], a conv-only variant on a dense layer."""
    with pytest.raises(BadInput):
        BatchEnsembleLinear(5, 4, K, **bad)


def test_normal_init_has_mean_one_and_the_requested_std():
    """Fast factors ~ N(1, σ) at rank 1: 4·1·20000 draws give mean and std within 0.02 (≈ 8 standard errors of
    σ/√80000 = 0.0018 for σ = 0.5, and 0.0025 for the std)."""
    torch.manual_seed(3)
    layer = BatchEnsembleLinear(20000, 20, 4, init_std=0.5)
    values = layer.fast_factors[1].detach()
    assert abs(values.mean().item() - 1) < 0.02 and abs(values.std().item() - 0.5) < 0.02
    layer = BatchEnsembleLinear(20000, 20, 4, init_std=1.0)
    assert abs(layer.fast_factors[1].detach().std().item() - 1.0) < 0.02


def test_random_sign_init_draws_plus_minus_one_with_probability_p():
    """Entries are ±1 with a fraction of +1 within 0.02 of p = 0.8 (std error √(0.16/80000) = 0.0014)."""
    torch.manual_seed(4)
    layer = BatchEnsembleLinear(20000, 20, 4, init="random_sign", sign_prob=0.8)
    values = layer.fast_factors[1].detach()
    assert set(values.unique().tolist()) == {-1.0, 1.0}
    assert abs((values == 1).double().mean().item() - 0.8) < 0.02


# Rank-1 moments of one multiplier entry M = Π_j X_j over t independent factor entries with mean μ, E[X²] = e:
# E[M] = μ^t, Var M = e^t − μ^{2t}; N(1, σ): μ = 1, e = 1 + σ²; ±1 with P(+1) = p: μ = 2p − 1, e = 1.
INIT_CASES = [dict(init="normal", init_std=0.5), dict(init="normal", init_std=1.0),
              dict(init="random_sign", sign_prob=0.5), dict(init="random_sign", sign_prob=0.8)]
STANDARD_ERRORS = 5  # |estimate − target| <= 5 standard errors: a false alarm has probability < 1e-6 per check


def _rank_one_target(init: str, init_std: float = 0.5, sign_prob: float = 0.5, blocks: int = 2) -> tuple[float, float]:
    mean, second = (1.0, 1.0 + init_std ** 2) if init == "normal" else (2 * sign_prob - 1, 1.0)
    return mean ** blocks, second ** blocks - mean ** (2 * blocks)


def _assert_moments_match(samples: torch.Tensor, target_mean: float, target_variance: float) -> None:
    """The sample means of M and of M² (i.i.d. ``samples``) within 5 standard errors sd/√n of E[M] and
    E[M²] = Var M + E[M]² (matching both is matching mean and variance; as plain averages they are asymptotically
    normal, and ±1 entries, whose M² is exactly 1, give an exact check with zero error)."""
    samples = samples.double().flatten()
    n = samples.numel()
    for values, target in ((samples, target_mean), (samples ** 2, target_variance + target_mean ** 2)):
        estimate, error = values.mean().item(), (values.var().item() / n) ** 0.5
        assert abs(estimate - target) <= STANDARD_ERRORS * error + 1e-12, (estimate, target, error)  # 1e-12: rounding


@pytest.mark.parametrize("rank", [1, 2, 4, 8])
@pytest.mark.parametrize("case", INIT_CASES, ids=lambda case: "-".join(map(str, case.values())))
def test_rank_r_init_matches_the_rank_one_mean_and_variance_of_multiplier_entries(rank, case):
    """Variance-matched init: at every rank a channel-wise multiplier entry M_i[a, b] = Σ_q F_out[i,q,a] F_in[i,q,b]
    has the rank-1 mean μ² and variance e² − μ⁴ (N(1, 0.5): 1 and (1 + 0.25)² − 1 = 0.5625). Diagonal entries
    M_i[a, a] share no factor entry, so the 16·512 of them are i.i.d. samples (seeded)."""
    torch.manual_seed(11 + rank)
    layer = BatchEnsembleLinear(512, 512, 16, rank=rank, **case)
    multipliers = theory_multipliers(layer.spec, [factor.detach() for factor in layer.fast_factors])
    _assert_moments_match(torch.diagonal(multipliers, dim1=1, dim2=2), *_rank_one_target(**case))


@pytest.mark.parametrize("rank", [1, 2, 4, 8])
@pytest.mark.parametrize("case", [INIT_CASES[0], INIT_CASES[3]], ids=["normal-0.5", "random_sign-0.8"])
def test_rank_r_init_matches_rank_one_moments_with_three_factors(rank, case):
    """With t = 3 factors (cp-spatial's out, in, spatial) M = Σ_q F_1 F_2 F_3 keeps μ³ and e³ − μ⁶ at every rank:
    4·20000 entries of independent factor tensors (k, r, D) initialised as a layer does (seeded)."""
    generator = torch.Generator().manual_seed(23 + rank)
    factors = [torch.empty(4, rank, 20000) for _ in range(3)]
    init_fast_factors(factors, case["init"], case.get("init_std", 0.5), case.get("sign_prob", 0.5), generator)
    product = (factors[0] * factors[1] * factors[2]).sum(dim=1)
    _assert_moments_match(product, *_rank_one_target(**case, blocks=3))


def test_variance_matched_spread_formula_at_known_points():
    """ρ_1 = 1; ±1 signs with p = 1/2 (μ = 0): ρ_r = 1/√r; N(1, 0.5) with two factors: ρ_r² σ² =
    (c² − 1)/(r c) − (c − 1)/(r² c) with c = 1.25, i.e. ρ_2² · 0.25 = 0.5625/2.5 − 0.25/5 = 0.175."""
    assert output_factor_spread(1, 2, 1.0, 1.25) == 1.0
    for rank in (2, 4, 8):
        assert output_factor_spread(rank, 2, 0.0, 1.0) == pytest.approx(rank ** -0.5, rel=1e-12)
    assert output_factor_spread(2, 2, 1.0, 1.25) ** 2 * 0.25 == pytest.approx(0.175, rel=1e-12)


def test_bias_options_per_member_shared_none():
    """Per-member bias is (k, out) and makes members differ at x = 0; shared bias (out,) gives equal members."""
    zero = torch.zeros(K * BATCH, 5, dtype=torch.float64)
    per_member = _linear("channel-wise", 1, "per-member")(zero).view(K, BATCH, 4)
    shared = _linear("channel-wise", 1, "shared")(zero).view(K, BATCH, 4)
    assert not torch.equal(per_member[0], per_member[1])
    assert torch.equal(shared[0], shared[1]) and shared.abs().sum() > 0
    assert _linear("channel-wise", 1, "none").bias is None


@pytest.mark.parametrize("spatial", [False, True])
def test_member_batchnorm_equals_one_batchnorm_per_member(spatial, generator):
    """Training-mode outputs and running statistics equal those of k separate BatchNorm1d/2d on the members' rows."""
    torch.manual_seed(6)
    norm = MemberBatchNorm(4, K).double()
    with torch.no_grad():
        norm.norm.weight.uniform_(0.5, 1.5)
        norm.norm.bias.uniform_(-1, 1)
    shape = (K * 5, 4, 3, 3) if spatial else (K * 5, 4)
    x = torch.randn(shape, generator=generator, dtype=torch.float64) * 3 + 1
    out = norm(x)
    for i in range(K):
        single = (torch.nn.BatchNorm2d(4) if spatial else torch.nn.BatchNorm1d(4)).double()
        with torch.no_grad():
            single.weight.copy_(norm.norm.weight[i * 4:(i + 1) * 4])
            single.bias.copy_(norm.norm.bias[i * 4:(i + 1) * 4])
        expected = single(x[i * 5:(i + 1) * 5])
        torch.testing.assert_close(out[i * 5:(i + 1) * 5], expected, rtol=FLOAT64_TOL, atol=FLOAT64_TOL)
        torch.testing.assert_close(norm.norm.running_mean[i * 4:(i + 1) * 4], single.running_mean)
        torch.testing.assert_close(norm.norm.running_var[i * 4:(i + 1) * 4], single.running_var)


def _parameter_grads(layer) -> list[torch.Tensor]:
    return [p.grad.clone() for p in layer.parameters()]


GRAD_CASES = [(kind, rank, bias) for kind in ("linear", "conv") for rank in (1, 2) for bias in ("per-member", "none")]


@pytest.mark.parametrize("kind,rank,bias", GRAD_CASES)
def test_factored_backward_equals_autograd_of_the_per_member_loop(kind, rank, bias, generator):
    """The hand-written backward of the factored path gives the gradients that autograd gives for the per-member loop
    Σ_i ⟨c_i, op(x_i, W_i) + b_i⟩ with W_i = effective_weights()[i], for the input, W, both factors and the bias
    (float64, FLOAT64_TOL)."""
    torch.manual_seed(7)
    layer = (_conv("channel-wise", rank, bias, "factored") if kind == "conv"
             else _linear("channel-wise", rank, bias, "factored"))
    shape = (K * BATCH, 3, 7, 7) if kind == "conv" else (K * BATCH, 5)
    x = torch.randn(shape, generator=generator, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    cotangent = torch.randn(out.shape, generator=generator, dtype=torch.float64)
    (out * cotangent).sum().backward()
    fast_grads, fast_input_grad = _parameter_grads(layer), x.grad.clone()
    layer.zero_grad()
    x.grad = None
    weights = layer.effective_weights()
    op = ((lambda inp, w, b: F.conv2d(inp, w, b, stride=2, padding=1)) if kind == "conv" else F.linear)
    loop = torch.cat([op(x[i * BATCH:(i + 1) * BATCH], weights[i], _member_bias(layer, i)) for i in range(K)])
    (loop * cotangent).sum().backward()
    for fast, slow in zip([*fast_grads, fast_input_grad], [*_parameter_grads(layer), x.grad]):
        torch.testing.assert_close(fast, slow, rtol=FLOAT64_TOL, atol=FLOAT64_TOL)


@pytest.mark.parametrize("kind,mode", [(kind, mode) for kind in ("linear", "conv")
                                       for mode in ("factored", "materialised")])
@pytest.mark.parametrize("grad", [True, False])
def test_shared_input_equals_the_k_fold_repeated_batch(kind, mode, grad, generator):
    """With ``shared_input`` a (B, ...) batch gives the outputs (and parameter gradients) of the same layer on the batch
    repeated k times member-major; with gradients off the linear layer takes its materialised path."""
    torch.manual_seed(8)
    layer = _conv("channel-wise", 1, "per-member", mode) if kind == "conv" else _linear("channel-wise", 1, mode=mode)
    x = torch.randn((BATCH, 3, 7, 7) if kind == "conv" else (BATCH, 5), generator=generator, dtype=torch.float64)
    repeated = x.repeat(K, *([1] * (x.dim() - 1)))
    with torch.set_grad_enabled(grad):
        expected = layer(repeated)
        if grad:
            expected.square().sum().backward()
            expected_grads = _parameter_grads(layer)
            layer.zero_grad()
        layer.shared_input = True
        shared = layer(x)
        if grad:
            shared.square().sum().backward()
            for fast, slow in zip(_parameter_grads(layer), expected_grads):
                torch.testing.assert_close(fast, slow, rtol=FLOAT64_TOL, atol=FLOAT64_TOL)
    torch.testing.assert_close(shared, expected, rtol=FLOAT64_TOL, atol=FLOAT64_TOL)
