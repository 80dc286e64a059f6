"""Batch functional dimension of ensembles of MLPs: does thinness in parameter space carry over to functions?

F(θ) = all members' outputs on a batch of N inputs; the batch functional dimension is rank ∂F/∂θ (Grigsby et al.
2022; Bona-Pellissier et al. 2024; docs/theory.md §9). An MLP has widths ``n_0, …, n_L``, weights and per-member biases,
activation ``relu``, ``identity`` or ``tanh`` between layers (none after the last). P = Σ_l (n_l n_{l−1} + n_l)
parameters per member, H = Σ_{0<l<L} n_l hidden units.

* Single model: J_1 = ∂f/∂θ_1. Deep Ensemble: J_DE = blockdiag(J_1, …, J_k), so fdim_DE = Σ_i rank J_i.
* Rank-r BatchEnsemble (every layer BE, channel-wise, per-member biases): J_BE = J_DE(Φ(θ))·JΦ(θ), JΦ the
  block-diagonal of ``theory.batchensemble.jacobian`` over layers (identity on the biases).

Certificates (``certify=True``, relu and identity). Weights and inputs are small nonzero integers, BE factors too, and
the biases of layer l are integers plus 2^{−l}: then every pre-activation is a dyadic rational that is never 0 (layer
l's lies in 2^{−l}Z \\ 2^{−l+1}Z), ReLU is differentiable there and 2^L·J is an integer matrix. We check that it is, and
that every partial sum of J_DE·JΦ stays below 2^53, so float64 evaluates it exactly; its rank modulo p is then a
certified lower bound on the rank at that point. Proved upper bounds:

* relu: per member ≤ P − H (the positive rescaling of each hidden unit's incoming weights and bias against its
  outgoing weights is a kH-dimensional group acting on Im Φ with F constant on orbits), so fdim_DE ≤ k(P − H) and
  fdim_BE ≤ dim Im Φ − kH, with dim Im Φ = Σ_l dim(BE layer l) + k·(#biases);
* identity: each member computes an affine map x ↦ Ax + c with rank A ≤ ρ = min_l n_l, a variety of dimension
  ρ(n_0 + n_L − ρ) + n_L; so fdim_DE, fdim_BE ≤ k·(ρ(n_0 + n_L − ρ) + n_L) (and fdim_BE ≤ dim Im Φ). Rank-1 BE
  also has the diagonal rescaling symmetries (``linear_symmetry_bound``, docs/proofs.md §4): member i computes
  A_i = D(a_i) W_L D(t_{i,L−1}) W_{L−1} ⋯ D(t_{i,1}) W_1 D(b_i), and the torus acting by
  W_l ↦ D(α_l) W_l D(β_l), with per-member scalars moved between the member's diagonals, has generic orbit
  dimension Σ_l (n_l + n_{l−1}) + kL − L, so
  fdim_BE ≤ k·n_L + Σ_l (n_l − 1)(n_{l−1} − 1) + k(Σ_{l=0}^{L} n_l − L);
  for constant width n the functional codim is then (n − 1)·max(0, k(n − L) − L(n − 1)) (``linear_functional_codim``);
* tanh: only fdim_DE ≤ kP and fdim_BE ≤ dim Im Φ; the rank is a float SVD rank reported with its gap.
Every bound is also ≤ k·N·n_L, the number of outputs. "certified" = lower bound meets upper bound.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch.func import jacrev

from infra.errors import BadInput, require_int_in_range
from theory import dimension
from theory.batchensemble import BatchEnsembleSpec
from theory.batchensemble import jacobian as be_jacobian
from theory.batchensemble import member_weights
from theory.exact_rank import PRIMES, float_rank, modular_rank

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu, "identity": lambda x: x, "tanh": torch.tanh}
EXACT_ACTIVATIONS = ("relu", "identity")  # piecewise-linear: rational Jacobians at rational points
FLOAT_EXACT_LIMIT = 2 ** 53
INTEGER_WEIGHTS = np.array([-4, -3, -2, -1, 1, 2, 3, 4])  # nonzero: every rescaling-orbit tangent is nonzero
INTEGER_FACTORS = np.array([-3, -2, -1, 1, 2, 3])  # fast factors; keeps depth-3 width-16 products below 2^53
INTEGER_INPUTS = np.arange(-5, 6)  # a wider grid puts inputs in more activation regions
DEFAULT_ATTEMPTS = 3  # fresh integer points tried while a bound is not met (a point may be non-generic)


@dataclass(frozen=True)
class MLPSpec:
    """An MLP ``widths = (n_0, …, n_L)`` with ``activation``, run as a k-member ensemble (BE at ``rank``)."""

    widths: tuple[int, ...]
    activation: str
    members: int
    rank: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(self.widths))
        if len(self.widths) < 2:
            raise BadInput(f"widths={list(self.widths)} is not valid: expected at least two widths (in, ..., out)")
        for width in self.widths:
            require_int_in_range("width", width, 1)
        if self.activation not in ACTIVATIONS:
            raise BadInput(f"activation={self.activation!r} is unknown: expected one of {', '.join(ACTIVATIONS)}")
        require_int_in_range("members", self.members, 1)
        require_int_in_range("rank", self.rank, 1, min(min(self.widths[1:]), min(self.widths[:-1])))

    @property
    def layer_specs(self) -> list[BatchEnsembleSpec]:
        return [BatchEnsembleSpec((out, inp), self.members, self.rank)
                for inp, out in zip(self.widths[:-1], self.widths[1:])]

    @property
    def params_per_member(self) -> int:
        """P = Σ_l (n_l n_{l−1} + n_l)."""
        return sum(out * inp + out for inp, out in zip(self.widths[:-1], self.widths[1:]))

    @property
    def hidden_units(self) -> int:
        return sum(self.widths[1:-1])

    @property
    def be_image_dim(self) -> int:
        """dim Im Φ of the whole BE parametrisation: Σ_l dim(BE layer l) + k·(#biases) (per-member biases fill)."""
        return sum(dimension.image_dim(spec) + self.members * spec.kernel_shape[0] for spec in self.layer_specs)

    @property
    def parameter_codim(self) -> int:
        return self.members * self.params_per_member - self.be_image_dim

    def saturating_batch(self) -> int:
        """A batch whose N·n_L outputs per member exceed P by half again, ⌈1.5·P/n_L⌉ + 4 (ReLU ranks need inputs in
        many activation regions; with exactly P outputs some points fall short of the bound)."""
        return math.ceil(1.5 * self.params_per_member / self.widths[-1]) + 4


# ---------------------------------------------------------------- networks and Jacobians


def forward(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], inputs: torch.Tensor,
            activation: str) -> torch.Tensor:
    """f(x) = A_L(σ(… σ(A_1 x))), A_l(h) = W_l h + b_l, on a batch (N, n_0) -> (N, n_L)."""
    act = ACTIVATIONS[activation]
    hidden = inputs
    for index, (weight, bias) in enumerate(zip(weights, biases)):
        hidden = hidden @ weight.T + bias
        if index < len(weights) - 1:
            hidden = act(hidden)
    return hidden


