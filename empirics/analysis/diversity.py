"""Diversity geometry of a trained ensemble: parameter space, function space, and the link between them.

Parameter space (per layer and for the whole network, from each member's effective weights ``(k, out, in[, h, w])``):

* cosine similarity  cos(w_i, w_j) = <w_i, w_j> / (|w_i| |w_j|) (raw, as Fort et al. 2019; no centred variant: the
  mean pairwise cosine of member-mean-centred weights is fixed near −1/(k−1) by the member count, docs/theory.md §11);
* relative distance  d_ij = |w_i − w_j| / sqrt((|w_i|² + |w_j|²) / 2)  (0 for identical members, √2 for orthogonal
  members of equal norm);
* the distance of the member tuple to the rank-r BatchEnsemble set, ``theory.distance`` (0 for BE by construction);
* the fraction of the Deep-Ensemble space that rank-r BE reaches, dim Im Φ / dim DE (``theory.network``).

Function space: mutual information, mean pairwise JSD and disagreement come from ``empirics.analysis.metrics`` (one
definition in the project); linear CKA of the members' penultimate features is hand-written here (Kornblith et al.
2019):

    CKA(X, Y) = |Y_cᵀ X_c|_F² / (|X_cᵀ X_c|_F · |Y_cᵀ Y_c|_F),   X_c = X − column means   (rows = examples).

Per stage (convolutional nets): linear CKA of the members' globally average-pooled stage outputs
(``member_stage_features``), as a function of depth.

Across runs (Fort et al. 2019's two pictures: the members of several methods in one weight-cosine matrix and one
prediction-disagreement matrix): each run stores a *count sketch* of every member's whole-network weight vector,
S(w)[h(j)] += σ(j) w_j with one seeded hash h: [D] → [d] and signs σ shared by every run (Charikar, Chen &
Farach-Colton 2002), and the members' predicted labels on the run seed's function-space test inputs
(``member_sketch.npz``). ⟨S(u), S(v)⟩ is an unbiased estimate of ⟨u, v⟩ with variance
(|u|²|v|² + ⟨u, v⟩² − 2 Σ_j u_j² v_j²)/d ≤ 2|u|²|v|²/d, so sketched cosines carry an error of order 1/√d
(d = ``SKETCH_DIM``: about 0.011), without keeping the weights.

Permutation-aligned weights (plain MLPs only): the relative distance and cosine of two members after matching their hidden units
by weight matching (Ainsworth et al. 2023; ``scipy.optimize.linear_sum_assignment`` per hidden layer), a
parameter-space measure that can compare independently initialised members (``aligned_weight_geometry``).

Link: Spearman's ρ between a parameter-space and a function-space diversity across the runs of a study, pooled and
between / within run configurations, with cluster-bootstrap CIs (``empirics.analysis.effects``).
"""
from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from scipy import optimize

from empirics.analysis import effects, metrics
from empirics.data import regression
from empirics.models.ensembles import DeepEnsembleModel, build_model, member_weight_tuples
from empirics.runs import folder
from empirics.runs.config import Config, apply_execution_settings
from empirics.runs.tasks import task_for
from infra.errors import BadInput
from infra.files import atomic_write_bytes
from theory.batchensemble import network_layer_spec
from theory.distance import DEFAULT_MAX_ITER, distance_by_rank
from theory.network import attention_roles, network_counts

NETWORK = "network"
SKETCH_DIM = 8192
SKETCH_SEED = 2019  # one hash for every run, so sketches of different runs (and methods) are comparable


def flatten_members(weights: torch.Tensor) -> torch.Tensor:
    """``(k, *kernel)`` -> ``(k, D)`` in float64 (verification math runs in float64)."""
    if weights.ndim < 2:
        raise BadInput(f"member weights of shape {tuple(weights.shape)}: expected (k, out, in[, h, w])")
    return weights.detach().to(torch.float64).reshape(weights.shape[0], -1)


def pairwise_cosine(weights: torch.Tensor) -> torch.Tensor:
    """(k, k) matrix cos(w_i, w_j)."""
    flat = flatten_members(weights)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(torch.finfo(flat.dtype).tiny)
    return unit @ unit.T


