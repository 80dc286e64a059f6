"""MLP, CIFAR-style ResNet-18 and a small ViT (``empirics.attention``) built from one layer factory, wrapped behind one ensemble interface.

The same architecture yields every method:

* ``single``: plain ``nn.Linear``/``nn.Conv2d``/``nn.BatchNorm``; k = 1.
* ``batchensemble``: BatchEnsemble layers (rank, variant, init) and shared or per-member BatchNorm; the input is
  repeated k times member-major inside ``member_logits``.
* ``mc-dropout``: the single network whose dropout stays active at test time; k = ``mc_samples`` stochastic passes at
  evaluation (one pass while training).
* ``deep-ensemble``: k independently initialised single networks, run ``sequential`` (a loop) or ``vectorised``
  (``torch.func.stack_module_state`` parameters, ``functional_call`` under ``vmap``; PyTorch batches the convolutions
  of the k members into one grouped convolution). Both paths give the same outputs and gradients (tested).

Every model answers ``member_logits(x) -> (k, B, C)`` and ``member_features(x) -> (k, B, F)`` (penultimate features),
and ``member_weight_tuples(model) -> {layer name: (k, out, in[, h, w])}`` gives each layer's per-member kernels.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from empirics.attention import MemberLayerNorm, TokenEmbedding, VisionTransformer
from empirics.layers import BatchEnsembleConv2d, BatchEnsembleLinear, MemberBatchNorm, make_spec, split_members
from empirics.precision import PRECISIONS, active_dtype, autocast, convert_layout, to_layout, wants_channels_last
from theory.batchensemble import DENSE_VARIANTS
from theory.cli_support import BadInput

METHODS = ("single", "batchensemble", "deep-ensemble", "mc-dropout")
ARCHS = ("mlp", "resnet18", "vit")
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "identity": nn.Identity}
BATCHNORMS = ("shared", "per-member")
SHORTCUTS = ("plain", "batchensemble")
DE_MODES = ("vectorised", "sequential")
RESNET18_BLOCKS = (2, 2, 2, 2)
RESNET_BASE_WIDTH = 64


class AlwaysOnDropout(nn.Dropout):
    """Dropout that stays active in eval mode (MC Dropout samples at test time)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=True, inplace=self.inplace)


