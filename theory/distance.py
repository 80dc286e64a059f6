"""How far is a tuple of member kernels from the BatchEnsemble set? Two answers (docs/theory.md §7, §8).

1. **Log-contrasts** (rank 1, exact, linear in log space). On the torus a rank-1 BE point satisfies
   ``log|X_i| = log|W| + Σ_j log|F_j[i, x_j]|``, so ``D_i = L_i − L_0`` (``L = log|X|``, member 0 as reference) is an
   additive function of the block indices. With the corner point ``e_j(x)`` (block ``j`` at ``x``'s index, every other
   mode at 0) the contrasts

       g_i[x] = D_i[x] − Σ_j D_i[e_j(x)] + (t − 1) D_i[0],     i = 1..k−1,

   vanish identically on ``1 + Σ_j (D_j − 1)`` corner entries and leave ``(k−1)(D − 1 − Σ_j (D_j − 1))`` = codim free
   ones. For a dense layer this is ``g_iab = D_i[a,b] − D_i[a,0] − D_i[0,b] + D_i[0,0]`` of docs/theory.md §7. X is a BE
   torus point iff every contrast is 0 **and** the sign ratios ``sign(X_i X_0)`` obey the same rule over GF(2).
2. **Euclidean distance** ``min ‖X − Φ(W, F)‖`` over the rank-r BE set, by alternating least squares: for fixed
   factors the best ``W`` is entrywise ``W[x] = Σ_i X_i[x] M_i[x] / Σ_i M_i[x]²``; for fixed ``W`` and the other blocks
   each member's block factor solves one ``r × r`` normal equation per block index. Every step is an exact block
   minimisation, so the residual never increases; rank ``r`` is warm-started from rank ``r − 1`` (new column with a
   zero in block 0 leaves the point unchanged), which makes the distance non-increasing in the rank.

Weights come as plain tensors ``(k, out, in)`` or ``(k, out, in, h, w)``; the factor layout is that of
``theory.batchensemble`` (``(k, r, D_j)`` per block). All arithmetic is float64 and vectorised (no loop over entries).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from infra.errors import BadInput, require_int_in_range
from theory.batchensemble import (BatchEnsembleSpec, flatten_params, jacobian, member_weights, multipliers,
                                  unflatten_params)

DEFAULT_MAX_ITER = 300
RELATIVE_DECREASE_TOL = 1e-9  # stop when one step lowers ‖X − Φ‖² by less than this fraction
EXACT_FIT_TOL = 1e-14  # relative residual treated as an exact fit (float64 round-off)
ALS_SWEEPS_BEFORE_POLISH = 20  # ALS finds the basin; Levenberg–Marquardt converges quadratically inside it
POLISH_MAX_JACOBIAN_ENTRIES = 4_000_000  # dense kD × #params Jacobian (32 MB); larger layers use ALS only


@dataclass(frozen=True)
class DistanceResult:
    """A least-squares projection of ``X`` onto the rank-r BE set of ``spec``."""

    spec: BatchEnsembleSpec
    distance: float  # ‖X − proj‖ (Euclidean, all members)
    relative_residual: float  # ‖X − proj‖ / ‖X‖
    weight: torch.Tensor  # fitted slow weight W, kernel shape
    factors: tuple[torch.Tensor, ...]  # fitted fast factors, (k, r, D_j) each
    projection: torch.Tensor  # Φ(W, F), shape (k, *kernel)
    iterations: int  # ALS sweeps of the best start
    start_distances: tuple[float, ...] = field(default=())  # final distance of every start, in start order

    def as_dict(self) -> dict:
        return {"kernel_shape": list(self.spec.kernel_shape), "members": self.spec.members, "rank": self.spec.rank,
                "variant": self.spec.variant, "distance": self.distance, "relative_residual": self.relative_residual,
                "iterations": self.iterations, "start_distances": list(self.start_distances)}


@dataclass(frozen=True)
class LogContrasts:
    """Rank-1 log-contrasts ``g`` (``(k−1, D)``, zero on the corner entries) and the sign condition."""

    spec: BatchEnsembleSpec
    contrasts: torch.Tensor  # (k−1, *kernel); corner entries are identically 0
    free_mask: torch.Tensor  # bool, kernel shape: entries whose contrast is a free coordinate
    sign_violations: torch.Tensor  # bool (k−1, *kernel): sign ratio inconsistent with a BE point
    on_torus: bool  # every entry of X nonzero

    @property
    def values(self) -> torch.Tensor:
        """The ``(k−1)·#free`` independent contrasts, flattened member-major."""
        return self.contrasts[:, self.free_mask]

    @property
    def num_contrasts(self) -> int:
        return int(self.values.numel())

    @property
    def max_abs(self) -> float:
        return float(self.values.abs().max()) if self.num_contrasts else 0.0

    @property
    def signs_consistent(self) -> bool:
        return not bool(self.sign_violations.any())

    def as_dict(self) -> dict:
        return {"num_contrasts": self.num_contrasts, "max_abs_contrast": self.max_abs,
                "signs_consistent": self.signs_consistent, "sign_violations": int(self.sign_violations.sum()),
                "on_torus": self.on_torus}