def pairwise_relative_distance(weights: torch.Tensor) -> torch.Tensor:
    """(k, k) matrix |w_i − w_j| / sqrt((|w_i|² + |w_j|²) / 2)."""
    flat = flatten_members(weights)
    squared_norms = (flat * flat).sum(dim=1)
    scale = ((squared_norms[:, None] + squared_norms[None, :]) / 2).sqrt()
    return torch.cdist(flat, flat) / scale.clamp_min(torch.finfo(flat.dtype).tiny)


def mean_off_diagonal(matrix: torch.Tensor) -> float:
    """Mean of the k(k−1) off-diagonal entries (the mean over ordered member pairs)."""
    k = matrix.shape[0]
    if k < 2:
        raise BadInput(f"a pairwise mean needs k >= 2 members, got k={k}")
    return float((matrix.sum() - matrix.diagonal().sum()) / (k * (k - 1)))


def network_weights(layer_weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Concatenate every layer's flattened member weights: the whole network as one vector per member, (k, Σ D_l)."""
    return torch.cat([flatten_members(w) for w in layer_weights.values()], dim=1)


def weight_geometry(layer_weights: Mapping[str, torch.Tensor]) -> dict[str, dict]:
    """Per layer and for the whole network (key ``"network"``): the three (k, k) matrices and their off-diagonal
    means."""
    groups = dict(layer_weights)
    groups[NETWORK] = network_weights(layer_weights)
    result = {}
    for name, weights in groups.items():
        matrices = {"cosine": pairwise_cosine(weights), "relative_distance": pairwise_relative_distance(weights)}
        result[name] = {key: value.tolist() for key, value in matrices.items()}
        result[name].update({f"mean_{key}": mean_off_diagonal(value) for key, value in matrices.items()})
    return result


# ---------------------------------------------------------------- permutation-aligned weights (hidden-unit symmetry)

ALIGN_MAX_SWEEPS = 20  # coordinate-descent sweeps of the weight matching (stops earlier when no permutation changes)


def is_dense_chain(layer_weights: Mapping[str, torch.Tensor]) -> bool:
    """Dense layers ``(k, out, in)`` in order, each layer's ``out`` the next one's ``in``: the shapes of an MLP. Shapes
    alone do not make the permutation a symmetry (``has_hidden_unit_symmetry``)."""
    shapes = [tuple(w.shape[1:]) for w in layer_weights.values()]
    return all(len(shape) == 2 for shape in shapes) and all(a[0] == b[1] for a, b in zip(shapes, shapes[1:]))


def has_hidden_unit_symmetry(arch: str, layer_weights: Mapping[str, torch.Tensor]) -> bool:
    """Permuting the hidden units of layer l (rows of W_l, columns of W_{l+1}) leaves the network's function unchanged:
    true of a plain MLP (``arch="mlp"``) whose layers chain (``is_dense_chain``), not of a ViT whose layer shapes happen
    to chain (patch embedding → query → key → value → out → fc1 → fc2 → head): permuting units between Q and K, K and
    V, or across the residual stream changes what the network computes."""
    return arch == "mlp" and is_dense_chain(layer_weights)


def match_hidden_units(reference: Sequence[np.ndarray], other: Sequence[np.ndarray],
                       max_sweeps: int = ALIGN_MAX_SWEEPS) -> list[np.ndarray]:
    """Permutations P_1..P_{L−1} of the hidden units of ``other`` (weights W_1..W_L, W_l of shape (out_l, in_l)) that
    bring it close to ``reference``: weight matching (Ainsworth et al. 2023, "Git Re-Basin", Alg. 1), minimising
    Σ_l |A_l − P_l B_l P_{l−1}ᵀ|_F² by coordinate descent; the step for P_l is the linear assignment
    max_P ⟨P, A_l P_{l−1} B_lᵀ + A_{l+1}ᵀ P_{l+1} B_{l+1}⟩ (``scipy.optimize.linear_sum_assignment``). Exact for one
    hidden layer; a local optimum (so an upper bound on the aligned distance) for more. Biases are not part of the
    member weight tuples and are left out. ``perm[l][a]`` = the unit of ``other`` matched to unit ``a``."""
    sizes = [w.shape[0] for w in reference[:-1]]
    perms = [np.arange(size) for size in sizes]

    def permuted_in(layer: int) -> np.ndarray:  # B_l with its input columns permuted by P_{l−1}
        weight = other[layer]
        return weight if layer == 0 else weight[:, perms[layer - 1]]

    for _ in range(max_sweeps):
        changed = False
        for layer in range(len(sizes)):
            cost = reference[layer] @ permuted_in(layer).T
            following = other[layer + 1] if layer + 1 == len(sizes) else other[layer + 1][perms[layer + 1]]
            cost = cost + reference[layer + 1].T @ following
            _, columns = optimize.linear_sum_assignment(cost, maximize=True)
            if not np.array_equal(columns, perms[layer]):
                perms[layer], changed = columns, True
        if not changed:
            break
    return perms


def apply_hidden_permutations(weights: Sequence[np.ndarray], perms: Sequence[np.ndarray]) -> list[np.ndarray]:
    """P_l W_l P_{l−1}ᵀ for every layer (rows by P_l, columns by P_{l−1}): the same function as ``weights``."""
    out = []
    for layer, weight in enumerate(weights):
        if layer < len(perms):
            weight = weight[perms[layer]]
        if layer > 0:
            weight = weight[:, perms[layer - 1]]
        out.append(weight)
    return out


def aligned_weight_geometry(layer_weights: Mapping[str, torch.Tensor], arch: str) -> dict[str, float] | None:
    """Mean over member pairs i < j of the relative distance and cosine of the whole-network weights after aligning
    member j's hidden units to member i's (``match_hidden_units``); ``None`` unless permuting hidden units is a
    symmetry of the network (``has_hidden_unit_symmetry``: an MLP ``arch``, layers in a dense chain).

    What it can show: two independently initialised networks have raw cosine ≈ 0 whatever they compute, because their
    hidden units are in arbitrary order; after alignment, the distance measures how different the members are *up to*
    this symmetry, so it can rank Deep-Ensemble members against each other. What it cannot: it ignores other
    symmetries (ReLU rescaling), the matching is a local optimum beyond one hidden layer (an upper bound), and a small
    aligned distance is no proof of equal functions (function-space measures answer that)."""
    if not has_hidden_unit_symmetry(arch, layer_weights):
        return None
    stacked = [w.detach().to(torch.float64).cpu().numpy() for w in layer_weights.values()]
    k = stacked[0].shape[0]
    distances, cosines = [], []
    for i in range(k):
        for j in range(i + 1, k):
            reference, other = [w[i] for w in stacked], [w[j] for w in stacked]
            aligned = apply_hidden_permutations(other, match_hidden_units(reference, other))
            a = np.concatenate([w.ravel() for w in reference])
            b = np.concatenate([w.ravel() for w in aligned])
            scale = math.sqrt((a @ a + b @ b) / 2)
            distances.append(float(np.linalg.norm(a - b) / scale))
            cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    return {"mean_relative_distance": float(np.mean(distances)), "mean_cosine": float(np.mean(cosines))}


def count_sketch(flat: torch.Tensor, dim: int = SKETCH_DIM, seed: int = SKETCH_SEED) -> torch.Tensor:
    """Count sketch of each row of ``flat`` (k, D): S[h(j)] += σ(j) x_j with h(j) uniform on [0, dim) and σ(j) = ±1
    drawn from a generator seeded with ``seed`` (the same for every call with the same D, dim and seed)."""
    generator = torch.Generator().manual_seed(seed)
    buckets = torch.randint(0, dim, (flat.shape[1],), generator=generator)
    signs = torch.randint(0, 2, (flat.shape[1],), generator=generator).to(flat.dtype) * 2 - 1
    sketch = torch.zeros(flat.shape[0], dim, dtype=flat.dtype)
    return sketch.index_add_(1, buckets, flat * signs)


def cross_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n_a, n_b) cosines between the rows of ``a`` and the rows of ``b`` (float64)."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    tiny = torch.finfo(torch.float64).tiny
    return (a / a.norm(dim=1, keepdim=True).clamp_min(tiny)) @ (b / b.norm(dim=1, keepdim=True).clamp_min(tiny)).T


