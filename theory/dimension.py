"""Closed-form dimension counts of BatchEnsemble layers: image dimension, codimension, redundancy, filling ranks.

Notation (``theory.batchensemble``): kernel of ``D`` entries, ``k`` members, rank ``r``, ``t`` blocks of sizes
``D_1..D_t`` (modes outside every block are broadcast), ``P = D + k·r·Σ_j D_j`` parameters. docs/theory.md §2–4:

* **rank 1, any variant** (toric, proved): codim = (k−1)(D − 1 − Σ_j (D_j − 1)).
* **two blocks, rank r** (dense W ∘ R_iS_iᵀ, channel-wise and flattened conv):
  dim = min(kD, D + k·r(D_1+D_2−r) − max(D_1+D_2−1, D_1D_2 − k(D_1−r)(D_2−r))).
  For dense layers (no broadcast modes) this is min(kmn, mn + k·r(m+n−r) − (m+n−1)). Proved as an upper bound
  (below); equality is the conjecture of docs/theory.md §4 that ``theory.certificate`` certifies case by case.
* **three or more blocks, rank r >= 2** (cp-spatial): no closed form is known; ``image_dim`` returns the proved
  symmetry bound and ``has_closed_form`` is False.

Upper bounds (``upper_bound``), all proved for every size:

* symmetry group: dim ≤ P − orbit, orbit = Σ_j D_j (block torus) + k·r² − 1 (per-member GL_r, t = 2) or
  + (k·r − 1)(t − 1) (per-term rescalings, t ≥ 3), or D_1 (t = 1); ``theory.certificate`` re-verifies the orbit
  dimension from explicit kernel vectors at the certified point.
* fibre dimension (t = 2): the image is {(W∘M_i)} with M_i in the variety V_r of D_1×D_2 matrices of rank ≤ r.
  The fibre over (W, M) contains (W⊘A, M_i∘A) for every A in the torus with all M_i∘A ∈ V_r; its component through
  A = 1 has dimension ≥ D_1D_2 − k(D_1−r)(D_2−r) (preimage of a codim-c subvariety has codim ≤ c) and contains
  the rank-1 A = αβᵀ (dimension D_1+D_2−1). Subtracting from dim source = D + k·r(D_1+D_2−r) gives the formula.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from infra.errors import BadInput, require_int_in_range
from theory.batchensemble import BatchEnsembleSpec

BIAS_MODES = ("none", "per-member", "shared")
ROLES = ("perturbed", "shared", "per-member")


def orbit_dim(spec: BatchEnsembleSpec) -> int:
    """Dimension of the generic orbit of the symmetry group acting on the parameters (see module docstring)."""
    sizes, k, r = spec.block_sizes, spec.members, spec.rank
    t = len(sizes)
    if t == 1:
        return sizes[0]
    if t == 2:
        return sum(sizes) + k * r * r - 1
    return sum(sizes) + (k * r - 1) * (t - 1)


def symmetry_bound(spec: BatchEnsembleSpec) -> int:
    """min(kD, P − orbit): the bound from the symmetry group alone."""
    return min(spec.ambient_dim, spec.num_params - orbit_dim(spec))


def fibre_bound(spec: BatchEnsembleSpec) -> int | None:
    """min(kD, D + k·r(D_1+D_2−r) − max(D_1+D_2−1, D_1D_2 − k(D_1−r)(D_2−r))) for two blocks, else ``None``."""
    if len(spec.block_sizes) != 2:
        return None
    (d1, d2), k, r, size = spec.block_sizes, spec.members, spec.rank, spec.kernel_size
    fibre = max(d1 + d2 - 1, d1 * d2 - k * (d1 - r) * (d2 - r))
    return min(spec.ambient_dim, size + k * r * (d1 + d2 - r) - fibre)


def upper_bound(spec: BatchEnsembleSpec) -> int:
    """The best proved upper bound on dim Im Φ: the symmetry bound, sharpened by the fibre bound for two blocks."""
    bounds = [symmetry_bound(spec), fibre_bound(spec)]
    return min(bound for bound in bounds if bound is not None)


def has_closed_form(spec: BatchEnsembleSpec) -> bool:
    """True unless the variant has three or more blocks at rank >= 2 (CP rank r: only the upper bound is known)."""
    return spec.rank == 1 or len(spec.block_sizes) <= 2


def rank1_codim(spec: BatchEnsembleSpec) -> int:
    """(k−1)(D − 1 − Σ_j (D_j − 1)): the toric codimension of every rank-1 block variant (docs/theory.md §3)."""
    return (spec.members - 1) * (spec.kernel_size - 1 - sum(size - 1 for size in spec.block_sizes))


def image_dim(spec: BatchEnsembleSpec) -> int:
    """dim Im Φ by the closed forms of docs/theory.md §2–4; else the proved upper bound (``has_closed_form``)."""
    if spec.rank == 1:
        return spec.ambient_dim - rank1_codim(spec)
    return upper_bound(spec)


def codim(spec: BatchEnsembleSpec) -> int:
    return spec.ambient_dim - image_dim(spec)


def redundancy(spec: BatchEnsembleSpec) -> int:
    """P − dim Im Φ: the dimension of a generic fibre (the symmetry-orbit dimension where the bound is sharp)."""
    return spec.num_params - image_dim(spec)


def fills(spec: BatchEnsembleSpec) -> bool:
    return image_dim(spec) == spec.ambient_dim


def filling_rank(m: int, n: int, k: int) -> int:
    """Smallest r with k(m−r)(n−r) ≤ (m−1)(n−1): rank-r dense BE fills R^{kmn} from this rank on (docs/theory.md §4)."""
    m, n, k = (require_int_in_range(name, value, 1) for name, value in (("m", m), ("n", n), ("members", k)))
    return next(r for r in range(1, min(m, n) + 1) if k * (m - r) * (n - r) <= (m - 1) * (n - 1))


def conv_filling_rank(c_out: int, c_in: int, hw: int, k: int) -> int | None:
    """Smallest r at which rank-r channel-wise conv BE fills R^{kD}; ``None`` when no rank fills.

    With hw > 1 and k >= 2 no rank fills: every member's multiplier is constant over the hw spatial positions.
    """
    c_out, c_in, hw, k = (require_int_in_range(name, value, 1) for name, value in
                          (("c_out", c_out), ("c_in", c_in), ("hw", hw), ("members", k)))
    for r in range(1, min(c_out, c_in) + 1):
        if fills(BatchEnsembleSpec((c_out, c_in, hw, 1), members=k, rank=r)):
            return r
    return None


@dataclass(frozen=True)
class LayerCounts:
    """Dimension accounting of one layer of a k-member ensemble (kernel plus bias).

    ``role``: ``perturbed`` (a BatchEnsemble layer), ``shared`` (one plain layer for all members: image = its D
    entries, codim (k−1)D) or ``per-member`` (an independent layer per member: fills). ``closed_form`` is False
    where ``image_dim`` is only the proved upper bound.
    """

    ambient_dim: int
    image_dim: int
    params: int
    closed_form: bool = True

    @property
    def codim(self) -> int:
        return self.ambient_dim - self.image_dim

    @property
    def redundancy(self) -> int:
        return self.params - self.image_dim

    @property
    def fills(self) -> bool:
        return self.codim == 0

    def __add__(self, other: "LayerCounts") -> "LayerCounts":
        return LayerCounts(self.ambient_dim + other.ambient_dim, self.image_dim + other.image_dim,
                           self.params + other.params, self.closed_form and other.closed_form)

    def as_dict(self) -> dict:
        return {**asdict(self), "codim": self.codim, "redundancy": self.redundancy, "fills": self.fills}


def kernel_counts(spec: BatchEnsembleSpec, role: str = "perturbed") -> LayerCounts:
    """Counts of the kernel alone for a perturbed, shared or per-member layer."""
    if role not in ROLES:
        raise BadInput(f"role={role!r} is unknown: expected one of {', '.join(ROLES)}")
    k, size = spec.members, spec.kernel_size
    if role == "shared":
        return LayerCounts(k * size, size, size)
    if role == "per-member":
        return LayerCounts(k * size, k * size, k * size)
    return LayerCounts(spec.ambient_dim, image_dim(spec), spec.num_params, has_closed_form(spec))


def vector_counts(size: int, members: int, mode: str) -> LayerCounts:
    """A vector of ``size`` entries per member (bias, or BatchNorm γ and β): per-member costs nothing, shared
    reaches only the diagonal (codim (k−1)·size), ``none`` is absent (docs/theory.md §5)."""
    if mode not in BIAS_MODES:
        raise BadInput(f"mode={mode!r} is unknown: expected one of {', '.join(BIAS_MODES)}")
    if mode == "none":
        return LayerCounts(0, 0, 0)
    per_member = mode == "per-member"
    return LayerCounts(members * size, members * size if per_member else size, members * size if per_member else size)


def layer_counts(spec: BatchEnsembleSpec, bias: str = "none", role: str = "perturbed") -> LayerCounts:
    """Kernel counts plus a bias over the ``out`` channels (``bias`` in ``none``, ``per-member``, ``shared``)."""
    return kernel_counts(spec, role) + vector_counts(spec.kernel_shape[0], spec.members, bias)
