"""The bf16 path (``precision = "bf16"``): BatchEnsemble layers and every method match float32 within bf16 rounding
(and measurably run in bf16), master weights / optimiser state / outputs stay float32, convolutional models go
channels-last, same seed ⇒ same numbers, and a killed bf16 run resumes to identical results."""
from __future__ import annotations

import signal

import pytest
import torch

from empirics.models.ensembles import build_model
from empirics.models.layers import BatchEnsembleConv2d, BatchEnsembleLinear
from empirics.models.precision import autocast
from empirics.runs.config import Config
from empirics.runs.train import build_optimizer, ensemble_loss, train

from conftest import assert_same_run, run_kill_script, tiny_config  # the kill-and-resume machinery of the fp32 tests

# bfloat16 keeps 8 significant bits: unit roundoff u = 2^-8. A layer rounds its inputs and weights to bf16 (each
# entry off by at most u/2) and accumulates in float32, so a product's entries are off by at most ~u relative to
# their terms; for random-sign sums the normwise relative error of outputs and gradients is of order u. Upper
# tolerance 4u for one layer; LOWER bound u/32: an error below it means the computation did not run in bf16 at all
# (float32 reaches ~1e-7), so each comparison is checked from both sides.
BF16_U = 2.0 ** -8
LAYER_TOL = 4 * BF16_U
IN_BF16_FLOOR = BF16_U / 32
# A whole ResNet (~20 layers) in eval mode: measured 0.2–0.4% on logits and 2.4–3.7% on the gradient (widths 1/16);
# logits within 4u, the gradient within 16u (per-layer errors of order u compounded over ~20 backward layers,
# √20·u ≈ 4.5u, with a factor ~3.5 of headroom). Train-mode BatchNorm at initialisation is NOT used for this check:
# a channel that ReLU zeroes for every input of the batch has zero variance, and BatchNorm divides its rounding
# noise by √eps, so even float32 gradients differ from float64 ones by ~30% there (measured).
MODEL_LOGIT_TOL = 4 * BF16_U
MODEL_GRAD_TOL = 16 * BF16_U


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Normwise relative error |approx − exact| / |exact| in float64."""
    return float((approx.double() - exact.double()).norm() / exact.double().norm())


def _layer(kind: str, rank: int, variant: str, mode: str, shared: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "linear":
        layer = BatchEnsembleLinear(64, 48, 4, rank=rank, variant=variant)
    else:
        layer = BatchEnsembleConv2d(8, 12, 3, 4, padding=1, rank=rank, variant=variant, bias="per-member")
    layer.forward_mode, layer.shared_input = mode, shared
    return layer


def _outputs_and_grads(layer: torch.nn.Module, x: torch.Tensor, upstream: torch.Tensor,
                       precision: str) -> dict[str, torch.Tensor]:
    layer.zero_grad()
    x = x.clone().requires_grad_()
    with autocast(precision, "cpu"):
        y = layer(x)
    (y.float() * upstream).sum().backward()
    return {"output": y.float().detach(), "input": x.grad,
            **{name: parameter.grad for name, parameter in layer.named_parameters()}}


LAYER_CASES = [("linear", 1, "channel-wise", "factored", False), ("linear", 1, "channel-wise", "factored", True),
               ("linear", 2, "channel-wise", "materialised", False), ("conv", 1, "channel-wise", "factored", False),
               ("conv", 1, "channel-wise", "factored", True), ("conv", 2, "channel-wise", "factored", False),
               ("conv", 1, "flattened-kernel", "materialised", False),
               ("conv", 2, "cp-spatial", "materialised", False)]


@pytest.mark.parametrize("kind, rank, variant, mode, shared", LAYER_CASES)
def test_bf16_layer_outputs_and_gradients_match_fp32_within_bf16_rounding(kind, rank, variant, mode, shared,
                                                                          generator):
    """Output and every gradient (input, slow weight, fast factors, bias) in bf16 autocast are within 4u of float32;
    the output and the slow weight's gradient, which always pass through a bf16 product, are above u/32 (they did run
    in bf16) — the factored path's hand-written backward included. (The materialised path adds the bias in float32,
    so its bias gradient may be exact.)"""
    layer = _layer(kind, rank, variant, mode, shared)
    rows = 16 if shared else 4 * 16
    x = torch.randn(rows, 64, generator=generator) if kind == "linear" else torch.randn(rows, 8, 10, 10,
                                                                                      generator=generator)
    upstream = torch.randn_like(layer(x).float())
    exact = _outputs_and_grads(layer, x, upstream, "fp32")
    approx = _outputs_and_grads(layer, x, upstream, "bf16")
    assert exact.keys() == approx.keys()
    errors = {name: relative_error(approx[name], exact[name]) for name in exact}
    assert all(error < LAYER_TOL for error in errors.values()), errors
    assert errors["output"] > IN_BF16_FLOOR and errors["weight"] > IN_BF16_FLOOR, errors


def test_the_layer_tolerance_catches_a_member_mixup(generator):
    """The other side of the 4u tolerance: a real defect of bf16 size or larger — member 0 computed with member 1's
    fast factors — is far outside it."""
    layer = _layer("conv", 1, "channel-wise", "factored", False)
    x = torch.randn(4 * 8, 8, 10, 10, generator=generator)
    with torch.no_grad():
        exact = layer(x)
        layer.fast_factors[0][0] = layer.fast_factors[0][1]
        with autocast("bf16", "cpu"):
            wrong = layer(x).float()
    assert relative_error(wrong, exact) > 4 * LAYER_TOL


METHODS = [("single", {}), ("batchensemble", {}), ("batchensemble", {"rank": 2}),
           ("batchensemble", {"variant": "flattened-kernel"}), ("deep-ensemble", {}),
           ("deep-ensemble", {"de_mode": "sequential"}), ("mc-dropout", {})]


def _model_pair(method: str, extra: dict) -> tuple[torch.nn.Module, torch.nn.Module]:
    config = Config(arch="resnet18", width_mult=1 / 16, method=method, members=3, mc_samples=3, dropout=0.1, **extra)
    torch.manual_seed(0)
    fp32 = build_model(config.model_spec())
    bf16 = build_model(Config.from_dict({**config.to_dict(), "precision": "bf16"}).model_spec())
    bf16.load_state_dict(fp32.state_dict())
    return fp32.eval(), bf16.eval()


def _logits_and_gradient(model, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    model.zero_grad()
    torch.manual_seed(3)  # MC Dropout: the same masks in both precisions
    logits = model.member_logits(x)
    ensemble_loss(logits, labels).backward()
    return logits.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("method, extra", METHODS)
def test_every_method_in_bf16_matches_fp32_logits_and_gradients(method, extra, generator):
    """ResNet-18 (width 1/16) in eval mode: bf16 logits within 4u and the whole gradient within 16u of float32, both
    above u/32; the logits come back as float32."""
    fp32, bf16 = _model_pair(method, extra)
    x, labels = torch.randn(8, 1, 28, 28, generator=generator), torch.randint(0, 10, (8,), generator=generator)
    logits_32, grad_32 = _logits_and_gradient(fp32, x, labels)
    logits_16, grad_16 = _logits_and_gradient(bf16, x, labels)
    assert logits_16.dtype == torch.float32
    assert IN_BF16_FLOOR < relative_error(logits_16, logits_32) < MODEL_LOGIT_TOL
    assert IN_BF16_FLOOR < relative_error(grad_16, grad_32) < MODEL_GRAD_TOL


@pytest.mark.parametrize("method", ["batchensemble", "deep-ensemble"])
def test_bf16_keeps_master_weights_optimizer_state_float32_and_convolutions_channels_last(method, generator):
    """After a bf16 train step every parameter, gradient and optimiser state is float32; 4-D kernels are
    channels-last (the vectorised Deep Ensemble's stacked (k, out, in, h, w) kernels have no channels-last form)."""
    config = Config(arch="resnet18", width_mult=1 / 16, method=method, members=2, optimizer="sgd",
                    precision="bf16")
    torch.manual_seed(0)
    model = build_model(config.model_spec()).train()
    optimizer = build_optimizer(config, model)
    x, labels = torch.randn(4, 1, 28, 28, generator=generator), torch.randint(0, 10, (4,), generator=generator)
    ensemble_loss(model.member_logits(x), labels).backward()
    optimizer.step()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    assert all(value.dtype == torch.float32 for state in optimizer.state.values() for value in state.values()
               if torch.is_tensor(value))
    four_d = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1]
    assert bool(four_d) == (method == "batchensemble")
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)


