"""What governs BatchEnsemble member diversity: a second-order link to the spread of the fast weights, and why the
dimension of the BE set bounds no diversity measure (docs/proofs.md §5–6).

**Second-order link.** A rank-1 BE MLP has shared slow weights W_l and member parameters u_i = (r_il, s_il, b_il)_l
(fast factors and per-member biases). Member i's logits are z_i(x) = f(x; W, u_i). Expand every member around the mean
member parameters ū = (1/k) Σ_i u_i, δ_i = u_i − ū (so Σ_i δ_i = 0), with J(x) = ∂f/∂u at (W, ū):

    z_i − z̄ = J δ_i + O(|δ|²),     z̄ = (1/k) Σ_i z_i,
    V(x)  = (1/k) Σ_i ‖z_i − z̄‖²                  = (1/k) Σ_i δ_iᵀ JᵀJ δ_i + O(|δ|³),
    MI(x) = H(p̄) − (1/k) Σ_i H(p_i)              = (1/2k) Σ_i δ_iᵀ Jᵀ F J δ_i + O(|δ|³),

with p_i = softmax(z_i), p̄ = (1/k) Σ_i p_i and F = diag(p) − p pᵀ at p = softmax(f(x; W, ū)) (the softmax Fisher
in logit space; MI is the mean KL(p_i ‖ p̄) ≈ ½ χ², and p_i − p̄ ≈ F (z_i − z̄)). So member diversity is, to second
order, a quadratic form in the fast-weight deviations weighted by the network's Jacobian: it is bounded by
λ_max(JᵀJ)·(1/k)Σ‖δ_i‖² and vanishes when the members' fast weights coincide, wherever the set of weight tuples lies.
``second_order`` computes J δ_i by forward-mode differentiation (``torch.func.jvp``) and returns both sides.
Disagreement (argmax flips) is an indicator, not a smooth function of δ: it is governed by the margin distribution,
not by this quadratic form, and is not predicted here.

**Any cosine on the BE set.** ``cosine_realising_tuple``: for any k×k correlation matrix C of rank ≤ n there is a
rank-1 BE tuple whose pairwise weight cosines are C: W = 1 (all ones, m × n), r_i = 1, s_i = rows of a factor of C
(C = S Sᵀ); then W_i = 1 s_iᵀ and cos(W_i, W_j) = m⟨s_i, s_j⟩ / (m‖s_i‖‖s_j‖) = C_ij.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.func import jvp

from infra.errors import BadInput
from theory.batchensemble import BatchEnsembleSpec, member_weights
from theory.functional import ACTIVATIONS


@dataclass(frozen=True)
class BEMLP:
    """A rank-1 BE MLP: slow weights (out, in), fast factors ((k, 1, out), (k, 1, in)) and biases (k, out) per layer."""

    weights: tuple[torch.Tensor, ...]
    factors: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    biases: tuple[torch.Tensor, ...]
    activation: str = "relu"

    @property
    def members(self) -> int:
        return self.biases[0].shape[0]

    def member_parameters(self) -> tuple[torch.Tensor, ...]:
        """u = (r_1, s_1, b_1, …, r_L, s_L, b_L), each with the member axis first."""
        return tuple(t for pair, bias in zip(self.factors, self.biases) for t in (*pair, bias))


def member_logits(net: BEMLP, inputs: torch.Tensor, member_params: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """(k, N, C) logits of inputs (N, d) (or per-member inputs (k, N, d)); ``member_params`` (the layout of
    ``member_parameters``) replaces the net's own."""
    params = list(net.member_parameters() if member_params is None else member_params)
    act = ACTIVATIONS[net.activation]
    hidden = inputs if inputs.dim() == 3 else inputs.unsqueeze(0).expand(params[0].shape[0], *inputs.shape)
    for layer, weight in enumerate(net.weights):
        r, s, b = params[3 * layer: 3 * layer + 3]
        spec = BatchEnsembleSpec(tuple(weight.shape), r.shape[0])
        hidden = torch.einsum("kni,koi->kno", hidden, member_weights(spec, weight, (r, s))) + b[:, None, :]
        if layer < len(net.weights) - 1:
            hidden = act(hidden)
    return hidden


def mutual_information(logits: torch.Tensor) -> torch.Tensor:
    """Per input: H(p̄) − (1/k) Σ_i H(p_i), from (k, N, C) logits (nats)."""
    log_p = torch.log_softmax(logits, -1)
    p = log_p.exp()
    mean = p.mean(0)
    entropy_of_mean = -(mean * torch.log(mean.clamp_min(1e-300))).sum(-1)
    return entropy_of_mean - (-(p * log_p).sum(-1)).mean(0)


def logit_variance(logits: torch.Tensor) -> torch.Tensor:
    """Per input: (1/k) Σ_i ‖z_i − z̄‖²."""
    return (logits - logits.mean(0)).pow(2).sum(-1).mean(0)


