"""Regression (``empirics.data.regression``, ``empirics.runs.tasks``): Gaussian NLL, the mixture's mean-variance
decomposition, exact mixture NLL, interval coverage, the toy with a gap, the offline diamonds data and its
carat-quantile shift."""
from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from empirics.data import regression
from empirics.runs import tasks
from empirics.runs.config import Config
from infra.errors import BadInput

SEED = 0


def test_gaussian_nll_loss_is_half_log_2pi_variance_plus_scaled_squared_error():
    """Two members, two rows: loss = mean of ½ (log 2π σ² + (y − μ)²/σ²) with σ² = softplus(raw) + MIN_VARIANCE."""
    outputs = torch.tensor([[[0.0, 0.0], [1.0, 2.0]], [[-1.0, -1.0], [0.5, 0.0]]], dtype=torch.float64)
    targets = torch.tensor([0.5, 1.0], dtype=torch.float64)
    expected = []
    for member in range(2):
        for row in range(2):
            mu = outputs[member, row, 0].item()
            var = math.log1p(math.exp(outputs[member, row, 1].item())) + regression.MIN_VARIANCE
            expected.append(0.5 * (math.log(2 * math.pi * var) + (targets[row].item() - mu) ** 2 / var))
    assert regression.gaussian_nll_loss(outputs, targets).item() == pytest.approx(sum(expected) / 4, abs=1e-12)


def test_decomposition_is_the_mixture_variance_and_epistemic_is_zero_for_identical_members():
    """aleatoric + epistemic = E[σ² + μ²] − μ*² (the mixture's variance, computed directly); identical members → 0."""
    generator = torch.Generator().manual_seed(SEED)
    means = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    variances = torch.rand(5, 7, generator=generator, dtype=torch.float64) + 0.1
    parts = regression.decomposition(means, variances)
    mixture_variance = (variances + means ** 2).mean(0) - means.mean(0) ** 2
    assert torch.allclose(parts["total"], mixture_variance, atol=1e-12, rtol=0)
    same = regression.decomposition(means[:1].expand(5, 7), variances[:1].expand(5, 7))
    assert torch.equal(same["epistemic"], torch.zeros(7, dtype=torch.float64))
    assert torch.allclose(same["aleatoric"], variances[0])


def test_mixture_nll_equals_a_per_input_loop_over_member_densities():
    """−log (1/k) Σ_i N(y; μ_i, σ_i²), written out with math.exp, averaged over inputs."""
    generator = torch.Generator().manual_seed(SEED)
    means = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    variances = torch.rand(3, 4, generator=generator, dtype=torch.float64) + 0.2
    targets = torch.randn(4, generator=generator, dtype=torch.float64)
    slow = []
    for n in range(4):
        density = sum(math.exp(-(targets[n] - means[i, n]) ** 2 / (2 * variances[i, n]))
                      / math.sqrt(2 * math.pi * variances[i, n]) for i in range(3)) / 3
        slow.append(-math.log(density))
    assert regression.mixture_nll(means, variances, targets) == pytest.approx(sum(slow) / 4, abs=1e-12)


def test_coverage_on_five_hand_made_targets():
    """N(0, 1), level 0.9 → z = 1.6449: targets 0, 0.5, 1, 2, 3 → 3 of 5 inside."""
    assert regression.central_quantile(0.9) == pytest.approx(1.6448536, abs=1e-6)
    targets = torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    assert regression.coverage(torch.zeros(5), torch.ones(5), targets, 0.9) == pytest.approx(0.6)


@pytest.mark.parametrize("scale,calibrated", [(1.0, True), (0.5, False)])
def test_coverage_is_nominal_for_the_true_gaussian_and_below_for_an_overconfident_one(scale, calibrated):
    """Targets drawn from N(μ, 1): predicting σ = 1 covers each level within 4 binomial standard errors
    (√(c(1−c)/N) ≤ 0.0016 for N = 100,000); predicting σ = 0.5 (over-confident) falls short of every level."""
    generator = torch.Generator().manual_seed(SEED)
    count = 100_000
    mean = torch.randn(count, generator=generator, dtype=torch.float64)
    targets = mean + torch.randn(count, generator=generator, dtype=torch.float64)
    for level in regression.COVERAGE_LEVELS:
        observed = regression.coverage(mean, torch.full((count,), scale ** 2, dtype=torch.float64), targets, level)
        tolerance = 4 * math.sqrt(level * (1 - level) / count)
        if calibrated:
            assert abs(observed - level) <= tolerance
        else:
            assert observed < level - tolerance


