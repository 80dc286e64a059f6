"""The checkable steps of the all-sizes proofs in docs/proofs.md, and the randomised search that extends the rank-r
conjecture beyond the certified grid.

Rank-1 proof (docs/proofs.md §1–2). Index the entries of a k-member layer by (i, g_0, g_1, …, g_t): the member i, the
broadcast modes g_0 (size D_0, possibly 1) and the blocks g_j (size D_j), so D = D_0 D_1 ⋯ D_t. On the torus
``log|x| = Aᵀ log|θ|`` and the column space of Aᵀ is the space of functions
    F = {w(g)} + Σ_j {ρ_j(i, g_j)}        (a slow weight per entry, a fast factor per member and block index).
ANOVA lemma: with V_S the functions that depend exactly on the factors in S and are centred in each of them,
R^{[k]×G} = ⊕_S V_S, dim V_S = Π_{s∈S}(n_s − 1), and F = ⊕_{S∈𝓕} V_S for
𝓕 = {S ∌ member} ∪ {{member}} ∪ {{member, j} : j = 1..t}. So rank A = D + (k−1)(1 + Σ_j (D_j − 1)).

``anova_projector_sum`` builds Σ_{S∈𝓕} P_S (each P_S a Kronecker product of centring and averaging matrices, scaled
to integers) and ``log_image_is_anova_sum`` checks col(Aᵀ) = range of that sum exactly (integer ranks over Z).
``anova_dimension_identity`` checks Σ_{S⊆T} Π_{s∈S}(n_s − 1) = Π_{s∈T} n_s with sympy for |T| ≤ 6.
``jacobian_is_diag_a_diag`` checks J = diag(x)·Aᵀ·diag(1/θ) as rational functions.
"""
from __future__ import annotations

import itertools
import sys
import time
from dataclasses import asdict, dataclass
from functools import reduce

import numpy as np
import sympy
from flint import fmpz_mat
from tqdm import tqdm

from theory import dimension
from theory.batchensemble import BatchEnsembleSpec
from theory.certificate import certify, exponent_matrix
from theory.symbolic import symbolic_entries, symbolic_point


def factor_groups(spec: BatchEnsembleSpec) -> list[tuple[str, tuple[int, ...]]]:
    """The kernel modes grouped into blocks ("block j") and the broadcast group ("broadcast"), in mode order.
    Every variant's groups are runs of consecutive modes, so entry order = member, then the groups in this order."""
    in_block = {mode: j for j, block in enumerate(spec.blocks) for mode in block}
    groups: list[tuple[str, list[int]]] = []
    for mode in range(len(spec.kernel_shape)):
        name = f"block {in_block[mode]}" if mode in in_block else "broadcast"
        if groups and groups[-1][0] == name:
            groups[-1][1].append(mode)
        else:
            groups.append((name, [mode]))
    names = [name for name, _ in groups]
    if len(set(names)) != len(names):
        raise ValueError(f"variant {spec.variant!r}: a group's modes are not consecutive")
    return [(name, tuple(modes)) for name, modes in groups]


def _scaled_projector(size: int, centred: bool) -> np.ndarray:
    """size · (I − J/size) or size · J/size = J: the centring or averaging projector, scaled to an integer matrix."""
    ones = np.ones((size, size), dtype=object)
    return size * np.eye(size, dtype=np.int64).astype(object) - ones if centred else ones


def anova_family(spec: BatchEnsembleSpec) -> list[frozenset[str]]:
    """𝓕: every subset of the kernel groups, plus {member} and {member, block j} for every block."""
    groups = [name for name, _ in factor_groups(spec)]
    family = [frozenset(subset) for size in range(len(groups) + 1) for subset in itertools.combinations(groups, size)]
    family.append(frozenset({"member"}))
    family += [frozenset({"member", f"block {j}"}) for j in range(len(spec.blocks))]
    return family


def anova_projector_sum(spec: BatchEnsembleSpec) -> np.ndarray:
    """(k·D)·Σ_{S∈𝓕} P_S as an integer matrix over the entries (i, x), member-major (the order of Aᵀ's rows)."""
    sizes = [("member", spec.members)] + [(name, int(np.prod([spec.kernel_shape[m] for m in modes])))
                                           for name, modes in factor_groups(spec)]
    total = np.zeros((spec.ambient_dim, spec.ambient_dim), dtype=object)
    for subset in anova_family(spec):
        total = total + reduce(np.kron, [_scaled_projector(size, name in subset) for name, size in sizes])
    return total


def _integer_rank(matrix: np.ndarray) -> int:
    rows, cols = matrix.shape
    return fmpz_mat(rows, cols, [int(v) for v in matrix.ravel()]).rank()


