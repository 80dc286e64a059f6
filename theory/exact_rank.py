"""Ranks of matrices, three ways: exact modulo a prime (python-flint), exact over QQ (sympy), float SVD with its gap.

docs/theory.md §6: a rank modulo p at an integer point is a certified *lower bound* on the generic rank over QQ (a
nonzero minor mod p is a nonzero integer); the float SVD rank is only a diagnostic and is always reported with the
singular-value gap σ_ρ/σ_{ρ+1}.
"""
from __future__ import annotations

from dataclasses import dataclass

import flint
import numpy as np

PRIMES = (2_147_483_647, 2_147_483_629)  # 2^31 − 1 and the next prime below it


def modular_rank(matrix: np.ndarray, prime: int = PRIMES[0]) -> int:
    """Exact rank of an integer matrix modulo ``prime`` (python-flint ``nmod_mat``), built from a flat list."""
    matrix = np.asarray(matrix)
    if matrix.size == 0:
        return 0
    rows, cols = matrix.shape
    if rows < cols:  # flint's elimination cost is rows·cols·rank: keep the long side as rows either way
        matrix = matrix.T
        rows, cols = cols, rows
    reduced = np.remainder(matrix.astype(np.int64, copy=False), prime)
    return flint.nmod_mat(rows, cols, reduced.ravel().tolist(), prime).rank()


def rational_rank(matrix) -> int:
    """Exact rank over QQ with sympy's ``DomainMatrix`` (feasible up to about 200×200; docs/theory.md §6)."""
    from sympy import QQ, Rational
    from sympy.polys.matrices import DomainMatrix

    rows = [[QQ(Rational(entry)) if not isinstance(entry, (int, np.integer)) else QQ(int(entry)) for entry in row]
            for row in np.asarray(matrix, dtype=object).tolist()]
    if not rows or not rows[0]:
        return 0
    return DomainMatrix(rows, (len(rows), len(rows[0])), QQ).rank()


@dataclass(frozen=True)
class FloatRank:
    """numpy's default tolerance σ_max·max(M, N)·eps, the resulting rank, and the gap σ_ρ/σ_{ρ+1} (inf if none)."""

    rank: int
    tolerance: float
    gap: float
    singular_values: np.ndarray

    def rank_at(self, tolerance: float) -> int:
        return int(np.sum(self.singular_values > tolerance))


def float_rank(matrix: np.ndarray) -> FloatRank:
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.size == 0:
        return FloatRank(0, 0.0, float("inf"), np.zeros(0))
    singular = np.linalg.svd(matrix, compute_uv=False)
    tolerance = singular.max(initial=0.0) * max(matrix.shape) * np.finfo(np.float64).eps
    rank = int(np.sum(singular > tolerance))
    if rank == 0 or rank == len(singular):
        gap = float("inf")
    else:
        gap = float(singular[rank - 1] / singular[rank]) if singular[rank] > 0 else float("inf")
    return FloatRank(rank, float(tolerance), gap, singular)