def _slow_mixture_quantile(means: list[float], stds: list[float], probability: float) -> float:
    """One input: brentq on F(y) − p with F(y) = (1/k) Σ_i ½ (1 + erf((y − μ_i) / (σ_i √2))), written with math.erf."""
    def cdf_gap(y: float) -> float:
        return sum(0.5 * (1 + math.erf((y - mu) / (sigma * math.sqrt(2)))) for mu, sigma in zip(means, stds)) \
            / len(means) - probability
    reach = 10 * max(stds)
    return brentq(cdf_gap, min(means) - reach, max(means) + reach, xtol=1e-14, rtol=4 * np.finfo(float).eps)


def test_vectorised_mixture_quantiles_equal_brentq_on_the_mixture_cdf_point_by_point():
    """Three members with random means and variances on 25 inputs, at the 8 tail probabilities of COVERAGE_LEVELS:
    the vectorised bisection equals a per-input loop of scipy's brentq on the mixture CDF (float64). Tolerance 1e-12:
    brentq stops within xtol = 1e-14 + 4 eps |y| (|y| < 20 here), the bisection within W·2⁻⁶⁴ (bracket W < 40) plus
    one rounding; both far below 1e-12, and quantile errors of 1e-9 (a truncated bisection) would fail."""
    generator = torch.Generator().manual_seed(SEED)
    means = 2 * torch.randn(3, 25, generator=generator, dtype=torch.float64)
    variances = 0.05 + torch.rand(3, 25, generator=generator, dtype=torch.float64)
    levels = torch.tensor(regression.COVERAGE_LEVELS, dtype=torch.float64)
    probabilities = torch.cat([(1 - levels) / 2, (1 + levels) / 2])
    fast = regression.mixture_quantiles(means, variances, probabilities)
    # defining property F(F⁻¹(p)) = p: a quantile error ≤ 1e-12 (below) moves F by at most the density bound
    # 1/(σ_min √(2π)) < 1.8 times it, plus erfc rounding ~1e-16 per member: < 1e-11
    assert torch.allclose(regression.mixture_cdf(fast, means, variances), probabilities.unsqueeze(1).expand_as(fast),
                          atol=1e-11, rtol=0)
    for row, probability in enumerate(probabilities.tolist()):
        for n in range(25):
            slow = _slow_mixture_quantile(means[:, n].tolist(), variances[:, n].sqrt().tolist(), probability)
            assert abs(fast[row, n].item() - slow) <= 1e-12, (probability, n)


def test_one_member_mixture_interval_is_mu_plus_minus_z_sigma():
    """k = 1: the mixture is the member's Gaussian, so its central interval at c is μ ± z_{(1+c)/2} σ (z from
    central_quantile, float64 erfinv). Tolerance 1e-12: bisection error ≤ 20σ·2⁻⁶⁴ < 1e-17 for σ ≤ 3 plus float64
    rounding of |μ ± zσ| < 20 (≈ 4e-15); a 1-σ error of the z-quantile would be 1e-1."""
    generator = torch.Generator().manual_seed(SEED)
    means = 3 * torch.randn(1, 40, generator=generator, dtype=torch.float64)
    variances = 0.01 + 9 * torch.rand(1, 40, generator=generator, dtype=torch.float64)
    lower, upper = regression.mixture_intervals(means, variances, regression.COVERAGE_LEVELS)
    for row, level in enumerate(regression.COVERAGE_LEVELS):
        half_width = regression.central_quantile(level) * variances[0].sqrt()
        assert torch.allclose(lower[row], means[0] - half_width, atol=1e-12, rtol=0)
        assert torch.allclose(upper[row], means[0] + half_width, atol=1e-12, rtol=0)


