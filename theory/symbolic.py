"""Exact symbolic checks with sympy (no tolerance anywhere; docs/theory.md §2, §4).

* every rank-1 BatchEnsemble entry is a monomial whose exponent vector is the column of the exponent matrix A, so
  the log map is linear with matrix Aᵀ;
* the cross-ratio binomials X_i[a,b]X_i[c,d]X_j[a,d]X_j[c,b] − X_i[a,d]X_i[c,b]X_j[a,b]X_j[c,d] vanish identically
  on BE points;
* the torus-only caveat: the k = 2, m = n = 3 point of docs/theory.md §2 satisfies every degree-4 binomial, yet the
  degree-6 binomial equals 30030 there while it vanishes identically on BE points;
* the symmetry-orbit tangent vectors lie in the kernel of the Jacobian, as polynomial identities;
* mn − r(m+n−r) = (m−r)(n−r), and the filling condition of the rank-r upper bound is k(m−r)(n−r) ≤ (m−1)(n−1).
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import sympy

from theory.batchensemble import BatchEnsembleSpec
from theory.certificate import block_indices, entry_support, exponent_matrix, symmetry_tangents


def symbolic_point(spec: BatchEnsembleSpec) -> tuple[np.ndarray, list[np.ndarray], list[sympy.Symbol]]:
    """Indeterminates w_x and f{j}_{i}_{q}_{c} as numpy object arrays, and the parameter list in ``jacobian`` order."""
    weight = np.array(sympy.symbols(f"w0:{spec.kernel_size}"), dtype=object)
    factors = [np.array(sympy.symbols(f"f{j}_0:{k * r * size}"), dtype=object).reshape(k, r, size)
               for j, (k, r, size) in enumerate(spec.factor_shapes)]
    params = list(weight) + [symbol for factor in factors for symbol in factor.ravel()]
    return weight, factors, params


def symbolic_entries(spec: BatchEnsembleSpec, weight: np.ndarray, factors: list[np.ndarray]) -> list[sympy.Expr]:
    """Φ entry by entry, rows (i, x): W[x] · Σ_q Π_j F_j[i, q, x|B_j]."""
    indices = block_indices(spec)
    return [weight[x] * sum(sympy.Mul(*[factor[i, q, index[x]] for factor, index in zip(factors, indices)])
                            for q in range(spec.rank))
            for i in range(spec.members) for x in range(spec.kernel_size)]


def log_map_is_linear_with_exponent_matrix(spec: BatchEnsembleSpec) -> bool:
    """Rank 1: each entry is one monomial with coefficient 1 whose exponent vector is column e of A."""
    weight, factors, params = symbolic_point(spec)
    exponents = exponent_matrix(spec)
    for column, entry in enumerate(symbolic_entries(spec, weight, factors)):
        poly = sympy.Poly(entry, *params)
        if len(poly.terms()) != 1:
            return False
        monomial, coefficient = poly.terms()[0]
        if coefficient != 1 or list(monomial) != exponents[:, column].tolist():
            return False
    return bool(np.array_equal(np.sort(entry_support(spec, np.arange(spec.ambient_dim)), axis=1),
                               np.sort(np.argwhere(exponents.T)[:, 1].reshape(spec.ambient_dim, -1), axis=1)))


def member_symbols(members: int, rows: int, cols: int) -> np.ndarray:
    """X[i, a, b] = x{i}{a}{b} (1-based names, as in docs/theory.md §2)."""
    return np.array([[[sympy.Symbol(f"x{i + 1}{a + 1}{b + 1}") for b in range(cols)] for a in range(rows)]
                     for i in range(members)], dtype=object)


def cross_ratio_binomials(x: np.ndarray) -> list[sympy.Expr]:
    """Degree-4 binomials for member pairs i < j, row pairs a ≠ c (ordered) and column pairs b < d."""
    members, rows, cols = x.shape
    return [x[i, a, b] * x[i, c, d] * x[j, a, d] * x[j, c, b] - x[i, a, d] * x[i, c, b] * x[j, a, b] * x[j, c, d]
            for i, j in itertools.combinations(range(members), 2)
            for a, c in itertools.permutations(range(rows), 2)
            for b, d in itertools.combinations(range(cols), 2)]


def degree6_binomial(x: np.ndarray) -> sympy.Expr:
    """x111 x122 x133 x212 x223 x231 − x112 x123 x131 x211 x222 x233 (k = 2, m = n = 3)."""
    return (x[0, 0, 0] * x[0, 1, 1] * x[0, 2, 2] * x[1, 0, 1] * x[1, 1, 2] * x[1, 2, 0]
            - x[0, 0, 1] * x[0, 1, 2] * x[0, 2, 0] * x[1, 0, 0] * x[1, 1, 1] * x[1, 2, 2])


def be_point_symbols(members: int, rows: int, cols: int) -> np.ndarray:
    """A symbolic rank-1 BE point X_i = W ∘ r_i s_iᵀ."""
    spec = BatchEnsembleSpec((rows, cols), members)
    weight, factors, _ = symbolic_point(spec)
    return np.array(symbolic_entries(spec, weight, factors), dtype=object).reshape(members, rows, cols)


def vanishes_on_be(polynomials: list[sympy.Expr], members: int, rows: int, cols: int) -> bool:
    """Every polynomial expands to 0 after substituting a symbolic BE point."""
    symbols, point = member_symbols(members, rows, cols), be_point_symbols(members, rows, cols)
    substitution = dict(zip(symbols.ravel(), point.ravel()))
    return all(sympy.expand(poly.xreplace(substitution)) == 0 for poly in polynomials)


def torus_counterexample() -> dict[str, Any]:
    """docs/theory.md §2: X_1 = diag(2,3,5), X_2 with 7, 11, 13 at (1,2), (2,3), (3,1), zero elsewhere."""
    x = member_symbols(2, 3, 3)
    values = np.zeros((2, 3, 3), dtype=object)
    values[0, 0, 0], values[0, 1, 1], values[0, 2, 2] = 2, 3, 5
    values[1, 0, 1], values[1, 1, 2], values[1, 2, 0] = 7, 11, 13
    substitution = {symbol: sympy.Integer(value) for symbol, value in zip(x.ravel(), values.ravel())}
    binomials = cross_ratio_binomials(x)
    return {"degree4_count": len(binomials),
            "degree4_values": [int(poly.xreplace(substitution)) for poly in binomials],
            "degree6_value": int(degree6_binomial(x).xreplace(substitution)),
            "degree6_vanishes_on_be": vanishes_on_be([degree6_binomial(x)], 2, 3, 3)}


def tangents_in_jacobian_kernel(spec: BatchEnsembleSpec) -> bool:
    """J(θ)·v(θ) = 0 as polynomials for every symmetry tangent v of ``certificate.symmetry_tangents``."""
    weight, factors, params = symbolic_point(spec)
    jac = sympy.Matrix(symbolic_entries(spec, weight, factors)).jacobian(params)
    ids, cols, vals, owners = symmetry_tangents(spec, weight, factors)
    tangents = sympy.zeros(len(params), len(owners))
    for vector, column, value in zip(ids, cols, vals):
        tangents[int(column), int(vector)] += value
    return (jac * tangents).expand().is_zero_matrix


def rank_identity_holds() -> bool:
    """mn − r(m+n−r) = (m−r)(n−r) for indeterminates m, n, r."""
    m, n, r = sympy.symbols("m n r")
    return sympy.expand(m * n - r * (m + n - r) - (m - r) * (n - r)) == 0


def threshold_identity_holds() -> bool:
    """[mn + k·r(m+n−r) − (m+n−1)] − kmn = (m−1)(n−1) − k(m−r)(n−r): the rank-r bound reaches kmn exactly when
    k(m−r)(n−r) ≤ (m−1)(n−1)."""
    m, n, r, k = sympy.symbols("m n r k")
    bound_minus_ambient = m * n + k * r * (m + n - r) - (m + n - 1) - k * m * n
    return sympy.expand(bound_minus_ambient - ((m - 1) * (n - 1) - k * (m - r) * (n - r))) == 0