def test_fp32_models_stay_in_the_default_layout():
    model = build_model(Config(arch="resnet18", width_mult=1 / 16, method="batchensemble").model_spec())
    assert all(p.is_contiguous() for p in model.parameters())


def test_unknown_precision_is_rejected_naming_the_choices():
    with pytest.raises(Exception, match="precision='fp16' is unknown: expected one of 'fp32', 'bf16'"):
        Config(precision="fp16")


@pytest.mark.slow
def test_bf16_same_seed_gives_identical_numbers(tiny_mnist_root, tmp_path):
    config = tiny_config(tiny_mnist_root, arch="resnet18", width_mult=1 / 16, epochs=2, precision="bf16")
    train(config, tmp_path / "a")
    train(config, tmp_path / "b")
    assert_same_run(tmp_path / "a", tmp_path / "b")


@pytest.mark.slow
def test_bf16_run_killed_after_epoch_2_resumes_to_identical_results(tiny_mnist_root, tmp_path):
    """SIGKILL right after epoch 2's checkpoint of a bf16 BatchEnsemble run; the resumed run ends bit-identical to an
    uninterrupted one."""
    config = tiny_config(tiny_mnist_root, method="batchensemble", precision="bf16", dropout=0.2)
    killed = run_kill_script("kill-after-epoch-2", config, tmp_path / "killed")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "killed" / "COMPLETE").exists()
    train(config, tmp_path / "killed", resume=True)
    train(config, tmp_path / "whole")
    assert_same_run(tmp_path / "killed", tmp_path / "whole")