# ---------------------------------------------------------------- validation


def validate_weights(weights: torch.Tensor | np.ndarray, min_members: int = 2) -> torch.Tensor:
    """``weights`` as float64 ``(k, out, in[, h, w])`` with k >= ``min_members`` and finite entries, else BadInput."""
    if isinstance(weights, np.ndarray):
        weights = torch.from_numpy(weights)
    if not isinstance(weights, torch.Tensor):
        raise BadInput(f"weights of type {type(weights).__name__} are not valid: expected a tensor (k, out, in[, h, w])")
    if weights.dim() not in (3, 5):
        raise BadInput(f"weights shape {tuple(weights.shape)} is not valid: expected (k, out, in) or (k, out, in, h, w)")
    if weights.numel() == 0:
        raise BadInput(f"weights shape {tuple(weights.shape)} is empty: every size must be >= 1")
    if weights.shape[0] < min_members:
        raise BadInput(f"members k={weights.shape[0]} is out of range: expected k >= {min_members} for a distance")
    weights = weights.detach().to(torch.float64)
    if not bool(torch.isfinite(weights).all()):
        bad = int((~torch.isfinite(weights)).sum())
        raise BadInput(f"weights contain {bad} NaN/Inf entries: expected finite values")
    return weights


def _spec_for(weights: torch.Tensor, rank: int, variant: str) -> BatchEnsembleSpec:
    return BatchEnsembleSpec(tuple(weights.shape[1:]), members=weights.shape[0], rank=rank, variant=variant)


# ---------------------------------------------------------------- block bookkeeping


def _block_first(spec: BatchEnsembleSpec, tensor: torch.Tensor, block_index: int, lead: int) -> torch.Tensor:
    """View ``tensor`` (``lead`` leading axes, then the kernel modes) as ``(*lead, D_j, rest)``, block j's modes first."""
    block = spec.blocks[block_index]
    others = [d for d in range(len(spec.kernel_shape)) if d not in block]
    order = list(range(lead)) + [lead + d for d in block] + [lead + d for d in others]
    moved = tensor.permute(order)
    return moved.reshape(*tensor.shape[:lead], spec.block_sizes[block_index], -1)


def _corner_index(spec: BatchEnsembleSpec, block_index: int) -> torch.Tensor:
    """For every flat kernel index x, the flat index of the corner e_j(x): block j at x's index, every other mode 0."""
    grids = torch.meshgrid(*[torch.arange(n) for n in spec.kernel_shape], indexing="ij")
    strides = torch.tensor([int(np.prod(spec.kernel_shape[d + 1:])) for d in range(len(spec.kernel_shape))])
    flat = torch.zeros(spec.kernel_shape, dtype=torch.long)
    for d in spec.blocks[block_index]:
        flat = flat + grids[d] * strides[d]
    return flat.reshape(-1)


def _corner_mask(spec: BatchEnsembleSpec) -> torch.Tensor:
    """True on the ``1 + Σ_j (D_j − 1)`` entries where the contrast vanishes identically (x = e_j(x) for some j)."""
    flat = torch.arange(spec.kernel_size)
    corner = torch.zeros(spec.kernel_size, dtype=torch.bool)
    for j in range(len(spec.blocks)):
        corner |= _corner_index(spec, j) == flat
    return corner.reshape(spec.kernel_shape)


# ---------------------------------------------------------------- log-contrasts