def log_image_is_anova_sum(spec: BatchEnsembleSpec) -> dict:
    """Exact: rank Aᵀ = rank Q = rank [Aᵀ | Q] (the two column spaces coincide), Q = scaled Σ_{S∈𝓕} P_S, and that
    rank equals D + (k−1)(1 + Σ_j (D_j − 1))."""
    log_map = exponent_matrix(spec).T.astype(object)
    projector = anova_projector_sum(spec)
    ranks = {"A": _integer_rank(log_map), "anova": _integer_rank(projector),
             "joint": _integer_rank(np.concatenate([log_map, projector], axis=1))}
    expected = spec.ambient_dim - dimension.rank1_codim(spec)
    return {"ranks": ranks, "expected": expected, "holds": len(set(ranks.values())) == 1 and ranks["A"] == expected}


def anova_dimension_identity(max_factors: int) -> bool:
    """Σ_{S⊆T} Π_{s∈S}(n_s − 1) = Π_{s∈T} n_s for symbols n_s, |T| = 1..max_factors (the binomial theorem), and
    kD − [D + (k−1)(1 + Σ_j (D_j − 1))] = (k−1)(D − 1 − Σ_j (D_j − 1)) for t = 1..max_factors blocks."""
    for size in range(1, max_factors + 1):
        n = sympy.symbols(f"n0:{size}")
        subsets = sum(sympy.Mul(*[n[s] - 1 for s in subset])
                      for r in range(size + 1) for subset in itertools.combinations(range(size), r))
        if sympy.expand(subsets - sympy.Mul(*n)) != 0:
            return False
        k, d = sympy.symbols("k D")
        rank = d + (k - 1) * (1 + sum(b - 1 for b in n))
        if sympy.expand(k * d - rank - (k - 1) * (d - 1 - sum(b - 1 for b in n))) != 0:
            return False
    return True


def jacobian_is_diag_a_diag(spec: BatchEnsembleSpec) -> bool:
    """Rank 1: ∂x_e/∂θ_p = A[p, e]·x_e/θ_p, i.e. J = diag(x)·Aᵀ·diag(1/θ), as an identity of rational functions."""
    weight, factors, params = symbolic_point(spec)
    entries = symbolic_entries(spec, weight, factors)
    jac = sympy.Matrix(entries).jacobian(params)
    exponents = exponent_matrix(spec)
    predicted = sympy.Matrix(len(entries), len(params),
                             lambda e, p: exponents[p, e] * entries[e] / params[p])
    return (jac - predicted).applyfunc(sympy.cancel).is_zero_matrix


# ---------------------------------------------------------------- rank r: randomised search beyond the grid


@dataclass(frozen=True)
class SearchRow:
    kernel_shape: tuple[int, ...]
    members: int
    rank: int
    variant: str
    ambient_dim: int
    closed_form: int
    lower: int
    upper: int
    status: str
    agrees: bool
    seconds: float


def random_rank_r_specs(count: int, sizes: tuple[int, int], max_members: int, seed: int,
                        conv_fraction: float = 0.25) -> list[BatchEnsembleSpec]:
    """``count`` random rank-r shapes (r >= 2): dense m, n in ``sizes`` or channel-wise conv c_out, c_in in
    ``sizes``//2 with hw in {4, 9}; k in 2..max_members; r uniform in 2..min block size."""
    rng = np.random.default_rng(seed)
    specs = []
    while len(specs) < count:
        k = int(rng.integers(2, max_members + 1))
        if rng.random() < conv_fraction:
            c_out, c_in = (int(v) for v in rng.integers(max(2, sizes[0] // 2), sizes[1] // 2 + 1, size=2))
            shape: tuple[int, ...] = (c_out, c_in, int(rng.choice([2, 3])), int(rng.choice([2, 3])))
        else:
            shape = tuple(int(v) for v in rng.integers(sizes[0], sizes[1] + 1, size=2))
        top = min(shape[:2])
        specs.append(BatchEnsembleSpec(shape, k, int(rng.integers(2, top + 1))))
    return specs


def certify_against_closed_form(specs: list[BatchEnsembleSpec], seed: int) -> list[SearchRow]:
    rows = []
    for spec in tqdm(specs, desc="rank-r search", disable=not sys.stderr.isatty()):
        start = time.perf_counter()
        certificate = certify(spec, "auto", seed)
        closed = dimension.image_dim(spec)
        rows.append(SearchRow(spec.kernel_shape, spec.members, spec.rank, spec.variant, spec.ambient_dim, closed,
                              certificate.lower, certificate.upper, certificate.status,
                              certificate.status == "certified" and certificate.lower == closed,
                              time.perf_counter() - start))
    return rows


def search_summary(rows: list[SearchRow]) -> dict:
    """Rows as dicts, the largest certified shape by the DE dimension kD, and the largest certified dense one."""
    certified = [row for row in rows if row.agrees]
    largest = max(certified, key=lambda row: row.ambient_dim, default=None)
    dense = max((row for row in certified if len(row.kernel_shape) == 2), key=lambda row: row.ambient_dim, default=None)
    return {"rows": [asdict(row) for row in rows], "all_agree": all(row.agrees for row in rows),
            "largest_certified": asdict(largest) if largest else None,
            "largest_certified_dense": asdict(dense) if dense else None}
