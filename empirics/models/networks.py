"""The networks every method is built from: an MLP and a CIFAR-style ResNet-18 (the ViT is
``empirics.models.attention``), each made of layers that one ``LayerFactory`` builds, so single / BatchEnsemble / MC
Dropout / Deep Ensemble share the architecture code and differ only in the factory's layers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from empirics.models.attention import MemberLayerNorm
from empirics.models.layers import BatchEnsembleConv2d, BatchEnsembleLinear, MemberBatchNorm
from theory.batchensemble import network_layer_spec

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "identity": nn.Identity}
BATCHNORMS = ("shared", "per-member")
SHORTCUTS = ("plain", "batchensemble")
RESNET18_BLOCKS = (2, 2, 2, 2)
RESNET_BASE_WIDTH = 64


class AlwaysOnDropout(nn.Dropout):
    """Dropout that stays active in eval mode (MC Dropout samples at test time)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=True, inplace=self.inplace)


@dataclass(frozen=True)
class LayerFactory:
    """Builds every layer of an architecture for one method, so all methods share the same architecture code.

    ``batchensemble`` layers take their rank and variant from ``theory.batchensemble.network_layer_spec`` (dense
    layers fall back to ``channel-wise`` for a conv-only variant; an integer rank is capped at each layer's
    ``max_rank``; ``"full"`` is every layer's ``max_rank``).
    """

    method: str = "single"
    members: int = 1
    rank: int | str = 1
    variant: str = "channel-wise"
    init: str = "normal"
    init_std: float = 0.5
    sign_prob: float = 0.5
    bias: str = "per-member"
    batchnorm: str = "shared"
    dropout: float = 0.0
    init_mean: float = 1.0

    @property
    def ensembled(self) -> bool:
        return self.method == "batchensemble"

    def linear(self, in_features: int, out_features: int, ensembled: bool = True) -> nn.Module:
        """A dense layer with bias; ``ensembled=False`` gives a plain one shared by members (BE ViT attention with
        ``be_scope="mlp"``)."""
        if not (self.ensembled and ensembled):
            return nn.Linear(in_features, out_features)
        spec = network_layer_spec((out_features, in_features), self.members, self.rank, self.variant)
        return BatchEnsembleLinear(in_features, out_features, self.members, spec.rank, spec.variant, self.init,
                                   self.init_std, self.sign_prob, self.bias, self.init_mean)

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
             ensembled: bool = True) -> nn.Module:
        """A bias-free convolution (BatchNorm follows); ``ensembled=False`` gives a plain conv shared by members."""
        if not (self.ensembled and ensembled):
            return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        spec = network_layer_spec((out_channels, in_channels, kernel_size, kernel_size), self.members, self.rank,
                                  self.variant)
        return BatchEnsembleConv2d(in_channels, out_channels, kernel_size, self.members, stride, padding, spec.rank,
                                   spec.variant, self.init, self.init_std, self.sign_prob, bias="none",
                                   init_mean=self.init_mean)

    def norm(self, num_features: int, spatial: bool) -> nn.Module:
        if self.ensembled and self.batchnorm == "per-member":
            return MemberBatchNorm(num_features, self.members)
        return nn.BatchNorm2d(num_features) if spatial else nn.BatchNorm1d(num_features)

    def layernorm(self, features: int, sharing: str = "shared") -> nn.Module:
        """LayerNorm over the last dimension: one shared by the members, or (BE, ``sharing="per-member"``) a scale and
        shift per member (``empirics.models.attention.MemberLayerNorm``)."""
        if self.ensembled and sharing == "per-member":
            return MemberLayerNorm(features, self.members)
        return nn.LayerNorm(features)

    def dropout_layer(self) -> nn.Module:
        return AlwaysOnDropout(self.dropout) if self.method == "mc-dropout" else nn.Dropout(self.dropout)


def _mark_input_dropout(layer: nn.Module, rate: float) -> nn.Module:
    """Record that ``layer``'s input passes through dropout of ``rate`` (used to sample MC-Dropout member weights)."""
    layer.input_dropout = rate
    return layer


class MLP(nn.Module):
    """``in → widths[0] → … → widths[-1] → classes``; each hidden layer Linear → activation, dropout before every
    Linear but the first (the MNIST MLP 784-64-32-16-10 of docs/paper.md §4, dropout 0.05)."""

    def __init__(self, factory: LayerFactory, in_features: int, widths: Sequence[int], num_classes: int,
                 activation: str = "relu") -> None:
        super().__init__()
        sizes = [in_features, *widths]
        self.hidden = nn.ModuleList(
            _mark_input_dropout(factory.linear(a, b), factory.dropout if i else 0.0)
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))
        self.activation = ACTIVATIONS[activation]()
        self.dropout = factory.dropout_layer()
        self.head = _mark_input_dropout(factory.linear(sizes[-1], num_classes), factory.dropout)

    @property
    def input_layer(self) -> nn.Module:
        return self.hidden[0]

    def stage_outputs(self) -> dict[str, nn.Module]:
        """Modules whose outputs are the representation after each stage (none: the MLP's hidden layers share one
        activation module)."""
        return {}

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        h = x.flatten(1)
        for index, layer in enumerate(self.hidden):
            h = self.activation(layer(self.dropout(h) if index else h))
        return h if return_features else self.head(self.dropout(h))


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv3×3-BN-ReLU-conv3×3-BN plus identity or 1×1-conv-BN shortcut, then ReLU."""

    def __init__(self, factory: LayerFactory, in_planes: int, planes: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = factory.conv(in_planes, planes, 3, stride, 1)
        self.bn1 = factory.norm(planes, spatial=True)
        self.conv2 = factory.conv(planes, planes, 3, 1, 1)
        self.bn2 = factory.norm(planes, spatial=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                factory.conv(in_planes, planes, 1, stride, 0, ensembled=shortcut == "batchensemble"),
                factory.norm(planes, spatial=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18: 3×3 stride-1 stem, no max-pool, BasicBlocks [2, 2, 2, 2] of widths
    (64, 128, 256, 512)·width_mult, global average pool → dropout → linear head (torch-uncertainty's layout)."""

    def __init__(self, factory: LayerFactory, in_channels: int, num_classes: int, width_mult: float = 1.0,
                 shortcut: str = "plain") -> None:
        super().__init__()
        widths = [max(1, round(RESNET_BASE_WIDTH * width_mult * 2 ** stage)) for stage in range(4)]
        self.conv1 = factory.conv(in_channels, widths[0], 3, 1, 1)
        self.bn1 = factory.norm(widths[0], spatial=True)
        blocks, in_planes = [], widths[0]
        for stage, (planes, count) in enumerate(zip(widths, RESNET18_BLOCKS)):
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(factory, in_planes, planes, stride, shortcut))
                in_planes = planes
        self.layers = nn.Sequential(*blocks)
        self.dropout = factory.dropout_layer()
        self.head = _mark_input_dropout(factory.linear(in_planes, num_classes), factory.dropout)

    @property
    def input_layer(self) -> nn.Module:
        return self.conv1

    def stage_outputs(self) -> dict[str, nn.Module]:
        """The last BasicBlock of each of the four stages: its output is the stage's representation."""
        ends = [sum(RESNET18_BLOCKS[:stage + 1]) - 1 for stage in range(len(RESNET18_BLOCKS))]
        return {f"stage{stage + 1}": self.layers[end] for stage, end in enumerate(ends)}

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        features = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return features if return_features else self.head(self.dropout(features))
