"""Whole-network dimension accounting of a k-member BatchEnsemble vs the k-member Deep Ensemble (docs/theory.md §5).

Layers are independent, so dimensions and codimensions add. Every ``Linear``/``Conv2d`` of a torch module is one
row: ``perturbed`` (a BatchEnsemble layer), ``shared`` (one plain layer for all members) or ``per-member``.
Biases and BatchNorm affine parameters are per-member (cost nothing) or shared (codim (k−1)·m and 2(k−1)·c).
The torch-uncertainty convention, the default: shared BatchNorm, per-member biases, and the plain 1×1 shortcut
convs of BasicBlocks (``downsample``/``shortcut`` in the module name) counted as shared layers.

Example (docs/theory.md §5): MLP 784-400-400-10, k = 4, per-member biases: DE dim 1,913,640, BE params 490,416,
BE image dim 488,013, codim 1,425,627.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from theory import dimension
from theory.batchensemble import DENSE_VARIANTS, BatchEnsembleSpec
from theory.certificate import Certificate, certify_cached
from theory.cli_support import BadInput, require_int_in_range

ARCHS = ("resnet18", "resnet18-cifar", "mlp")
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


def _layer_role(name: str, roles: dict[str, str], shortcuts: str) -> str:
    if name in roles:
        return roles[name]
    return "shared" if shortcuts == "shared" and is_shortcut(name) else "perturbed"


def network_counts(module: nn.Module, members: int, rank: int = 1, variant: str = "channel-wise",
                   bias: str = "per-member", norm: str = "shared", shortcuts: str = "shared",
                   roles: dict[str, str] | None = None, certify_route: str = "auto", seed: int = 0) -> NetworkCounts:
    """Per-layer and total counts of ``module`` as a k-member BatchEnsemble.

    ``roles`` overrides the role of named Linear/Conv2d layers (``perturbed``, ``shared``, ``per-member``);
    ``shortcuts`` (``shared`` or ``perturbed``) sets the default role of 1×1 shortcut convs; ``bias`` and ``norm``
    are ``per-member`` or ``shared``. Each distinct perturbed shape is certified once per process (``certify_route``).
    Dense layers accept only the dense variants; for them ``variant`` falls back to ``channel-wise``.
    """
    members = require_int_in_range("members", members, 1)
    roles = dict(roles or {})
    for name, role in roles.items():
        if role not in dimension.ROLES:
            raise BadInput(f"role {role!r} for layer {name!r} is unknown: expected one of {', '.join(dimension.ROLES)}")
    for option, value, accepted in (("bias", bias, ("per-member", "shared")), ("norm", norm, ("per-member", "shared")),
                                    ("shortcuts", shortcuts, ("shared", "perturbed"))):
        if value not in accepted:
            raise BadInput(f"{option}={value!r} is unknown: expected one of {', '.join(accepted)}")
    rows = []
    for name, layer in module.named_modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            rows.append(_kernel_row(name, layer, members, rank, variant, bias,
                                    _layer_role(name, roles, shortcuts), certify_route, seed))
        elif isinstance(layer, NORM_TYPES) and layer.affine:
            counts = dimension.vector_counts(2 * layer.num_features, members, norm)
            rows.append(LayerRow(name, type(layer).__name__, (layer.num_features,), norm, counts))
        elif any(True for _ in layer.parameters(recurse=False)):
            raise BadInput(f"layer {name!r} of type {type(layer).__name__} has parameters: expected only "
                           "Linear, Conv2d and BatchNorm layers")
    config = {"members": members, "rank": rank, "variant": variant, "bias": bias, "norm": norm,
              "shortcuts": shortcuts, "roles": roles, "certify_route": certify_route, "seed": seed}
    return NetworkCounts(members, rows, config)


def _kernel_row(name: str, layer: nn.Module, members: int, rank: int, variant: str, bias: str, role: str,
                route: str, seed: int) -> LayerRow:
    shape = _kernel_shape(layer)
    layer_variant = variant if len(shape) == 4 or variant in DENSE_VARIANTS else "channel-wise"
    top = BatchEnsembleSpec(shape, members, 1, layer_variant).max_rank
    spec = BatchEnsembleSpec(shape, members, min(rank, top), layer_variant)
    bias_mode = bias if layer.bias is not None else "none"
    bias_counts = dimension.vector_counts(shape[0], members, bias_mode)
    kernel = dimension.kernel_counts(spec, role)
    counts = kernel + bias_counts
    certificate = None
    if role == "perturbed":
        certificate = certify_cached(spec, route, seed)
    kind = f"{type(layer).__name__}[{spec.variant}, r={spec.rank}]" if role == "perturbed" else type(layer).__name__
    return LayerRow(name, kind, shape, role, counts, certificate, kernel.image_dim)


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


def build_arch(arch: str, in_channels: int | None = None, num_classes: int | None = None,
               widths: Sequence[int] | None = None) -> nn.Module:
    """One of ``ARCHS``; defaults: resnet18 3 channels/1000 classes, resnet18-cifar 3/10, mlp 784-400-400-10."""
    if arch == "resnet18":
        return resnet18(in_channels or 3, num_classes or 1000)
    if arch == "resnet18-cifar":
        return resnet18_cifar(in_channels or 3, num_classes or 10)
    if arch == "mlp":
        return mlp(widths or (784, 400, 400, 10))
    raise BadInput(f"arch={arch!r} is unknown: expected one of {', '.join(ARCHS)}")