def member_jacobian(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], inputs: torch.Tensor,
                    activation: str) -> torch.Tensor:
    """∂ vec f(inputs) / ∂θ, θ = (W_1, b_1, …, W_L, b_L) flattened: shape (N·n_L, P), by ``torch.func.jacrev``."""
    params = [p for pair in zip(weights, biases) for p in pair]
    shapes = [p.shape for p in params]
    flat = torch.cat([p.reshape(-1) for p in params])

    def outputs(theta: torch.Tensor) -> torch.Tensor:
        pieces = list(torch.split(theta, [int(np.prod(s)) for s in shapes]))
        pieces = [piece.reshape(shape) for piece, shape in zip(pieces, shapes)]
        return forward(pieces[0::2], pieces[1::2], inputs, activation).reshape(-1)

    return jacrev(outputs)(flat)


def parameter_map_jacobian(spec: MLPSpec, weights: Sequence[torch.Tensor],
                           factors: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """JΦ: rows = DE parameters member-major (θ_1, …, θ_k), θ_i = (W_1, b_1, …); columns = BE parameters
    (W_l, F_l, b_l) layer by layer, b_l of shape (k, n_l). Weights via ``batchensemble.jacobian``, biases identity."""
    k, per_member = spec.members, spec.params_per_member
    row_offset = 0
    total_be = sum(s.num_params + k * s.kernel_shape[0] for s in spec.layer_specs)
    result = torch.zeros(k * per_member, total_be, dtype=torch.float64)
    column = 0
    for layer, weight, layer_factors in zip(spec.layer_specs, weights, factors):
        size, out = layer.kernel_size, layer.kernel_shape[0]
        jac = be_jacobian(layer, weight, layer_factors).reshape(k, size, layer.num_params)
        for i in range(k):
            start = i * per_member + row_offset
            result[start:start + size, column:column + layer.num_params] = jac[i]
            bias_column = column + layer.num_params + i * out
            result[start + size:start + size + out, bias_column:bias_column + out] = torch.eye(out, dtype=torch.float64)
        column += layer.num_params + k * out
        row_offset += size + out
    return result


# ---------------------------------------------------------------- points


def _dyadic_biases(spec: MLPSpec, rng: np.random.Generator, members: int) -> list[torch.Tensor]:
    """Biases of layer l = integer + 2^{−l}: keeps every pre-activation a nonzero dyadic rational."""
    return [torch.tensor(rng.choice(INTEGER_WEIGHTS, size=(members, out)) + 2.0 ** -(index + 1), dtype=torch.float64)
            for index, out in enumerate(spec.widths[1:])]


def integer_inputs(spec: MLPSpec, batch: int, rng: np.random.Generator) -> torch.Tensor:
    return torch.tensor(rng.choice(INTEGER_INPUTS, size=(batch, spec.widths[0])), dtype=torch.float64)


def de_point(spec: MLPSpec, rng: np.random.Generator, exact: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-member weights (k, n_l, n_{l−1}) and biases (k, n_l): small integers (+ dyadic biases) or N(0, 1)."""
    shapes = [(spec.members, out, inp) for inp, out in zip(spec.widths[:-1], spec.widths[1:])]
    if exact:
        weights = [torch.tensor(rng.choice(INTEGER_WEIGHTS, size=shape), dtype=torch.float64) for shape in shapes]
        return weights, _dyadic_biases(spec, rng, spec.members)
    weights = [torch.tensor(rng.standard_normal(shape)) for shape in shapes]
    return weights, [torch.tensor(rng.standard_normal((spec.members, out))) for out in spec.widths[1:]]


def be_point(spec: MLPSpec, rng: np.random.Generator, exact: bool):
    """Slow weights, fast factors (k, r, n) per layer and per-member biases; integers (+ dyadic biases) or floats."""
    weights, factors = [], []
    def draw(values: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.tensor(rng.choice(values, size=shape), dtype=torch.float64)

    for layer in spec.layer_specs:
        if exact:
            weights.append(draw(INTEGER_WEIGHTS, layer.kernel_shape))
            factors.append(tuple(draw(INTEGER_FACTORS, shape) for shape in layer.factor_shapes))
        else:
            weights.append(torch.tensor(rng.standard_normal(layer.kernel_shape)))
            factors.append(tuple(1 + 0.5 * torch.tensor(rng.standard_normal(shape)) for shape in layer.factor_shapes))
    biases = (_dyadic_biases(spec, rng, spec.members) if exact
              else [torch.tensor(rng.standard_normal((spec.members, out))) for out in spec.widths[1:]])
    return weights, factors, biases


# ---------------------------------------------------------------- ranks


@dataclass(frozen=True)
class RankReport:
    lower: int | None  # certified lower bound (modular rank), None without a certificate
    upper: int  # proved upper bound
    float_rank: int
    gap: float  # σ_ρ/σ_{ρ+1} of the float SVD
    status: str  # "certified" (lower == upper), "below-bound" (lower < upper: this point is not generic) or "float"

    @property
    def value(self) -> int:
        return self.lower if self.lower is not None else self.float_rank


def _integer_matrix(matrix: torch.Tensor, scale: int) -> np.ndarray:
    """``scale·matrix`` as int64, after checking it is integral and below 2^53 (so float64 held it exactly)."""
    scaled = matrix.numpy() * scale
    if not np.array_equal(scaled, np.round(scaled)) or np.abs(scaled).max(initial=0) >= FLOAT_EXACT_LIMIT:
        raise ArithmeticError("Jacobian is not an exact dyadic matrix: the certificate does not apply")
    return scaled.astype(np.int64)


def _report(blocks: Sequence[torch.Tensor], upper: int, exact: bool, scale: int) -> RankReport:
    """Rank of blockdiag(blocks): modular lower bound (exact) and float rank with gap; sums over blocks."""
    lower = sum(modular_rank(_integer_matrix(block, scale), PRIMES[0]) for block in blocks) if exact else None
    ranks = [float_rank(block.numpy()) for block in blocks]
    gap = min(r.gap for r in ranks)
    floats = sum(r.rank for r in ranks)
    status = "float" if lower is None else ("certified" if lower == upper else "below-bound")
    return RankReport(lower, upper, floats, gap, status)


def _exact_product(left: torch.Tensor, right: torch.Tensor, scale: int) -> torch.Tensor:
    """left @ right in float64 for dyadic ``left`` (denominators dividing ``scale``) and integer ``right``, after
    checking every partial sum of ``scale·left @ right`` stays below 2^53 (so no rounding can occur)."""
    bound = scale * float(left.abs().max()) * float(right.abs().max()) * left.shape[1]
    if bound >= FLOAT_EXACT_LIMIT:
        raise ArithmeticError(f"integer product may exceed 2^53 (bound {bound:.3g}): float64 would round")
    return left @ right


def _single_bound(spec: MLPSpec) -> int:
    if spec.activation == "relu":
        return spec.params_per_member - spec.hidden_units
    if spec.activation == "identity":
        rho, n0, nl = min(spec.widths), spec.widths[0], spec.widths[-1]
        return rho * (n0 + nl - rho) + nl
    return spec.params_per_member


def linear_symmetry_bound(spec: MLPSpec) -> int:
    """k·n_L + Σ_l (n_l − 1)(n_{l−1} − 1) + k(Σ_{l=0}^{L} n_l − L): #(W_l, a_i, t_il, b_i, c_i) minus the generic orbit
    dimension Σ_l (n_l + n_{l−1}) + kL − L of the diagonal rescalings (module docstring; rank-1 linear BE)."""
    widths, k, depth = spec.widths, spec.members, len(spec.widths) - 1
    pairs = sum((out - 1) * (inp - 1) for inp, out in zip(widths[:-1], widths[1:]))
    return k * widths[-1] + pairs + k * (sum(widths) - depth)


def linear_functional_codim(width: int, depth: int, members: int) -> int:
    """(n − 1)·max(0, k(n − L) − L(n − 1)): functional codim of rank-1 linear BE vs DE, widths (n,)·(L + 1),
    per-member biases (= k(n² + n) minus the symmetry bound, when that bound is below k(n² + n))."""
    n, depth, k = (require_int_in_range(name, value, 1) for name, value in
                   (("width", width), ("depth", depth), ("members", members)))
    return (n - 1) * max(0, k * (n - depth) - depth * (n - 1))


def linear_fills(width: int, depth: int, members: int) -> bool:
    """Rank-1 linear BE reaches the DE function space iff k(n − L) ≤ L(n − 1)."""
    return members * (width - depth) <= depth * (width - 1)


def upper_bounds(spec: MLPSpec, batch: int) -> dict[str, int]:
    """Proved upper bounds on fdim for one member, the DE and the BE (module docstring)."""
    outputs = batch * spec.widths[-1]
    single = min(_single_bound(spec), outputs)
    be = spec.be_image_dim
    if spec.activation == "relu":
        be -= spec.members * spec.hidden_units
    elif spec.activation == "identity":
        be = min(be, spec.members * _single_bound(spec))
        if spec.rank == 1:
            be = min(be, linear_symmetry_bound(spec))
    return {"single": single, "de": spec.members * single, "be": min(be, spec.members * outputs)}


@dataclass(frozen=True)
class FunctionalDimension:
    spec: MLPSpec
    batch: int
    seed: int
    single: RankReport
    de: RankReport
    be: RankReport
    points_tried: int = 1  # integer points tried (seeds seed, seed + 1, …); each rank is the best certified one

    @property
    def functional_codim(self) -> int:
        return self.de.value - self.be.value

    @property
    def certified(self) -> bool:
        return self.de.status == "certified" and self.be.status == "certified"

    def as_dict(self) -> dict:
        return {"widths": list(self.spec.widths), "activation": self.spec.activation, "members": self.spec.members,
                "rank": self.spec.rank, "batch": self.batch, "seed": self.seed, "points_tried": self.points_tried,
                "params_per_member": self.spec.params_per_member, "hidden_units": self.spec.hidden_units,
                "de_dim": self.spec.members * self.spec.params_per_member, "be_image_dim": self.spec.be_image_dim,
                "parameter_codim": self.spec.parameter_codim, "functional_codim": self.functional_codim,
                "certified": self.certified,
                **{f"{name}_{key}": value for name, report in (("single", self.single), ("de", self.de),
                                                               ("be", self.be))
                   for key, value in asdict(report).items()}}


def functional_dimension(spec: MLPSpec, batch: int | None = None, seed: int = 0, certify: bool | None = None,
                         attempts: int = DEFAULT_ATTEMPTS) -> FunctionalDimension:
    """fdim of a single model, the k-member DE and the rank-r BE on one batch, with bounds and certificates.

    ``certify`` defaults to True for relu/identity (integer points, modular rank), False for tanh (float SVD).
    Certified runs try up to ``attempts`` fresh points (seeds ``seed``, ``seed + 1``, …) while a bound is unmet and
    keep, for single, DE and BE separately, the largest certified rank: each is the exact rank at one point, so a
    lower bound on the generic rank of that activation pattern's family of points.
    """
    attempts = require_int_in_range("attempts", attempts, 1)
    tries = []
    for offset in range(attempts):
        tries.append(_functional_dimension_at(spec, batch, seed + offset, certify))
        best = FunctionalDimension(spec, tries[0].batch, seed, *(max((getattr(t, part) for t in tries),
                                                                     key=lambda report: report.value)
                                                                 for part in ("single", "de", "be")), len(tries))
        if best.certified or best.de.status == "float":
            return best
    return best


def _functional_dimension_at(spec: MLPSpec, batch: int | None, seed: int, certify: bool | None) -> FunctionalDimension:
    batch = spec.saturating_batch() if batch is None else require_int_in_range("batch", batch, 1)
    exact = spec.activation in EXACT_ACTIVATIONS if certify is None else bool(certify)
    if exact and spec.activation not in EXACT_ACTIVATIONS:
        raise BadInput(f"activation={spec.activation!r} cannot be certified: exact ranks need one of "
                       f"{', '.join(EXACT_ACTIVATIONS)}")
    rng = np.random.default_rng(seed)
    scale = 2 ** len(spec.widths)  # 2^L clears every dyadic denominator of the Jacobian
    inputs = integer_inputs(spec, batch, rng) if exact else torch.tensor(rng.standard_normal((batch, spec.widths[0])))
    bounds = upper_bounds(spec, batch)

    weights, biases = de_point(spec, rng, exact)
    de_blocks = [member_jacobian([w[i] for w in weights], [b[i] for b in biases], inputs, spec.activation)
                 for i in range(spec.members)]
    de = _report(de_blocks, bounds["de"], exact, scale)
    single = _report(de_blocks[:1], bounds["single"], exact, scale)

    slow, factors, be_biases = be_point(spec, rng, exact)
    members = [member_weights(layer, w, f) for layer, w, f in zip(spec.layer_specs, slow, factors)]
    map_jac = parameter_map_jacobian(spec, slow, factors)
    per_member = spec.params_per_member
    rows = [_exact_product(member_jacobian([w[i] for w in members], [b[i] for b in be_biases], inputs,
                                           spec.activation),
                           map_jac[i * per_member:(i + 1) * per_member], scale)
            if exact else
            member_jacobian([w[i] for w in members], [b[i] for b in be_biases], inputs, spec.activation)
            @ map_jac[i * per_member:(i + 1) * per_member]
            for i in range(spec.members)]
    be = _report([torch.cat(rows)], bounds["be"], exact, scale)
    return FunctionalDimension(spec, batch, seed, single, de, be)