def test_ensemble_coverage_uses_the_mixture_not_the_moment_matched_gaussian():
    """Two members N(c_n ∓ 3, 0.5²) per input, targets drawn from that mixture (10,000 inputs): the ensemble's
    coverage at 50% and 90% is nominal within 4 binomial standard errors (4 √(c(1−c)/N) = 0.020 and 0.012), while the
    moment-matched N(μ*, σ*²) (σ* = √9.25 = 3.04) misses both by far: at 50% it covers Φ((0.674·3.04 − 3)/0.5) ≈ 0.03
    (both modes lie outside μ* ± 2.05), at 90% all but ≈ Φ(−4) (μ* ± 5.00 holds both modes). Going back to moment
    matching fails this test."""
    generator = torch.Generator().manual_seed(SEED)
    count = 10_000
    centre = torch.randn(count, generator=generator, dtype=torch.float64)
    means = torch.stack([centre - 3, centre + 3])
    variances = torch.full_like(means, 0.25)
    member = torch.randint(0, 2, (count,), generator=generator)
    targets = means[member, torch.arange(count)] + 0.5 * torch.randn(count, generator=generator, dtype=torch.float64)
    metrics = regression.member_and_ensemble_metrics(means, variances, targets, "test")
    parts = regression.decomposition(means, variances)
    for level in (0.5, 0.9):
        observed = metrics[f"test/ensemble/coverage_{round(100 * level)}"]
        assert abs(observed - level) <= 4 * math.sqrt(level * (1 - level) / count), (level, observed)
        moment_matched = regression.coverage(parts["mean"], parts["total"], targets, level)
        assert abs(moment_matched - level) > 0.09, (level, moment_matched)  # ≈ 0.03 and ≈ 1.0: > 0.09 off nominal


def test_mixture_quantiles_reject_probabilities_outside_the_bracket():
    """p = 0 or p = 1 has no finite quantile inside the 10-σ bracket: a one-line error naming the values and range."""
    with pytest.raises(BadInput, match=r"probabilities \[0.0, 0.5\]: expected"):
        regression.mixture_quantiles(torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([0.0, 0.5]))
    with pytest.raises(BadInput, match=r"interval levels \[1.0\]: expected a list of numbers in \(0, 1\)"):
        regression.mixture_intervals(torch.zeros(2, 3), torch.ones(2, 3), [1.0])


def test_one_member_ensemble_metrics_equal_the_members():
    """k = 1: the mixture is the member's Gaussian, so every ensemble metric equals member 0's; epistemic is 0."""
    generator = torch.Generator().manual_seed(SEED)
    means, variances = torch.randn(1, 50, generator=generator), torch.rand(1, 50, generator=generator) + 0.1
    targets = torch.randn(50, generator=generator)
    out = regression.member_and_ensemble_metrics(means, variances, targets, "test")
    for name in ("nll", "rmse", "coverage_90", "interval_calibration_error"):
        assert out[f"test/ensemble/{name}"] == pytest.approx(out[f"test/member_0/{name}"], abs=1e-12)
    assert out["test/epistemic_variance"] == 0 and out["test/epistemic_fraction"] == 0


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(BadInput, match="expected \\(k, N\\)"):
        regression.member_and_ensemble_metrics(torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(4), "test")


def test_toy_has_training_clusters_outside_the_gap_and_a_shift_set_inside_it():
    """Pool and test x in [−3, −1] ∪ [1, 3]; shift x in (−1, 1); the same draw on every call (TOY_SEED)."""
    data = regression.load("toy-gap")
    for inputs, _ in (data.pool, data.test):
        assert bool(((inputs.abs() >= 1) & (inputs.abs() <= 3)).all())
    assert bool((data.shift[0].abs() < 1).all())
    regression.load.cache_clear()
    assert torch.equal(regression.load("toy-gap").pool[1], data.pool[1])