def cross_disagreement(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n_a, n_b) fraction of inputs on which member i of ``a`` and member j of ``b`` predict different labels;
    rows are members' predicted labels on the same inputs."""
    return (a[:, None, :] != b[None, :, :]).to(torch.float64).mean(dim=2)


def distance_to_be_sets(layer_weights: Mapping[str, torch.Tensor], ranks: Sequence[int], variant: str = "channel-wise",
                        starts: int = 3, max_iter: int = DEFAULT_MAX_ITER,
                        seed: int = 0) -> dict[str, dict[str, float]]:
    """Distance of each layer's member tuple to the rank-r BE set, for r in ``ranks`` (``theory.distance``).

    Per layer: the Euclidean distance and the relative residual |X − proj X| / |X| of the best of ``starts``
    alternating-least-squares fits of at most ``max_iter`` sweeps (an upper bound on the distance). Ranks above a
    layer's largest rank use that rank; rank r is warm-started from r − 1, so the distance is non-increasing in r.
    For the network the sets are products over layers, so the distance is sqrt(Σ_l dist_l²) and the relative
    residual sqrt(Σ dist_l²) / |X|.
    Dense layers use the channel-wise variant when ``variant`` needs a conv kernel.
    """
    result: dict[str, dict[str, float]] = {NETWORK: {}}
    squared_distance = dict.fromkeys(ranks, 0.0)
    squared_norm = 0.0
    for name, weights in layer_weights.items():
        weights = weights.detach().to(torch.float64)
        spec = network_layer_spec(weights.shape[1:], weights.shape[0], max(ranks), variant)
        found = distance_by_rank(weights, spec.rank, spec.variant, starts=starts, seed=seed, max_iter=max_iter)
        squared_norm += float(weights.pow(2).sum())
        result[name] = {}
        for rank in ranks:
            fit = found[min(rank, spec.rank) - 1]
            result[name][f"rank{rank}/distance"] = fit.distance
            result[name][f"rank{rank}/relative_residual"] = fit.relative_residual
            squared_distance[rank] += fit.distance ** 2
    for rank in ranks:
        result[NETWORK][f"rank{rank}/distance"] = math.sqrt(squared_distance[rank])
        result[NETWORK][f"rank{rank}/relative_residual"] = math.sqrt(squared_distance[rank] / squared_norm)
    return result


