"""The BatchEnsemble ViT (``empirics.models.attention``): the fast member-major attention against a per-member loop of
``scaled_dot_product_attention`` with each member's effective weights, in float64."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from empirics.models.attention import MemberLayerNorm, MultiHeadSelfAttention, VisionTransformer
from empirics.models.ensembles import BatchEnsembleModel, DeepEnsembleModel, build_model
from empirics.models.layers import BatchEnsembleLinear
from empirics.models.networks import LayerFactory
from empirics.runs.config import Config
from infra.errors import BadInput

SEED = 0
# float64 forward passes of the same arithmetic in another order: agreement to 1e-10 (values are O(1), float64 eps
# 2.2e-16, a few hundred accumulations); a wrong member's weight changes outputs by O(0.1), far above it.
TOL = 1e-10


def be_factory(members: int = 3, rank: int = 1, init: str = "normal") -> LayerFactory:
    return LayerFactory(method="batchensemble", members=members, rank=rank, init=init, init_std=0.5)


def member_linear(layer: nn.Module, member: int, x: torch.Tensor) -> torch.Tensor:
    """Member ``member``'s dense map of a BE layer (effective kernel W ∘ M_i and bias b_i) or of a plain layer."""
    if isinstance(layer, BatchEnsembleLinear):
        return F.linear(x, layer.effective_weights()[member], layer.bias[member])
    return layer(x)


def reference_attention(attention: MultiHeadSelfAttention, member: int, tokens: torch.Tensor) -> torch.Tensor:
    """softmax(Q Kᵀ/√d_h) V of one member, written out: its own Q, K, V, output kernels, one SDPA call per member."""
    n, length, width = tokens.shape
    heads = attention.heads

    def project(layer):
        return member_linear(layer, member, tokens).view(n, length, heads, width // heads).transpose(1, 2)

    attended = F.scaled_dot_product_attention(project(attention.query), project(attention.key),
                                              project(attention.value))
    return member_linear(attention.out, member, attended.transpose(1, 2).reshape(n, length, width))


@pytest.mark.parametrize("rank,init", [(1, "normal"), (1, "random_sign"), (3, "normal")])
def test_be_attention_equals_per_member_sdpa_loop_in_float64(rank: int, init: str) -> None:
    """Member-major BE attention over k·B sequences = for each member i, SDPA with member i's own Q, K, V, O."""
    torch.manual_seed(SEED)
    members, batch, length, width, heads = 3, 2, 5, 8, 2
    attention = MultiHeadSelfAttention(be_factory(members, rank, init), width, heads).double()
    tokens = torch.randn(members * batch, length, width, dtype=torch.float64)
    fast = attention(tokens).view(members, batch, length, width)
    for member in range(members):
        slow = reference_attention(attention, member, tokens.view(members, batch, length, width)[member])
        assert torch.allclose(fast[member], slow, atol=TOL, rtol=0)
    other = reference_attention(attention, 1, tokens.view(members, batch, length, width)[0])
    assert not torch.allclose(fast[0], other, atol=1e-3), "members must differ (the check can fail)"


def test_be_scope_mlp_keeps_attention_projections_plain_and_shared() -> None:
    """``be_scope='mlp'``: Q, K, V, O are plain ``nn.Linear`` (one kernel for all members); the patch embedding, the
    MLP layers and the head are BE (the scope's label in the report and the preset says so)."""
    torch.manual_seed(SEED)
    net = VisionTransformer(be_factory(), (1, 8, 8), 3, patch_size=4, width=8, depth=1, heads=2, mlp_ratio=2,
                            be_scope="mlp")
    attention = net.blocks[0].attention
    assert all(type(layer) is nn.Linear for layer in (attention.query, attention.key, attention.value, attention.out))
    assert all(isinstance(layer, BatchEnsembleLinear) for layer in (net.patch_embed, net.blocks[0].fc1,
                                                                   net.blocks[0].fc2, net.head))


def plain_twin(be_net: VisionTransformer, member: int, **arch) -> VisionTransformer:
    """A single-model ViT holding member ``member``'s weights: every BE kernel's W ∘ M_i and b_i, every per-member
    LayerNorm's γ_i, β_i, shared parameters as they are."""
    twin = VisionTransformer(LayerFactory(), **arch).double()
    be_modules = dict(be_net.named_modules())
    with torch.no_grad():
        for name, module in twin.named_modules():
            source = be_modules[name]
            if isinstance(source, BatchEnsembleLinear):
                module.weight.copy_(source.effective_weights()[member])
                module.bias.copy_(source.bias[member])
            elif isinstance(source, MemberLayerNorm):
                module.weight.copy_(source.weight[member])
                module.bias.copy_(source.bias[member])
            elif isinstance(module, (nn.Linear, nn.LayerNorm)):
                module.load_state_dict(source.state_dict())
        twin.embedding.load_state_dict(be_net.embedding.state_dict())
    return twin


@pytest.mark.parametrize("pooling,be_scope", [("cls", "all"), ("mean", "mlp")])
def test_be_vit_member_equals_plain_vit_with_its_effective_weights(pooling: str, be_scope: str) -> None:
    """Member i of the BE ViT (shared input, member-major rows, per-member LayerNorm) computes exactly the plain ViT
    whose kernels are member i's effective kernels: the whole network against a per-member loop, float64."""
    torch.manual_seed(SEED)
    arch = dict(in_shape=(1, 8, 8), num_classes=3, patch_size=4, width=8, depth=2, heads=2, mlp_ratio=2,
                pooling=pooling, be_scope=be_scope, layernorm="per-member")
    factory = be_factory(members=3, rank=2, init="random_sign")
    model = BatchEnsembleModel(VisionTransformer(factory, **arch).double(), factory.members)
    with torch.no_grad():  # per-member LayerNorm parameters away from their init, so the check sees them
        for module in model.net.modules():
            if isinstance(module, MemberLayerNorm):
                module.weight.normal_(1.0, 0.3)
                module.bias.normal_(0.0, 0.3)
    images = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        fast = model.member_logits(images)
        for member in range(3):
            slow = plain_twin(model.net, member, **arch).eval()(images)
            assert torch.allclose(fast[member], slow, atol=TOL, rtol=0)
        assert not torch.allclose(fast[0], fast[1], atol=1e-3)


def test_member_layernorm_is_layernorm_with_each_members_scale_and_shift() -> None:
    torch.manual_seed(SEED)
    norm = MemberLayerNorm(6, 2).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2 * 3, 4, 6, dtype=torch.float64)
    out = norm(x).view(2, 3, 4, 6)
    for member in range(2):
        expected = F.layer_norm(x.view(2, 3, 4, 6)[member], (6,), norm.weight[member], norm.bias[member])
        assert torch.allclose(out[member], expected, atol=TOL, rtol=0)


