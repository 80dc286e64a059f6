"""The four methods as ensembles behind one interface, built from a ``ModelSpec`` on the networks of
``empirics.models.networks`` and ``empirics.models.attention``. The same architecture yields every method:

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
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from empirics.models.attention import MemberLayerNorm, TokenEmbedding, VisionTransformer
from empirics.models.layers import BatchEnsembleConv2d, BatchEnsembleLinear, MemberBatchNorm, split_members
from empirics.models.networks import MLP, LayerFactory, ResNet18
from empirics.models.precision import PRECISIONS, active_dtype, autocast, convert_layout, to_layout, wants_channels_last
from infra.errors import BadInput
from theory.batchensemble import FULL_RANK

METHODS = ("single", "batchensemble", "deep-ensemble", "mc-dropout")
ARCHS = ("mlp", "resnet18", "vit")
DE_MODES = ("vectorised", "sequential")


class EnsembleModel(nn.Module):
    """Common interface: ``member_logits(x) -> (k, B, C)``, ``member_features(x) -> (k, B, F)``, computed in the
    model's ``precision`` (``empirics.models.precision``: ``bf16`` autocast with channels-last inputs, float32 outputs;
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
    """Everything needed to build a model (a subset of ``empirics.runs.config.Config``): the architecture, and the
    layer ``factory`` that holds the method, its members and its layers' options (``spec.method`` and ``spec.members``
    read it: one owner). MC Dropout's ``mc_samples`` test-time passes are its members at evaluation."""

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
    mc_samples: int = 4
    de_mode: str = "vectorised"
    precision: str = "fp32"
    factory: LayerFactory = LayerFactory()

    @property
    def method(self) -> str:
        return self.factory.method

    @property
    def members(self) -> int:
        return self.factory.members


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
                       f"(the largest layer's max rank) or '{FULL_RANK}'")


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
                           "unknown here (empirics.interop.diagnose reads torch-uncertainty and TabM layers)")
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
                       "member_weight_tuples reads only those (empirics.interop.diagnose reads foreign ensembles)")
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
