"""The BatchEnsemble weight map, for every layer kind, rank, member count and variant.

A layer kernel ``W`` has modes ``(out, in)`` (dense) or ``(out, in, h, w)`` (conv), ``D = prod(kernel_shape)``.
A *variant* groups some modes into disjoint *blocks* ``B_1..B_t``; modes in no block are broadcast. Member ``i``
of a rank-``r`` BatchEnsemble has the effective kernel (docs/theory.md §1)

    W_i = W ∘ M_i,    M_i = Σ_{q=1..r} F_1[i, q] ⊗ F_2[i, q] ⊗ … ⊗ F_t[i, q]     (broadcast over the other modes)

with fast factors ``F_j`` of shape ``(k, r, D_j)``, ``D_j = Π_{d ∈ B_j} kernel_shape[d]``. Rank 1 dense is the usual
``W_i = W ∘ r_i s_iᵀ``; rank ``r`` dense is ``W ∘ (R_i S_iᵀ)``. The Deep-Ensemble map is the identity on ``R^{kD}``.

Variants (names shared with ``empirics``):

=====================  ======================  ===============================
name                    blocks (modes)          multiplier of member i
=====================  ======================  ===============================
``channel-wise``        (out), (in)             r_i[o] s_i[c]   (standard BE)
``flattened-kernel``    (out), (in, h, w)       r_i[o] s_i[c,u,v]
``per-kernel-scalar``   (out, in)               m_i[o,c]
``cp-spatial``          (out), (in), (h, w)     r_i[o] s_i[c] t_i[u,v]
``output-scale``        (out)                   r_i[o]
=====================  ======================  ===============================

Parameters are ordered ``W`` (D entries), then each factor ``F_j`` flattened in ``(i, q, c)`` order; the Jacobian of
the map has rows ``(i, flat kernel index)`` and columns in that parameter order.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from math import prod
from typing import Sequence

import torch

from infra.errors import BadInput, require_int_in_range

VARIANT_BLOCKS: dict[str, tuple[tuple[int, ...], ...]] = {
    "channel-wise": ((0,), (1,)),
    "flattened-kernel": ((0,), (1, 2, 3)),
    "per-kernel-scalar": ((0, 1),),
    "cp-spatial": ((0,), (1,), (2, 3)),
    "output-scale": ((0,),),
}
VARIANTS = tuple(VARIANT_BLOCKS)
DENSE_VARIANTS = ("channel-wise", "per-kernel-scalar", "output-scale")


@dataclass(frozen=True)
class BatchEnsembleSpec:
    """Shape of one BatchEnsemble layer: kernel shape, ``members`` k >= 1, ``rank`` r >= 1 and ``variant``.

    >>> spec = BatchEnsembleSpec((3, 2), members=4)
    >>> spec.block_sizes, spec.num_params
    ((3, 2), 26)
    """

    kernel_shape: tuple[int, ...]
    members: int
    rank: int = 1
    variant: str = "channel-wise"

    def __post_init__(self) -> None:
        shape = tuple(self.kernel_shape)
        object.__setattr__(self, "kernel_shape", shape)
        if len(shape) not in (2, 4):
            raise BadInput(f"kernel_shape={shape} is not valid: expected (out, in) or (out, in, h, w)")
        for name, size in zip(("out", "in", "h", "w"), shape):
            require_int_in_range(name, size, 1)
        require_int_in_range("members", self.members, 1)
        if self.variant not in VARIANT_BLOCKS:
            raise BadInput(f"variant={self.variant!r} is unknown: expected one of {', '.join(VARIANTS)}")
        if len(shape) == 2 and self.variant not in DENSE_VARIANTS:
            raise BadInput(f"variant={self.variant!r} needs a conv kernel: dense layers accept "
                           f"{', '.join(DENSE_VARIANTS)}")
        require_int_in_range("rank", self.rank, 1, self.max_rank)

    @property
    def is_conv(self) -> bool:
        return len(self.kernel_shape) == 4

    @property
    def blocks(self) -> tuple[tuple[int, ...], ...]:
        return VARIANT_BLOCKS[self.variant]

    @property
    def block_sizes(self) -> tuple[int, ...]:
        return tuple(prod(self.kernel_shape[d] for d in block) for block in self.blocks)

    @property
    def max_rank(self) -> int:
        """Largest meaningful rank: ``min_j D_j`` for two or more blocks; 1 for a single block (a sum is one vector)."""
        return 1 if len(self.blocks) == 1 else min(self.block_sizes)

    @property
    def kernel_size(self) -> int:
        """D, the number of entries of one member's kernel."""
        return prod(self.kernel_shape)

    @property
    def ambient_dim(self) -> int:
        """k·D, the dimension of the Deep-Ensemble space of this layer."""
        return self.members * self.kernel_size

    @property
    def factor_shapes(self) -> tuple[tuple[int, int, int], ...]:
        return tuple((self.members, self.rank, size) for size in self.block_sizes)

    @property
    def num_params(self) -> int:
        """D + k·r·Σ_j D_j: the slow weight plus every member's fast factors."""
        return self.kernel_size + self.members * self.rank * sum(self.block_sizes)

    def block_view_shape(self, block_index: int) -> tuple[int, ...]:
        """Shape that broadcasts factor ``block_index`` (after its ``(k, r)`` axes) over the kernel modes."""
        block = self.blocks[block_index]
        return tuple(self.kernel_shape[d] if d in block else 1 for d in range(len(self.kernel_shape)))