def reachable_fraction(config: Config) -> float | None:
    """dim Im Φ / dim DE for the architecture of ``config`` as a rank-r BatchEnsemble (``theory.network``; kernels,
    biases and BatchNorm with the run's sharing; plain shortcuts shared). 1 for a Deep Ensemble; ``None`` for
    single models and MC Dropout, which are no BE parametrisation."""
    if config.method == "deep-ensemble":
        return 1.0
    if config.method != "batchensemble":
        return None
    plain = build_model(Config.from_dict({**config.to_dict(), "method": "single",
                                          "batch_regime": "repeat"}).model_spec()).net  # the architecture only
    counts = network_counts(plain, config.members, rank=config.rank,
                            variant=config.variant, bias="shared" if config.bias == "shared" else "per-member",
                            norm=config.batchnorm, shortcuts="shared" if config.shortcut == "plain" else "perturbed",
                            certify_route="none", **transformer_counting(config, plain))
    return counts.fraction_reached


def transformer_counting(config: Config, plain) -> dict[str, Any]:
    """The ``network_counts`` options of a ViT run: attention projections shared under ``be_scope="mlp"``, its
    LayerNorm sharing, class token and position embedding shared by the members; nothing for other architectures."""
    if config.arch != "vit":
        return {}
    roles = attention_roles(plain) if config.be_scope == "mlp" else {}
    return {"roles": roles, "layernorm": config.layernorm, "embeddings": "shared"}


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA = |Y_cᵀ X_c|_F² / (|X_cᵀ X_c|_F |Y_cᵀ Y_c|_F) for features x (B, F), y (B, G) of the same B inputs."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise BadInput(f"CKA needs features (B, F) and (B, G) on the same inputs, got {tuple(x.shape)} and "
                       f"{tuple(y.shape)}")
    x = x.detach().to(torch.float64)
    y = y.detach().to(torch.float64)
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    cross = (y.T @ x).norm() ** 2
    return float(cross / ((x.T @ x).norm() * (y.T @ y).norm()))


def pairwise_cka(member_features: torch.Tensor) -> torch.Tensor:
    """(k, k) matrix of linear CKA between members' penultimate features ``(k, B, F)``."""
    k = member_features.shape[0]
    matrix = torch.ones(k, k, dtype=torch.float64)
    for i in range(k):
        for j in range(i + 1, k):
            matrix[i, j] = matrix[j, i] = linear_cka(member_features[i], member_features[j])
    return matrix