def _additive_residual(spec: BatchEnsembleSpec, values: torch.Tensor) -> torch.Tensor:
    """values[x] − Σ_j values[e_j(x)] + (t − 1) values[0], per leading member axis (linear map of docs/theory.md §7)."""
    flat = values.reshape(values.shape[0], -1)
    fitted = -(len(spec.blocks) - 1) * flat[:, :1]
    for j in range(len(spec.blocks)):
        fitted = fitted + flat[:, _corner_index(spec, j)]
    return (flat - fitted).reshape(values.shape)


def log_contrasts(weights: torch.Tensor | np.ndarray, variant: str = "channel-wise") -> LogContrasts:
    """The rank-1 log-contrasts g and the sign condition of ``weights`` ``(k, out, in[, h, w])`` (module docstring).

    Zero entries are off the torus: their logarithm is −inf, so they yield ±inf/NaN contrasts and ``on_torus=False``.
    """
    weights = validate_weights(weights)
    spec = _spec_for(weights, 1, variant)
    logs = torch.log(weights.abs())
    ratios = logs[1:] - logs[:1]
    contrasts = _additive_residual(spec, ratios)
    sign_bits = ((weights[1:] < 0) ^ (weights[:1] < 0)).to(torch.int64)  # sign ratio over GF(2)
    violations = torch.remainder(_additive_residual(spec, sign_bits), 2) != 0
    free = ~_corner_mask(spec)
    return LogContrasts(spec, contrasts, free, violations, bool((weights != 0).all()))


# ---------------------------------------------------------------- ALS steps


def _objective(weights: torch.Tensor, weight: torch.Tensor, mult: torch.Tensor) -> float:
    return float(((weights - weight.unsqueeze(0) * mult) ** 2).sum())


def _update_weight(weights: torch.Tensor, mult: torch.Tensor) -> torch.Tensor:
    """W[x] = Σ_i X_i[x] M_i[x] / Σ_i M_i[x]² (0 where every multiplier vanishes: any W is optimal there)."""
    numerator = (weights * mult).sum(0)
    denominator = (mult * mult).sum(0)
    return torch.where(denominator > 0, numerator / torch.where(denominator > 0, denominator, 1.0), 0.0)


def _update_factor(spec: BatchEnsembleSpec, weights: torch.Tensor, weight: torch.Tensor,
                   factors: list[torch.Tensor], j: int) -> torch.Tensor:
    """Best F_j given W and the other blocks: for each (i, c), min_f Σ_{x: x_j = c} (X_i[x] − Σ_q f_q A_q[x])².

    A[i, q, x] = W[x] Π_{l ≠ j} F_l[i, q, x_l]; normal equations G f = b with G = AᵀA (r × r), b = AᵀX_i, solved
    by batched least squares (minimum-norm when G is singular, so the step stays an exact minimiser).
    """
    k, r = spec.members, spec.rank
    design = weight.expand(k, r, *spec.kernel_shape)
    for index, factor in enumerate(factors):
        if index != j:
            design = design * factor.reshape(k, r, *spec.block_view_shape(index))
    design = _block_first(spec, design, j, lead=2)  # (k, r, D_j, rest)
    target = _block_first(spec, weights, j, lead=1)  # (k, D_j, rest)
    if r == 1:  # elementwise: the scalar normal equation of every (i, c)
        gram = (design[:, 0] ** 2).sum(-1)
        rhs = (design[:, 0] * target).sum(-1)
        solution = torch.where(gram > 0, rhs / torch.where(gram > 0, gram, 1.0), 0.0)
        return solution.unsqueeze(1)  # (k, 1, D_j)
    gram = torch.einsum("iqcz,ipcz->icqp", design, design)
    rhs = torch.einsum("iqcz,icz->icq", design, target)
    solution = torch.linalg.lstsq(gram, rhs.unsqueeze(-1), driver="gelsd").solution[..., 0]
    return solution.permute(0, 2, 1).contiguous()  # (k, r, D_j)


