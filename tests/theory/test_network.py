"""Whole-network accounting (theory.network): docs/theory.md §5 numbers, roles, conventions and architectures."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet18 as torchvision_resnet18

from infra.errors import BadInput
from theory import dimension
from theory.batchensemble import BatchEnsembleSpec
from theory.network import build_arch, mlp, network_counts, resnet18_cifar


def test_mlp_784_400_400_10_numbers_of_theory():
    """MLP 784-400-400-10, k = 4, per-member biases: DE 1,913,640; BE params 490,416; image 488,013;
    codim 1,425,627 (docs/theory.md §5), all certified."""
    counts = network_counts(mlp((784, 400, 400, 10)), 4, bias="per-member")
    assert (counts.de_dim, counts.be_params, counts.be_image_dim, counts.codim) == (
        1_913_640, 490_416, 488_013, 1_425_627)
    assert counts.certified
    assert counts.redundancy == sum(m + n + 4 - 1 for m, n in ((400, 784), (400, 400), (10, 400)))


def test_shared_bias_costs_k_minus_1_times_m():
    """Shared biases add (k−1)·Σ m_l to the codim."""
    per_member = network_counts(mlp((6, 5, 3)), 3, bias="per-member")
    shared = network_counts(mlp((6, 5, 3)), 3, bias="shared")
    assert shared.codim - per_member.codim == 2 * (5 + 3)


def test_parameter_counts_match_torchvision_resnet18():
    """k = 1: the DE dimension is torchvision's ResNet-18 parameter count (kernels, biases, BN affine); BE adds
    one fast vector per block of each perturbed layer (c_out + c_in)."""
    reference = sum(p.numel() for p in torchvision_resnet18(weights=None).parameters())
    counts = network_counts(build_arch("resnet18"), 1, certify_route="none")
    fast = sum(row.shape[0] + row.shape[1] for row in counts.rows if row.role == "perturbed")
    assert counts.de_dim == reference and counts.be_params == reference + fast


def test_torch_uncertainty_convention_shares_bn_and_shortcuts():
    """Default convention: BatchNorm shared (codim 2(k−1)c), 1×1 shortcuts shared (codim (k−1)D)."""
    counts = network_counts(resnet18_cifar(1), 4, certify_route="none")
    shortcuts = [row for row in counts.rows if "downsample.0" in row.name]
    norms = [row for row in counts.rows if row.kind == "BatchNorm2d"]
    assert len(shortcuts) == 3 and all(row.role == "shared" for row in shortcuts)
    assert all(row.counts.codim == 3 * row.counts.ambient_dim // 4 for row in shortcuts + norms)
    perturbed = network_counts(resnet18_cifar(1), 4, shortcuts="perturbed", norm="per-member", certify_route="none")
    assert perturbed.codim < counts.codim


def test_cifar_resnet_stem_and_layers():
    """resnet18-cifar: 3×3 stem on 1 channel, no max-pool, 10 classes."""
    model = resnet18_cifar(1)
    assert tuple(model.conv1.weight.shape) == (64, 1, 3, 3) and isinstance(model.maxpool, nn.Identity)
    assert model.fc.out_features == 10


def test_roles_override_and_totals_add_up():
    """A per-member layer fills; totals are the sums of the rows; fraction = image / DE."""
    model = mlp((5, 4, 3))
    counts = network_counts(model, 2, roles={"2": "per-member"})
    rows = {row.name: row for row in counts.rows}
    assert rows["2"].counts.fills
    assert counts.be_image_dim == sum(row.counts.image_dim for row in counts.rows)
    assert counts.fraction_reached == counts.be_image_dim / counts.de_dim
    expected = dimension.layer_counts(BatchEnsembleSpec((4, 5), 2), bias="per-member")
    assert rows["0"].counts == expected


@pytest.mark.parametrize("call", [lambda: build_arch("vgg"), lambda: mlp((5,)),
                                  lambda: network_counts(mlp((3, 2)), 0),
                                  lambda: network_counts(nn.Sequential(nn.PReLU()), 2),
                                  lambda: network_counts(mlp((3, 2)), 2, bias="sometimes")])
def test_bad_network_input_raises(call):
    """Unknown archs, too few widths, k < 1, unsupported layers and unknown modes raise BadInput."""
    with pytest.raises(BadInput):
        call()


# ---------------------------------------------------------------- foreign BatchEnsemble models, counted as they are


def _plain_twin(model: nn.Module) -> nn.Module:
    """``model`` with every torch-uncertainty Batch layer swapped for a plain layer of its kernel shape (bias kept
    when the Batch layer has one): the architecture counted by the role convention instead of as it is."""
    for name, child in list(model.named_children()):
        inner = getattr(child, "conv", getattr(child, "linear", None))
        if hasattr(child, "r_group") and isinstance(inner, nn.Conv2d):
            plain = nn.Conv2d(inner.in_channels, inner.out_channels, inner.kernel_size, inner.stride, inner.padding,
                              bias=child.bias is not None)
        elif hasattr(child, "r_group") and isinstance(inner, nn.Linear):
            plain = nn.Linear(inner.in_features, inner.out_features, bias=child.bias is not None)
        else:
            _plain_twin(child)
            continue
        setattr(model, name, plain)
    return model


@pytest.mark.parametrize("conv_bias", [True, False])
def test_torch_uncertainty_resnet18_counted_as_it_is_matches_its_parameter_count(torch_uncertainty, conv_bias):
    """torch-uncertainty's own ``batched_resnet(18, style="cifar", k=4)``, passed as it is: the BE parameter count
    equals the model's numel sum; the layers counted as plain ones by the role convention give the same totals, so
    the shortcut's bias (shared by all members) is counted shared. Codim with ``conv_bias=True``: 33,501,135 (the
    issue's hand count: 3 shortcut biases of 128 + 256 + 512 entries add (k−1)·896 = 2,688 over conv_bias=False)."""
    model = torch_uncertainty.batched_resnet(in_channels=3, num_classes=10, arch=18, num_estimators=4,
                                             style="cifar", conv_bias=conv_bias)
    counts = network_counts(model, 4, certify_route="none")
    assert counts.be_params == sum(parameter.numel() for parameter in model.parameters())
    twin = network_counts(_plain_twin(model), 4, certify_route="none")
    assert (twin.be_params, twin.codim, twin.de_dim) == (counts.be_params, counts.codim, counts.de_dim)
    assert counts.codim == (33_501_135 if conv_bias else 33_501_135 - 3 * 896)
    shortcuts = [row for row in counts.rows if "shortcut.0" in row.name]
    assert len(shortcuts) == 3 and all(row.role == "shared" for row in shortcuts)
    batch_rows = [row for row in counts.rows if row.role == "perturbed"]
    assert len(batch_rows) == 18 and batch_rows[-1].kind.startswith("BatchLinear")