# A relative distance to the rank-1 BE set below this is "on the set": the alternating least squares of
# theory.distance stop at <= 1e-8·|X| on points of the set (observed up to 3e-8 after 30 sweeps in the regression
# smoke run: BE and MC Dropout members, on the set by construction), while trained ensembles off the set lie >= 0.1
# away. Below it the fit's residual is solver noise, whose order would rank runs that tie.
ON_RANK1_SET = 1e-6


def rank1_distance_resolved(relative_residual: float) -> float:
    """The relative distance to the rank-1 BE set with values below ``ON_RANK1_SET`` read as 0 (tied)."""
    return 0.0 if relative_residual < ON_RANK1_SET else relative_residual


# Diversity measures oriented so that larger = more diverse: (label, metric key, transform of the stored value).
PARAMETER_DIVERSITY = (
    ("weight relative distance", "weights/network/mean_relative_distance", lambda v: v),
    ("1 − weight cosine", "weights/network/mean_cosine", lambda v: 1.0 - v),
    ("distance to rank-1 BE set (relative)", "distance/network/rank1/relative_residual", rank1_distance_resolved),
    ("aligned weight relative distance", "aligned/network/mean_relative_distance", lambda v: v),
)
FUNCTION_DIVERSITY = (
    ("mutual information (test)", "test/mutual_information", lambda v: v),
    ("mutual information (shift)", "shift/mutual_information", lambda v: v),
    ("mutual information (OOD)", "ood/mutual_information", lambda v: v),
    ("disagreement (test)", "test/disagreement", lambda v: v),
    ("1 − feature CKA (test)", "features/test/mean_cka", lambda v: 1.0 - v),
    ("epistemic variance (test)", "test/epistemic_variance", lambda v: v),
    ("epistemic variance (shift)", "shift/epistemic_variance", lambda v: v),
)

LINK = "link"  # summary key of the link over every ensemble of a study
LINK_WITHOUT_MCD = "link_without_mc_dropout"  # summary key of the link over the studies' ensembles other than MCD
LINK_STRATA = "link_strata"  # summary key: the data sets, when a study has several (one link analysis per data set)


def link_key(name: str, stratum: str | None = None) -> str:
    """Summary key of link analysis ``name`` (``LINK`` or ``LINK_WITHOUT_MCD``), of one data set's runs when the study
    has several: ``"link:diamonds"``."""
    return f"{name}:{stratum}" if stratum else name


def link_strata(summary: Mapping) -> list[str | None]:
    """The data sets a study's summary has one link analysis each for, or ``[None]`` (one analysis over every run)."""
    return summary.get(LINK_STRATA) or [None]
WITHOUT_MCD_REASON = "its members are dropout masks of one weight set, drawn at test time"
HEADLINE_LINK = ("weights/network/mean_relative_distance", "shift/mutual_information")
REGRESSION_HEADLINE_LINK = ("weights/network/mean_relative_distance", "shift/epistemic_variance")
RANK1_LINK = ("distance/network/rank1/relative_residual", "shift/mutual_information")  # the paper's open question
REGRESSION_RANK1_LINK = ("distance/network/rank1/relative_residual", "shift/epistemic_variance")
LINK_PAIRS = {"classification": {"headline": HEADLINE_LINK, "rank1": RANK1_LINK},
              "regression": {"headline": REGRESSION_HEADLINE_LINK, "rank1": REGRESSION_RANK1_LINK}}


def link_pair(task: str, which: str) -> tuple[str, str]:
    """(parameter key, function key) of a task's ``headline`` link (weight relative distance vs the function-space
    diversity under shift) or ``rank1`` link (distance to the rank-1 BE set vs it): the function-space measure is the
    mutual information under shift for classification, the epistemic variance (variance of the member means) under
    shift for regression (``empirics.data.datasets.task_of``)."""
    if task not in LINK_PAIRS or which not in LINK_PAIRS[task]:
        raise BadInput(f"link pair ({task!r}, {which!r}): expected a task in {sorted(LINK_PAIRS)} and one of "
                       f"{sorted(LINK_PAIRS['classification'])}")
    return LINK_PAIRS[task][which]


