"""Certified image dimension of a BatchEnsemble layer: matched exact lower and upper bounds (docs/theory.md §6).

Three routes, one ``Certificate``:

* ``toric`` (rank 1, every block variant, real layer sizes). On the torus every entry is a monomial, so the log map
  L_i[x] = log w[x] + Σ_j log f_ij[x|B_j] is linear with the 0/1 exponent matrix A (rows: parameters, columns:
  entries (i, x)) and J = diag(x)·Aᵀ·diag(1/θ): rank J = rank A at every torus point. Lower bound: ρ (parameter,
  entry) pairs whose submatrix of A is triangular with unit diagonal (checked on the actual index structure,
  O(ρ·t)); upper bound: P − ρ integer kernel vectors of Aᵀ (the scaling symmetries), checked to annihilate every
  column of A exactly and independent through a triangular set of pivot coordinates. No elimination at all.
* ``modular`` (any shape, small): the dense Jacobian at a random integer point, rank modulo a prime (python-flint);
  a nonzero minor mod p is a nonzero integer, so generic rank ≥ rank_p.
* ``schur`` (any shape, large): the same lower bound, through exact elimination of W. Member 1's rows are
  diag(M_1) on the W columns, invertible mod p when every M_1[x] ≢ 0, so rank J = D + rank S with S the
  (k−1)D × k·r·Σ_j D_j matrix of rows [−diag(M_i/M_1)·B_1 | 0 … B_i … 0] (i ≥ 2; B_i = member i's factor
  columns). When S is too tall to hold densely it is compressed by a sparse random sketch Π (rank ΠS ≤ rank S, so
  the bound stays certified; equality holds with high probability).

Upper bound for ``modular``/``schur``: min(kD, P − rank of the symmetry tangent vectors at the same point), after
checking J·v ≡ 0 mod p for each of them, sharpened by the fibre bound of ``theory.dimension`` for two blocks.
A shortfall is retried at a fresh point with the second prime and then reported as ``candidate-defect`` with the
Schwartz–Zippel bound on the probability that a point of a rank-``upper`` map shows it: deg(minor)/(p−1) per try.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import flint
import numpy as np
import scipy.sparse as sp
import torch

from infra.errors import BadInput
from theory import dimension
from theory.batchensemble import BatchEnsembleSpec, _block_index_of_entries, jacobian, random_factors
from theory.exact_rank import PRIMES, FloatRank, float_rank, modular_rank

ROUTES = ("auto", "toric", "modular", "schur", "none")
STATUSES = ("certified", "candidate-defect", "not-run")
DENSE_ENTRY_LIMIT = 30_000_000  # largest dense matrix built at once (plain-route guard, chunk size of sketches)
SKETCH_ENTRY_LIMIT = 2_000_000  # a tall S or K with more entries is sketched: flint's list input costs ~0.5 µs/entry
SKETCH_HASHES = 3  # nonzeros per column of the sparse sketch Π
SKETCH_SLACK = 8  # extra sketch rows beyond the column count


@dataclass(frozen=True)
class Certificate:
    """lower ≤ generic rank of JΦ = dim Im Φ ≤ upper; ``certified`` when they meet."""

    lower: int
    upper: int
    status: str
    route: str
    primes: tuple[int, ...] = ()
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"lower": self.lower, "upper": self.upper, "status": self.status}

    def as_dict(self) -> dict[str, Any]:
        return {**self.to_json(), "route": self.route, "primes": list(self.primes),
                "seconds": round(self.seconds, 4), "details": self.details}


# ---------------------------------------------------------------- index structure shared by every route


@functools.lru_cache(maxsize=64)
def block_indices(spec: BatchEnsembleSpec) -> tuple[np.ndarray, ...]:
    """For each block j, the (D,) array x ↦ x|B_j (flat index of the kernel entry restricted to the block)."""
    indices = tuple(_block_index_of_entries(spec, j).numpy() for j in range(len(spec.blocks)))
    for index in indices:
        index.flags.writeable = False
    return indices


def factor_offsets(spec: BatchEnsembleSpec) -> list[int]:
    """Parameter index of F_j[0, 0, 0]; F_j[i, q, c] sits at offset_j + (i·r + q)·D_j + c."""
    offsets, start = [], spec.kernel_size
    for size in spec.block_sizes:
        offsets.append(start)
        start += spec.members * spec.rank * size
    return offsets


def random_integer_point(spec: BatchEnsembleSpec, prime: int, rng: np.random.Generator
                         ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Uniform nonzero residues mod ``prime``: W flat (D,) and factors (k, r, D_j); redrawn until every M_1[x] ≢ 0."""
    while True:
        weight = rng.integers(1, prime, size=spec.kernel_size, dtype=np.int64)
        factors = [rng.integers(1, prime, size=shape, dtype=np.int64) for shape in spec.factor_shapes]
        if np.all(_gathered_terms(spec, factors, prime)[0].sum(axis=0) % prime != 0):
            return weight, factors