def test_patchify_cuts_non_overlapping_patches_in_row_major_order() -> None:
    """Token t = (row a, column b) of the patch grid is the flattened (C, p, p) block at rows a·p.., columns b·p.."""
    net = VisionTransformer(LayerFactory(), (2, 6, 4), 3, patch_size=2, width=4, depth=1, heads=1, mlp_ratio=1)
    images = torch.randn(3, 2, 6, 4)
    tokens = net.patchify(images)
    assert tokens.shape == (3, 6, 2 * 2 * 2)
    for a in range(3):
        for b in range(2):
            block = images[:, :, 2 * a:2 * a + 2, 2 * b:2 * b + 2].reshape(3, -1)
            assert torch.equal(tokens[:, a * 2 + b], block)


def test_vit_rejects_patch_size_and_heads_that_do_not_divide() -> None:
    with pytest.raises(BadInput, match="patch_size=5"):
        VisionTransformer(LayerFactory(), (1, 28, 28), 10, patch_size=5, width=8, depth=1, heads=2, mlp_ratio=2)
    with pytest.raises(BadInput, match="vit_width=10 is not a multiple of heads=4"):
        Config(arch="vit", vit_width=10, heads=4)


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # vmap of SDPA falls back to a loop on the CPU
def test_deep_ensemble_vit_vectorised_equals_sequential() -> None:
    """The vmapped Deep-Ensemble ViT gives the loop's outputs (same members)."""
    torch.manual_seed(SEED)
    arch = dict(in_shape=(1, 8, 8), num_classes=3, patch_size=4, width=8, depth=1, heads=2, mlp_ratio=2)
    nets = [VisionTransformer(LayerFactory(), **arch).double() for _ in range(3)]
    images = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    vectorised = DeepEnsembleModel(nets, "vectorised").eval()
    sequential = DeepEnsembleModel(nets, "sequential").eval()
    with torch.no_grad():
        assert torch.allclose(vectorised.member_logits(images), sequential.member_logits(images), atol=TOL, rtol=0)


@pytest.mark.filterwarnings("ignore:There is a performance drop")
def test_config_builds_every_method_of_the_vit() -> None:
    """arch='vit' gives (k, B, classes) logits for every method through the one factory."""
    for method, members in (("single", 1), ("batchensemble", 4), ("deep-ensemble", 4), ("mc-dropout", 4)):
        torch.manual_seed(SEED)
        model = build_model(Config(arch="vit", method=method, depth=1, vit_width=16).model_spec()).eval()
        with torch.no_grad():
            assert model.member_logits(torch.randn(2, 1, 28, 28)).shape == (members, 2, 10)
