"""BatchEnsemble Linear and Conv2d layers of any rank and variant, and per-member BatchNorm.

Member ``i`` of a rank-``r`` BatchEnsemble layer uses the effective kernel of ``theory.batchensemble``

    W_i = W ∘ M_i,    M_i = Σ_{q=1..r} F_1[i, q] ⊗ … ⊗ F_t[i, q]

with the slow weight ``W`` (out, in[, h, w]) and fast factors ``fast_factors[j]`` of shape ``(k, r, D_j)`` laid out
exactly as the theory's factors (``spec.factor_shapes``), so ``effective_weights()`` is
``theory.batchensemble.member_weights(spec, W, factors)``: the bridge from a trained layer to the theory.

Batches are member-major: rows ``i·B .. (i+1)·B - 1`` of a batch of ``k·B`` rows belong to member ``i``.

Forward paths (outputs identical up to rounding, tested against a per-member loop in float64):

* ``factored`` (channel-wise only): ``y_i = Σ_q F_out[i, q] ∘ op(x_i ∘ F_in[i, q]) + b_i`` — ``r`` shared convolutions
  (or matmuls) over the whole ``k·B`` batch with broadcast element-wise scalings, no weight is materialised.
* ``materialised`` (every variant and rank): the ``k`` effective kernels are built and applied at once, by a batched
  matmul (linear) or by one grouped convolution with ``groups=k`` over member-stacked channels (conv).

``default_forward_mode`` picks ``factored`` for channel-wise layers with ``rank <= FACTORED_MAX_RANK`` and
``materialised`` otherwise; the threshold comes from a measurement on the 2-core CPU (see ``FACTORED_MAX_RANK``).
Without gradients a factored dense layer takes the materialised path (one matmul, no scaling passes: BE MLP eval at an
effective batch of 2048 went from 2.0× to 1.05–1.2× the plain model's time). A network's first layer takes its input
once as ``shared_input`` (B, ...) and scales it per member by broadcasting, instead of the model repeating it k times.
The factored path's backward is hand-written (``_FactoredProduct``); ``benchmarks/`` (``make bench``) measures all of
this against the plain model.

Initialisation (``init``): ``normal`` draws every fast factor entry from N(1, σ) (σ = ``init_std``, 0.5 as
torch-uncertainty); ``random_sign`` draws ±1 with P(+1) = ``sign_prob`` (uncertainty-baselines' ``random_sign_init``).
For rank ``r > 1`` the output-side factor is re-centred and re-scaled, ``F_1 = μ/r + ρ_r (X − μ)`` (``μ`` the rank-1
entry mean, ``ρ_r`` from ``output_factor_spread``), so every multiplier entry has the rank-1 mean and variance at every
rank — 1 and (1 + σ²)² − 1 for ``normal`` with two factors — and a rank ablation compares ranks at equal initial member
spread (edward2 sums ``r`` unit-mean terms without rescaling, which multiplies each layer's scale by ``r``; dividing
``F_1`` by ``r`` alone keeps the mean but shrinks the variance like 1/r). The slow weight uses PyTorch's default
``nn.Linear``/``nn.Conv2d`` init, the bias U(±1/√fan_in) like torch-uncertainty (per member by default, so members
differ at init).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from empirics.models.precision import active_dtype
from infra.errors import BadInput
from theory.batchensemble import BatchEnsembleSpec, member_weights, spec_at_rank

INITS = ("normal", "random_sign")
BIASES = ("per-member", "shared", "none")
FORWARD_MODES = ("factored", "materialised")
# Channel-wise layers up to this rank use r shared products; above it, materialised per-member weights. Measured on
# the 2-core CPU (1 thread, machine shared with other jobs), BE k=4 train step at 32 images per member, seconds,
# factored vs materialised: MLP 784-64-32-16 r=1 0.0078 vs 0.0098, r=2 0.0116 vs 0.0115, r=4 0.020 vs 0.015,
# r=8 0.034 vs 0.020; ResNet-18 width 16 r=1 1.79 vs 2.04, r=2 4.5 vs 1.8, r=4 9.3 vs 2.5, r=8 14.8 vs 2.0. The
# factored cost grows ~linearly in r, the grouped convolution's stays flat: they cross between r=1 and r=2.
FACTORED_MAX_RANK = 1


def default_forward_mode(spec: BatchEnsembleSpec) -> str:
    return "factored" if spec.variant == "channel-wise" and spec.rank <= FACTORED_MAX_RANK else "materialised"


def rank_one_moments(init: str, std: float, sign_prob: float, init_mean: float = 1.0) -> tuple[float, float]:
    """Mean μ and second moment e = E[X²] of one fast-factor entry X of the rank-1 init:
    N(m, σ): μ = m, e = m² + σ² (m = ``init_mean``, 1 by default);  ±1 with P(+1) = p: μ = 2p − 1, e = 1."""
    return (init_mean, init_mean ** 2 + std ** 2) if init == "normal" else (2.0 * sign_prob - 1.0, 1.0)


def output_factor_spread(rank: int, blocks: int, mean: float, second_moment: float) -> float:
    """ρ_r of the variance-matched output factor F_1 = μ/r + ρ_r (X − μ) (X a rank-1 draw, other factors rank-1 draws).

    Each multiplier entry is M = Σ_{q=1..r} F_1[q] Π_{j=2..t} F_j[q] with independent entries, so with v = e − μ²
    E[M] = r · (μ/r) · μ^{t−1} = μ^t   and   Var M = r [(μ²/r² + ρ² v) e^{t−1} − μ^{2t}/r²].
    Equating Var M to the rank-1 value e^t − μ^{2t} gives
    ρ_r² = [(e^t − μ^{2t})/r − μ² (e^{t−1} − μ^{2t−2})/r²] / (v e^{t−1})   (ρ_1 = 1; ρ_r² >= 1/r >= 0 by Jensen).
    A degenerate init (v = 0: σ = 0 or p ∈ {0, 1}) has X = μ and ρ does not matter: 1.
    """
    variance = second_moment - mean ** 2
    if rank == 1 or variance <= 0:
        return 1.0
    t, e, mu = blocks, second_moment, mean
    numerator = (e ** t - mu ** (2 * t)) / rank - mu ** 2 * (e ** (t - 1) - mu ** (2 * t - 2)) / rank ** 2
    return math.sqrt(numerator / (variance * e ** (t - 1)))


def init_fast_factors(factors: list[torch.Tensor], init: str, std: float, sign_prob: float,
                      generator: torch.Generator | None = None, init_mean: float = 1.0) -> None:
    """In place, variance-matched across ranks: every factor entry X ~ N(1, std) or ±1 with P(+1) = sign_prob, then
    the first (output-side) factor of rank r > 1 becomes F_1 = μ/r + ρ_r (X − μ) (``output_factor_spread``), so every
    multiplier entry has the mean μ^t and variance e^t − μ^{2t} of rank 1 (for N(1, σ) with two factors: mean 1,
    variance (1 + σ²)² − 1) at every rank: raising r does not start the members closer together (``normal`` draws
    from N(init_mean, std), N(1, std) by default). Under
    ``random_sign`` F_1 stays two-valued, μ/r + ρ_r (±1 − μ) (±1/√r for p = 1/2); rank 1 is the plain draw."""
    mean, second_moment = rank_one_moments(init, std, sign_prob, init_mean)
    with torch.no_grad():
        for index, factor in enumerate(factors):
            if init == "normal":
                factor.normal_(init_mean, std, generator=generator)
            else:
                factor.bernoulli_(sign_prob, generator=generator).mul_(2).sub_(1)
            rank = factor.shape[1]
            if index == 0 and rank > 1:
                spread = output_factor_spread(rank, len(factors), mean, second_moment)
                factor.sub_(mean).mul_(spread).add_(mean / rank)


def split_members(x: torch.Tensor, members: int) -> torch.Tensor:
    """View a member-major batch (k·B, ...) as (k, B, ...); a batch not divisible by k is a clear error."""
    if x.shape[0] % members:
        raise BadInput(f"batch size {x.shape[0]} is not divisible by members k={members}: BatchEnsemble batches hold "
                       f"k equal member-major blocks")
    return x.view(members, x.shape[0] // members, *x.shape[1:])


class _BatchEnsembleLayer(nn.Module):
    """Slow weight, fast factors in the theory's layout (k, r, D_j), optional per-member or shared bias."""

    def __init__(self, kernel_shape: tuple[int, ...], members: int, rank: int | str, variant: str, init: str,
                 init_std: float, sign_prob: float, bias: str, init_mean: float = 1.0) -> None:
        super().__init__()
        if init not in INITS:
            raise BadInput(f"init={init!r} is unknown: expected one of {', '.join(INITS)}")
        if bias not in BIASES:
            raise BadInput(f"bias={bias!r} is unknown: expected one of {', '.join(BIASES)}")
        if not init_std >= 0:
            raise BadInput(f"init_std={init_std} is out of range: expected a number >= 0")
        if not 0 <= sign_prob <= 1:
            raise BadInput(f"sign_prob={sign_prob} is out of range: expected a probability in [0, 1]")
        self.spec = spec_at_rank(kernel_shape, members, rank, variant)
        self.init, self.init_std, self.sign_prob, self.init_mean = init, init_std, sign_prob, init_mean
        self.weight = nn.Parameter(torch.empty(self.spec.kernel_shape))
        self.fast_factors = nn.ParameterList([nn.Parameter(torch.empty(s)) for s in self.spec.factor_shapes])
        out = kernel_shape[0]
        bias_shape = {"per-member": (members, out), "shared": (out,), "none": None}[bias]
        self.bias = nn.Parameter(torch.empty(bias_shape)) if bias_shape else None
        self.forward_mode = default_forward_mode(self.spec)
        self.shared_input = False
        self.channels_last = False  # set by ``empirics.models.precision.convert_layout``: write outputs channels-last
        self.reset_parameters()

    @property
    def members(self) -> int:
        return self.spec.members

    @property
    def rank(self) -> int:
        return self.spec.rank

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # PyTorch's nn.Linear / nn.Conv2d default
        init_fast_factors(list(self.fast_factors), self.init, self.init_std, self.sign_prob, init_mean=self.init_mean)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.spec.kernel_size // self.spec.kernel_shape[0])
            nn.init.uniform_(self.bias, -bound, bound)

    def effective_weights(self) -> torch.Tensor:
        """(k, out, in[, h, w]): member i's kernel W ∘ M_i = ``theory.batchensemble.member_weights``. For the
        two-block variants (out), (in[, h, w]) (channel-wise, flattened-kernel) the rank sum is one batched product
        M_i = F_out[i]^T F_in[i] ((out × r)(r × in…)), instead of the theory's (k, r, out, in…) tensor of rank-1 terms
        summed over r: the same numbers, r times less memory traffic (forward + backward at rank 8, 1024×1024, k = 4:
        0.08 s vs 0.82 s on the 2-core CPU)."""
        if self.spec.blocks[:1] != ((0,),) or len(self.spec.blocks) != 2 or self.spec.blocks[1][0] != 1:
            return member_weights(self.spec, self.weight, tuple(self.fast_factors))
        out_factor, in_factor = self.fast_factors
        multiplier = torch.bmm(out_factor.transpose(1, 2), in_factor)
        broadcast = [size if mode == 0 or mode in self.spec.blocks[1] else 1
                     for mode, size in enumerate(self.spec.kernel_shape)]
        return self.weight * multiplier.view(self.members, *broadcast)

    def _add_bias(self, y: torch.Tensor, spatial_dims: int) -> torch.Tensor:
        """y viewed (k, B, out, *spatial) plus the per-member (k, out) or shared (out,) bias."""
        return y if self.bias is None else y + self._bias_view(spatial_dims)

    def _shared_op(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _materialised(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(k·B, ...) member-major rows; with ``shared_input`` the input is (B, ...), the same for every member (the
        network's first layer: the k-fold repeat is folded into the input scaling instead of copied). Under bf16
        autocast the factored path casts its inputs to bf16 and runs entirely in bf16, forward and backward
        (``empirics.models.precision``); the output keeps the input's memory format (channels-last stays
        channels-last)."""
        grouped = x.unsqueeze(0) if self.shared_input else split_members(x, self.members)
        spatial_dims = x.dim() - 2
        if self.forward_mode not in FORWARD_MODES:
            raise BadInput(f"forward_mode={self.forward_mode!r} is unknown: expected one of {', '.join(FORWARD_MODES)}")
        if self.forward_mode == "factored" and self.spec.variant != "channel-wise":
            raise BadInput(f"forward_mode='factored' needs the channel-wise variant, not {self.spec.variant!r}")
        if self.forward_mode == "factored" and not (self.materialise_without_grad and not torch.is_grad_enabled()):
            y = self._factored(grouped, spatial_dims, active_dtype(x.device.type))
        else:
            y = self._add_bias(self._materialised(grouped), spatial_dims)
        return _merge_members(y, channels_last=self.channels_last)

    def _factored(self, grouped: torch.Tensor, spatial_dims: int, dtype: torch.dtype | None) -> torch.Tensor:
        """Σ_q F_out[i, q] ∘ op(x_i ∘ F_in[i, q]) + b_i: one shared op over all k·B rows per rank term, with the
        element-wise scalings, the bias and their gradients fused in ``_FactoredProduct``; ``dtype`` (autocast's,
        or None) is the dtype every tensor is cast to before it runs (autocast is off inside: it would not reach the
        hand-written backward)."""
        bias = None if self.bias is None else self._bias_view(spatial_dims)
        tensors = (grouped, self.weight, self.fast_factors[1], self.fast_factors[0], bias)
        if dtype is None:
            return _FactoredProduct.apply(*tensors, self)
        with torch.autocast(grouped.device.type, enabled=False):
            return _FactoredProduct.apply(*(None if t is None else t.to(dtype) for t in tensors), self)

    def _bias_view(self, spatial_dims: int) -> torch.Tensor:
        """The per-member (k, out) bias as (k, 1, out, 1, ...) or the shared (out,) as (out, 1, ...)."""
        return self.bias.view(*self.bias.shape[:-1], *([1] * (self.bias.dim() - 1)), -1, *([1] * spatial_dims))

    def _shared_op_backward(self, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                            need_input: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(∂L/∂x, ∂L/∂W) of ``_shared_op(x, weight)`` given ∂L/∂output."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (f"kernel={self.spec.kernel_shape}, members={self.members}, rank={self.rank}, "
                f"variant={self.spec.variant}, init={self.init}, forward_mode={self.forward_mode}, "
                f"bias={'none' if self.bias is None else tuple(self.bias.shape)}")


def _merge_members(y: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(k, B, ...) → (k·B, ...); with ``channels_last`` a 4-D result is written channels-last (one copy at most)."""
    merged_shape = (y.shape[0] * y.shape[1], *y.shape[2:])
    if not channels_last or y.dim() != 5:
        return y.reshape(merged_shape)
    merged = torch.empty(merged_shape, dtype=y.dtype, device=y.device, memory_format=torch.channels_last)
    merged.view(y.shape).copy_(y)
    return merged


class _FactoredProduct(torch.autograd.Function):
    """``y_i = Σ_q F_out[i, q] ∘ op(x_i ∘ F_in[i, q]) + b_i`` over a member-major (k, B, C, ...) batch, with a
    hand-written backward. With G = ∂L/∂y, h_q = op(x ∘ F_in[:, q]) and G_q = G ∘ F_out[:, q]:

        ∂L/∂F_out[i, q] = Σ_b G_i ∘ h_{q,i},   ∂L/∂b_i = Σ_b G_i,   ∂L/∂W = Σ_q op_W^T(G_q, x ∘ F_in[:, q]),
        ∂L/∂F_in[i, q] = Σ_b x_i ∘ op_x^T(G_q)_i,   ∂L/∂x_i = Σ_q F_in[i, q] ∘ op_x^T(G_q)_i

    (sums over the member's rows and spatial positions). Forward and backward fuse the bias into one ``addcmul``,
    accumulate rank terms in place and write the factor gradients without the per-rank ``select`` backward copies that
    autograd of the plain expression allocates. ∂L/∂F_in needs op_x^T(G_q) even where x needs no gradient (the first
    layer): one matrix product more than the plain layer's backward there. (Collapsing op_x^T and op_W^T into one
    batched product G_{q,i}^T x_i per member was measured no faster on the 2-core CPU: the (k, out, in) element-wise
    work it adds costs what the saved product does.)"""

    @staticmethod
    def forward(ctx, grouped, weight, in_factor, out_factor, bias, layer):
        k, batch = in_factor.shape[0], grouped.shape[1]
        spatial = (1,) * (grouped.dim() - 3)
        in_view = in_factor.view(k, -1, 1, grouped.shape[2], *spatial)
        out_view = out_factor.view(k, -1, 1, out_factor.shape[-1], *spatial)
        scaled_inputs, products, total = [], [], None
        for q in range(in_factor.shape[1]):
            scaled = (grouped * in_view[:, q]).view(k * batch, *grouped.shape[2:])
            product = layer._shared_op(scaled, weight)
            product = product.view(k, batch, *product.shape[1:])
            scaled_inputs.append(scaled)
            products.append(product)
            if total is None:
                total = product * out_view[:, q] if bias is None else torch.addcmul(bias, product, out_view[:, q])
            else:
                total.addcmul_(product, out_view[:, q])
        ctx.layer = layer
        ctx.bias_shape = None if bias is None else bias.shape
        ctx.save_for_backward(grouped, weight, in_factor, out_factor, *scaled_inputs, *products)
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        grouped, weight, in_factor, out_factor, *saved = ctx.saved_tensors
        rank = in_factor.shape[1]
        scaled_inputs, products = saved[:rank], saved[rank:]
        k, batch = in_factor.shape[0], grouped.shape[1]
        spatial = (1,) * (grouped.dim() - 3)
        member_dims = (1, *range(3, grad.dim()))  # the member's rows and spatial positions
        in_view = in_factor.view(k, rank, 1, grouped.shape[2], *spatial)
        out_view = out_factor.view(k, rank, 1, out_factor.shape[-1], *spatial)
        grad_x, grad_weight = None, None
        grad_in, grad_out = torch.empty_like(in_factor), torch.empty_like(out_factor)
        for q in range(rank):
            grad_out[:, q] = (grad * products[q]).sum(member_dims)
            grad_q = grad * out_view[:, q]
            grad_input, grad_w = ctx.layer._shared_op_backward(grad_q.reshape(k * batch, *grad.shape[2:]),
                                                              scaled_inputs[q], weight, True)
            grad_weight = grad_w if grad_weight is None else grad_weight.add_(grad_w)
            grad_input = grad_input.view(k, *grouped.shape[1:])
            grad_in[:, q] = (grad_input * grouped).sum(member_dims)
            if ctx.needs_input_grad[0]:
                grad_x = grad_input.mul_(in_view[:, q]) if grad_x is None else grad_x.addcmul_(grad_input,
                                                                                              in_view[:, q])
        if grad_x is not None and grouped.shape[0] == 1:  # an input shared by the members gets their summed gradient
            grad_x = grad_x.sum(0, keepdim=True)
        grad_bias = None
        if ctx.bias_shape is not None:
            per_member = len(ctx.bias_shape) == grad.dim()
            grad_bias = grad.sum(member_dims if per_member else (0, *member_dims)).reshape(ctx.bias_shape)
        return grad_x, grad_weight, grad_in, grad_out, grad_bias, None


class BatchEnsembleLinear(_BatchEnsembleLayer):
    """BatchEnsemble dense layer: member i computes ``x_i W_iᵀ + b_i`` with ``W_i = W ∘ M_i`` (see module docstring).

    Mapping to torch-uncertainty's ``BatchLinear`` (rank 1, channel-wise; theory names W ∘ r_i s_iᵀ with r on the
    output and s on the input mode): their ``r_group`` (M, in) scales the input and equals ``fast_factors[1][:, 0, :]``;
    their ``s_group`` (M, out) scales the output and equals ``fast_factors[0][:, 0, :]``; their ``bias`` (M, out) is our
    per-member ``bias``; their forward ``linear(x * r) * s + bias`` is our ``factored`` path.
    """

    materialise_without_grad = True  # measured: with no backward, (B, in) @ (in, k·out) beats scale-matmul-scale

    def __init__(self, in_features: int, out_features: int, members: int, rank: int | str = 1,
                 variant: str = "channel-wise", init: str = "normal", init_std: float = 0.5, sign_prob: float = 0.5,
                 bias: str = "per-member", init_mean: float = 1.0) -> None:
        super().__init__((out_features, in_features), members, rank, variant, init, init_std, sign_prob, bias,
                         init_mean)

    def _shared_op(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight)

    def _shared_op_backward(self, grad, x, weight, need_input):
        """x W^T: ∂L/∂x = G W, ∂L/∂W = G^T x."""
        return (grad @ weight if need_input else None), grad.t() @ x

    def _transposed_weights(self) -> torch.Tensor:
        """(k, in, out) = (W ∘ M_i)ᵀ, for channel-wise built directly in that layout, Wᵀ ∘ (S_iᵀ R_i): the backward's
        element-wise passes then run over contiguous memory (train step of a 1024×1024 layer, k = 4, B = 32 per member,
        one thread: 200 ms → 60 ms, the same at rank 1 and 8)."""
        if self.spec.variant != "channel-wise":
            return self.effective_weights().transpose(1, 2)
        out_factor, in_factor = self.fast_factors
        return self.weight.t().contiguous() * torch.bmm(in_factor.transpose(1, 2), out_factor)

    def _materialised(self, grouped: torch.Tensor) -> torch.Tensor:
        """x_i (W ∘ M_i)ᵀ for every member in one batched matmul, (k, B, in) @ (k, in, out); a shared input
        (1, B, in) broadcasts over the k kernels."""
        return torch.matmul(grouped, self._transposed_weights())


class BatchEnsembleConv2d(_BatchEnsembleLayer):
    """BatchEnsemble 2-D convolution; the same mapping to torch-uncertainty's ``BatchConv2d`` as the linear layer:
    ``r_group`` (M, in) = ``fast_factors[1][:, 0, :]``, ``s_group`` (M, out) = ``fast_factors[0][:, 0, :]``, forward
    ``conv(x * r) * s + bias`` = our ``factored`` path at rank 1."""

    materialise_without_grad = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, members: int, stride: int = 1,
                 padding: int = 0, rank: int | str = 1, variant: str = "channel-wise", init: str = "normal",
                 init_std: float = 0.5, sign_prob: float = 0.5, bias: str = "none", init_mean: float = 1.0) -> None:
        super().__init__((out_channels, in_channels, kernel_size, kernel_size), members, rank, variant, init,
                         init_std, sign_prob, bias, init_mean)
        self.stride, self.padding = stride, padding

    def _shared_op(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight, stride=self.stride, padding=self.padding)

    def _shared_op_backward(self, grad, x, weight, need_input):
        """The convolution's own backward kernel (ATen ``convolution_backward``)."""
        grad_input, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad, x, weight, None, [self.stride] * 2, [self.padding] * 2, [1, 1], False, [0, 0], 1,
            [need_input, True, False])
        return grad_input, grad_weight

    def _materialised(self, grouped: torch.Tensor) -> torch.Tensor:
        """One grouped convolution (groups=k) over member-stacked channels (B, k·in, H, W) with the k kernels; a shared
        input (1, B, in, H, W) is one ordinary convolution with the k kernels stacked as k·out output channels."""
        members, batch, channels, height, width = grouped.shape
        k = self.members
        stacked = grouped.transpose(0, 1).reshape(batch, members * channels, height, width)
        kernels = self.effective_weights().reshape(k * self.spec.kernel_shape[0], *self.spec.kernel_shape[1:])
        y = F.conv2d(stacked, kernels, stride=self.stride, padding=self.padding, groups=members)
        return y.view(batch, k, -1, *y.shape[2:]).transpose(0, 1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", stride={self.stride}, padding={self.padding}"


class MemberBatchNorm(nn.Module):
    """Per-member BatchNorm (edward2's ``EnsembleSyncBatchNorm``): member i normalises its own rows with its own
    statistics, scale and shift. Implemented as one ``BatchNorm1d`` over k·C channels of the member-stacked layout
    (B, k·C, L), L = H·W (or 1): statistics over (B, L) per (member, channel), exactly BatchNorm1d/2d per member."""

    def __init__(self, num_features: int, members: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.members, self.num_features = members, num_features
        self.norm = nn.BatchNorm1d(members * num_features, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grouped = split_members(x, self.members)
        k, batch, channels = grouped.shape[:3]
        stacked = grouped.reshape(k, batch, channels, -1).transpose(0, 1).reshape(batch, k * channels, -1)
        y = self.norm(stacked).view(batch, k, channels, -1).transpose(0, 1)
        return y.reshape(x.shape)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, members={self.members}"