def test_shift_split_takes_the_values_above_the_quantile():
    """[1..10], quantile 0.8 = 8.2 (linear interpolation): 9 and 10 are shifted."""
    mask = regression.shift_split(np.arange(1, 11, dtype=float), 0.8)
    assert mask.tolist() == [False] * 8 + [True] * 2


def test_diamonds_load_offline_with_carat_shift_and_pool_statistics(monkeypatch):
    """The bundled ggplot2 diamonds (53,940 rows) load with every network connection refused; the shift set is the
    carats above the 80% quantile (raw carat recovered from the standardised column), the rest is split 80/20 into
    pool and test, and the pool is standardised (mean 0, std 1 per feature and target, up to float32 rounding)."""
    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    regression.load.cache_clear()
    data = regression.load("diamonds")
    sizes = [len(part[1]) for part in (data.pool, data.test, data.shift)]
    assert sum(sizes) == 53_940
    inside = sizes[0] + sizes[1]
    assert sizes[1] == round(inside * regression.TEST_FRACTION)
    assert abs(sizes[2] / 53_940 - (1 - regression.SHIFT_QUANTILE)) < 0.01  # ties at the quantile move a few rows
    pool_x, pool_y = data.pool
    assert torch.allclose(pool_x.double().mean(0), torch.zeros(9, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(pool_x.double().std(0, unbiased=False), torch.ones(9, dtype=torch.float64), atol=1e-4)
    assert abs(pool_y.double().mean().item()) < 1e-4
    carat = regression.DIAMOND_FEATURES.index("carat")
    assert data.shift[0][:, carat].min() > max(pool_x[:, carat].max(), data.test[0][:, carat].max())
    regression.load.cache_clear()


def test_regression_task_owns_loss_score_and_data():
    """task_for picks the task from the data set; the regression score is the summed squared error of the means."""
    config = Config(dataset="toy-gap", method="single", widths=(8,), n_train=32, val_fraction=0.5)
    task = tasks.task_for(config)
    assert task is tasks.REGRESSION and config.task == "regression"
    assert tasks.task_for(Config()) is tasks.CLASSIFICATION
    outputs = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]])
    assert task.score_sum(outputs, torch.tensor([0.0, 1.0])) == pytest.approx(1.0 + 4.0)
    (train_x, train_y), (val_x, _) = task.training_data(config)
    assert train_x.shape == (32, 1) and train_y.dtype == torch.float32 and len(val_x) == 500


def test_regression_config_needs_an_mlp_and_no_ood_set():
    with pytest.raises(BadInput, match="arch='vit' is not valid for the regression data set"):
        Config(dataset="toy-gap", arch="vit")
    with pytest.raises(BadInput, match="ood_dataset='mnist' is not valid for regression"):
        Config(dataset="diamonds", ood_dataset="mnist")
    assert Config(dataset="diamonds").model_spec().in_shape == (9,)
    assert Config(dataset="diamonds").model_spec().num_classes == regression.OUTPUTS


@pytest.mark.slow
def test_toy_run_trains_evaluates_and_saves_bands(tmp_path):
    """End to end (seconds): a BE run on the toy trains, evaluates test and shift (no OOD) and stores each member's
    predictive mean and variance on the grid for the figure."""
    from empirics.analysis import diversity
    from empirics.runs.evaluate import evaluate_run
    from empirics.runs.train import train

    config = Config(dataset="toy-gap", method="batchensemble", widths=(16,), epochs=2, batch_size=64, n_train=128,
                    threads=1, patience=0)
    final = train(config, tmp_path)
    assert {"test/ensemble/rmse", "test/epistemic_variance"} <= final.keys()
    evaluated = evaluate_run(tmp_path)
    assert "shift/ensemble/nll" in evaluated and not any(key.startswith("ood/") for key in evaluated)
    analysed = diversity.analyse_run(tmp_path, samples=64)
    bands = analysed["curves"]["bands"]
    assert len(bands["member_mean"]) == 4 and len(bands["x"]) == regression.TOY_SIZES["grid"]
    assert min(min(row) for row in bands["member_variance"]) > 0
