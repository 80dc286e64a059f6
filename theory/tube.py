"""ε-tubes around the rank-1 BatchEnsemble set: P(dist(X, BE) < ε) ~ C·ε^codim for X ~ N(0, I_{kD}) (docs/theory.md §8).

**Distance used:** the log-contrast sup-norm with the sign condition, ``d(X) = ‖g(X)‖_∞`` if the sign ratios of X are
those of a BE point, else ``+∞`` (``theory.distance.log_contrasts``). Why this one and not the Euclidean distance:

* the g are local coordinates transverse to the BE torus points (full-rank Jacobian, docs/theory.md §7), so the tube
  {d < ε} and the Euclidean tube are comparable near the set (each contains a constant multiple of the other
  locally) and have the same exponent, the codimension;
* every dependent entry ``X_i[x]`` (i ≥ 1, x a non-corner entry) enters exactly one contrast, with coefficient 1:
  ``log|X_i[x]| = f_i[x] + g_i[x]`` with ``f`` a function of the other ("free") entries only. So the tube is, given
  the free entries, a product of intervals, and importance sampling can put *every* sample inside it.

**Importance sampling.** Proposal q: free entries ~ N(0, 1) (the target), each dependent entry with the sign a BE point
requires and log-magnitude ``f + ε·u``, ``u ~ U(−1, 1)``. Every proposal lies in the tube, and the weight
``w = p/q = Π_dep φ(x)·2ε·|x|`` (φ the standard normal density; ``1/(2ε|x|)`` is the proposal density of x) makes
``mean(w)`` an unbiased estimate of P(d(X) < ε) with bounded relative variance as ε → 0, so codim 4 and above need
no brute force. The same (free, u) draws serve every ε (common random numbers), so the log-log curve is smooth and the
bootstrap (resampling draws) gives a confidence interval for the fitted slope.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from infra.errors import BadInput, require_int_in_range
from theory.batchensemble import BatchEnsembleSpec
from theory.dimension import codim
from theory.distance import _corner_index, _corner_mask, rank1_dense_distances

TUBE_CASES = ((2, 2, 2), (3, 2, 2), (2, 2, 3), (4, 2, 2), (2, 3, 3))
DEFAULT_EPSILONS = tuple(float(e) for e in np.logspace(-3, -1, 9))
DEFAULT_SAMPLES = 20_000
FULL_SAMPLES = 400_000
BOOTSTRAP_RESAMPLES = 400
CONFIDENCE = 0.95
LOG_NORMAL_CONSTANT = -0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class TubeResult:
    members: int
    out: int
    inp: int
    codim: int
    epsilons: list[float]
    probabilities: list[float]  # importance-sampling estimate of P(d(X) < ε)
    standard_errors: list[float]
    slope: float  # least-squares slope of log P vs log ε
    slope_ci: tuple[float, float]  # bootstrap percentile interval at CONFIDENCE
    samples: int  # proposal draws (shared by every ε)
    seconds: float
    seed: int
    distance: str = "log-contrast sup-norm with sign condition"

    @property
    def case(self) -> tuple[int, int, int]:
        return (self.members, self.out, self.inp)

    def as_dict(self) -> dict:
        return asdict(self) | {"case": list(self.case), "confidence": CONFIDENCE}


def _validate(members: int, out: int, inp: int, epsilons, samples: int) -> tuple[BatchEnsembleSpec, np.ndarray]:
    require_int_in_range("members", members, 2)
    require_int_in_range("out", out, 1)
    require_int_in_range("in", inp, 1)
    require_int_in_range("samples", samples, 1)
    eps = np.asarray(list(epsilons), dtype=np.float64)
    if eps.size < 2:
        raise BadInput(f"epsilons={eps.tolist()} is not valid: expected at least two values in (0, 1]")
    if not np.all(np.isfinite(eps)) or np.any(eps <= 0) or np.any(eps > 1):
        raise BadInput(f"epsilons={eps.tolist()} is not valid: every ε must lie in (0, 1]")
    spec = BatchEnsembleSpec((out, inp), members=members)
    if codim(spec) == 0:
        raise BadInput(f"(k, m, n)=({members}, {out}, {inp}) has codim 0: the BE set fills, no tube to measure "
                       "(expected k >= 2, m >= 2, n >= 2)")
    return spec, np.sort(eps)


def _predicted(spec: BatchEnsembleSpec, free: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For every dependent entry (i ≥ 1, non-corner x): f_i[x] (log-magnitude of the BE completion) and its sign.

    f_i[x] = L_0[x] + Σ_j (L_i − L_0)[e_j(x)] − (t − 1)(L_i − L_0)[0], the value that makes g_i[x] = 0; the sign is
    the GF(2) analogue. ``free`` has shape (n, k, D); only its free entries are read.
    """
    logs = torch.log(free.abs())
    negative = (free < 0).to(torch.int64)
    log_ratio = logs[:, 1:] - logs[:, :1]
    sign_ratio = negative[:, 1:] ^ negative[:, :1]
    t = len(spec.blocks)
    fitted = logs[:, :1] - (t - 1) * log_ratio[..., :1]
    sign_bits = negative[:, :1] + (t - 1) * sign_ratio[..., :1]
    for j in range(t):
        corner = _corner_index(spec, j)
        fitted = fitted + log_ratio[..., corner]
        sign_bits = sign_bits + sign_ratio[..., corner]
    return fitted, torch.where(torch.remainder(sign_bits, 2) == 1, -1.0, 1.0).to(torch.float64)


