"""Whole-network accounting (theory.network): docs/theory.md §5 numbers, roles, conventions and architectures."""
from __future__ import annotations

import pytest
from torch import nn
from torchvision.models import resnet18 as torchvision_resnet18

from theory import dimension
from theory.batchensemble import BatchEnsembleSpec
from theory.cli_support import BadInput
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
                                  lambda: network_counts(nn.Sequential(nn.LayerNorm(3)), 2),
                                  lambda: network_counts(mlp((3, 2)), 2, bias="sometimes")])
def test_bad_network_input_raises(call):
    """Unknown archs, too few widths, k < 1, unsupported layers and unknown modes raise BadInput."""
    with pytest.raises(BadInput):
        call()