@dataclass(frozen=True)
class SecondOrder:
    """Measured and predicted per-input diversity (means over the inputs) and the fast-weight spread."""

    mi_measured: float
    mi_predicted: float
    variance_measured: float
    variance_predicted: float
    spread: float  # (1/k) Σ_i ‖δ_i‖² over every member parameter
    relative_spread: float  # spread / (1/k) Σ_i ‖u_i‖²

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def second_order(net: BEMLP, inputs: torch.Tensor) -> SecondOrder:
    """Both sides of the second-order link (module docstring) on ``inputs``, float64."""
    params = tuple(p.to(torch.float64) for p in net.member_parameters())
    net = BEMLP(tuple(w.to(torch.float64) for w in net.weights), net.factors, net.biases, net.activation)
    inputs = inputs.to(torch.float64).flatten(1)
    k = params[0].shape[0]
    mean = tuple(p.mean(0, keepdim=True).expand_as(p).clone() for p in params)
    deviations = tuple(p - m for p, m in zip(params, mean))

    def logits_at(*member_params: torch.Tensor) -> torch.Tensor:
        return member_logits(net, inputs, member_params)

    centre, directional = jvp(logits_at, mean, deviations)  # directional[i] = J δ_i (member i's own parameters)
    probs = torch.softmax(centre[0], -1)
    fisher_form = (directional.pow(2) * probs).sum(-1) - (directional * probs).sum(-1).pow(2)
    measured = logits_at(*params)
    spread = sum(float(d.pow(2).sum()) for d in deviations) / k
    size = sum(float(p.pow(2).sum()) for p in params) / k
    return SecondOrder(float(mutual_information(measured).mean()), float(0.5 * fisher_form.mean(0).mean()),
                       float(logit_variance(measured).mean()), float(directional.pow(2).sum(-1).mean(0).mean()),
                       spread, spread / size if size > 0 else 0.0)


def random_bemlp(widths: Sequence[int], members: int, spread: float, generator: torch.Generator,
                 init: str = "normal") -> BEMLP:
    """Slow weights N(0, 1/n_in), fast factors N(1, spread²) (``normal``) or ±1 (``random_sign``), biases N(0, 0.1²)
    shared plus N(0, (0.1·spread)²) member noise."""
    weights, factors, biases = [], [], []
    for inp, out in zip(widths[:-1], widths[1:]):
        weights.append(torch.randn(out, inp, generator=generator, dtype=torch.float64) / inp ** 0.5)
        pair = []
        for size in (out, inp):
            noise = torch.randn(members, 1, size, generator=generator, dtype=torch.float64)
            pair.append(1 + spread * noise if init == "normal" else torch.sign(noise))
        factors.append(tuple(pair))
        shared = 0.1 * torch.randn(1, out, generator=generator, dtype=torch.float64)
        biases.append(shared + 0.1 * spread * torch.randn(members, out, generator=generator, dtype=torch.float64))
    return BEMLP(tuple(weights), tuple(factors), tuple(biases))


# ---------------------------------------------------------------- any cosine on the BE set


def cosine_realising_tuple(correlation: np.ndarray, rows: int, cols: int) -> torch.Tensor:
    """A rank-1 BE member tuple (k, rows, cols) whose pairwise cosines are ``correlation`` (module docstring).

    ``correlation`` must be symmetric positive semidefinite with unit diagonal and rank ≤ cols."""
    matrix = np.asarray(correlation, dtype=np.float64)
    k = matrix.shape[0]
    values, vectors = np.linalg.eigh(matrix)
    if not np.allclose(matrix, matrix.T) or not np.allclose(np.diag(matrix), 1) or values.min() < -1e-12:
        raise BadInput("correlation is not valid: expected a symmetric PSD matrix with unit diagonal")
    keep = values > 1e-12
    if keep.sum() > cols:
        raise BadInput(f"correlation has rank {int(keep.sum())}: expected rank <= cols={cols}")
    factor = vectors[:, keep] * np.sqrt(values[keep])  # C = S Sᵀ, S is k × rank
    s = np.zeros((k, cols))
    s[:, :factor.shape[1]] = factor
    spec = BatchEnsembleSpec((rows, cols), k)
    ones = torch.ones(rows, cols, dtype=torch.float64)
    factors = (torch.ones(k, 1, rows, dtype=torch.float64), torch.from_numpy(s).reshape(k, 1, cols))
    return member_weights(spec, ones, factors)


def pairwise_cosines(members: torch.Tensor) -> np.ndarray:
    """k × k cosines of the flattened member kernels."""
    flat = members.reshape(members.shape[0], -1).to(torch.float64)
    unit = flat / flat.norm(dim=1, keepdim=True)
    return (unit @ unit.T).numpy()


# ---------------------------------------------------------------- a tiny trained BE MLP (self-contained test)


def synthetic_task(samples: int, dim: int, classes: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clusters: class c centred at a random unit-norm·2 mean, identity covariance."""
    centres = torch.randn(classes, dim, generator=generator, dtype=torch.float64)
    centres = 2 * centres / centres.norm(dim=1, keepdim=True)
    labels = torch.randint(classes, (samples,), generator=generator)
    return centres[labels] + torch.randn(samples, dim, generator=generator, dtype=torch.float64), labels


def train_snapshots(net: BEMLP, inputs: torch.Tensor, labels: torch.Tensor, steps: Sequence[int],
                    lr: float = 1e-2) -> list[tuple[int, BEMLP]]:
    """Full-batch Adam on the mean member cross-entropy (every parameter trained, as in BE); the net at each of
    ``steps`` (0 = the start)."""
    weights = [w.clone().requires_grad_(True) for w in net.weights]
    factors = [tuple(f.clone().requires_grad_(True) for f in pair) for pair in net.factors]
    biases = [b.clone().requires_grad_(True) for b in net.biases]
    optimiser = torch.optim.Adam([*weights, *[f for pair in factors for f in pair], *biases], lr=lr)

    def current() -> BEMLP:
        return BEMLP(tuple(w.detach().clone() for w in weights),
                     tuple(tuple(f.detach().clone() for f in pair) for pair in factors),
                     tuple(b.detach().clone() for b in biases), net.activation)

    snapshots, step = [], 0
    for target in sorted(steps):
        while step < target:
            logits = member_logits(BEMLP(tuple(weights), tuple(factors), tuple(biases), net.activation), inputs)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                     labels.repeat(logits.shape[0]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            step += 1
        snapshots.append((step, current()))
    return snapshots