def _rebalance(weight: torch.Tensor, factors: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Remove the scaling drift of ALS without moving the point: unit-RMS columns in blocks ≥ 1, RMS-1 block 0."""
    factors = list(factors)
    for j in range(1, len(factors)):
        scale = factors[j].pow(2).mean(-1, keepdim=True).sqrt()
        scale = torch.where(scale > 0, scale, 1.0)
        factors[j] = factors[j] / scale
        factors[0] = factors[0] * scale
    overall = float(factors[0].pow(2).mean().sqrt())
    if overall > 0:
        factors[0] = factors[0] / overall
        weight = weight * overall
    return weight, factors


def _als(spec: BatchEnsembleSpec, weights: torch.Tensor, weight: torch.Tensor, factors: Sequence[torch.Tensor],
         max_iter: int) -> tuple[torch.Tensor, list[torch.Tensor], float, int]:
    """Alternating least squares from (W, F); returns the final point, its squared residual and the sweeps used."""
    factors = list(factors)
    scale = float((weights ** 2).sum())
    mult = multipliers(spec, factors)
    weight = _update_weight(weights, mult)
    objective = _objective(weights, weight, mult)
    iterations = 0
    while iterations < max_iter and objective > (EXACT_FIT_TOL ** 2) * scale:
        for j in range(len(factors)):
            factors[j] = _update_factor(spec, weights, weight, factors, j)
        weight, factors = _rebalance(weight, factors)
        mult = multipliers(spec, factors)
        weight = _update_weight(weights, mult)
        new_objective = _objective(weights, weight, mult)
        iterations += 1
        converged = objective - new_objective <= RELATIVE_DECREASE_TOL * objective
        objective = min(objective, new_objective)
        if converged:
            break
    return weight, factors, objective, iterations


def _levenberg_marquardt(spec: BatchEnsembleSpec, weights: torch.Tensor, weight: torch.Tensor,
                         factors: Sequence[torch.Tensor], max_iter: int) -> tuple[torch.Tensor, list[torch.Tensor], float, int]:
    """Damped Gauss–Newton on θ = (W, F): (JᵀJ + λ(diag JᵀJ + δ)) Δ = −Jᵀ(Φ(θ) − X), a step kept only if it lowers
    the residual (so, like ALS, it never increases the distance). J is ``theory.batchensemble.jacobian``; the small
    dense algebra runs in numpy (torch's threaded BLAS is slow on matrices this small)."""
    theta = flatten_params(weight, factors)
    target = weights.reshape(-1)

    def residual_at(point: torch.Tensor) -> np.ndarray:
        return (member_weights(spec, *unflatten_params(spec, point)).reshape(-1) - target).numpy()

    residual = residual_at(theta)
    objective = float(residual @ residual)
    floor = (EXACT_FIT_TOL ** 2) * float(target @ target)
    damping, iterations = 1e-3, 0
    while iterations < max_iter and objective > floor:
        jac = jacobian(spec, *unflatten_params(spec, theta)).numpy()
        normal = jac.T @ jac
        gradient = jac.T @ residual
        diagonal = np.diag(normal) + 1e-12 * np.diag(normal).max()
        iterations += 1
        improved = False
        while damping < 1e12 and not improved:
            step = np.linalg.solve(normal + np.diag(damping * diagonal), -gradient)
            trial = theta + torch.from_numpy(step)
            trial_residual = residual_at(trial)
            trial_objective = float(trial_residual @ trial_residual)
            improved = trial_objective < objective
            damping = max(damping / 3, 1e-12) if improved else damping * 4
        if not improved:
            break
        decrease = objective - trial_objective
        theta, residual, objective = trial, trial_residual, trial_objective
        if decrease <= RELATIVE_DECREASE_TOL * objective:
            break
    weight, factors = unflatten_params(spec, theta)
    return weight, list(factors), objective, iterations


def _fit(spec: BatchEnsembleSpec, weights: torch.Tensor, weight: torch.Tensor, factors: Sequence[torch.Tensor],
         max_iter: int) -> tuple[torch.Tensor, list[torch.Tensor], float, int]:
    """ALS; for rank >= 2 on layers whose dense Jacobian fits in memory, a few ALS sweeps then Levenberg–Marquardt
    (rank-r ALS crawls along the GL_r symmetry directions; rank-1 ALS converges fast from the log-fit start)."""
    if spec.rank == 1 or spec.ambient_dim * spec.num_params > POLISH_MAX_JACOBIAN_ENTRIES:
        return _als(spec, weights, weight, factors, max_iter)
    weight, factors, _, sweeps = _als(spec, weights, weight, factors, min(max_iter, ALS_SWEEPS_BEFORE_POLISH))
    weight, factors, objective, steps = _levenberg_marquardt(spec, weights, weight, factors, max_iter)
    return weight, factors, objective, sweeps + steps


# ---------------------------------------------------------------- starting points


def _safe_log_abs(weights: torch.Tensor) -> torch.Tensor:
    """log|X| with exact zeros replaced by the smallest nonzero magnitude (the log-fit is only a starting point)."""
    magnitude = weights.abs()
    positive = magnitude[magnitude > 0]
    floor = float(positive.min()) if positive.numel() else 1.0
    return torch.log(torch.clamp(magnitude, min=floor))


def _log_fit_start(spec: BatchEnsembleSpec, weights: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Rank-1 start, exact on BE torus points: least squares of log|X_i[x]| = log|W[x]| + Σ_j log|F_j[i, x_j]|.

    The model is a balanced main-effects design, so the fit is closed form: log|W| = mean_i L_i, and each block
    effect is the marginal mean of the member-centred logs minus the member's grand mean (added back to block 0).
    Signs: W takes sign(X_0); each factor's sign is a majority vote of the sign ratios (exact on BE points).
    """
    k = spec.members
    logs = _safe_log_abs(weights)
    log_weight = logs.mean(0)
    centred = logs - log_weight
    grand = centred.reshape(k, -1).mean(1)
    log_factors = []
    for j in range(len(spec.blocks)):
        marginal = _block_first(spec, centred, j, lead=1).mean(-1)  # (k, D_j)
        log_factors.append(marginal - grand[:, None] + (grand[:, None] if j == 0 else 0.0))
    weight = torch.exp(log_weight) * torch.where(weights[0] < 0, -1.0, 1.0)
    signs = _majority_signs(spec, weights * weight.sign())
    factors = [(torch.exp(lf) * sign).unsqueeze(1) for lf, sign in zip(log_factors, signs)]
    return weight, factors


def _majority_signs(spec: BatchEnsembleSpec, ratio: torch.Tensor) -> list[torch.Tensor]:
    """Block signs σ_j[i, c] with sign(ratio_i[x]) ≈ Π_j σ_j[i, x_j]; σ_j[i, 0] = +1 for j ≥ 1 (majority votes)."""
    sign = torch.where(ratio < 0, -1.0, 1.0)
    signs = []
    for j in range(1, len(spec.blocks)):
        blocked = _block_first(spec, sign, j, lead=1)  # (k, D_j, rest)
        signs.append(torch.where((blocked * blocked[:, :1]).sum(-1) < 0, -1.0, 1.0))
    others = sign
    for offset, sigma in enumerate(signs, start=1):
        others = others * sigma.reshape(spec.members, *spec.block_view_shape(offset))
    first = torch.where(_block_first(spec, others, 0, lead=1).sum(-1) < 0, -1.0, 1.0)
    return [first] + signs


def _svd_start(spec: BatchEnsembleSpec, weights: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]] | None:
    """Two-block variants: W = member mean, M_i = best constant-over-broadcast ratio X_i ⊘ W, truncated rank-r SVD."""
    if len(spec.blocks) != 2:
        return None
    weight = weights.mean(0)
    numerator = _block_first(spec, weights * weight, 0, lead=1)  # block 0 first: (k, D_0, rest)
    denominator = _block_first(spec, (weight * weight).unsqueeze(0), 0, lead=1)
    d0, d1 = spec.block_sizes
    numerator = numerator.reshape(spec.members, d0, d1, -1).sum(-1)
    denominator = denominator.reshape(1, d0, d1, -1).sum(-1)
    ratio = torch.where(denominator > 0, numerator / torch.where(denominator > 0, denominator, 1.0), 0.0)
    u, s, vh = torch.linalg.svd(ratio, full_matrices=False)
    r = spec.rank
    root = s[:, :r].sqrt()
    first = (u[:, :, :r] * root[:, None, :]).permute(0, 2, 1)
    second = vh[:, :r, :] * root[:, :, None]
    return weight, [first.contiguous(), second.contiguous()]


def _random_start(spec: BatchEnsembleSpec, weights: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """W = member mean, fast factors ~ N(1, 0.5) (torch-uncertainty's init)."""
    factors = [1 + 0.5 * torch.randn(shape, generator=generator, dtype=torch.float64) for shape in spec.factor_shapes]
    return weights.mean(0), factors


def _warm_start(spec: BatchEnsembleSpec, previous: DistanceResult,
                generator: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Rank r from rank r − 1: append a column that is 0 in block 0 (the point is unchanged) and random elsewhere."""
    factors = []
    for j, factor in enumerate(previous.factors):
        k, _, size = factor.shape
        extra = (torch.zeros(k, 1, size, dtype=torch.float64) if j == 0
                 else 1 + 0.5 * torch.randn(k, 1, size, generator=generator, dtype=torch.float64))
        factors.append(torch.cat([factor, extra], dim=1))
    return previous.weight, factors


# ---------------------------------------------------------------- projection


def _project(spec: BatchEnsembleSpec, weights: torch.Tensor, starts: int, max_iter: int,
             generator: torch.Generator, previous: DistanceResult | None) -> DistanceResult:
    candidates = [_warm_start(spec, previous, generator) if previous is not None else _log_fit_start(spec, weights)]
    svd = _svd_start(spec, weights)
    if svd is not None and starts > 1:
        candidates.append(svd)
    while len(candidates) < starts:
        candidates.append(_random_start(spec, weights, generator))
    norm = float(weights.norm())
    best = None
    finals = []
    for weight, factors in candidates[:max(starts, 1)]:
        weight, factors, objective, iterations = _fit(spec, weights, weight, factors, max_iter)
        finals.append(objective ** 0.5)
        if best is None or objective < best[2]:
            best = (weight, factors, objective, iterations)
    weight, factors, objective, iterations = best
    projection = member_weights(spec, weight, factors)
    distance = float((weights - projection).norm())
    return DistanceResult(spec, distance, distance / norm if norm > 0 else 0.0, weight, tuple(factors), projection,
                          iterations, tuple(finals))


def distance_by_rank(weights: torch.Tensor | np.ndarray, max_rank: int, variant: str = "channel-wise",
                     starts: int = 3, seed: int = 0, max_iter: int = DEFAULT_MAX_ITER) -> list[DistanceResult]:
    """Projections for ranks 1..max_rank, rank r warm-started from rank r − 1's best (so distances never increase)."""
    weights = validate_weights(weights)
    starts = require_int_in_range("starts", starts, 1)
    max_iter = require_int_in_range("max_iter", max_iter, 1)
    last = _spec_for(weights, 1, variant)
    require_int_in_range("rank", max_rank, 1, last.max_rank)
    generator = torch.Generator().manual_seed(int(seed))
    results: list[DistanceResult] = []
    for rank in range(1, max_rank + 1):
        spec = _spec_for(weights, rank, variant)
        results.append(_project(spec, weights, starts, max_iter, generator, results[-1] if results else None))
    return results


def distance_to_batchensemble(weights: torch.Tensor | np.ndarray, rank: int = 1, variant: str = "channel-wise",
                              starts: int = 3, seed: int = 0, max_iter: int = DEFAULT_MAX_ITER) -> DistanceResult:
    """Euclidean distance from ``weights`` ``(k, out, in[, h, w])`` to the rank-``rank`` BE set of ``variant``.

    ``starts`` ALS runs (log-fit or warm start, truncated SVD of X_i ⊘ W, random), best kept; float64 throughout.
    ``distance`` is ‖X − proj‖, ``relative_residual`` ‖X − proj‖/‖X‖. A local minimum of a non-convex problem: the
    value is an upper bound on the true distance, exact (round-off) on BE points, where the rank-1 start is exact.

    >>> X = torch.ones(2, 3, 3, dtype=torch.float64)
    >>> distance_to_batchensemble(X).distance < 1e-12
    True
    """
    return distance_by_rank(weights, rank, variant, starts, seed, max_iter)[-1]


# ---------------------------------------------------------------- many small dense points at once (ε-tube sampling)

BATCH_SWEEPS = 300  # most ALS sweeps of the batched rank-1 projection (each a few elementwise ops on (N, k, m, n))
BATCH_CHECK_EVERY = 10  # sweeps between convergence checks of the batched projection


def _batched_als(points: torch.Tensor, right: torch.Tensor, sweeps: int) -> torch.Tensor:
    """Rank-1 dense ALS on N points at once from the column factors ``right`` (N, k, n); returns ‖X − Φ‖ per point.

    The same exact block minimisations as ``_als`` (W, then r_i, then s_i, elementwise normal equations), vectorised
    over the leading sample axis; the residual never increases. Every ``BATCH_CHECK_EVERY`` sweeps the points whose
    squared residual fell by at most ``RELATIVE_DECREASE_TOL`` (relative) are final and leave the batch."""
    def safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
        return torch.where(denominator > 0, numerator / torch.where(denominator > 0, denominator, 1.0), 0.0)

    def residual(x, left, right):
        mult = left[..., :, None] * right[..., None, :]
        weight = safe_divide((x * mult).sum(1), (mult * mult).sum(1))
        return (x - weight[:, None] * mult).flatten(1).pow(2).sum(1)

    result = residual(points, torch.ones(points.shape[:3], dtype=torch.float64), right)
    active = torch.arange(points.shape[0])
    x, left, previous = points, torch.ones(points.shape[:3], dtype=torch.float64), result.clone()
    for sweep in range(sweeps):
        mult = left[..., :, None] * right[..., None, :]
        weight = safe_divide((x * mult).sum(1), (mult * mult).sum(1))
        design = weight[:, None] * right[..., None, :]  # r_i[a] · (W[a, b] s_i[b])
        left = safe_divide((x * design).sum(-1), (design * design).sum(-1))
        design = weight[:, None] * left[..., :, None]
        right = safe_divide((x * design).sum(-2), (design * design).sum(-2))
        scale = right.pow(2).mean(-1, keepdim=True).sqrt()  # rebalance: unit-RMS s_i, the point is unchanged
        scale = torch.where(scale > 0, scale, 1.0)
        right, left = right / scale, left * scale
        if (sweep + 1) % BATCH_CHECK_EVERY == 0 or sweep == sweeps - 1:
            current = residual(x, left, right)
            result[active] = torch.minimum(result[active], current)
            going = previous - current > RELATIVE_DECREASE_TOL * previous
            if not bool(going.any()):
                break
            active, x, left, right, previous = active[going], x[going], left[going], right[going], current[going]
    return result.clamp_min(0).sqrt()


def rank1_dense_distances(points: torch.Tensor, starts: int = 3, seed: int = 0,
                          sweeps: int = BATCH_SWEEPS) -> torch.Tensor:
    """Euclidean distances of N dense member tuples ``points`` (N, k, m, n) to the rank-1 BE set, best of ``starts``.

    Starts: column factors from the log-fit (exact on BE torus points: s_i[b] = exp(mean_a (L_i − mean_j L_j)[a, b])
    with the sign of the column-majority sign ratio), the truncated SVD of X_i ⊘ mean_j X_j, then N(1, 0.5) draws. The batched twin of
    ``distance_to_batchensemble`` (rank 1, dense), tested against it point by point; like it, an upper bound on the
    distance, ≤ 1e-8·‖X‖ on BE points (the start is exact in the column factors only; ALS converges linearly).
    """
    if points.dim() != 4 or points.shape[1] < 2:
        raise BadInput(f"points shape {tuple(points.shape)} is not valid: expected (N, k, m, n) with k >= 2")
    starts = require_int_in_range("starts", starts, 1)
    points = points.to(torch.float64)
    generator = torch.Generator().manual_seed(int(seed))
    magnitude = points.abs()
    logs = torch.log(torch.clamp(magnitude, min=float(magnitude[magnitude > 0].min()) if (magnitude > 0).any() else 1.0))
    centred = logs - logs.mean(1, keepdim=True)
    sign = torch.where(points * points[:, :1] < 0, -1.0, 1.0)  # sign ratio to member 0
    column_sign = torch.where((sign * sign[..., :1]).sum(-2) < 0, -1.0, 1.0)
    best = _batched_als(points, torch.exp(centred.mean(-2)) * column_sign, sweeps)
    if starts > 1:  # truncated SVD of X_i ⊘ mean_j X_j (``_svd_start``)
        weight = points.mean(1, keepdim=True)
        ratio = torch.where(weight != 0, points / torch.where(weight != 0, weight, 1.0), 0.0)
        _, singular, vh = torch.linalg.svd(ratio, full_matrices=False)
        best = torch.minimum(best, _batched_als(points, vh[..., 0, :] * singular[..., :1].sqrt(), sweeps))
    for _ in range(starts - 2):
        right = 1 + 0.5 * torch.randn(points.shape[0], points.shape[1], points.shape[3], generator=generator,
                                      dtype=torch.float64)
        best = torch.minimum(best, _batched_als(points, right, sweeps))
    return best