def test_torch_uncertainty_layers_certified(torch_uncertainty):
    """A small torch-uncertainty net (BatchConv2d → BatchLinear) counted as it is is certified layer by layer, and
    its perturbed rows are rank-1 channel-wise: codim (k−1)(D − out − in + 1) per kernel (proved closed form)."""
    torch.manual_seed(0)
    model = nn.Sequential(torch_uncertainty.BatchConv2d(2, 3, 3, num_estimators=4), nn.Flatten(),
                          torch_uncertainty.BatchLinear(3, 5, num_estimators=4))
    counts = network_counts(model, 4)
    assert counts.certified and counts.be_params == sum(p.numel() for p in model.parameters())
    assert [row.counts.codim for row in counts.rows] == [3 * (3 * 2 * 9 - 3 - 2 + 1), 3 * (5 * 3 - 5 - 3 + 1)]


def test_members_must_match_the_batch_layers(torch_uncertainty):
    """k given ≠ the layers' num_estimators: a BadInput naming the layer and both counts."""
    model = nn.Sequential(torch_uncertainty.BatchLinear(3, 5, num_estimators=4))
    with pytest.raises(BadInput, match=r"layer '0' \(BatchLinear\) has k=4 members: expected members=2"):
        network_counts(model, 2)


def test_project_batchensemble_model_counted_as_it_is():
    """This project's BE model (BE layers, per-member BatchNorm, plain shortcut) counted as it is equals its
    parameter count and the plain architecture counted with the matching options."""
    from empirics.models.ensembles import ModelSpec, build_model
    from empirics.models.networks import LayerFactory

    factory = LayerFactory(method="batchensemble", members=3, batchnorm="per-member")
    spec = ModelSpec(arch="resnet18", in_shape=(1, 8, 8), width_mult=0.0625, factory=factory)
    model = build_model(spec)
    counts = network_counts(model.net, 3, certify_route="none")
    assert counts.be_params == sum(p.numel() for p in model.net.parameters())
    plain = build_model(ModelSpec(arch="resnet18", in_shape=(1, 8, 8), width_mult=0.0625)).net
    reference = network_counts(plain, 3, norm="per-member", certify_route="none")
    assert (counts.codim, counts.de_dim) == (reference.codim, reference.de_dim)