def importance_weights(spec: BatchEnsembleSpec, epsilons: np.ndarray, samples: int,
                       generator: torch.Generator) -> np.ndarray:
    """Weights w[s, e] = p/q of draw s placed in the ε_e-tube (module docstring); mean over s estimates P(d < ε_e)."""
    k, size = spec.members, spec.kernel_size
    dependent = ~_corner_mask(spec).reshape(-1)
    free = torch.randn(samples, k, size, generator=generator, dtype=torch.float64)
    fitted = _predicted(spec, free)[0][..., dependent]  # the proposal's sign is forced; φ is even, so it cancels
    offsets = 2 * torch.rand(fitted.shape, generator=generator, dtype=torch.float64) - 1
    log_weights = []
    for eps in epsilons:
        log_magnitude = fitted + eps * offsets
        value = torch.exp(log_magnitude)
        per_entry = LOG_NORMAL_CONSTANT - 0.5 * value ** 2 + math.log(2 * eps) + log_magnitude
        log_weights.append(per_entry.reshape(samples, -1).sum(1))
    return torch.exp(torch.stack(log_weights, 1)).numpy()


def fit_slope(epsilons: np.ndarray, probabilities: np.ndarray) -> float:
    """Least-squares slope of log P against log ε."""
    return float(np.polyfit(np.log(epsilons), np.log(probabilities), 1)[0])