LINK_METHOD = ("Spearman rank correlation over runs × seeds; 95% CIs from a cluster (hierarchical) bootstrap that "
               "resamples run configurations, then seeds within each (2000 resamples); between = ρ of configuration "
               "means, within = ρ of the deviations from each configuration's mean (empirics.analysis.effects)")


def link_analysis(points: Sequence[Mapping[str, float]], seed: int = 0) -> dict:
    """Spearman ρ for every (parameter-space, function-space) diversity pair across runs × seeds, with cluster-bootstrap
    CIs and the between- and within-configuration ρ (``empirics.analysis.effects.cluster_bootstrap_spearman``).

    ``points`` are the flat metrics of each finished run with its configuration name under ``"run"``; runs without a
    measure (k = 1; the aligned distance outside MLPs or in older studies) are left out of its pairs.
    The headline pair is ``HEADLINE_LINK``: weight relative distance vs mutual information under shift (for a
    regression study, ``REGRESSION_HEADLINE_LINK``: vs the epistemic variance under shift). Function-space measures
    that no run has are left out (classification runs have no epistemic variance, regression runs no mutual
    information).
    """
    regression_only = any(REGRESSION_HEADLINE_LINK[1] in point for point in points) and not any(
        HEADLINE_LINK[1] in point for point in points)
    wanted = link_pair("regression" if regression_only else "classification", "headline")
    pairs = []
    for p_label, p_key, p_map in PARAMETER_DIVERSITY:
        for f_label, f_key, f_map in FUNCTION_DIVERSITY:
            if f_key != wanted[1] and not any(f_key in point for point in points):
                continue  # a measure no run has (the other task's: mutual information vs epistemic variance)
            usable = [point for point in points if p_key in point and f_key in point]
            x = [p_map(point[p_key]) for point in usable]
            y = [f_map(point[f_key]) for point in usable]
            clusters = [point["run"] for point in usable]
            pairs.append({"parameter": p_label, "parameter_key": p_key, "function": f_label, "function_key": f_key,
                          **effects.cluster_bootstrap_spearman(x, y, clusters, seed=seed)})
    headline = next(pair for pair in pairs if (pair["parameter_key"], pair["function_key"]) == wanted)
    return {"method": LINK_METHOD, "headline": headline, "pairs": pairs}


# ---------------------------------------------------------------- one trained run -> diversity.json

FEATURE_SAMPLES = 2000  # seeded inputs per split for CKA, reliability diagrams and ROC curves (figures)
ROC_POINTS = 128  # ROC curves are thinned to at most this many points for the figures


def _thin(curve: dict[str, list], points: int = ROC_POINTS) -> dict[str, list]:
    """Keep at most ``points`` evenly spaced points of a monotone curve, always the first and the last."""
    length = len(next(iter(curve.values())))
    keep = sorted(set(np.linspace(0, length - 1, min(points, length)).round().astype(int).tolist()))
    return {key: [values[i] for i in keep] for key, values in curve.items()}


def _member_features(model, images: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model.member_features(images[start:start + batch_size].to(device)).cpu()
                          for start in range(0, len(images), batch_size)], dim=1)


def _chosen_rows(length: int, samples: int, seed: int) -> torch.Tensor:
    """The function-space analysis's ``samples`` seeded rows of an evaluation set of ``length`` rows."""
    return torch.randperm(length, generator=torch.Generator().manual_seed(seed))[:samples]


def _function_space(config: Config, model, device: torch.device, predictions: dict[str, torch.Tensor],
                    samples: int) -> tuple[dict, dict, torch.Tensor]:
    """On ``samples`` seeded inputs per evaluation set: the CKA matrix of penultimate features (and, on the test
    inputs, of every stage's pooled output), reliability diagrams (test, shift) and OOD ROC curves
    (``empirics.analysis.metrics``) from the run's stored ``predictions``, and the members' test probabilities. The
    metrics on the full sets are ``evaluate_run``'s."""
    sets, probs = {}, {}
    for split, chosen in task_for(config).evaluation_sets(config).items():
        rows = _chosen_rows(len(chosen.inputs), samples, config.seed)
        sets[split] = (chosen.inputs[rows], None if chosen.targets is None else chosen.targets[rows])
        probs[split] = predictions[split][:, rows]
    curves = {"reliability": {split: metrics.reliability_diagram_data(probs[split], sets[split][1])
                              for split in ("test", "shift")},
              "roc": {score: _thin(metrics.roc_curve_data(probs["test"], probs["ood"], score))
                      for score in metrics.ood_scores(probs["test"])}}
    matrices, scalars = {}, {}
    if probs["test"].shape[0] >= 2:
        for split, (images, _) in sets.items():
            cka = pairwise_cka(_member_features(model, images, config.eval_batch_size, device))
            matrices[split] = cka.tolist()
            scalars[split] = {"mean_cka": mean_off_diagonal(cka)}
        stage_matrices, stage_scalars = _stage_cka(config, model, device, sets["test"][0])
        if stage_matrices:
            matrices["test_stages"], scalars["test_stages"] = stage_matrices, stage_scalars
    return {"cka": matrices, **curves}, scalars, probs["test"]