FULL_RANK = "full"


def spec_at_rank(kernel_shape: Sequence[int], members: int, rank: int | str,
                 variant: str = "channel-wise") -> BatchEnsembleSpec:
    """The spec of one layer at ``rank``: an integer r in 1..max_rank, or ``"full"`` (the layer's ``max_rank``). A bad
    value is a ``BadInput`` naming the layer's kernel shape.

    >>> spec_at_rank((8, 3, 3, 3), 4, "full").rank
    3
    """
    kernel_shape = tuple(kernel_shape)
    try:
        if rank == FULL_RANK:
            lowest = BatchEnsembleSpec(kernel_shape, members, 1, variant)
            return replace(lowest, rank=lowest.max_rank)
        if isinstance(rank, str):
            raise BadInput(f"rank={rank!r} is not valid: expected an integer >= 1 or '{FULL_RANK}'")
        return BatchEnsembleSpec(kernel_shape, members, rank, variant)
    except BadInput as error:
        raise BadInput(f"BatchEnsemble layer with kernel {kernel_shape}: {error}") from None


def network_layer_spec(kernel_shape: Sequence[int], members: int, rank: int | str,
                       variant: str = "channel-wise") -> BatchEnsembleSpec:
    """The spec that a network-wide ``rank`` and ``variant`` give one of its layers — the one place where they become
    a layer's: a dense kernel takes ``channel-wise`` when ``variant`` needs a conv kernel (``flattened-kernel`` on
    (out, in) *is* channel-wise), and an integer rank above the layer's ``max_rank`` is capped there (that layer is
    already at full rank, e.g. the stem of a 1-channel ResNet); ``"full"`` is every layer's ``max_rank``.

    >>> network_layer_spec((8, 1, 3, 3), 4, 4).rank, network_layer_spec((10, 16), 4, 1, "cp-spatial").variant
    (1, 'channel-wise')
    """
    kernel_shape = tuple(kernel_shape)
    if len(kernel_shape) == 2 and variant in VARIANTS and variant not in DENSE_VARIANTS:
        variant = "channel-wise"
    if isinstance(rank, int) and not isinstance(rank, bool) and rank > 1:
        rank = min(rank, spec_at_rank(kernel_shape, members, FULL_RANK, variant).rank)
    return spec_at_rank(kernel_shape, members, rank, variant)

