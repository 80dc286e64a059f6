"""Whole-network dimension accounting of a k-member BatchEnsemble vs the k-member Deep Ensemble (docs/theory.md §5).

Layers are independent, so dimensions and codimensions add. Every ``Linear``/``Conv2d`` of a torch module is one
row: ``perturbed`` (a BatchEnsemble layer), ``shared`` (one plain layer for all members) or ``per-member``.
Biases and BatchNorm affine parameters are per-member (cost nothing) or shared (codim (k−1)·m and 2(k−1)·c).
The torch-uncertainty convention, the default: shared BatchNorm, per-member biases, and the plain 1×1 shortcut
convs of BasicBlocks (``downsample``/``shortcut`` in the module name) counted as shared layers. A shared layer is one
plain layer applied to every member, so its bias is one vector too: counted shared (codim (k−1)·m) whatever ``bias``.

A model that already *is* a BatchEnsemble is counted as it is (``batch_layer``): torch-uncertainty's ``BatchLinear`` /
``BatchConv2d`` (a plain bias-free ``linear``/``conv`` child, ``r_group`` (k, in), ``s_group`` (k, out), optional
``bias`` (k, out)), recognised by that parameter layout without importing the package, and this project's
``empirics.models.layers`` BatchEnsemble layers (a ``spec`` and ``fast_factors``). Their rank, variant and bias come
from the layer, every plain Linear/Conv2d beside them is a shared layer (the same kernel for every member's rows), and
``members`` must equal the layers' k. Then the BE parameter count equals the model's ``numel`` sum (tested on
torch-uncertainty's own ``batched_resnet``).

Example (docs/theory.md §5): MLP 784-400-400-10, k = 4, per-member biases: DE dim 1,913,640, BE params 490,416,
BE image dim 488,013, codim 1,425,627.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn
from tqdm import tqdm

from infra.errors import BadInput, require_int_in_range
from theory import dimension
from theory.batchensemble import BatchEnsembleSpec, network_layer_spec
from theory.certificate import Certificate, CostLimits, certify_cached

ARCHS = ("resnet18", "resnet18-cifar", "mlp", "vit")
SHORTCUT_NAMES = ("downsample", "shortcut")
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass(frozen=True)
class LayerRow:
    """One row of the accounting: a kernel layer (with its bias) or a normalisation layer."""

    name: str
    kind: str
    shape: tuple[int, ...]
    role: str
    counts: dimension.LayerCounts
    certificate: Certificate | None = None
    kernel_image: int | None = None

    @property
    def certified(self) -> bool:
        """Exact by construction for linear parts (shared/per-member kernels, biases, norms); a perturbed kernel
        needs a certificate whose matched bounds equal the kernel image dimension counted in this row."""
        if self.role != "perturbed":
            return True
        return (self.certificate is not None and self.certificate.status == "certified"
                and self.certificate.lower == self.kernel_image)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape), "role": self.role,
                **self.counts.as_dict(), "certified": self.certified,
                "certificate": self.certificate.as_dict() if self.certificate else None}


@dataclass(frozen=True)
class NetworkCounts:
    members: int
    rows: list[LayerRow]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def totals(self) -> dimension.LayerCounts:
        total = dimension.LayerCounts(0, 0, 0)
        for row in self.rows:
            total = total + row.counts
        return total

    @property
    def de_dim(self) -> int:
        return self.totals.ambient_dim

    @property
    def be_params(self) -> int:
        return self.totals.params

    @property
    def be_image_dim(self) -> int:
        return self.totals.image_dim

    @property
    def codim(self) -> int:
        return self.totals.codim

    @property
    def redundancy(self) -> int:
        return self.totals.redundancy

    @property
    def fraction_reached(self) -> float:
        """dim Im Φ / dim DE: the fraction of the Deep-Ensemble dimensions BatchEnsemble reaches."""
        return self.be_image_dim / self.de_dim if self.de_dim else 1.0

    @property
    def certified(self) -> bool:
        return all(row.certified for row in self.rows)

    def totals_dict(self) -> dict[str, Any]:
        return {"de_dim": self.de_dim, "be_params": self.be_params, "be_image_dim": self.be_image_dim,
                "codim": self.codim, "redundancy": self.redundancy, "fraction_reached": self.fraction_reached,
                "certified": self.certified}

    def as_dict(self) -> dict[str, Any]:
        return {"members": self.members, "config": self.config, "layers": [row.as_dict() for row in self.rows],
                "totals": self.totals_dict()}


def is_shortcut(name: str) -> bool:
    return any(part in name.split(".") for part in SHORTCUT_NAMES)


def _kernel_shape(module: nn.Module) -> tuple[int, ...]:
    if isinstance(module, nn.Linear):
        return (module.out_features, module.in_features)
    if module.groups != 1:
        raise BadInput(f"Conv2d with groups={module.groups} is not supported: expected groups=1")
    return (module.out_channels, module.in_channels, *module.kernel_size)


def _layer_role(name: str, roles: dict[str, str], shortcuts: str, batched: bool = False) -> str:
    """``roles`` first; in a model that already has BatchEnsemble layers a plain kernel is shared; else shortcuts
    follow ``shortcuts`` and every other kernel is perturbed."""
    if name in roles:
        return roles[name]
    if batched:
        return "shared"
    return "shared" if shortcuts == "shared" and is_shortcut(name) else "perturbed"


@dataclass(frozen=True)
class BatchLayer:
    """A BatchEnsemble layer found in a model: its spec, the module holding its slow weight, and its bias mode."""

    spec: BatchEnsembleSpec
    kernel: nn.Module
    bias: str


def _own_parameters(module: nn.Module) -> dict[str, torch.Tensor]:
    return dict(module.named_parameters(recurse=False))


def batch_layer(module: nn.Module) -> BatchLayer | None:
    """The BatchEnsemble layer ``module`` is, or ``None`` for any other module.

    torch-uncertainty (``BatchLinear``/``BatchConv2d``, rank 1 channel-wise W ∘ s_i r_iᵀ): own parameters exactly
    ``r_group`` (k, in), ``s_group`` (k, out) and optionally ``bias`` (k, out), one child ``linear``/``conv`` that is a
    bias-free ``nn.Linear``/``nn.Conv2d`` of groups 1. This project's layers: a ``spec`` (``BatchEnsembleSpec``),
    ``weight`` and ``fast_factors``. A module with ``r_group``/``s_group`` in any other layout is a ``BadInput``."""
    own = _own_parameters(module)
    if isinstance(getattr(module, "spec", None), BatchEnsembleSpec) and hasattr(module, "fast_factors"):
        bias = getattr(module, "bias", None)
        mode = "none" if bias is None else ("per-member" if bias.dim() == 2 else "shared")
        return BatchLayer(module.spec, module, mode)
    if not {"r_group", "s_group"} <= set(own):
        return None
    children = dict(module.named_children())
    kernel = children.get("conv", children.get("linear"))
    r_group, bias = own["r_group"], own.get("bias")
    if (set(own) - {"r_group", "s_group", "bias"} or len(children) != 1
            or not isinstance(kernel, (nn.Linear, nn.Conv2d)) or kernel.bias is not None):
        raise BadInput(f"layer of type {type(module).__name__} has r_group/s_group but not torch-uncertainty's "
                       "BatchLinear/BatchConv2d layout (one bias-free linear/conv child, r_group, s_group, bias)")
    shape = _kernel_shape(kernel)
    members = r_group.shape[0]
    expected = {"r_group": (members, shape[1]), "s_group": (members, shape[0]), "bias": (members, shape[0])}
    for name, tensor in own.items():
        if tuple(tensor.shape) != expected[name]:
            raise BadInput(f"{type(module).__name__}.{name} has shape {tuple(tensor.shape)}: expected "
                           f"{expected[name]} for a ({shape[0]}, {shape[1]}, ...) kernel and k={members}")
    return BatchLayer(BatchEnsembleSpec(shape, members, 1, "channel-wise"), kernel,
                      "none" if bias is None else "per-member")


def batch_layers(module: nn.Module) -> dict[str, BatchLayer]:
    """{name: BatchLayer} of every BatchEnsemble layer of ``module`` (``batch_layer``)."""
    found = {}
    for name, layer in module.named_modules():
        try:
            described = batch_layer(layer)
        except BadInput as error:
            raise BadInput(f"layer {name!r}: {error}") from None
        if described is not None:
            found[name] = described
    return found


def _inside(name: str, parents: Sequence[str]) -> bool:
    return any(parent == "" or name.startswith(parent + ".") for parent in parents)


def network_counts(module: nn.Module, members: int, rank: int = 1, variant: str = "channel-wise",
                   bias: str = "per-member", norm: str = "shared", shortcuts: str = "shared",
                   roles: dict[str, str] | None = None, certify_route: str = "auto", seed: int = 0,
                   layernorm: str = "shared", embeddings: str | None = None,
                   limits: CostLimits | None = None) -> NetworkCounts:
    """Per-layer and total counts of ``module`` as a k-member BatchEnsemble.

    ``roles`` overrides the role of named Linear/Conv2d layers (``perturbed``, ``shared``, ``per-member``; a shared
    layer's bias is shared with it, whatever ``bias`` says);
    ``shortcuts`` (``shared`` or ``perturbed``) sets the default role of 1×1 shortcut convs; ``bias`` and ``norm``
    are ``per-member`` or ``shared``. Each distinct perturbed shape is certified once per process (``certify_route``;
    with ``limits`` a layer whose certification is estimated past them is handled as ``certify`` says), with a
    progress bar over the layers.
    Dense layers accept only the dense variants; for them ``variant`` falls back to ``channel-wise``.
    Transformers: ``nn.LayerNorm`` scale and shift are one vector of 2·d entries, ``per-member`` or ``shared``
    (``layernorm``); parameters held directly by another module (a ViT's class token and position embedding) are one
    vector each with sharing ``embeddings`` (``None``: such parameters are an error, as for any unknown layer).
    """
    members = require_int_in_range("members", members, 1)
    roles = dict(roles or {})
    for name, role in roles.items():
        if role not in dimension.ROLES:
            raise BadInput(f"role {role!r} for layer {name!r} is unknown: expected one of {', '.join(dimension.ROLES)}")
    for option, value, accepted in (("bias", bias, ("per-member", "shared")), ("norm", norm, ("per-member", "shared")),
                                    ("shortcuts", shortcuts, ("shared", "perturbed")),
                                    ("layernorm", layernorm, ("per-member", "shared")),
                                    ("embeddings", embeddings, (None, "per-member", "shared"))):
        if value not in accepted:
            raise BadInput(f"{option}={value!r} is unknown: expected one of {', '.join(accepted)}")
    rows = []
    found = batch_layers(module)
    for name, described in found.items():
        if described.spec.members != members:
            raise BadInput(f"layer {name!r} ({type(module.get_submodule(name)).__name__}) has k="
                           f"{described.spec.members} members: expected members={members}")
    counted: list[str] = []  # modules whose children are counted in their own row
    kernels = sum(isinstance(layer, (nn.Linear, nn.Conv2d)) for layer in module.modules())
    progress = tqdm(total=kernels, desc="certify", unit="layer", disable=not sys.stderr.isatty())
    for name, layer in module.named_modules():
        progress.set_postfix_str(name)
        if _inside(name, counted):
            continue  # the slow weight of a BatchEnsemble layer or the k·C norm of a per-member BatchNorm
        if name in found:
            rows.append(_batch_row(name, layer, found[name], certify_route, seed, limits))
            counted.append(name)
        elif _member_norm_features(layer) is not None:
            features = _member_norm_features(layer)
            counts = dimension.vector_counts(2 * features, members, "per-member")
            rows.append(LayerRow(name, type(layer).__name__, (features,), "per-member", counts))
            counted.append(name)
        elif isinstance(layer, (nn.Linear, nn.Conv2d)):
            rows.append(_kernel_row(name, layer, members, rank, variant, bias,
                                    _layer_role(name, roles, shortcuts, bool(found)), certify_route, seed, limits))
            progress.update(1)
        elif isinstance(layer, NORM_TYPES) and layer.affine:
            counts = dimension.vector_counts(2 * layer.num_features, members, norm)
            rows.append(LayerRow(name, type(layer).__name__, (layer.num_features,), norm, counts))
        elif isinstance(layer, nn.LayerNorm) and layer.elementwise_affine:
            counts = dimension.vector_counts(2 * layer.weight.numel(), members, layernorm)
            rows.append(LayerRow(name, "LayerNorm", tuple(layer.normalized_shape), layernorm, counts))
        elif embeddings is not None and any(True for _ in layer.parameters(recurse=False)):
            for attr, parameter in layer.named_parameters(recurse=False):
                counts = dimension.vector_counts(parameter.numel(), members, embeddings)
                rows.append(LayerRow(f"{name}.{attr}" if name else attr, "Parameter", tuple(parameter.shape),
                                     embeddings, counts))
        elif any(True for _ in layer.parameters(recurse=False)):
            raise BadInput(f"layer {name!r} of type {type(layer).__name__} has parameters: expected only "
                           "Linear, Conv2d and BatchNorm layers")
    progress.close()
    config = {"members": members, "rank": rank, "variant": variant, "bias": bias, "norm": norm,
              "shortcuts": shortcuts, "roles": roles, "certify_route": certify_route, "seed": seed}
    if layernorm != "shared" or embeddings is not None:  # transformer options, recorded only when used
        config.update(layernorm=layernorm, embeddings=embeddings)
    return NetworkCounts(members, rows, config)


def _kernel_row(name: str, layer: nn.Module, members: int, rank: int, variant: str, bias: str, role: str,
                route: str, seed: int, limits: CostLimits | None = None) -> LayerRow:
    bias_mode = "none" if layer.bias is None else {"shared": "shared", "per-member": "per-member"}.get(role, bias)
    return kernel_row(name, _kernel_shape(layer), members, role, rank, variant, bias_mode, route, seed,
                      type(layer).__name__, limits)


def kernel_row(name: str, shape: Sequence[int], members: int, role: str, rank: int = 1,
               variant: str = "channel-wise", bias_mode: str = "none", route: str = "auto", seed: int = 0,
               kind: str = "kernel", limits: CostLimits | None = None) -> LayerRow:
    """One row for a kernel of ``shape`` (and a bias over its ``out`` channels): a perturbed kernel gets the rank-r
    BE counts (rank capped at the layer's largest; dense layers fall back to channel-wise) and its certificate."""
    shape = tuple(shape)
    spec = network_layer_spec(shape, members, rank, variant)
    kernel = dimension.kernel_counts(spec, role)
    counts = kernel + dimension.vector_counts(shape[0], members, bias_mode)
    certificate = certify_cached(spec, route, seed, limits) if role == "perturbed" else None
    label = f"{kind}[{spec.variant}, r={spec.rank}]" if role == "perturbed" else kind
    return LayerRow(name, label, shape, role, counts, certificate, kernel.image_dim)


def _batch_row(name: str, layer: nn.Module, described: BatchLayer, route: str, seed: int,
               limits: CostLimits | None = None) -> LayerRow:
    """A BatchEnsemble layer counted with its own spec and bias (``batch_layer``)."""
    spec = described.spec
    kernel = dimension.kernel_counts(spec, "perturbed")
    counts = kernel + dimension.vector_counts(spec.kernel_shape[0], spec.members, described.bias)
    kind = f"{type(layer).__name__}[{spec.variant}, r={spec.rank}]"
    return LayerRow(name, kind, spec.kernel_shape, "perturbed", counts, certify_cached(spec, route, seed, limits),
                    kernel.image_dim)


def _member_norm_features(layer: nn.Module) -> int | None:
    """C for a per-member BatchNorm over k·C channels (``empirics.models.layers.MemberBatchNorm``: ``members``,
    ``num_features`` and an affine ``norm`` child of k·C features); ``None`` for any other module."""
    inner = getattr(layer, "norm", None)
    features, members = getattr(layer, "num_features", None), getattr(layer, "members", None)
    if (isinstance(inner, NORM_TYPES) and isinstance(features, int) and isinstance(members, int)
            and inner.affine and inner.num_features == members * features):
        return features
    return None


# ---------------------------------------------------------------- architectures


def mlp(widths: Sequence[int]) -> nn.Sequential:
    """Linear layers widths[0] → widths[1] → … with ReLU between them (biases on)."""
    widths = [require_int_in_range("width", width, 1) for width in widths]
    if len(widths) < 2:
        raise BadInput(f"widths={widths} is not valid: expected at least two widths (input and output)")
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if index < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def resnet18(in_channels: int = 3, num_classes: int = 1000) -> nn.Module:
    """torchvision's ResNet-18 (7×7 stem, max-pool), with ``in_channels`` input channels."""
    from torchvision.models import resnet18 as torchvision_resnet18

    in_channels = require_int_in_range("in_channels", in_channels, 1)
    num_classes = require_int_in_range("num_classes", num_classes, 1)
    with torch.device("meta"):  # shapes only: no weights allocated
        model = torchvision_resnet18(weights=None, num_classes=num_classes)
        if in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def resnet18_cifar(in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    """CIFAR-style ResNet-18 (torch-uncertainty ``style="cifar"``): 3×3 stride-1 stem, no max-pool."""
    model = resnet18(in_channels, num_classes)
    with torch.device("meta"):
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


VIT_ATTENTION = ("query", "key", "value", "out")


class _TokenEmbedding(nn.Module):
    """Shapes of a ViT's class token (1, 1, d) and position embedding (1, T [+1], d)."""

    def __init__(self, width: int, tokens: int, cls_token: bool) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.empty(1, 1, width)) if cls_token else None
        self.position = nn.Parameter(torch.empty(1, tokens + cls_token, width))


def vit(in_channels: int = 1, image_size: int = 28, patch_size: int = 7, width: int = 64, depth: int = 4,
        heads: int = 4, mlp_ratio: int = 2, num_classes: int = 10, pooling: str = "cls") -> nn.Module:
    """The layer shapes of ``empirics.models.attention.VisionTransformer`` (same module names), on the meta device:
    patch embedding Linear(C·p², d); per block LayerNorm, attention ``query``/``key``/``value``/``out`` Linear(d, d)
    (each projection one dense layer), LayerNorm, ``fc1`` Linear(d, r·d), ``fc2`` Linear(r·d, d); final LayerNorm;
    head."""
    for name, value in (("in_channels", in_channels), ("image_size", image_size), ("patch_size", patch_size),
                        ("width", width), ("depth", depth), ("heads", heads), ("mlp_ratio", mlp_ratio),
                        ("num_classes", num_classes)):
        require_int_in_range(name, value, 1)
    if image_size % patch_size or width % heads:
        raise BadInput(f"patch_size={patch_size} must divide image_size={image_size} and heads={heads} must divide "
                       f"width={width}")
    if pooling not in ("cls", "mean"):
        raise BadInput(f"pooling={pooling!r} is unknown: expected one of cls, mean")
    hidden = mlp_ratio * width
    with torch.device("meta"):
        model = nn.Module()
        model.patch_embed = nn.Linear(in_channels * patch_size ** 2, width)
        model.embedding = _TokenEmbedding(width, (image_size // patch_size) ** 2, pooling == "cls")
        blocks = nn.ModuleList()
        for _ in range(depth):
            block = nn.Module()
            block.norm1 = nn.LayerNorm(width)
            block.attention = nn.Module()
            for projection in VIT_ATTENTION:
                setattr(block.attention, projection, nn.Linear(width, width))
            block.norm2 = nn.LayerNorm(width)
            block.fc1, block.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)
            blocks.append(block)
        model.blocks = blocks
        model.norm = nn.LayerNorm(width)
        model.head = nn.Linear(width, num_classes)
    return model


def attention_roles(module: nn.Module, role: str = "shared") -> dict[str, str]:
    """``{name: role}`` for every attention projection of a ViT (``be_scope="mlp"``: plain layers shared by members)."""
    return {name: role for name, layer in module.named_modules()
            if isinstance(layer, nn.Linear) and ".attention." in f".{name}"}


def build_arch(arch: str, in_channels: int | None = None, num_classes: int | None = None,
               widths: Sequence[int] | None = None, **vit_options: Any) -> nn.Module:
    """One of ``ARCHS``; defaults: resnet18 3 channels/1000 classes, resnet18-cifar 3/10, mlp 784-400-400-10,
    vit 1×28×28 images, 7×7 patches, width 64, 4 blocks, 4 heads, MLP ratio 2, 10 classes (``vit_options``: the
    keyword arguments of ``vit``)."""
    if arch == "vit":
        return vit(in_channels or 1, num_classes=num_classes or 10, **vit_options)
    if arch == "resnet18":
        return resnet18(in_channels or 3, num_classes or 1000)
    if arch == "resnet18-cifar":
        return resnet18_cifar(in_channels or 3, num_classes or 10)
    if arch == "mlp":
        return mlp(widths or (784, 400, 400, 10))
    raise BadInput(f"arch={arch!r} is unknown: expected one of {', '.join(ARCHS)}")