def _pooled(output: torch.Tensor) -> torch.Tensor:
    """(rows, C, H, W) → (rows, C): the global average over spatial positions, in float32 or wider."""
    output = output.to(torch.promote_types(output.dtype, torch.float32))
    return output.mean(dim=tuple(range(2, output.dim()))) if output.dim() > 2 else output


def _capture_stages(net: torch.nn.Module, forward) -> dict[str, torch.Tensor]:
    """Run ``forward()`` with hooks on ``net.stage_outputs()``; each stage's pooled output (rows, C)."""
    captured: dict[str, torch.Tensor] = {}
    handles = [module.register_forward_hook(
        lambda _module, _inputs, output, name=name: captured.__setitem__(name, _pooled(output).detach().cpu()))
        for name, module in net.stage_outputs().items()]
    try:
        forward()
    finally:
        for handle in handles:
            handle.remove()
    return captured


def member_stage_features(model, images: torch.Tensor, batch_size: int,
                          device: torch.device) -> dict[str, torch.Tensor]:
    """{stage: (k, N, C)}: each member's globally average-pooled output of every stage of the network
    (``stage_outputs``; empty for an MLP). Deep-Ensemble members run one by one as plain networks
    (``DeepEnsembleModel.member_networks``); the other methods' member-major rows are split per member."""
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    nets = model.member_networks() if isinstance(model, DeepEnsembleModel) else None
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].to(device)
            if nets is None:
                stages = _capture_stages(model.net, lambda: model.member_features(batch))
                per_member = {name: out.view(-1, len(batch), out.shape[-1]) for name, out in stages.items()}
            else:
                captured = [_capture_stages(net.eval(), lambda net=net: model.run_member(net, batch)) for net in nets]
                per_member = {name: torch.stack([stages[name] for stages in captured]) for name in captured[0]}
            for name, value in per_member.items():
                chunks.setdefault(name, []).append(value)
    return {name: torch.cat(values, dim=1) for name, values in chunks.items()}


def _stage_cka(config: Config, model, device: torch.device, images: torch.Tensor) -> tuple[dict, dict]:
    """Pairwise linear CKA of pooled stage outputs per stage: matrices and off-diagonal means (k >= 2 only)."""
    features = member_stage_features(model, images, config.eval_batch_size, device)
    matrices = {stage: pairwise_cka(value) for stage, value in features.items() if value.shape[0] >= 2}
    return ({stage: matrix.tolist() for stage, matrix in matrices.items()},
            {stage: {"mean_cka": mean_off_diagonal(matrix)} for stage, matrix in matrices.items()})


def _write_sketch(run_dir: Path, weights: Mapping[str, torch.Tensor], test_probs: torch.Tensor) -> None:
    """``member_sketch.npz``: the count sketch of every member's whole-network weights and the members' predicted
    labels on the function-space test inputs (written atomically)."""
    buffer = io.BytesIO()
    np.savez(buffer, weights=count_sketch(network_weights(weights)).to(torch.float32).numpy(),
             test_predictions=test_probs.argmax(dim=-1).to(torch.int16).numpy())
    atomic_write_bytes(run_dir / folder.SKETCH, buffer.getvalue())