def bootstrap_slopes(epsilons: np.ndarray, weights: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Slopes refitted on ``resamples`` multinomial resamples of the draws (the same draws for every ε)."""
    samples = weights.shape[0]
    counts = rng.multinomial(samples, np.full(samples, 1.0 / samples), size=resamples).astype(np.float64)
    estimates = counts @ weights / samples  # (resamples, n_eps)
    logs = np.log(estimates)
    centred = np.log(epsilons) - np.log(epsilons).mean()
    return (logs - logs.mean(1, keepdims=True)) @ centred / (centred @ centred)


def tube_probability(members: int, out: int, inp: int, epsilons=DEFAULT_EPSILONS, samples: int = DEFAULT_SAMPLES,
                     seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> TubeResult:
    """Estimate P(‖g(X)‖_∞ < ε, signs ok) for X ~ N(0, I_{kmn}) over ``epsilons`` and fit the log-log slope.

    >>> tube_probability(2, 2, 2, samples=2000).codim
    1
    """
    spec, eps = _validate(members, out, inp, epsilons, samples)
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(int(seed))
    weights = importance_weights(spec, eps, samples, generator)
    probabilities = weights.mean(0)
    errors = weights.std(0, ddof=1) / math.sqrt(samples) if samples > 1 else np.full(len(eps), np.inf)
    slopes = bootstrap_slopes(eps, weights, resamples, np.random.default_rng(seed))
    tail = (1 - CONFIDENCE) / 2
    ci = (float(np.quantile(slopes, tail)), float(np.quantile(slopes, 1 - tail)))
    return TubeResult(members, out, inp, codim(spec), eps.tolist(), probabilities.tolist(), errors.tolist(),
                      fit_slope(eps, probabilities), ci, samples, time.perf_counter() - start, seed)


def brute_force_probability(members: int, out: int, inp: int, epsilon: float, samples: int,
                            seed: int = 0) -> tuple[float, float]:
    """Plain Monte Carlo P(d(X) < ε) and its standard error: the reference the importance sampler must match."""
    spec, _ = _validate(members, out, inp, [epsilon, 1.0], samples)
    generator = torch.Generator().manual_seed(int(seed))
    draws = torch.randn(samples, members, out * inp, generator=generator, dtype=torch.float64)
    probability = float(inside_tube(spec, draws, epsilon).mean())
    return probability, math.sqrt(max(probability * (1 - probability), 1e-300) / samples)


def inside_tube(spec: BatchEnsembleSpec, draws: torch.Tensor, epsilon: float) -> np.ndarray:
    """d(X) < ε for draws (n, k, D): every dependent entry within ε of its BE completion in log-magnitude (that is
    |g_i[x]| < ε) with the sign a BE point requires."""
    dependent = ~_corner_mask(spec).reshape(-1)
    fitted, sign = _predicted(spec, draws)
    actual = draws[:, 1:, dependent]
    close = ((torch.log(actual.abs()) - fitted[..., dependent]).abs() < epsilon) & (actual.sign() == sign[..., dependent])
    return close.reshape(draws.shape[0], -1).all(1).numpy()


# ---------------------------------------------------------------- plain Monte Carlo with the Euclidean distance

PLAIN_SAMPLES = 2_000  # draws per case in ``theory check`` (the codim-1 and a codim-2 case)
PLAIN_SAMPLES_RESULTS = {1: 8_000, 2: 8_000, 3: 16_000, 4: 20_000}  # draws per codim in ``theory results``
PLAIN_MIN_HITS = 25  # smallest ε of the fit: the distance quantile with this many draws inside the tube
PLAIN_MAX_FRACTION = 0.05  # largest ε of the fit: the 5% distance quantile (the small-ε regime of the power law)
PLAIN_POINTS = 8  # log-spaced ε between those two


@dataclass(frozen=True)
class PlainTubeResult:
    """P(dist(X, BE) < ε) by plain Monte Carlo: X ~ N(0, I_{kmn}), Euclidean distance by the ALS projection."""

    members: int
    out: int
    inp: int
    codim: int
    epsilons: list[float]
    probabilities: list[float]  # fraction of draws with distance < ε
    hits: list[int]
    slope: float
    slope_ci: tuple[float, float]
    samples: int
    seconds: float
    seed: int
    distance: str = "Euclidean distance to the rank-1 BE set (batched ALS, 3 starts: an upper bound per draw)"

    def as_dict(self) -> dict:
        return asdict(self) | {"case": [self.members, self.out, self.inp], "confidence": CONFIDENCE,
                               "slope_ci_contains_codim": self.slope_ci[0] <= self.codim <= self.slope_ci[1]}


def plain_tube_probability(members: int, out: int, inp: int, samples: int = PLAIN_SAMPLES, seed: int = 0,
                           resamples: int = BOOTSTRAP_RESAMPLES, chunk: int = 5_000) -> PlainTubeResult:
    """Plain Monte Carlo ε-tube: draw X ~ N(0, I_{kmn}), measure d(X) = min ‖X − Φ(θ)‖ (``rank1_dense_distances``),
    estimate P(d < ε) = #{d < ε}/N on ``PLAIN_POINTS`` log-spaced ε between the ``PLAIN_MIN_HITS``-th smallest distance
    and the ``PLAIN_MAX_FRACTION`` quantile, and fit the slope of log P vs log ε. Nothing here knows the codimension:
    the tube is the Euclidean one and the weights are 1, so the slope is measured (the bootstrap resamples draws).

    >>> plain_tube_probability(2, 2, 2, samples=300, resamples=20).codim
    1
    """
    spec, _ = _validate(members, out, inp, [0.5, 1.0], samples)
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(int(seed))
    distances = []
    for first in tqdm(range(0, samples, chunk), desc=f"plain tube {members}x{out}x{inp}", leave=False,
                      disable=not sys.stderr.isatty()):
        draws = torch.randn(min(chunk, samples - first), members, out, inp, generator=generator, dtype=torch.float64)
        distances.append(rank1_dense_distances(draws, seed=seed + first))
    distance = torch.cat(distances).numpy()
    ordered = np.sort(distance)
    low = ordered[min(PLAIN_MIN_HITS, samples - 1)]
    high = max(np.quantile(distance, PLAIN_MAX_FRACTION), low * 1.5)
    eps = np.logspace(np.log10(low), np.log10(high), PLAIN_POINTS)
    hits = np.searchsorted(ordered, eps, side="left")
    probabilities = hits / samples
    rng = np.random.default_rng(seed)
    slopes = []
    for _ in range(resamples):
        resampled = np.sort(rng.choice(distance, size=samples, replace=True))
        counts = np.searchsorted(resampled, eps, side="left")
        if (counts > 0).all():
            slopes.append(fit_slope(eps, counts / samples))
    tail = (1 - CONFIDENCE) / 2
    ci = (float(np.quantile(slopes, tail)), float(np.quantile(slopes, 1 - tail)))
    return PlainTubeResult(members, out, inp, codim(spec), eps.tolist(), probabilities.tolist(), hits.tolist(),
                           fit_slope(eps, probabilities), ci, samples, time.perf_counter() - start, seed)
