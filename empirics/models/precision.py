"""Compute precision of a model: ``fp32`` (default) or ``bf16`` (bfloat16 autocast in a channels-last layout).

One owner for the concept: the model carries its ``precision`` (``EnsembleModel.precision``, set by
``empirics.models.ensembles.build_model``) and every forward through ``member_logits`` / ``member_features`` runs under
``autocast(precision, device)``; training, evaluation and the diversity analysis therefore compute in the same
precision without knowing about it. What stays float32 under ``bf16``:

* master weights, gradients seen by the optimiser, optimiser state (the parameters are never cast in place);
* the returned logits and features (cast back to float32), hence the loss, softmax and every metric;
* BatchNorm statistics and affine parameters (PyTorch's CPU and CUDA batch norm take bf16 inputs with float32
  parameters).

Under ``bf16`` matmuls and convolutions run in bfloat16 (on the CPU: oneDNN's AVX-512-BF16/AMX kernels), including
the BatchEnsemble layers' own hand-written forward and backward (``empirics.models.layers``: their inputs are cast to
the autocast dtype before the autograd function runs, so the scalings, the shared convolutions and their backward all
run in bf16), and the Deep Ensemble's stacked member weights (``DeepEnsembleModel``). Convolutional models use the
channels-last layout, which oneDNN's bf16 convolutions need to be fast (measured: bf16 in NCHW made the plain ResNet-18
width-1.0 step several times slower than fp32). See docs/design.md §10.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def compute_dtype(precision: str) -> torch.dtype:
    return _DTYPES[precision]


@contextlib.contextmanager
def autocast(precision: str, device_type: str) -> Iterator[None]:
    """bfloat16 autocast on ``device_type`` for ``bf16``; nothing (plain float32) for ``fp32``."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type, dtype=compute_dtype(precision)):
        yield


def active_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast computes in on ``device_type`` here, or None where autocast is off."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def wants_channels_last(precision: str, model: nn.Module) -> bool:
    """bf16 convolutional models run channels-last (oneDNN's fast bf16 convolution layout)."""
    return precision == "bf16" and any(parameter.dim() >= 4 for parameter in model.parameters())


def convert_layout(model: nn.Module) -> None:
    """In place: every 4-D parameter and buffer channels-last (stacked 5-D Deep-Ensemble weights keep theirs: a
    (k, out, in, h, w) tensor has no channels-last form, and its per-member slices under ``vmap`` are what the
    convolutions see), and every layer that assembles its own output (``channels_last`` attribute) told to write
    channels-last."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dim() == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    for module in model.modules():
        if hasattr(module, "channels_last"):
            module.channels_last = True


def to_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x