def load_sketch(run_dir: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(weight sketches (k, d), predicted labels (k, N)) of a run, or None for a run analysed without them."""
    path = Path(run_dir) / folder.SKETCH
    if not path.is_file():
        return None
    with np.load(path) as stored:
        return torch.from_numpy(stored["weights"]), torch.from_numpy(stored["test_predictions"])


def _regression_function_space(config: Config, model, device: torch.device, predictions: dict[str, torch.Tensor],
                               samples: int) -> tuple[dict, dict]:
    """Regression: the CKA matrix of penultimate features and the ensemble's coverage curve on ``samples`` seeded
    inputs of the test and shift sets (from the run's stored ``predictions``), and for a data set with a grid (the 1-D
    toy) every member's predictive mean and variance on it (the figure of predictive bands). The metrics on the full
    sets are ``evaluate_run``'s."""
    task = task_for(config)
    curves: dict[str, Any] = {"coverage": {}}
    matrices, scalars = {}, {}
    for split, chosen in task.evaluation_sets(config).items():
        rows = _chosen_rows(len(chosen.inputs), samples, config.seed)
        predicted = predictions[split][:, rows]
        curves["coverage"][split] = regression.coverage_curve(predicted[..., 0], predicted[..., 1], chosen.targets[rows])
        if predicted.shape[0] >= 2:
            cka = pairwise_cka(_member_features(model, chosen.inputs[rows], config.eval_batch_size, device))
            matrices[split] = cka.tolist()
            scalars[split] = {"mean_cka": mean_off_diagonal(cka)}
    grid = regression.load(config.dataset).grid
    if grid is not None:
        torch.manual_seed(config.seed)  # MC Dropout's test-time masks on the grid
        predicted = task.predict(model, grid, config.eval_batch_size, device, "grid")
        curves["bands"] = {"x": grid[:, 0].tolist(), "member_mean": predicted[..., 0].tolist(),
                           "member_variance": predicted[..., 1].tolist(),
                           "truth": regression.toy_function(grid[:, 0]).tolist()}
    return {"cka": matrices, **curves}, scalars


def analyse_run(run_dir: str | Path, distance_ranks: Sequence[int] = (1,), starts: int = 1,
                max_iter: int = DEFAULT_MAX_ITER, samples: int = FEATURE_SAMPLES) -> dict:
    """Measure the diversity geometry of a trained run and write ``diversity.json`` (atomically) into ``run_dir``.

    ``scalars`` holds every number the study aggregates (``weights/<layer>/mean_*``, ``distance/<layer>/rank<r>/*``,
    ``features/<split>/mean_cka``, ``theory/reachable_fraction``); ``matrices`` and ``curves`` feed the figures.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    config, model, state = folder.load_run(run_dir)
    device = apply_execution_settings(config)
    predictions = folder.predictions(run_dir, config, model, device)
    weights = member_weight_tuples(model, torch.Generator().manual_seed(config.seed))
    scalars: dict[str, Any] = {"theory": {"reachable_fraction": reachable_fraction(config)}}
    matrices: dict[str, Any] = {}
    if next(iter(weights.values())).shape[0] >= 2:
        geometry = weight_geometry(weights)
        matrices["weights"] = {layer: {key: value for key, value in entry.items() if not key.startswith("mean_")}
                               for layer, entry in geometry.items()}
        scalars["weights"] = {layer: {key: value for key, value in entry.items() if key.startswith("mean_")}
                              for layer, entry in geometry.items()}
        scalars["distance"] = distance_to_be_sets(weights, sorted(set(distance_ranks)), config.variant,
                                                  starts=starts, max_iter=max_iter, seed=config.seed)
        aligned = aligned_weight_geometry(weights, config.arch)
        if aligned is not None:
            scalars["aligned"] = {NETWORK: aligned}
    if config.task == "regression":  # no class labels: no sketch of predicted labels (load_sketch gives None)
        function_matrices, scalars["features"] = _regression_function_space(config, model, device, predictions,
                                                                            samples)
    else:
        function_matrices, scalars["features"], test_probs = _function_space(config, model, device, predictions,
                                                                             samples)
        _write_sketch(run_dir, weights, test_probs)
    payload = {"checkpoint_epoch": state["epoch"],
               "distance_fit": {"starts": starts, "max_iter": max_iter}, "function_space_samples": samples,
               "scalars": scalars,
               "matrices": {**matrices, "cka": function_matrices.pop("cka")}, "curves": function_matrices,
               "seconds": time.perf_counter() - started}
    return folder.write_json(run_dir, folder.DIVERSITY, config, payload)