def test_r_group_s_group_in_another_layout_is_named_not_guessed():
    """A module with torch-uncertainty's factor names but no bias-free linear/conv child: a BadInput naming the layer,
    never a count from a guessed layout."""
    odd = nn.Module()
    odd.r_group, odd.s_group = nn.Parameter(torch.ones(2, 3)), nn.Parameter(torch.ones(2, 4))
    with pytest.raises(BadInput, match=r"layer '0': layer of type Module has r_group/s_group but not"):
        network_counts(nn.Sequential(odd), 2)
# ---------------------------------------------------------------- the ViT (each attention projection a dense layer)

VIT_SMALL = dict(in_channels=1, image_size=8, patch_size=4, width=8, depth=2, heads=2, mlp_ratio=2, num_classes=3)


def test_vit_shapes_match_the_empirics_vit_layer_for_layer():
    """theory's shape-only ViT and empirics' trained ViT (single method) give the same rows: names, kinds, shapes
    and counts (the reachable fraction of a ViT study is computed from the empirics net)."""
    from empirics.models.attention import VisionTransformer
    from empirics.models.networks import LayerFactory

    for pooling in ("cls", "mean"):
        trained = VisionTransformer(LayerFactory(), (1, 8, 8), 3, patch_size=4, width=8, depth=2, heads=2,
                                    mlp_ratio=2, pooling=pooling)
        shapes = build_arch("vit", 1, 3, pooling=pooling, **{k: v for k, v in VIT_SMALL.items()
                                                             if k not in ("in_channels", "num_classes")})
        rows = [network_counts(net, 3, embeddings="shared", certify_route="none").as_dict()["layers"]
                for net in (trained, shapes)]
        strip = lambda layers: [{k: v for k, v in row.items() if k != "certificate"} for row in layers]  # noqa: E731
        assert strip(rows[0]) == strip(rows[1])


def test_vit_counts_every_projection_as_a_certified_dense_layer():
    """Per block: Q, K, V, O each one perturbed m×m dense layer with the dense-layer counts of theory.dimension;
    fc1, fc2, patch embedding and head too; LayerNorm 2d and the embeddings shared (codim (k−1)·size)."""
    k = 3
    counts = network_counts(build_arch("vit", **VIT_SMALL), k, embeddings="shared")
    rows = {row.name: row for row in counts.rows}
    for projection in ("query", "key", "value", "out"):
        row = rows[f"blocks.1.attention.{projection}"]
        expected = dimension.layer_counts(BatchEnsembleSpec((8, 8), k, 1, "channel-wise"), "per-member")
        assert row.role == "perturbed" and row.shape == (8, 8) and row.counts == expected and row.certified
    assert rows["blocks.0.norm1"].counts.codim == (k - 1) * 2 * 8
    assert rows["embedding.position"].counts.codim == (k - 1) * (16 // 16 * 4 + 1) * 8
    perturbed = [row for row in counts.rows if row.role == "perturbed"]
    assert len(perturbed) == 2 + 2 * 6 and counts.certified


def test_vit_be_in_mlp_blocks_only_shares_the_attention_projections():
    """uncertainty-baselines' scope: attention projections are plain layers shared by the members, kernel and bias
    (codim (k−1)·(d² + d) each), so BE reaches a smaller fraction than with BE everywhere."""
    from theory.network import attention_roles

    model = build_arch("vit", **VIT_SMALL)
    everywhere = network_counts(model, 3, embeddings="shared")
    mlp_only = network_counts(model, 3, embeddings="shared", roles=attention_roles(model))
    shared = [row for row in mlp_only.rows if row.role == "shared" and ".attention." in row.name]
    assert len(shared) == 8 and mlp_only.fraction_reached < everywhere.fraction_reached
    assert all(row.counts.codim == (3 - 1) * (8 * 8 + 8) and row.counts.image_dim == 8 * 8 + 8 for row in shared)


def test_parameters_outside_known_layers_are_rejected_without_embeddings_option():
    """Without ``embeddings`` a module holding its own parameters is an error, as before."""
    with pytest.raises(BadInput, match="has parameters"):
        network_counts(build_arch("vit", **VIT_SMALL), 2)