def _gathered_terms(spec: BatchEnsembleSpec, factors: Sequence[np.ndarray], modulus: int | None
                    ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rank-one terms T[i, q, x] = Π_j F_j[i, q, x|B_j] and, per block j, Π_{l≠j} F_l[i, q, x|B_l]."""
    reduce = (lambda a: a) if modulus is None else (lambda a: a % modulus)
    gathered = [factor[:, :, index] for factor, index in zip(factors, block_indices(spec))]
    ones = np.ones_like(gathered[0])
    prefix = [ones]
    for term in gathered[:-1]:
        prefix.append(reduce(prefix[-1] * term))
    suffix = [ones]
    for term in reversed(gathered[1:]):
        suffix.append(reduce(suffix[-1] * term))
    suffix.reverse()
    others = [reduce(before * after) for before, after in zip(prefix, suffix)]
    full = reduce(others[0] * gathered[0])
    return full, others


def sparse_jacobian(spec: BatchEnsembleSpec, weight: np.ndarray, factors: Sequence[np.ndarray],
                    modulus: int | None = None) -> sp.coo_matrix:
    """JΦ as a sparse (kD × P) matrix, the formula of ``batchensemble.jacobian`` (tested equal to it):
    row (i, x) has M_i[x] in column x and W[x]·Π_{l≠j} F_l[i,q,x|B_l] in column of F_j[i, q, x|B_j]."""
    k, r, size = spec.members, spec.rank, spec.kernel_size
    reduce = (lambda a: a) if modulus is None else (lambda a: a % modulus)
    full, others = _gathered_terms(spec, factors, modulus)
    member_rows = np.arange(k)[:, None, None] * size + np.arange(size)[None, None, :]  # (k, 1, D)
    rows = [np.broadcast_to(member_rows[:, 0, :], (k, size)).ravel()]
    cols = [np.tile(np.arange(size), k)]
    vals = [reduce(full.sum(axis=1)).ravel()]
    for offset, block_size, index, other in zip(factor_offsets(spec), spec.block_sizes, block_indices(spec), others):
        slot = (np.arange(k)[:, None, None] * r + np.arange(r)[None, :, None]) * block_size
        rows.append(np.broadcast_to(member_rows, (k, r, size)).ravel())
        cols.append((offset + slot + index[None, None, :]).ravel())
        vals.append(reduce(weight[None, None, :] * other).ravel())
    shape = (spec.ambient_dim, spec.num_params)
    return sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)


# ---------------------------------------------------------------- symmetry tangents (upper bound)


def symmetry_tangents(spec: BatchEnsembleSpec, weight: np.ndarray, factors: Sequence[np.ndarray]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tangent vectors of the symmetry group at (W, F), as COO triplets (vector id, parameter, value), plus the
    member that owns each vector (−1 for the block-torus vectors, which come first).

    Block torus (j, c): W[x] ↦ −W[x] where x|B_j = c, F_j[i, q, c] ↦ F_j[i, q, c].
    t = 2, per-member GL_r generator (i, a, b): F_1[i, a, :] ↦ F_1[i, b, :], F_2[i, b, :] ↦ −F_2[i, a, :].
    t ≥ 3, per-term rescaling (i, q, j ≥ 2): F_1[i, q, :] ↦ F_1[i, q, :], F_j[i, q, :] ↦ −F_j[i, q, :].
    Works on any numpy dtype (object arrays of sympy symbols included).
    """
    k, r, sizes = spec.members, spec.rank, spec.block_sizes
    offsets, indices = factor_offsets(spec), block_indices(spec)
    ids, cols, vals = [], [], []
    owners: list[int] = []
    base = 0
    for offset, size, index, factor in zip(offsets, sizes, indices, factors):
        ids += [base + index, base + np.broadcast_to(np.arange(size), (k, r, size)).ravel()]
        cols += [np.arange(spec.kernel_size), offset + np.arange(k * r * size)]
        vals += [-weight, factor.ravel()]
        base += size
        owners += [-1] * size
    slot = lambda offset, size, i, q: offset + (i * r + q) * size + np.arange(size)  # noqa: E731
    generators = []
    for i in range(k):
        if len(sizes) == 2:  # GL_r generator e_a e_bᵀ
            generators += [(i, 0, a, 1, b, factors[0][i, b], -factors[1][i, a]) for a in range(r) for b in range(r)]
        else:  # rescaling of term q between blocks 1 and j
            generators += [(i, 0, q, j, q, factors[0][i, q], -factors[j][i, q])
                           for q in range(r) for j in range(1, len(sizes))]
    for i, block_a, term_a, block_b, term_b, values_a, values_b in generators:
        ids.append(np.full(sizes[block_a] + sizes[block_b], base))
        cols.append(np.concatenate([slot(offsets[block_a], sizes[block_a], i, term_a),
                                    slot(offsets[block_b], sizes[block_b], i, term_b)]))
        vals.append(np.concatenate([values_a, values_b]))
        owners.append(i)
        base += 1
    return np.concatenate(ids), np.concatenate(cols), np.concatenate(vals), np.array(owners, dtype=np.int64)


def mod_product(left: sp.spmatrix, right: sp.spmatrix | np.ndarray, prime: int) -> sp.csr_matrix | np.ndarray:
    """Exact left·right mod p for residues < 2^31. ``left`` is split into 16-bit limbs, so each product is < 2^47
    and int64 sums stay exact while a row of ``left`` has fewer than 2^16 nonzeros (checked)."""
    left = sp.csr_matrix(left, dtype=np.int64)
    if left.nnz and np.diff(left.indptr).max() >= 2 ** 16:
        raise BadInput(f"a row with {np.diff(left.indptr).max()} nonzeros is too long for exact int64 products "
                       f"(limit {2 ** 16 - 1})")
    low, high = left.copy(), left.copy()
    low.data = left.data % 65536
    high.data = left.data // 65536
    right = sp.csr_matrix(right, dtype=np.int64) if sp.issparse(right) else np.asarray(right, dtype=np.int64)
    high_part, low_part = high @ right, low @ right
    if sp.issparse(high_part):
        high_part, low_part = sp.csr_matrix(high_part), sp.csr_matrix(low_part)
        high_part.data = high_part.data % prime * 65536 % prime
        total = high_part + low_part
        total.data %= prime
        return total
    return (np.asarray(high_part) % prime * 65536 + np.asarray(low_part)) % prime


def _mod_matmul_is_zero(left: sp.spmatrix, right: sp.spmatrix, prime: int) -> bool:
    return not np.any(mod_product(left, right, prime).data)


class RowSketch:
    """Accumulates Π·X over row blocks of X, Π a sparse random (buckets × rows) matrix with ``SKETCH_HASHES``
    nonzero residues per column; rank_p(Π·X) ≤ rank_p(X) always, with equality with high probability."""

    def __init__(self, columns: int, prime: int, rng: np.random.Generator) -> None:
        self.buckets, self.prime, self.rng = columns + SKETCH_SLACK, prime, rng
        self.total = np.zeros((self.buckets, columns), dtype=np.int64)
        self.rows = 0

    def add(self, block: sp.spmatrix | np.ndarray) -> None:
        count = block.shape[0]
        bucket = self.rng.integers(0, self.buckets, size=(SKETCH_HASHES, count)).ravel()
        coefficient = self.rng.integers(1, self.prime, size=SKETCH_HASHES * count, dtype=np.int64)
        source = np.tile(np.arange(count), SKETCH_HASHES)
        sketch = sp.coo_matrix((coefficient, (bucket, source)), shape=(self.buckets, count))
        product = mod_product(sketch, block, self.prime)
        self.total = (self.total + (product.toarray() if sp.issparse(product) else product)) % self.prime
        self.rows += count

    def rank(self) -> int:
        return modular_rank(self.total, self.prime)


def axis_entries(spec: BatchEnsembleSpec) -> np.ndarray:
    """Kernel entries x with every broadcast mode at 0 and at most one block index nonzero (Σ_j D_j − t + 1)."""
    indices = block_indices(spec)
    nonzero = np.sum([index != 0 for index in indices], axis=0)
    return np.flatnonzero((nonzero <= 1) & _broadcast_modes_at_zero(spec))


def orbit_rank(spec: BatchEnsembleSpec, tangents: sp.csr_matrix, owners: np.ndarray, prime: int) -> int:
    """A lower bound on rank_p of the tangent vectors, from its block-triangular structure: rows ordered (torus;
    member 1; …; member k), columns (W at ``axis_entries``; member 1's factors; …) — member rows vanish on W and
    on other members' factors — so rank ≥ rank(torus × W axes) + Σ_i rank(member i × its factors)."""
    torus = np.flatnonzero(owners < 0)
    rank = modular_rank(tangents[torus][:, axis_entries(spec)].toarray(), prime)
    offsets, width = factor_offsets(spec), spec.rank
    for i in range(spec.members):
        rows = np.flatnonzero(owners == i)
        if len(rows) == 0:
            continue
        columns = np.concatenate([offset + i * width * size + np.arange(width * size)
                                  for offset, size in zip(offsets, spec.block_sizes)])
        rank += modular_rank(tangents[rows][:, columns].toarray(), prime)
    return rank


def symmetry_upper_bound(spec: BatchEnsembleSpec, weight: np.ndarray, factors: Sequence[np.ndarray],
                         jac: sp.spmatrix, prime: int) -> tuple[int, dict[str, Any]]:
    """min(kD, P − orbit rank, fibre bound) after checking J·Vᵀ ≡ 0 mod p. The orbit rank at one point is a lower
    bound on the generic orbit dimension, and J(θ)·v(θ) = 0 holds identically (``theory.symbolic`` proves it on
    small shapes), so the bound is proved."""
    ids, cols, vals, owners = symmetry_tangents(spec, weight, factors)
    tangents = sp.coo_matrix((vals % prime, (ids, cols)), shape=(len(owners), spec.num_params)).tocsr()
    in_kernel = _mod_matmul_is_zero(jac, tangents.T, prime)
    orbit = orbit_rank(spec, tangents, owners, prime) if in_kernel else 0
    bounds = {"kD": spec.ambient_dim, "symmetry": spec.num_params - orbit}
    fibre = dimension.fibre_bound(spec)
    if fibre is not None:
        bounds["fibre"] = fibre
    details = {"tangents": len(owners), "tangents_in_kernel": in_kernel, "orbit_rank": orbit,
               "orbit_formula": dimension.orbit_dim(spec), "bounds": bounds}
    return min(bounds.values()), details


# ---------------------------------------------------------------- modular and Schur lower bounds


def modular_jacobian_rank(spec: BatchEnsembleSpec, weight: np.ndarray, factors: Sequence[np.ndarray],
                          prime: int) -> int:
    """rank_p of the dense Jacobian from ``batchensemble.jacobian`` (the plain route; small layers only)."""
    if spec.ambient_dim * spec.num_params > DENSE_ENTRY_LIMIT:
        raise BadInput(f"the dense Jacobian of {spec.kernel_shape} with k={spec.members} has "
                       f"{spec.ambient_dim * spec.num_params:,} entries: the modular route accepts at most "
                       f"{DENSE_ENTRY_LIMIT:,}; use --route schur")
    dense = jacobian(spec, torch.from_numpy(weight.reshape(spec.kernel_shape)),
                     tuple(torch.from_numpy(f) for f in factors), modulus=prime)
    return modular_rank(dense.numpy(), prime)


def schur_complement(spec: BatchEnsembleSpec, jac: sp.coo_matrix, prime: int) -> sp.coo_matrix:
    """S = rows i ≥ 2 of J with W eliminated: B_1 rows scaled by −M_i[x]/M_1[x], member-i factor columns kept.

    Row (i, x) of S is indexed (i−1)·D + x; column = parameter index − D (factor columns only).
    """
    size, k = spec.kernel_size, spec.members
    rows, cols, vals = jac.row, jac.col, jac.data % prime
    is_w = cols < size
    mult = np.zeros(spec.ambient_dim, dtype=np.int64)
    mult[rows[is_w]] = vals[is_w]
    ratio = np.zeros(spec.ambient_dim, dtype=np.int64)
    inverse_m1 = _batch_inverse(mult[:size], prime)
    ratio[size:] = (prime - mult[size:]) % prime * np.tile(inverse_m1, k - 1) % prime  # −M_i/M_1
    member = rows // size
    own = (~is_w) & (member >= 1)
    first = (~is_w) & (member == 0)
    first_rows, first_cols, first_vals = rows[first], cols[first], vals[first]
    out_rows = [rows[own] - size]
    out_cols = [cols[own] - size]
    out_vals = [vals[own]]
    for i in range(1, k):
        out_rows.append((i - 1) * size + first_rows)
        out_cols.append(first_cols - size)
        out_vals.append(first_vals * ratio[i * size + first_rows] % prime)
    shape = ((k - 1) * size, spec.num_params - size)
    return sp.coo_matrix((np.concatenate(out_vals), (np.concatenate(out_rows), np.concatenate(out_cols))), shape=shape)


def _batch_inverse(values: np.ndarray, prime: int) -> np.ndarray:
    """Modular inverses by Fermat, v^(p−2), vectorised with square-and-multiply (values < 2^31, products < 2^62)."""
    result = np.ones_like(values)
    base = values % prime
    exponent = prime - 2
    while exponent:
        if exponent & 1:
            result = result * base % prime
        base = base * base % prime
        exponent >>= 1
    return result


def sketched_rank(matrix: sp.spmatrix, prime: int, rng: np.random.Generator) -> tuple[int, dict[str, Any]]:
    """rank_p of ``matrix`` (dense when it fits), else of Π·matrix with Π a sparse random sketch — a lower bound."""
    rows, cols = matrix.shape
    if rows * cols <= SKETCH_ENTRY_LIMIT or rows <= cols + SKETCH_SLACK:
        return modular_rank(matrix.toarray() % prime, prime), {"sketch": None}
    sketch = RowSketch(cols, prime, rng)
    matrix = sp.csr_matrix(matrix)
    step = max(1, DENSE_ENTRY_LIMIT // (4 * cols))
    for start in range(0, rows, step):
        sketch.add(matrix[start:start + step])
    return sketch.rank(), {"sketch": [sketch.buckets, rows]}


def _matmul(left: np.ndarray, right: np.ndarray, prime: int) -> np.ndarray:
    """Dense product mod p through python-flint (exact)."""
    product = flint.nmod_mat(left.shape[0], left.shape[1], left.ravel().tolist(), prime) * \
        flint.nmod_mat(right.shape[0], right.shape[1], right.ravel().tolist(), prime)
    return np.array([int(entry) for entry in product.entries()], dtype=np.int64).reshape(left.shape[0], right.shape[1])


def _left_null_basis(matrix: np.ndarray, prime: int) -> np.ndarray | None:
    """Basis (d × (d − c)) of {z : zᵀ·matrix = 0} for a d × c matrix of full column rank mod p; None otherwise."""
    rows, cols = matrix.shape
    basis, nullity = flint.nmod_mat(cols, rows, matrix.T.ravel().tolist(), prime).nullspace()
    if nullity != rows - cols:
        return None
    return np.array([int(entry) for entry in basis.entries()], dtype=np.int64).reshape(rows, rows)[:, :nullity]


def two_block_rank(spec: BatchEnsembleSpec, factors: Sequence[np.ndarray], prime: int,
                   rng: np.random.Generator) -> tuple[int, dict[str, Any]] | None:
    """rank_p J = D + (k−1)·r(D_1+D_2−r) + rank_p K for two blocks (dense, channel-wise, flattened), by also
    eliminating each member's own factor columns B_i (exact over any field; ``None`` if some R_i, S_i is rank
    deficient mod p).

    With R_i = F_1[i]ᵀ, S_i = F_2[i]ᵀ of full column rank and W, M_1 nonzero: rank B_i = r(D_1+D_2−r) (the
    kernel of (dR, dS) ↦ dR·S_iᵀ + R_i·dS_iᵀ is {(R_iA, −S_iAᵀ)}), and the left null space of B_i maps onto
    Y = N_R·Z·N_Sᵀ (N_R, N_S left null bases of R_i, S_i) with every other direction annihilating the eliminated
    member-1 block too. With G_i = M_i ⊘ M_1 on the D_1×D_2 grid, the row Z = e_u e_vᵀ of K_i is
    [−N_R[a,u]·(G_i·(N_S[:,v]∘S_1))[a,q]  |  −N_S[b,v]·(G_iᵀ·(N_R[:,u]∘R_1))[b,q]].
    """
    (d1, d2), k, r = spec.block_sizes, spec.members, spec.rank
    first, second = factors
    m_grid = [_matmul(first[i].T, second[i], prime) for i in range(k)]
    inverse_m1 = _batch_inverse(m_grid[0], prime)
    row_1, col_1 = first[0].T, second[0].T
    sketch = RowSketch(r * (d1 + d2), prime, rng)
    rows_k, cols_k = (k - 1) * (d1 - r) * (d2 - r), r * (d1 + d2)
    dense_blocks, sketched = [], rows_k * cols_k > SKETCH_ENTRY_LIMIT and rows_k > cols_k + SKETCH_SLACK
    for i in range(1, k):
        null_r, null_s = _left_null_basis(first[i].T, prime), _left_null_basis(second[i].T, prime)
        if null_r is None or null_s is None:
            return None
        ratio = m_grid[i] * inverse_m1 % prime
        h = _matmul(ratio, (null_s[:, :, None] * col_1[:, None, :] % prime).reshape(d2, -1), prime)
        e = _matmul(ratio.T, (null_r[:, :, None] * row_1[:, None, :] % prime).reshape(d1, -1), prime)
        h, e = h.reshape(d1, d2 - r, r), e.reshape(d2, d1 - r, r)
        step = max(1, DENSE_ENTRY_LIMIT // (8 * max(1, (d2 - r) * r * (d1 + d2))))
        for start in range(0, d1 - r, step):
            u = slice(start, start + step)
            left = (prime - null_r.T[u, None, :, None]) * h.transpose(1, 0, 2)[None, :, :, :] % prime
            right = (prime - null_s.T[None, :, :, None]) * e[:, u, :].transpose(1, 0, 2)[:, None, :, :] % prime
            block = np.concatenate([left.reshape(-1, d1 * r), right.reshape(-1, d2 * r)], axis=1)
            if sketched:
                sketch.add(block)
            else:
                dense_blocks.append(block)
    if sketched:
        rank_k, detail = sketch.rank(), {"sketch": [sketch.buckets, sketch.rows]}
    else:
        rank_k = modular_rank(np.concatenate(dense_blocks), prime) if dense_blocks else 0
        detail = {"sketch": None}
    return spec.kernel_size + (k - 1) * r * (d1 + d2 - r) + rank_k, {**detail, "elimination": "W and B_i"}


def _lower_bound(spec: BatchEnsembleSpec, route: str, weight: np.ndarray, factors: list[np.ndarray],
                 jac: sp.coo_matrix, prime: int, rng: np.random.Generator) -> tuple[int, dict[str, Any]]:
    if route == "modular":
        return modular_jacobian_rank(spec, weight, factors, prime), {"elimination": None}
    if spec.members == 1:
        return spec.kernel_size, {"elimination": "W"}  # J ⊇ diag(M_1) with every M_1[x] ≢ 0
    if len(spec.block_sizes) == 2:
        structured = two_block_rank(spec, factors, prime, rng)
        if structured is not None:
            return structured
    rank, details = sketched_rank(schur_complement(spec, jac, prime), prime, rng)
    return spec.kernel_size + rank, {**details, "elimination": "W"}


def _schwartz_zippel(spec: BatchEnsembleSpec, upper: int, prime: int, sketched: bool) -> float:
    """Probability bound that a rank-``upper`` minor vanishes at a uniform nonzero point: degree/(p−1).
    Jacobian entries have degree ≤ t (t+1 with the sketch coefficients)."""
    degree = (len(spec.block_sizes) + (1 if sketched else 0)) * upper
    return min(1.0, degree / (prime - 1))


def modular_certificate(spec: BatchEnsembleSpec, route: str = "schur", seed: int = 0) -> Certificate:
    """Lower bound from rank_p of J (``modular``) or of its Schur complement (``schur``); symmetry upper bound.
    One retry at a fresh point with the second prime before reporting a candidate defect."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    tries, lower, upper, details = [], 0, spec.ambient_dim, {}
    for prime in PRIMES:
        weight, factors = random_integer_point(spec, prime, rng)
        jac = sparse_jacobian(spec, weight, factors, prime)
        lower_here, details = _lower_bound(spec, route, weight, factors, jac, prime, rng)
        if lower_here < spec.ambient_dim:  # below kD an upper bound is needed (kD itself needs none)
            upper_here, symmetry_details = symmetry_upper_bound(spec, weight, factors, jac, prime)
            details.update(symmetry_details)
            upper = min(upper, upper_here)
        lower = max(lower, lower_here)
        tries.append({"prime": prime, "rank": lower_here})
        if lower >= upper:
            break
    details["tries"] = tries
    if lower >= upper:
        status = "certified"
    else:
        status = "candidate-defect"
        bound = 1.0
        for attempt in tries:
            bound *= _schwartz_zippel(spec, upper, attempt["prime"], bool(details.get("sketch")))
        details["schwartz_zippel_miss_probability"] = bound
    return Certificate(lower, upper, status, route, tuple(t["prime"] for t in tries),
                       time.perf_counter() - start, details)


# ---------------------------------------------------------------- toric route (rank 1)


def entry_support(spec: BatchEnsembleSpec, entries: np.ndarray) -> np.ndarray:
    """(len(entries), 1 + t) parameter indices dividing each entry e = i·D + x (rank 1): w[x], then f_ij[x|B_j].

    Row n of this table is the support of column ``entries[n]`` of the exponent matrix A (its nonzeros are all 1).
    """
    if spec.rank != 1:
        raise BadInput(f"rank={spec.rank} has no monomial entries: the toric route needs rank 1")
    member, x = np.divmod(np.asarray(entries, dtype=np.int64), spec.kernel_size)
    columns = [x]
    for offset, block_size, index in zip(factor_offsets(spec), spec.block_sizes, block_indices(spec)):
        columns.append(offset + member * block_size + index[x])
    return np.stack(columns, axis=1)


def exponent_matrix(spec: BatchEnsembleSpec) -> np.ndarray:
    """Dense 0/1 exponent matrix A (P × kD): A[p, (i, x)] = 1 iff parameter p divides entry (i, x). Small sizes."""
    support = entry_support(spec, np.arange(spec.ambient_dim))
    matrix = np.zeros((spec.num_params, spec.ambient_dim), dtype=np.int64)
    matrix[support, np.arange(spec.ambient_dim)[:, None]] = 1
    return matrix


def toric_pairs(spec: BatchEnsembleSpec) -> tuple[np.ndarray, np.ndarray]:
    """ρ = D + (k−1)(1 + Σ_j (D_j − 1)) (entry, parameter) pairs, in triangular order:
    (1, x) ↔ w[x]; then per member i ≥ 2: the all-first-index entry ↔ f_i1[0], and the entry moving only block j's
    index to a ≥ 1 ↔ f_ij[a]."""
    size, k = spec.kernel_size, spec.members
    offsets, indices = factor_offsets(spec), block_indices(spec)
    entries, params = [np.arange(size)], [np.arange(size)]
    for i in range(1, k):
        entries.append(np.array([i * size]))  # x = 0: every block index 0
        params.append(np.array([offsets[0] + i * spec.block_sizes[0]]))
        for j, (offset, block_size, index) in enumerate(zip(offsets, spec.block_sizes, indices)):
            others_at_zero = np.all([idx == 0 for jj, idx in enumerate(indices) if jj != j], axis=0)
            moving = np.flatnonzero(others_at_zero & (index >= 1) & _broadcast_modes_at_zero(spec))
            moving = moving[np.argsort(index[moving])]
            entries.append(i * size + moving)
            params.append(offset + i * block_size + index[moving])
    return np.concatenate(entries), np.concatenate(params)


def _broadcast_modes_at_zero(spec: BatchEnsembleSpec) -> np.ndarray:
    in_block = {d for block in spec.blocks for d in block}
    grids = np.meshgrid(*[np.arange(n) for n in spec.kernel_shape], indexing="ij")
    mask = np.ones(spec.kernel_shape, dtype=bool)
    for d in range(len(spec.kernel_shape)):
        if d not in in_block:
            mask &= grids[d] == 0
    return mask.ravel()


def _distinct(values: np.ndarray, bound: int) -> bool:
    return bool(np.bincount(values, minlength=bound).max(initial=0) <= 1)


def _sort_columns(columns: list[np.ndarray]) -> list[np.ndarray]:
    """Sort, position by position, the rows formed by equal-length 1-D arrays (odd–even transposition network)."""
    columns = list(columns)
    for sweep in range(len(columns)):
        for left in range(sweep % 2, len(columns) - 1, 2):
            low = np.minimum(columns[left], columns[left + 1])
            columns[left + 1] = np.maximum(columns[left], columns[left + 1])
            columns[left] = low
    return columns


def pairs_are_unit_triangular(spec: BatchEnsembleSpec, entries: np.ndarray, params: np.ndarray) -> bool:
    """The submatrix A[params, entries] is upper triangular with unit diagonal: in column n (entry n), the paired
    parameter n occurs, and every other occurring selected parameter comes earlier in the order."""
    if not (_distinct(params, spec.num_params) and _distinct(entries, spec.ambient_dim)):
        return False
    position = np.full(spec.num_params, -1, dtype=np.int64)
    position[params] = np.arange(len(params))
    order = position[entry_support(spec, entries)]
    own = np.arange(len(entries))[:, None]
    return bool(np.all((order == own).sum(axis=1) == 1) and np.all(order <= own))


def toric_kernel_vectors(spec: BatchEnsembleSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P − ρ = Σ_j D_j + (k−1)(t−1) integer vectors v with Aᵀv = 0, COO (vector id, parameter, value):
    block torus (j, c): −1 on w[x] with x|B_j = c, +1 on f_ij[c] for every member i;
    member scaling (i ≥ 2, j ≥ 2): +1 on every f_i1[·], −1 on every f_ij[·]."""
    ids, cols, vals = [], [], []
    base = 0
    for offset, size, index in zip(factor_offsets(spec), spec.block_sizes, block_indices(spec)):
        ids += [base + index, base + np.tile(np.arange(size), spec.members)]
        cols += [np.arange(spec.kernel_size), offset + np.arange(spec.members * size)]
        vals += [-np.ones(spec.kernel_size, dtype=np.int64), np.ones(spec.members * size, dtype=np.int64)]
        base += size
    offsets, sizes = factor_offsets(spec), spec.block_sizes
    for i in range(1, spec.members):
        for j in range(1, len(sizes)):
            ids.append(np.full(sizes[0] + sizes[j], base))
            cols.append(np.concatenate([offsets[0] + i * sizes[0] + np.arange(sizes[0]),
                                        offsets[j] + i * sizes[j] + np.arange(sizes[j])]))
            vals.append(np.concatenate([np.ones(sizes[0], dtype=np.int64), -np.ones(sizes[j], dtype=np.int64)]))
            base += 1
    return np.concatenate(ids), np.concatenate(cols), np.concatenate(vals)


def kernel_vectors_annihilate(spec: BatchEnsembleSpec, ids: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> bool:
    """Exact check Aᵀv = 0 for every vector: for each entry (i, x), Σ_{p ∈ supp(i,x)} V[:, p] = 0.

    Values must be ±1; per entry, the multiset of vector ids with +1 must equal the one with −1 (compared after a
    sorting network over the gathered ids). Runs member by member, O(k·D·(1+t)·width).
    """
    if not np.all(np.abs(vals) == 1):
        return False
    order = np.argsort(cols, kind="stable")
    cols_sorted, ids_sorted, vals_sorted = cols[order], ids[order].astype(np.int32), vals[order]
    counts = np.bincount(cols_sorted, minlength=spec.num_params)
    slot = np.arange(len(cols_sorted)) - (np.cumsum(counts) - counts)[cols_sorted]
    sentinel = np.int32(int(ids.max()) + 1)
    positive = [np.full(spec.num_params, sentinel, dtype=np.int32) for _ in range(int(counts.max()))]
    negative = [table.copy() for table in positive]
    for position, (table_up, table_down) in enumerate(zip(positive, negative)):
        here = slot == position
        up, down = here & (vals_sorted > 0), here & (vals_sorted < 0)
        table_up[cols_sorted[up]] = ids_sorted[up]
        table_down[cols_sorted[down]] = ids_sorted[down]
    for member in range(spec.members):
        support = entry_support(spec, member * spec.kernel_size + np.arange(spec.kernel_size)).T
        up = _sort_columns([table[params] for params in support for table in positive])
        down = _sort_columns([table[params] for params in support for table in negative])
        if not all(np.array_equal(a, b) for a, b in zip(up, down)):
            return False
    return True


def kernel_vectors_independent(ids: np.ndarray, cols: np.ndarray, vals: np.ndarray, pivots: np.ndarray) -> bool:
    """V[:, pivots] is upper triangular with nonzero diagonal (vector n has its pivot at position n)."""
    count = int(ids.max()) + 1
    if len(pivots) != count or not _distinct(pivots, int(pivots.max()) + 1):
        return False
    where = np.full(int(max(cols.max(), pivots.max())) + 1, -1, dtype=np.int64)
    where[pivots] = np.arange(count)
    hit = where[cols] >= 0
    rows, columns, values = ids[hit], where[cols[hit]], vals[hit]
    diagonal = np.zeros(count, dtype=np.int64)
    np.add.at(diagonal, rows[rows == columns], values[rows == columns])
    return bool(np.all(columns >= rows) and np.all(diagonal != 0))


def toric_pivots(spec: BatchEnsembleSpec) -> np.ndarray:
    """Pivot of torus vector (j, c): f_1j[c]; of member scaling (i, j): f_ij[0]."""
    offsets, sizes = factor_offsets(spec), spec.block_sizes
    pivots = [offset + np.arange(size) for offset, size in zip(offsets, sizes)]
    for i in range(1, spec.members):
        pivots += [np.array([offsets[j] + i * sizes[j]]) for j in range(1, len(sizes))]
    return np.concatenate(pivots)


def toric_certificate(spec: BatchEnsembleSpec) -> Certificate:
    """rank A certified from both sides with no elimination (exact over ZZ, hence over every field)."""
    start = time.perf_counter()
    entries, params = toric_pairs(spec)
    triangular = pairs_are_unit_triangular(spec, entries, params)
    ids, cols, vals = toric_kernel_vectors(spec)
    annihilate = kernel_vectors_annihilate(spec, ids, cols, vals)
    independent = kernel_vectors_independent(ids, cols, vals, toric_pivots(spec))
    lower = len(entries) if triangular else 0
    upper = spec.num_params - (int(ids.max()) + 1) if annihilate and independent else spec.num_params
    upper = min(upper, spec.ambient_dim)
    details = {"pairs_unit_triangular": triangular, "kernel_vectors": int(ids.max()) + 1,
               "kernel_vectors_annihilate": annihilate, "kernel_vectors_independent": independent}
    if not (triangular and annihilate and independent):
        return Certificate(lower, upper, "not-run", "toric", (), time.perf_counter() - start,
                           {**details, "reason": "a structural check failed"})
    status = "certified" if lower == upper else "candidate-defect"
    return Certificate(lower, upper, status, "toric", (), time.perf_counter() - start, details)


# ---------------------------------------------------------------- cost of a route, before it runs

# Peak memory and wall time per unit of work, measured (tracemalloc peak, wall clock) on layers from 8×8 to 2000×1000
# on a busy 2-core CPU, rounded up. Units: the Jacobian's nonzeros k·D·(1 + t·r) (toric: 25–28 B and 0.2–0.35 µs
# each; Schur: 110–175 B and 35–75 µs each); for Schur also the dense matrix it ranks (S, or K for two blocks, capped
# at the sketch size, plus the square sketch: 32 B per entry, about four int64 copies) and a fixed start-up (two
# primes, flint); for the plain modular route the dense Jacobian's kD·P entries (three int64 copies; elimination
# ~12 ns per kD·P·min(kD, P)). Estimates, not bounds: they decide whether to start, good to a factor of about 3.
ROUTE_COST_PER_UNIT = {"toric": (32.0, 4e-7), "schur": (200.0, 8e-5)}
DENSE_BYTES_PER_ENTRY, RANK_SECONDS_PER_CUBE = 32.0, 1e-9
MODULAR_BYTES_PER_ENTRY, MODULAR_SECONDS_PER_OPERATION = 24.0, 1.2e-8
MODULAR_START_BYTES, MODULAR_START_S = 4 * 2**20, 2.0
MEMORY_LIMIT_BYTES = 8 * 2**30  # default limits of the command line (``--max-memory-gb``, ``--max-minutes``)
TIME_LIMIT_S = 3600.0


@dataclass(frozen=True)
class RouteCost:
    """Estimated peak memory (bytes) and wall time (seconds) of certifying ``spec`` by ``route``."""

    route: str
    bytes: float
    seconds: float

    def describe(self) -> str:
        return f"~{_human_bytes(self.bytes)} of memory and ~{_human_seconds(self.seconds)}"


@dataclass(frozen=True)
class CostLimits:
    """The most memory (bytes) and time (seconds) a certification may be estimated to need before it starts."""

    memory_bytes: float = MEMORY_LIMIT_BYTES
    seconds: float = TIME_LIMIT_S

    def exceeded_by(self, cost: RouteCost) -> bool:
        return cost.bytes > self.memory_bytes or cost.seconds > self.seconds

    def describe(self) -> str:
        return f"{_human_bytes(self.memory_bytes)}, {_human_seconds(self.seconds)}"


def _human_bytes(count: float) -> str:
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count / 2**10:.3g} kB"


def _human_seconds(seconds: float) -> str:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.2g} s"


def resolved_route(spec: BatchEnsembleSpec, route: str) -> str:
    """``auto`` → ``toric`` for rank 1, ``schur`` otherwise; any other route as given (checked).

    >>> resolved_route(BatchEnsembleSpec((3, 2), 4), "auto"), resolved_route(BatchEnsembleSpec((3, 2), 4, 2), "auto")
    ('toric', 'schur')
    """
    if route not in ROUTES:
        raise BadInput(f"route={route!r} is unknown: expected one of {', '.join(ROUTES)}")
    if route == "auto":
        return "toric" if spec.rank == 1 else "schur"
    return route


def estimate_cost(spec: BatchEnsembleSpec, route: str) -> RouteCost:
    """Estimated peak memory and time of ``certify(spec, route)`` from the per-unit costs above (0 for ``none``).

    >>> estimate_cost(BatchEnsembleSpec((100000, 100000), 4), "toric").describe()  # 4·10^10·3 nonzeros × 32 B
    '~3.49 TB of memory and ~13.3 h'
    """
    route = resolved_route(spec, route)
    if route == "none":
        return RouteCost(route, 0.0, 0.0)
    nonzeros = float(spec.ambient_dim) * (1 + len(spec.block_sizes) * spec.rank)
    per_byte, per_second = ROUTE_COST_PER_UNIT["toric" if route == "toric" else "schur"]
    if route == "toric":
        return RouteCost(route, per_byte * nonzeros, per_second * nonzeros)
    if route == "modular":
        entries = float(spec.ambient_dim) * spec.num_params
        return RouteCost(route, MODULAR_START_BYTES + MODULAR_BYTES_PER_ENTRY * entries + per_byte * nonzeros,
                         MODULAR_START_S + MODULAR_SECONDS_PER_OPERATION * entries
                         * min(spec.ambient_dim, spec.num_params))
    rows, cols = _eliminated_shape(spec)
    dense = min(float(rows) * cols, SKETCH_ENTRY_LIMIT) + float(cols) * (cols + SKETCH_SLACK)
    return RouteCost(route, MODULAR_START_BYTES + per_byte * nonzeros + DENSE_BYTES_PER_ENTRY * dense,
                     MODULAR_START_S + per_second * nonzeros + RANK_SECONDS_PER_CUBE * float(cols) ** 3)


def _eliminated_shape(spec: BatchEnsembleSpec) -> tuple[int, int]:
    """Shape of the matrix the Schur route ranks: K ((k−1)(D_1−r)(D_2−r) × r(D_1+D_2)) for two blocks, else the
    Schur complement S ((k−1)D × k·r·Σ_j D_j)."""
    k, r = spec.members, spec.rank
    if len(spec.block_sizes) == 2:
        d1, d2 = spec.block_sizes
        return (k - 1) * max(d1 - r, 0) * max(d2 - r, 0), r * (d1 + d2)
    return (k - 1) * spec.kernel_size, k * r * sum(spec.block_sizes)


def closed_form_note(spec: BatchEnsembleSpec) -> str:
    """What ``--route none`` reports for ``spec``: the proved closed form, or only the proved upper bound."""
    if dimension.has_closed_form(spec) and spec.rank == 1:
        return "the closed form (proved for rank 1)"
    if dimension.has_closed_form(spec):
        return "the closed form (a proved upper bound, not certified for this shape)"
    return "the proved upper bound (no closed form for this variant at rank >= 2)"


def planned_route(spec: BatchEnsembleSpec, route: str, limits: CostLimits | None) -> tuple[str, str]:
    """The route to run and why. Within ``limits`` (or with none): the requested route. Past them: ``auto`` falls
    back to ``none`` with the reason stated; an explicitly requested route is refused (``BadInput``) with a message
    naming the cheaper route."""
    chosen = resolved_route(spec, route)
    cost = estimate_cost(spec, chosen)
    if limits is None or not limits.exceeded_by(cost):
        return chosen, ""
    shape = f"{'x'.join(map(str, spec.kernel_shape))}, k = {spec.members}, r = {spec.rank}, {spec.variant}"
    if route == "auto":
        return "none", (f"certificate skipped: the {chosen} route for {shape} would need {cost.describe()} (limits "
                        f"{limits.describe()}); image_dim is {closed_form_note(spec)}")
    raise BadInput(f"--route {chosen} for {shape} would need {cost.describe()}, past the limits "
                   f"({limits.describe()}; --max-memory-gb, --max-minutes): use --route none for "
                   f"{closed_form_note(spec)}, or a smaller layer")


# ---------------------------------------------------------------- entry point and diagnostics


def certify(spec: BatchEnsembleSpec, route: str = "auto", seed: int = 0,
            limits: CostLimits | None = None) -> Certificate:
    """Certify dim Im Φ for ``spec``. ``auto``: toric for rank 1, Schur-complement modular route otherwise.

    With ``limits``, the route's cost is estimated first (``planned_route``): past them ``auto`` returns a
    ``not-run`` certificate whose details give the reason, and an explicit route raises ``BadInput``."""
    route, reason = planned_route(spec, route, limits)
    if route == "none":
        return Certificate(0, dimension.upper_bound(spec), "not-run", "none",
                           details={"reason": reason} if reason else {})
    if route == "toric":
        return toric_certificate(spec)
    return modular_certificate(spec, route, seed)


certify_cached = functools.lru_cache(maxsize=16384)(certify)  # certificates are deterministic given the seed


def float_jacobian_rank(spec: BatchEnsembleSpec, seed: int = 0) -> FloatRank:
    """Diagnostic: numpy SVD rank of JΦ at a float64 point (W ~ N(0,1), factors ~ N(1, 0.5)), with its gap."""
    weight, factors = random_factors(spec, torch.Generator().manual_seed(seed))
    return float_rank(jacobian(spec, weight, factors).numpy())