def random_factors(spec: BatchEnsembleSpec, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """A generic point: slow weight ~ N(0, 1), fast factors ~ N(1, 0.5) (torch-uncertainty's init)."""
    weight = torch.randn(spec.kernel_shape, generator=generator, dtype=dtype)
    factors = tuple(1 + 0.5 * torch.randn(shape, generator=generator, dtype=dtype) for shape in spec.factor_shapes)
    return weight, factors


def _reduce(value: torch.Tensor, modulus: int | None) -> torch.Tensor:
    return value if modulus is None else torch.remainder(value, modulus)


def _broadcast_factor(spec: BatchEnsembleSpec, block_index: int, factor: torch.Tensor) -> torch.Tensor:
    """Factor ``(k, r, D_j)`` reshaped to ``(k, r, *block_view_shape)`` so products broadcast over the kernel."""
    return factor.reshape(spec.members, spec.rank, *spec.block_view_shape(block_index))


def _check_factors(spec: BatchEnsembleSpec, weight: torch.Tensor, factors: Sequence[torch.Tensor]) -> None:
    if tuple(weight.shape) != spec.kernel_shape:
        raise BadInput(f"weight shape {tuple(weight.shape)} does not match kernel_shape {spec.kernel_shape}")
    if len(factors) != len(spec.blocks):
        raise BadInput(f"{len(factors)} factors given: variant {spec.variant!r} needs {len(spec.blocks)}")
    for index, (factor, expected) in enumerate(zip(factors, spec.factor_shapes)):
        if tuple(factor.shape) != expected:
            raise BadInput(f"factor {index} has shape {tuple(factor.shape)}: expected {expected} (members, rank, D_j)")


def _product_of_blocks(spec: BatchEnsembleSpec, factors: Sequence[torch.Tensor], skip: int | None,
                       modulus: int | None) -> torch.Tensor | None:
    """Π_{j ≠ skip} F_j broadcast to ``(k, r, *modes)``; ``None`` when no block is left."""
    total = None
    for index, factor in enumerate(factors):
        if index == skip:
            continue
        term = _broadcast_factor(spec, index, factor)
        total = term if total is None else _reduce(total * term, modulus)
    return total


def multipliers(spec: BatchEnsembleSpec, factors: Sequence[torch.Tensor], modulus: int | None = None) -> torch.Tensor:
    """M_i = Σ_q ⊗_j F_j[i, q], expanded to ``(k, *kernel_shape)``. With ``modulus``: integer arithmetic mod p."""
    product = _product_of_blocks(spec, factors, skip=None, modulus=modulus)
    assert product is not None  # every variant has at least one block
    summed = _reduce(product.sum(dim=1), modulus)
    return summed.expand(spec.members, *spec.kernel_shape)


def member_weights(spec: BatchEnsembleSpec, weight: torch.Tensor, factors: Sequence[torch.Tensor],
                   modulus: int | None = None) -> torch.Tensor:
    """Φ(W, F) = (W ∘ M_1, …, W ∘ M_k), shape ``(k, *kernel_shape)``: the point of the Deep-Ensemble space reached."""
    _check_factors(spec, weight, factors)
    return _reduce(weight.unsqueeze(0) * multipliers(spec, factors, modulus), modulus)


def member_weights_loop(spec: BatchEnsembleSpec, weight: torch.Tensor, factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Slow, obvious reference for ``member_weights``: entry by entry, W_i[x] = W[x] · Σ_q Π_j F_j[i, q, x|B_j]."""
    _check_factors(spec, weight, factors)
    result = torch.zeros((spec.members, *spec.kernel_shape), dtype=weight.dtype)
    for i in range(spec.members):
        for x in itertools.product(*[range(n) for n in spec.kernel_shape]):
            total = 0.0
            for q in range(spec.rank):
                term = 1.0
                for block, factor in zip(spec.blocks, factors):
                    restricted = 0
                    for d in block:  # row-major index of x restricted to the block's modes
                        restricted = restricted * spec.kernel_shape[d] + x[d]
                    term = term * factor[i, q, restricted]
                total = total + term
            result[(i, *x)] = weight[x] * total
    return result


def flatten_params(weight: torch.Tensor, factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """θ = (vec W, vec F_1, …, vec F_t): the parameter order of ``jacobian``."""
    return torch.cat([weight.reshape(-1)] + [factor.reshape(-1) for factor in factors])


def unflatten_params(spec: BatchEnsembleSpec, theta: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    sizes = [spec.kernel_size] + [prod(shape) for shape in spec.factor_shapes]
    if theta.numel() != sum(sizes):
        raise BadInput(f"parameter vector has {theta.numel()} entries: expected {sum(sizes)}")
    pieces = torch.split(theta, sizes)
    weight = pieces[0].reshape(spec.kernel_shape)
    factors = tuple(piece.reshape(shape) for piece, shape in zip(pieces[1:], spec.factor_shapes))
    return weight, factors


def jacobian(spec: BatchEnsembleSpec, weight: torch.Tensor, factors: Sequence[torch.Tensor],
             modulus: int | None = None) -> torch.Tensor:
    """Analytic Jacobian ∂Φ/∂θ, shape ``(k·D, num_params)``.

    ∂(W_i)[x] / ∂W[x]        = M_i[x]
    ∂(W_i)[x] / ∂F_j[i, q, c] = W[x] · Π_{l ≠ j} F_l[i, q, x_l]   if the block-j index of x is c, else 0.
    With ``modulus`` the inputs must be int64 tensors and every product is reduced mod p.
    """
    _check_factors(spec, weight, factors)
    k, r, size = spec.members, spec.rank, spec.kernel_size
    mult = multipliers(spec, factors, modulus).reshape(k, size)
    eye_rows = torch.arange(size)
    columns = [torch.zeros(k, size, size, dtype=weight.dtype)]
    columns[0][:, eye_rows, eye_rows] = mult
    for index, block_size in enumerate(spec.block_sizes):
        others = _product_of_blocks(spec, factors, skip=index, modulus=modulus)
        others = (torch.ones((k, r) + (1,) * len(spec.kernel_shape), dtype=weight.dtype) if others is None
                  else others)
        partial = _reduce(weight * others.expand(k, r, *spec.kernel_shape), modulus).reshape(k, r, size)
        block_index = _block_index_of_entries(spec, index)
        block = torch.zeros(k, size, k, r, block_size, dtype=weight.dtype)
        members = torch.arange(k)
        for q in range(r):
            block[members[:, None], eye_rows[None, :], members[:, None], q, block_index[None, :]] = partial[:, q, :]
        columns.append(block.reshape(k, size, k * r * block_size))
    return torch.cat([column.reshape(k * size, -1) for column in columns], dim=1)


def _block_index_of_entries(spec: BatchEnsembleSpec, block_index: int) -> torch.Tensor:
    """For every flat kernel index x, the flat index of x restricted to the modes of block ``block_index``."""
    grids = torch.meshgrid(*[torch.arange(n) for n in spec.kernel_shape], indexing="ij")
    flat = torch.zeros(spec.kernel_shape, dtype=torch.long)
    for d in spec.blocks[block_index]:
        flat = flat * spec.kernel_shape[d] + grids[d]
    return flat.reshape(-1)