@dataclass(frozen=True)
class LayerFactory:
    """Builds every layer of an architecture for one method, so all methods share the same architecture code.

    ``batchensemble`` layers use ``variant`` on convolutions; a dense kernel has no spatial modes, so dense layers use
    ``channel-wise`` when the variant needs a conv kernel (``flattened-kernel`` on (out, in) *is* channel-wise).
    An integer ``rank`` above a layer's ``max_rank`` is capped there (that layer is already at full rank, e.g. the
    stem of a 1-channel ResNet); ``"full"`` is every layer's ``max_rank``.
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

    def layer_rank(self, kernel_shape: tuple[int, ...], variant: str) -> int | str:
        if isinstance(self.rank, str):  # "full", or a bad value that the layer rejects with a clear message
            return self.rank
        return min(self.rank, make_spec(kernel_shape, self.members, "full", variant).max_rank)

    def linear(self, in_features: int, out_features: int, ensembled: bool = True) -> nn.Module:
        """A dense layer with bias; ``ensembled=False`` gives a plain one shared by members (BE ViT attention with
        ``be_scope="mlp"``)."""
        if not (self.ensembled and ensembled):
            return nn.Linear(in_features, out_features)
        variant = self.variant if self.variant in DENSE_VARIANTS else "channel-wise"
        rank = self.layer_rank((out_features, in_features), variant)
        return BatchEnsembleLinear(in_features, out_features, self.members, rank, variant, self.init,
                                   self.init_std, self.sign_prob, self.bias, self.init_mean)

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
             ensembled: bool = True) -> nn.Module:
        """A bias-free convolution (BatchNorm follows); ``ensembled=False`` gives a plain conv shared by members."""
        if not (self.ensembled and ensembled):
            return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        rank = self.layer_rank((out_channels, in_channels, kernel_size, kernel_size), self.variant)
        return BatchEnsembleConv2d(in_channels, out_channels, kernel_size, self.members, stride, padding, rank,
                                   self.variant, self.init, self.init_std, self.sign_prob, bias="none",
                                   init_mean=self.init_mean)

    def norm(self, num_features: int, spatial: bool) -> nn.Module:
        if self.ensembled and self.batchnorm == "per-member":
            return MemberBatchNorm(num_features, self.members)
        return nn.BatchNorm2d(num_features) if spatial else nn.BatchNorm1d(num_features)

    def layernorm(self, features: int, sharing: str = "shared") -> nn.Module:
        """LayerNorm over the last dimension: one shared by the members, or (BE, ``sharing="per-member"``) a scale and
        shift per member (``empirics.attention.MemberLayerNorm``)."""
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


class EnsembleModel(nn.Module):
    """Common interface: ``member_logits(x) -> (k, B, C)``, ``member_features(x) -> (k, B, F)``, computed in the
    model's ``precision`` (``empirics.precision``: ``bf16`` autocast with channels-last inputs, float32 outputs;
    ``fp32`` the plain forward in the parameters' dtype)."""

    method: str

    def __init__(self, members: int) -> None:
        super().__init__()
        self.members = members
        self.precision = "fp32"
        self.channels_last = False

    def set_precision(self, precision: str) -> None:
        """Compute in ``precision`` from now on (parameters stay float32; conv models go channels-last in bf16)."""
        if precision not in PRECISIONS:
            raise BadInput(f"precision={precision!r} is unknown: expected one of {', '.join(PRECISIONS)}")
        self.precision = precision
        if wants_channels_last(precision, self):
            convert_layout(self)
            self.channels_last = True

    def _members_forward(self, x: torch.Tensor, return_features: bool) -> torch.Tensor:
        raise NotImplementedError

    def _forward_in_precision(self, x: torch.Tensor, return_features: bool) -> torch.Tensor:
        if self.precision == "fp32":
            return self._members_forward(x, return_features)
        with autocast(self.precision, x.device.type):
            return self._members_forward(to_layout(x, self.channels_last), return_features).float()

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_in_precision(x, return_features=False)

    def member_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_in_precision(x, return_features=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member_logits(x)

    def member_logits_split(self, x: torch.Tensor) -> torch.Tensor:
        """(k, B/k, C): member i's logits on its own block of rows i·B/k .. (i+1)·B/k − 1 of ``x`` only (the
        ``batch_regime='split'`` training forward; B must be a multiple of k), in the ensemble's precision."""
        if self.precision == "fp32":
            return self._split_forward(x)
        with autocast(self.precision, x.device.type):
            return self._split_forward(to_layout(x, self.channels_last)).float()

    def _split_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise BadInput(f"batch_regime='split' is not defined for method={self.method}: expected batchensemble or "
                       f"deep-ensemble")


class SingleModel(EnsembleModel):
    method = "single"

    def __init__(self, net: nn.Module) -> None:
        super().__init__(1)
        self.net = net

    def _members_forward(self, x: torch.Tensor, return_features: bool) -> torch.Tensor:
        return self.net(x, return_features=return_features).unsqueeze(0)


class BatchEnsembleModel(EnsembleModel):
    """Feeds the batch to every member: the net's input layer takes the (B, ...) batch as ``shared_input`` and emits
    k·B member-major rows (rows i·B..(i+1)·B-1 are member i), the same as repeating the batch k times without the
    copy; the output is split per member."""

    method = "batchensemble"

    def __init__(self, net: nn.Module, members: int) -> None:
        super().__init__(members)
        self.net = net
        net.input_layer.shared_input = True

    def _members_forward(self, x: torch.Tensor, return_features: bool) -> torch.Tensor:
        return split_members(self.net(x, return_features=return_features), self.members)

    def _split_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The input layer takes ``x`` as k member-major blocks instead of one shared batch (no repetition)."""
        split_members(x, self.members)  # a clear error when B is not a multiple of k
        layer = self.net.input_layer
        layer.shared_input = False
        try:
            return split_members(self.net(x), self.members)
        finally:
            layer.shared_input = True


class MCDropoutModel(EnsembleModel):
    """One network with always-on dropout: one pass while training, ``samples`` passes (a repeated batch) in eval."""

    method = "mc-dropout"

    def __init__(self, net: nn.Module, samples: int) -> None:
        super().__init__(samples)
        self.net = net

    def _members_forward(self, x: torch.Tensor, return_features: bool) -> torch.Tensor:
        passes = 1 if self.training else self.members
        repeated = x.repeat(passes, *([1] * (x.dim() - 1)))
        return split_members(self.net(repeated, return_features=return_features), passes)


class DeepEnsembleModel(EnsembleModel):
    """k independently initialised networks. ``sequential``: ``nets`` is a ModuleList run in a loop. ``vectorised``:
    ``template`` is a copy of member 0 whose parameters and buffers are replaced by the members' stacked tensors
    (k, ...) from ``torch.func.stack_module_state``; the forward is ``vmap`` of ``functional_call`` over them. BatchNorm
    running statistics are stacked buffers updated in place under ``vmap``."""

    method = "deep-ensemble"

    def __init__(self, nets: Sequence[nn.Module], mode: str = "vectorised") -> None:
        super().__init__(len(nets))
        if mode not in DE_MODES:
            raise BadInput(f"de_mode={mode!r} is unknown: expected one of {', '.join(DE_MODES)}")
        self.mode = mode
        if mode == "sequential":
            self.nets = nn.ModuleList(nets)
            return
        params, buffers = stack_module_state(list(nets))
        self.template = copy.deepcopy(nets[0])
        for name, value in params.items():
            _replace_tensor(self.template, name, nn.Parameter(value.detach().clone()))
        for name, value in buffers.items():
            _replace_tensor(self.template, name, value.detach().clone(), buffer=True)

    def member_networks(self) -> list[nn.Module]:
        """The k members as separate plain networks (``sequential``: the nets themselves; ``vectorised``: copies of
        the template holding member i's slice of every stacked parameter and buffer)."""
        if self.mode == "sequential":
            return list(self.nets)
        nets = []
        for member in range(self.members):
            net = copy.deepcopy(self.template)
            for name, value in self.template.named_parameters():
                _replace_tensor(net, name, nn.Parameter(value.detach()[member].clone()))
            for name, value in self.template.named_buffers():
                _replace_tensor(net, name, value[member].clone(), buffer=True)
            nets.append(net)
        return nets

    def run_member(self, net: nn.Module, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        """One member network of ``member_networks`` on ``x``, in the ensemble's precision."""
        if self.precision == "fp32":
            return net(x, return_features=return_features)
        with autocast(self.precision, x.device.type):
            return net(to_layout(x, self.channels_last), return_features=return_features).float()

    def _members_forward(self, x: torch.Tensor, return_features: bool) -> torch.Tensor:
        if self.mode == "sequential":
            return torch.stack([net(x, return_features=return_features) for net in self.nets])
        params = dict(self.template.named_parameters())
        buffers = dict(self.template.named_buffers())
        if active_dtype(x.device.type) is not None:
            # autocast does not reach inside vmap, and vmap's BatchNorm rule rejects bf16 inputs with float32
            # statistics: under autocast the members run one by one on views of the stacked tensors (gradients and
            # running-statistic updates reach the stacked tensors through the views)
            members = [({name: value[member] for name, value in params.items()},
                        {name: value[member] for name, value in buffers.items()}) for member in range(self.members)]
            return torch.stack([functional_call(self.template, tensors, (x,), {"return_features": return_features})
                                for tensors in members])

        def one_member(member_params, member_buffers):
            return functional_call(self.template, (member_params, member_buffers), (x,),
                                   {"return_features": return_features})

        return vmap(one_member, randomness="different")(params, buffers)

    def _split_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Member i runs on its block ``split_members(x, k)[i]`` only (one by one under autocast, as
        ``_members_forward``)."""
        blocks = split_members(x, self.members)
        if self.mode == "sequential":
            return torch.stack([net(block) for net, block in zip(self.nets, blocks)])
        params = dict(self.template.named_parameters())
        buffers = dict(self.template.named_buffers())
        if active_dtype(x.device.type) is not None:
            return torch.stack([functional_call(self.template, ({name: value[member] for name, value in params.items()},
                                                                {name: value[member] for name, value in buffers.items()}),
                                                (blocks[member],)) for member in range(self.members)])

        def one_member(member_params, member_buffers, block):
            return functional_call(self.template, (member_params, member_buffers), (block,))

        return vmap(one_member, randomness="different")(params, buffers, blocks)


def _replace_tensor(module: nn.Module, dotted: str, value: torch.Tensor, buffer: bool = False) -> None:
    owner_path, _, attr = dotted.rpartition(".")
    owner = module.get_submodule(owner_path) if owner_path else module
    delattr(owner, attr)
    if buffer:
        owner.register_buffer(attr, value)
    else:
        owner.register_parameter(attr, value)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a model (a subset of ``empirics.config.Config``)."""

    arch: str = "mlp"
    in_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    widths: tuple[int, ...] = (64, 32, 16)
    activation: str = "relu"
    width_mult: float = 1.0
    shortcut: str = "plain"
    patch_size: int = 7
    vit_width: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: int = 2
    pooling: str = "cls"
    be_scope: str = "all"
    layernorm: str = "shared"
    method: str = "single"
    members: int = 4
    mc_samples: int = 4
    de_mode: str = "vectorised"
    precision: str = "fp32"
    factory: LayerFactory = LayerFactory()


def build_net(spec: ModelSpec, factory: LayerFactory) -> nn.Module:
    if spec.arch == "mlp":
        return MLP(factory, math.prod(spec.in_shape), spec.widths, spec.num_classes, spec.activation)
    if spec.arch == "vit":
        return VisionTransformer(factory, spec.in_shape, spec.num_classes, spec.patch_size, spec.vit_width, spec.depth,
                                 spec.heads, spec.mlp_ratio, spec.pooling, spec.be_scope, spec.layernorm)
    return ResNet18(factory, spec.in_shape[0], spec.num_classes, spec.width_mult, spec.shortcut)


def build_model(spec: ModelSpec) -> EnsembleModel:
    """The model of ``spec.method`` computing in ``spec.precision``; parameters drawn from torch's global generator
    (seed it first)."""
    model = _build_method_model(spec)
    model.set_precision(spec.precision)
    return model


def _build_method_model(spec: ModelSpec) -> EnsembleModel:
    if spec.arch not in ARCHS:
        raise BadInput(f"arch={spec.arch!r} is unknown: expected one of {', '.join(ARCHS)}")
    if spec.method not in METHODS:
        raise BadInput(f"method={spec.method!r} is unknown: expected one of {', '.join(METHODS)}")
    if spec.method == "batchensemble":
        model = BatchEnsembleModel(build_net(spec, spec.factory), spec.members)
        _check_rank_used(model, spec.factory.rank)
        return model
    plain = LayerFactory(method=spec.method, dropout=spec.factory.dropout)
    if spec.method == "deep-ensemble":
        return DeepEnsembleModel([build_net(spec, plain) for _ in range(spec.members)], spec.de_mode)
    if spec.method == "mc-dropout":
        if not 0 < spec.factory.dropout < 1:
            raise BadInput(f"dropout={spec.factory.dropout} is out of range for mc-dropout: expected 0 < p < 1")
        return MCDropoutModel(build_net(spec, plain), spec.mc_samples)
    return SingleModel(build_net(spec, plain))


def _check_rank_used(model: BatchEnsembleModel, rank: int | str) -> None:
    """An integer rank above every layer's max rank would silently mean "full": reject it, naming the largest."""
    largest = max(layer.spec.max_rank for layer in model.net.modules()
                  if isinstance(layer, (BatchEnsembleLinear, BatchEnsembleConv2d)))
    if isinstance(rank, int) and rank > largest:
        raise BadInput(f"rank={rank} is out of range for this architecture: expected an integer in 1..{largest} "
                       f"(the largest layer's max rank) or 'full'")


KERNEL_KINDS = (nn.Linear, nn.Conv2d, BatchEnsembleLinear, BatchEnsembleConv2d)
# layers with parameters that are not kernels: normalisations and the ViT's class token / position embedding
PARAMETER_KINDS = (*KERNEL_KINDS, nn.BatchNorm1d, nn.BatchNorm2d, MemberBatchNorm, nn.LayerNorm, MemberLayerNorm,
                   TokenEmbedding)


def _kernel_layers(net: nn.Module) -> dict[str, nn.Module]:
    """Every kernel layer of one of this project's nets; a module with parameters of any other type (a foreign layer
    such as torch-uncertainty's ``BatchConv2d``, whose plain ``conv`` child holds only the slow weight) is a
    ``BadInput`` naming it, so no member tuple is made from a weight that is not the members' own."""
    for name, module in net.named_modules():
        owner = name.rpartition(".")[0]
        if name and isinstance(net.get_submodule(owner), (BatchEnsembleLinear, BatchEnsembleConv2d, MemberBatchNorm)):
            continue  # the fast-factor list of a BE layer, the k·C norm of a per-member BatchNorm
        if isinstance(module, PARAMETER_KINDS):
            continue
        if any(True for _ in module.parameters(recurse=False)):
            raise BadInput(f"layer {name!r} of type {type(module).__name__} is not one of this project's layers "
                           f"({', '.join(kind.__name__ for kind in PARAMETER_KINDS)}): its member weights are "
                           "unknown here (empirics.diagnose reads torch-uncertainty and TabM layers)")
    return {name: module for name, module in net.named_modules() if isinstance(module, KERNEL_KINDS)}


def member_weight_tuples(model: EnsembleModel, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """{layer name: (k, out, in[, h, w])} — each layer's per-member kernel, detached.

    BE: ``effective_weights()`` (layers shared by members, such as plain shortcuts, repeated k times: one kernel that
    every member applies); a model that is not one of this module's, or holds a layer of a foreign type, is a
    ``BadInput`` (never the slow weight repeated as if it were the members'); DE: the
    members' stacked kernels; single: k = 1. MC Dropout: Gal & Ghahramani's reading of dropout as Bernoulli masks on
    the input columns of the next kernel: member i's kernel is ``W ∘ z_i / (1 - p)`` with z_i ~ Bernoulli(1 - p) per
    input channel (drawn from ``generator``), for every layer whose input passes through dropout; the actual forward
    draws a fresh mask per example, so these are k samples of the weight distribution, not the test-time passes.
    """
    if not isinstance(model, (SingleModel, BatchEnsembleModel, MCDropoutModel, DeepEnsembleModel)):
        raise BadInput(f"model of type {type(model).__name__} is not one of this project's ensemble models: "
                       "member_weight_tuples reads only those (empirics.diagnose reads foreign ensembles)")
    with torch.no_grad():
        if isinstance(model, DeepEnsembleModel):
            if model.mode == "sequential":
                per_member = [_kernel_layers(net) for net in model.nets]
                return {name: torch.stack([layers[name].weight for layers in per_member]).detach()
                        for name in per_member[0]}
            return {name: layer.weight.detach().clone() for name, layer in _kernel_layers(model.template).items()}
        result = {}
        for name, layer in _kernel_layers(model.net).items():
            if isinstance(layer, (BatchEnsembleLinear, BatchEnsembleConv2d)):
                result[name] = layer.effective_weights().detach()
            elif isinstance(model, MCDropoutModel):
                result[name] = _dropout_weight_samples(layer, model.members, generator)
            else:
                result[name] = layer.weight.detach().unsqueeze(0).expand(model.members, *layer.weight.shape).clone()
        return result


def _dropout_weight_samples(layer: nn.Module, samples: int, generator: torch.Generator | None) -> torch.Tensor:
    rate = getattr(layer, "input_dropout", 0.0)
    weight = layer.weight.detach()
    if rate == 0:
        return weight.unsqueeze(0).expand(samples, *weight.shape).clone()
    keep = torch.empty(samples, 1, weight.shape[1], dtype=weight.dtype).bernoulli_(1 - rate, generator=generator)
    return weight.unsqueeze(0) * keep.view(samples, 1, weight.shape[1], *([1] * (weight.dim() - 2))) / (1 - rate)


def count_parameters(spec: ModelSpec) -> int:
    """Trainable parameters of the model of ``spec`` (slow and fast weights, biases, norms; every member)."""
    return sum(parameter.numel() for parameter in build_model(spec).parameters())


def matching_widths(spec: ModelSpec, target: int, search: int = 4) -> tuple[int, ...]:
    """Hidden widths of ``spec``'s MLP scaled by one common factor, w_l' = round(w_l · w_0' / w_0), with w_0' the
    integer in [w_0, search · w_0] whose parameter count is closest to ``target`` (ties: the smaller). Used for the
    single model with as many parameters as a BatchEnsemble (the baseline of Abe et al. 2022, "Deep Ensembles Work,
    But Are They Necessary?"): the count is quadratic in the scale, so the closest integer first width is exact to
    within one unit of w_0'."""
    if spec.arch != "mlp":
        raise BadInput(f"matching widths needs arch='mlp', got {spec.arch!r}")
    first = spec.widths[0]

    def scaled(new_first: int) -> tuple[int, ...]:
        return tuple(max(1, round(width * new_first / first)) for width in spec.widths)

    def count(new_first: int) -> int:
        return count_parameters(dataclasses.replace(spec, widths=scaled(new_first)))

    low, high = first, search * first  # count is increasing in the first width: bisect for the first count >= target
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if count(middle) < target else (low, middle)
    best = min((candidate for candidate in (low - 1, low) if candidate >= first),
               key=lambda candidate: (abs(count(candidate) - target), candidate))
    return scaled(best)
