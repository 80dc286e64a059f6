"""Models: one factory for every method, the common member interface, DE vectorised = sequential, parameter counts
against torchvision, member weights as the bridge to theory."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision

from empirics.models.ensembles import (METHODS, DeepEnsembleModel, ModelSpec, build_model, build_net,
                                       member_weight_tuples)
from empirics.models.layers import BatchEnsembleConv2d, BatchEnsembleLinear
from empirics.models.networks import LayerFactory
from infra.errors import BadInput
from theory.batchensemble import network_layer_spec

K = 3
FLOAT64_TOL = 1e-12  # float64, same operations in another order (see test_layers)


def _spec(method: str, arch: str = "mlp", **factory) -> ModelSpec:
    options = dict(method=method, members=K, dropout=0.2 if method == "mc-dropout" else 0.0, **factory)
    return ModelSpec(arch=arch, mc_samples=K, width_mult=1 / 16, widths=(12, 8),
                     in_shape=(1, 12, 12), factory=LayerFactory(**options))


@pytest.mark.parametrize("arch", ["mlp", "resnet18"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_answers_member_logits_and_features_with_k_members(method, arch, generator):
    """member_logits (k, B, C) and member_features (k, B, F) with k = 1 (single), k (BE, DE), and for MC Dropout one
    pass while training and k stochastic passes in eval; member_weight_tuples gives (k, out, in[, h, w])."""
    torch.manual_seed(0)
    model = build_model(_spec(method, arch))
    x = torch.randn(5, 1, 12, 12, generator=generator)
    k = 1 if method == "single" else K
    features = 8 if arch == "mlp" else 32
    model.train()
    assert model.member_logits(x).shape == (1 if method in ("single", "mc-dropout") else k, 5, 10)
    model.eval()
    assert model.member_logits(x).shape == (k, 5, 10)
    assert model.member_features(x).shape == (k, 5, features)
    weights = member_weight_tuples(model)
    assert all(w.shape[0] == k for w in weights.values())
    assert weights["head"].shape == (k, 10, features)


def test_mc_dropout_passes_differ_at_eval_and_weight_samples_are_masked_columns(generator):
    """At eval the k MC-Dropout passes differ (dropout stays on); sampled member weights are W with whole input
    columns zeroed or scaled by 1/(1 − p)."""
    torch.manual_seed(1)
    model = build_model(_spec("mc-dropout")).double().eval()
    logits = model.member_logits(torch.randn(4, 1, 12, 12, generator=generator, dtype=torch.float64))
    assert not torch.equal(logits[0], logits[1])
    head = member_weight_tuples(model, generator)["head"]
    ratio = head / model.net.head.weight.detach()
    assert torch.allclose(ratio, ratio[:, :1, :].expand_as(ratio))  # one factor per input column
    assert set(ratio.unique().tolist()) <= {0.0, 1 / (1 - 0.2)}


def test_batchensemble_member_equals_plain_network_with_its_effective_weights(generator):
    """BE MLP member i = the plain MLP whose kernels are member_weight_tuples()[layer][i] and biases bias[i]: the
    member-major repetition and every layer agree end to end (float64)."""
    torch.manual_seed(2)
    model = build_model(_spec("batchensemble", rank=2)).double().eval()
    x = torch.randn(4, 1, 12, 12, generator=generator, dtype=torch.float64)
    weights = member_weight_tuples(model)
    layers = ["hidden.0", "hidden.1", "head"]
    for i in range(K):
        h = x.flatten(1)
        for name in layers:
            layer = model.net.get_submodule(name)
            h = F.linear(h, weights[name][i], layer.bias[i])
            h = torch.relu(h) if name != "head" else h
        torch.testing.assert_close(model.member_logits(x)[i], h, rtol=FLOAT64_TOL, atol=FLOAT64_TOL)


def _de_pair(arch: str) -> tuple[DeepEnsembleModel, DeepEnsembleModel]:
    torch.manual_seed(3)
    spec = _spec("single", arch)
    nets = [build_net(spec, spec.factory).double() for _ in range(K)]
    return (DeepEnsembleModel(copy.deepcopy(nets), "sequential"), DeepEnsembleModel(copy.deepcopy(nets), "vectorised"))


@pytest.mark.parametrize("arch", ["mlp", "resnet18"])
def test_deep_ensemble_vectorised_path_equals_sequential_outputs_gradients_and_sgd_step(arch, generator):
    """From the same k initialisations, vmap + functional_call over stacked parameters gives the sequential loop's
    outputs (train and eval mode), gradients, BatchNorm running statistics and parameters after one SGD step."""
    sequential, vectorised = _de_pair(arch)
    x = torch.randn(6, 1, 12, 12, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 10, (6,), generator=generator)
    steps = []
    for model in (sequential, vectorised):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model.train()
        logits = model.member_logits(x)
        F.cross_entropy(logits.reshape(-1, 10), y.repeat(K)).backward()
        grads = member_weight_tuples_grads(model)
        optimizer.step()
        model.eval()
        steps.append((logits, grads, member_weight_tuples(model), model.member_logits(x)))
    (logits_s, grads_s, weights_s, eval_s), (logits_v, grads_v, weights_v, eval_v) = steps
    torch.testing.assert_close(logits_v, logits_s, rtol=FLOAT64_TOL, atol=FLOAT64_TOL)
    # gradients and updated weights: float64 sums in another order, through up to 20 layers: 1e-10 relative.
    assert grads_s.keys() == grads_v.keys() and weights_s.keys() == weights_v.keys()
    for name in grads_s:
        torch.testing.assert_close(grads_v[name], grads_s[name], rtol=1e-10, atol=1e-12)
    for name in weights_s:
        torch.testing.assert_close(weights_v[name], weights_s[name], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(eval_v, eval_s, rtol=1e-10, atol=1e-10)  # eval uses the updated running stats too


def member_weight_tuples_grads(model: DeepEnsembleModel) -> dict[str, torch.Tensor]:
    """(k, ...) gradient of every parameter (kernels, biases, BatchNorm), in both DE layouts."""
    if model.mode == "sequential":
        named = [dict(net.named_parameters()) for net in model.nets]
        return {n: torch.stack([p[n].grad for p in named]) for n in named[0]}
    return {n: p.grad.clone() for n, p in model.template.named_parameters()}


def test_resnet18_parameter_count_equals_torchvision_minus_the_stem_difference():
    """Single ResNet-18, 3 channels, width 1, 1000 classes = torchvision's resnet18 except the stem kernel:
    ours 3×3 (64·3·9 weights), theirs 7×7 (64·3·49), max-pool parameter-free: difference 64·3·(49 − 9) = 7680."""
    spec = ModelSpec(arch="resnet18", in_shape=(3, 32, 32), num_classes=1000, width_mult=1.0)
    ours = sum(p.numel() for p in build_model(spec).parameters())
    theirs = sum(p.numel() for p in torchvision.models.resnet18(num_classes=1000).parameters())
    assert theirs - ours == 64 * 3 * (49 - 9)
    assert ours == 11_681_832  # 11,689,512 (torchvision) − 7,680, as the line above derives


def test_batchensemble_parameter_overhead_is_the_fast_factors_and_member_biases():
    """BE MLP 144→12→8→10, k = 3, rank 1: single-model parameters plus k·(out + in) per layer, plus (k − 1)·out for
    the extra member biases."""
    single = sum(p.numel() for p in build_model(_spec("single")).parameters())
    be = sum(p.numel() for p in build_model(_spec("batchensemble")).parameters())
    layers = [(144, 12), (12, 8), (8, 10)]
    assert be - single == sum(K * (i + o) + (K - 1) * o for i, o in layers)


def test_integer_rank_is_capped_per_layer_and_rejected_above_every_layer():
    """A 1-channel ResNet stem has max rank 1, so rank 4 is capped there; rank 10**6 exceeds every layer."""
    model = build_model(_spec("batchensemble", "resnet18", rank=4))
    ranks = {name: m.rank for name, m in model.net.named_modules() if isinstance(m, BatchEnsembleConv2d)}
    assert ranks["conv1"] == 1 and ranks["layers.0.conv1"] == 4
    with pytest.raises(BadInput, match="rank=1000000 is out of range for this architecture"):
        build_model(_spec("batchensemble", "resnet18", rank=10 ** 6))


def test_shortcut_and_batchnorm_options_change_the_layers():
    """shortcut='batchensemble' makes the 1×1 downsampling conv a BE layer; batchnorm='per-member' gives k·C
    BatchNorm channels."""
    plain = build_model(_spec("batchensemble", "resnet18"))
    be = build_model(_spec("batchensemble", "resnet18", batchnorm="per-member"))
    spec = _spec("batchensemble", "resnet18")
    shortcut = build_model(ModelSpec(**{**spec.__dict__, "shortcut": "batchensemble"}))
    assert isinstance(plain.net.layers[2].shortcut[0], torch.nn.Conv2d)
    assert isinstance(shortcut.net.layers[2].shortcut[0], BatchEnsembleConv2d)
    assert be.net.bn1.norm.num_features == K * 4


@pytest.mark.parametrize("method, arch", [("single", "vgg"), ("bayes", "mlp")])
def test_unknown_arch_or_method_is_a_clear_error(method, arch):
    with pytest.raises(BadInput, match="is unknown: expected one of"):
        build_model(_spec(method, arch))


def test_member_weight_tuples_refuses_a_foreign_layer_instead_of_repeating_its_slow_weight(torch_uncertainty):
    """A torch-uncertainty net wrapped so that it looks like ours: member_weight_tuples raises a BadInput naming the
    foreign layer and its type (before this check it returned BatchConv2d's slow ``conv.weight`` k times)."""
    from torch import nn

    from empirics.models.ensembles import BatchEnsembleModel
    from infra.errors import BadInput

    net = nn.Sequential(torch_uncertainty.BatchConv2d(1, 2, 3, num_estimators=4))
    net.input_layer = net[0]
    with pytest.raises(BadInput, match=r"layer '0' of type BatchConv2d is not one of this project's layers"):
        member_weight_tuples(BatchEnsembleModel(net, 4))
    with pytest.raises(BadInput, match="model of type Sequential is not one of this project's ensemble models"):
        member_weight_tuples(net)


@pytest.mark.parametrize("rank, variant", [(4, "channel-wise"), ("full", "channel-wise"), (2, "flattened-kernel")])
def test_every_layer_takes_its_rank_and_variant_from_the_one_resolver(rank, variant):
    """Each BE layer of a ResNet-18 holds ``network_layer_spec`` of its kernel (the rank capped per layer, the dense
    head on channel-wise), and the network accounting labels each layer with the same rank and variant."""
    from theory.network import network_counts

    model = build_model(_spec("batchensemble", "resnet18", rank=rank, variant=variant))
    plain = build_model(_spec("single", "resnet18")).net
    rows = {row.name: row for row in network_counts(plain, K, rank=rank, variant=variant, certify_route="none").rows}
    layers = {name: layer for name, layer in model.net.named_modules()
              if isinstance(layer, (BatchEnsembleConv2d, BatchEnsembleLinear))}
    assert layers
    for name, layer in layers.items():
        expected = network_layer_spec(layer.spec.kernel_shape, K, rank, variant)
        assert layer.spec == expected, name
        assert f"[{expected.variant}, r={expected.rank}]" in rows[name].kind, (name, rows[name].kind)


def test_model_spec_has_one_members_and_method_those_of_its_layer_factory():
    """``spec.members`` and ``spec.method`` are the factory's (no second copy that could disagree), and every BE
    layer of the built model has that many members."""
    spec = _spec("batchensemble")
    assert (spec.members, spec.method) == (spec.factory.members, spec.factory.method) == (K, "batchensemble")
    model = build_model(spec)
    assert model.members == K
    assert all(layer.spec.members == K for layer in model.net.modules() if hasattr(layer, "fast_factors"))
    with pytest.raises(TypeError):
        ModelSpec(members=K)


@pytest.mark.parametrize("arch", ["mlp", "resnet18"])
def test_runs_of_one_seed_share_the_single_models_initial_kernels(arch):
    """docs/design.md §4 (common random numbers): built after the same seed, MC Dropout and Deep-Ensemble member 0
    start from exactly the single model's kernels, BatchEnsemble only in its first slow kernel, and DE member 1 from
    other kernels."""
    def kernels(method: str) -> dict[str, torch.Tensor]:  # by layer path (a DE stacks its members' copies)
        torch.manual_seed(0)
        params = dict(build_model(_spec(method, arch)).named_parameters())
        return {name.split(".", 1)[1]: params[name].detach() for name in params if name.endswith("weight")}

    single = {name: kernel for name, kernel in kernels("single").items() if kernel.ndim >= 2}
    mcd, deep, slow = kernels("mc-dropout"), kernels("deep-ensemble"), kernels("batchensemble")
    assert all(torch.equal(mcd[name], kernel) for name, kernel in single.items())
    assert all(torch.equal(deep[name][0], kernel) for name, kernel in single.items())
    assert not any(torch.equal(deep[name][1], kernel) for name, kernel in single.items())
    first, *later = single
    assert torch.equal(slow[first], single[first])
    assert not any(torch.equal(slow[name], single[name]) for name in later)
