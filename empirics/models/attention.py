"""A small Vision Transformer whose every layer comes from ``empirics.models.networks.LayerFactory``, so single /
BatchEnsemble (any rank, variant, init) / Deep Ensemble / MC Dropout share one architecture.

Layout (pre-LayerNorm ViT, Dosovitskiy et al. 2021)::

    patches (B, T, C·p²) -> patch embedding (a dense layer over each flattened p×p patch) -> [class token] + position
    embedding -> depth × [x + MHSA(LN(x)); x + MLP(LN(x))] -> LN -> class token or mean over tokens -> dropout -> head

Multi-head self-attention (``MultiHeadSelfAttention``) with h heads of width d/h:

    Q = X W_qᵀ + b_q,  K = X W_kᵀ + b_k,  V = X W_vᵀ + b_v,   A_j = softmax(Q_j K_jᵀ / √(d/h)) V_j,
    out = [A_1 … A_h] W_oᵀ + b_o

Each of W_q, W_k, W_v, W_o is one dense layer of the factory: under BatchEnsemble member i uses W ∘ M_i for every
projection (edward2's ``MultiHeadDotProductAttentionBE``). ``be_scope="mlp"`` keeps the four attention projections
plain and shared by the members; every other dense layer (the patch embedding, the MLP blocks, the head) stays
BatchEnsemble. That is not uncertainty-baselines' BE ViT (``uncertainty_baselines/models/vit_batchensemble.py``,
``PatchTransformerBE``): there the patch embedding (a plain conv) and attention are shared, the head is BE, and only
the MLP blocks of ``be_layers`` are BE (every other block, 1, 3, 5, …, by default), with ``random_sign_init``.
Attention acts within one image, so on a member-major
batch (k·B rows) one ``scaled_dot_product_attention`` call over all k·B sequences is every member's attention at once;
the projections see the tokens as (k·B·T, d) rows, which keeps member i's rows contiguous (member-major), the layout
``empirics.models.layers`` expects. The class token and the position embedding are shared by the members.

LayerNorm: ``shared`` (one ``nn.LayerNorm``) or ``per-member`` (``MemberLayerNorm``: shared normalisation, a scale and
shift per member). Dropout (MC Dropout's masks) sits inside each MLP block after the activation and before the head.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from empirics.models.layers import split_members
from infra.errors import BadInput

if TYPE_CHECKING:
    from empirics.models.networks import LayerFactory

POOLINGS = ("cls", "mean")
BE_SCOPES = ("all", "mlp")
LAYERNORMS = ("shared", "per-member")


def _mark_input_dropout(layer: nn.Module, rate: float) -> nn.Module:
    """Record that ``layer``'s input passes through dropout of ``rate`` (``models.member_weight_tuples`` samples MC
    Dropout member weights from it)."""
    layer.input_dropout = rate
    return layer


def rows_apply(layer: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """A dense ``layer`` on every token: (N, T, d_in) -> (N·T, d_in) rows -> (N', T, d_out). Member-major N = k·B stays
    member-major as rows (member i owns rows i·B·T .. (i+1)·B·T − 1); a first layer with ``shared_input`` turns
    N = B into N' = k·B."""
    tokens_per_item = tokens.shape[1]
    out = layer(tokens.reshape(-1, tokens.shape[-1]))
    return out.view(-1, tokens_per_item, out.shape[-1])


class MemberLayerNorm(nn.Module):
    """LayerNorm over the last dimension with a per-member scale and shift: member i's rows of a member-major batch
    (k·B, …, d) give ``(x − mean) / sqrt(var + eps) · γ_i + β_i`` (γ_i = 1, β_i = 0 at init)."""

    def __init__(self, features: int, members: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.members, self.features, self.eps = members, features, eps
        self.weight = nn.Parameter(torch.ones(members, features))
        self.bias = nn.Parameter(torch.zeros(members, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grouped = split_members(F.layer_norm(x, (self.features,), eps=self.eps), self.members)
        shape = (self.members, *([1] * (grouped.dim() - 2)), self.features)
        return (grouped * self.weight.view(shape) + self.bias.view(shape)).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"features={self.features}, members={self.members}, eps={self.eps}"


class MultiHeadSelfAttention(nn.Module):
    """softmax(Q Kᵀ / √d_h) V per head with Q, K, V and the output projection each a factory dense layer (BE when
    ``ensembled``); tokens (N, T, d) -> (N, T, d)."""

    def __init__(self, factory: "LayerFactory", width: int, heads: int, ensembled: bool = True) -> None:
        super().__init__()
        if width % heads:
            raise BadInput(f"heads={heads} does not divide width={width}: expected a divisor of the width")
        self.heads = heads
        self.query, self.key, self.value, self.out = (factory.linear(width, width, ensembled=ensembled)
                                                      for _ in range(4))

    def split_heads(self, projected: torch.Tensor) -> torch.Tensor:
        """(N, T, d) -> (N, h, T, d/h)."""
        n, tokens, width = projected.shape
        return projected.view(n, tokens, self.heads, width // self.heads).transpose(1, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q, k, v = (self.split_heads(rows_apply(layer, tokens)) for layer in (self.query, self.key, self.value))
        attended = F.scaled_dot_product_attention(q, k, v)
        n, _, length, _ = attended.shape
        return rows_apply(self.out, attended.transpose(1, 2).reshape(n, length, -1))


class TransformerBlock(nn.Module):
    """Pre-LN block: x + MHSA(LN(x)), then x + fc2(dropout(GELU(fc1(LN(x)))))."""

    def __init__(self, factory: "LayerFactory", width: int, heads: int, mlp_ratio: int, be_scope: str,
                 layernorm: str) -> None:
        super().__init__()
        self.norm1 = factory.layernorm(width, layernorm)
        self.attention = MultiHeadSelfAttention(factory, width, heads, ensembled=be_scope == "all")
        self.norm2 = factory.layernorm(width, layernorm)
        self.fc1 = factory.linear(width, width * mlp_ratio)
        self.dropout = factory.dropout_layer()
        self.fc2 = _mark_input_dropout(factory.linear(width * mlp_ratio, width), factory.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + rows_apply(self.fc2, self.dropout(F.gelu(rows_apply(self.fc1, self.norm2(x)))))


class TokenEmbedding(nn.Module):
    """Prepends the learned class token (``pooling="cls"``) and adds the learned position embedding; both are shared
    by the members (truncated-normal init, std 0.02, as the reference ViT)."""

    def __init__(self, width: int, patches: int, pooling: str) -> None:
        super().__init__()
        self.pooling = pooling
        tokens = patches + (pooling == "cls")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pooling == "cls" else None
        self.position = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, tokens, width), std=0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.position


class VisionTransformer(nn.Module):
    """A small ViT over (C, H, W) images cut into p×p patches; see the module docstring."""

    def __init__(self, factory: "LayerFactory", in_shape: tuple[int, int, int], num_classes: int, patch_size: int,
                 width: int, depth: int, heads: int, mlp_ratio: int, pooling: str = "cls", be_scope: str = "all",
                 layernorm: str = "shared") -> None:
        super().__init__()
        channels, height, width_px = in_shape
        if height % patch_size or width_px % patch_size:
            raise BadInput(f"patch_size={patch_size} does not divide the image size {height}×{width_px}: expected a "
                           f"common divisor")
        for name, value, choices in (("pooling", pooling, POOLINGS), ("be_scope", be_scope, BE_SCOPES),
                                     ("layernorm", layernorm, LAYERNORMS)):
            if value not in choices:
                raise BadInput(f"{name}={value!r} is unknown: expected one of {', '.join(choices)}")
        self.patch_size, self.pooling = patch_size, pooling
        patches = (height // patch_size) * (width_px // patch_size)
        self.patch_embed = factory.linear(channels * patch_size ** 2, width)
        self.embedding = TokenEmbedding(width, patches, pooling)
        self.blocks = nn.ModuleList(TransformerBlock(factory, width, heads, mlp_ratio, be_scope, layernorm)
                                    for _ in range(depth))
        self.norm = factory.layernorm(width, layernorm)
        self.dropout = factory.dropout_layer()
        self.head = _mark_input_dropout(factory.linear(width, num_classes), factory.dropout)

    @property
    def input_layer(self) -> nn.Module:
        return self.patch_embed

    def stage_outputs(self) -> dict[str, nn.Module]:
        """Modules whose outputs ``empirics.analysis.diversity`` pools per stage (none: block outputs are token
        sequences (N, T, d), not the (N, C, H, W) maps its per-stage CKA averages over space; the pooled features are
        compared by the penultimate-feature CKA)."""
        return {}

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, T, C·p·p): non-overlapping p×p patches in row-major order, each flattened (C, p, p)."""
        p = self.patch_size
        patches = F.unfold(images, kernel_size=p, stride=p)  # (B, C·p·p, T), channel-major within a patch
        return patches.transpose(1, 2)

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = self.embedding(rows_apply(self.patch_embed, self.patchify(images)))
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        features = x[:, 0] if self.pooling == "cls" else x.mean(dim=1)
        return features if return_features else self.head(self.dropout(features))
