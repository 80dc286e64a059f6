"""Diversity geometry: weight cosine and distances, distance to the BE set, linear CKA, Spearman ρ with a CI."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from empirics.analysis import diversity
from empirics.models.ensembles import build_model, member_weight_tuples
from empirics.runs.config import Config
from infra.errors import BadInput
from theory.batchensemble import BatchEnsembleSpec, member_weights, random_factors


def linear_cka_slow(x: torch.Tensor, y: torch.Tensor) -> float:
    """Obvious reference: HSIC with explicit Gram matrices K = XXᵀ, L = YYᵀ and centring H = I − 11ᵀ/B,
    CKA = tr(KHLH) / sqrt(tr(KHKH) tr(LHLH)), entry by entry in float64."""
    x, y = x.double(), y.double()
    b = x.shape[0]
    h = torch.eye(b, dtype=torch.float64) - torch.full((b, b), 1.0 / b, dtype=torch.float64)
    k, l = x @ x.T, y @ y.T
    hsic = lambda a, c: torch.trace(a @ h @ c @ h)  # noqa: E731
    return float(hsic(k, l) / torch.sqrt(hsic(k, k) * hsic(l, l)))


def test_cosine_matches_per_pair_loop(generator):
    """The vectorised cosine matrix equals cos(w_i, w_j) computed pair by pair."""
    weights = torch.randn(4, 5, 3, generator=generator, dtype=torch.float64)
    flat = weights.reshape(4, -1)
    matrix = diversity.pairwise_cosine(weights)
    for i in range(4):
        for j in range(4):
            expected = torch.dot(flat[i], flat[j]) / (flat[i].norm() * flat[j].norm())
            assert matrix[i, j].item() == pytest.approx(expected.item(), abs=1e-12)  # float64 round-off


def test_identical_members_have_cosine_one_and_distance_zero(generator):
    """k copies of one weight: raw cosine 1 and relative distance 0 between every pair."""
    weights = torch.randn(1, 6, 4, generator=generator, dtype=torch.float64).expand(3, 6, 4)
    assert diversity.mean_off_diagonal(diversity.pairwise_cosine(weights)) == pytest.approx(1.0, abs=1e-12)
    assert diversity.mean_off_diagonal(diversity.pairwise_relative_distance(weights)) == pytest.approx(0.0, abs=1e-7)


def test_relative_distance_is_visible_arithmetic():
    """w_1 = (1, 0), w_2 = (0, 1): |w_1 − w_2| = √2, RMS norm 1, so d = √2; w_3 = −w_1 gives d = 2 and cos = −1."""
    weights = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[-1.0, 0.0]]])
    distances = diversity.pairwise_relative_distance(weights)
    assert distances[0, 1].item() == pytest.approx(math.sqrt(2), abs=1e-12)
    assert distances[0, 2].item() == pytest.approx(2.0, abs=1e-12)
    assert diversity.pairwise_cosine(weights)[0, 2].item() == pytest.approx(-1.0, abs=1e-12)


def test_network_geometry_concatenates_layers(generator):
    """The network entry is the geometry of the concatenated per-member weight vectors."""
    layers = {"fc1": torch.randn(3, 4, 5, generator=generator), "fc2": torch.randn(3, 2, 4, generator=generator)}
    geometry = diversity.weight_geometry(layers)
    joined = torch.cat([layers["fc1"].reshape(3, -1), layers["fc2"].reshape(3, -1)], dim=1)
    expected = diversity.mean_off_diagonal(diversity.pairwise_cosine(joined))
    assert geometry["network"]["mean_cosine"] == pytest.approx(expected, abs=1e-12)
    assert set(geometry) == {"fc1", "fc2", "network"}


def test_distance_to_be_set_is_zero_for_be_and_positive_for_de(generator):
    """A BE member tuple lies on the rank-1 BE set (relative residual ~ 0); independent DE members do not."""
    spec = BatchEnsembleSpec((5, 4), members=3)
    weight, factors = random_factors(spec, generator)
    be = {"fc": member_weights(spec, weight, factors)}
    de = {"fc": torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)}
    on_set = diversity.distance_to_be_sets(be, ranks=[1], starts=1, max_iter=100)
    off_set = diversity.distance_to_be_sets(de, ranks=[1], starts=1, max_iter=100)
    # 1e-6: the projection is a float64 least-squares fit; a converged fit on a set point leaves round-off only.
    assert on_set["network"]["rank1/relative_residual"] < 1e-6
    # 0.05: a generic Gaussian point is O(1) away (codim 2·4·3 = 24 of 60); 0.05 leaves a wide margin.
    assert off_set["network"]["rank1/relative_residual"] > 0.05


def test_distance_is_non_increasing_in_rank(generator):
    """Rank-r BE sets are nested, so the distance of a DE tuple cannot grow with r (small slack for the fit)."""
    de = {"fc": torch.randn(2, 4, 3, generator=generator, dtype=torch.float64)}
    found = diversity.distance_to_be_sets(de, ranks=[1, 2, 3], starts=1, max_iter=100)["network"]
    residuals = [found[f"rank{r}/relative_residual"] for r in (1, 2, 3)]
    # 1e-6 relative slack: local least-squares fits; nesting is exact, the optimiser is not.
    assert residuals[0] + 1e-6 >= residuals[1] >= residuals[2] - 1e-6


def test_reachable_fraction_of_a_rank1_mlp_matches_the_closed_form():
    """MLP 784-64-10, k = 4, rank 1, per-member biases: each dense layer reaches mn + (k−1)(m+n−1) of kmn
    dimensions (docs/theory.md §2) and its biases all k·m, so the fraction is their sums' ratio."""
    config = Config.from_dict({"method": "batchensemble", "arch": "mlp", "widths": [64], "members": 4, "rank": 1})
    k, layers = 4, [(64, 784), (10, 64)]
    reached = sum(m * n + (k - 1) * (m + n - 1) + k * m for m, n in layers)
    ambient = sum(k * m * n + k * m for m, n in layers)
    assert diversity.reachable_fraction(config) == pytest.approx(reached / ambient, rel=1e-12)


def test_reachable_fraction_is_one_for_deep_ensembles_and_undefined_for_mc_dropout():
    """A Deep Ensemble is the whole space; MC Dropout and single models are no BE parametrisation (None)."""
    assert diversity.reachable_fraction(Config.from_dict({"method": "deep-ensemble"})) == 1.0
    assert diversity.reachable_fraction(Config.from_dict({"method": "mc-dropout"})) is None


def test_linear_cka_matches_slow_hsic_formula(generator):
    """The fast feature-space CKA equals the Gram-matrix HSIC formula."""
    x = torch.randn(40, 7, generator=generator, dtype=torch.float64)
    y = x @ torch.randn(7, 5, generator=generator, dtype=torch.float64) + torch.randn(40, 5, generator=generator,
                                                                                         dtype=torch.float64)
    assert diversity.linear_cka(x, y) == pytest.approx(linear_cka_slow(x, y), abs=1e-12)  # float64 round-off


def test_linear_cka_of_a_representation_with_itself_is_one(generator):
    """CKA(X, X) = 1."""
    x = torch.randn(30, 6, generator=generator, dtype=torch.float64)
    assert diversity.linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_linear_cka_is_invariant_to_orthogonal_maps_and_isotropic_scaling(generator):
    """CKA(X, c·YQ) = CKA(X, Y) for orthogonal Q and c > 0 (Kornblith et al. 2019, §3)."""
    x = torch.randn(50, 8, generator=generator, dtype=torch.float64)
    y = torch.tanh(x @ torch.randn(8, 6, generator=generator, dtype=torch.float64))
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64))
    assert diversity.linear_cka(x, 3.7 * y @ q) == pytest.approx(diversity.linear_cka(x, y), abs=1e-12)


def test_linear_cka_of_independent_features_is_small(generator):
    """Independent random features share little: CKA well below that of related features."""
    x = torch.randn(2000, 4, generator=generator, dtype=torch.float64)
    y = torch.randn(2000, 4, generator=generator, dtype=torch.float64)
    # 0.05: E[CKA] of independent Gaussians is about F·G/B·(…) ≈ 0.002 here; 0.05 is > 10 standard deviations.
    assert diversity.linear_cka(x, y) < 0.05


def test_pairwise_cka_is_symmetric_with_unit_diagonal(generator):
    """pairwise_cka returns CKA(members i, j) in both triangles and 1 on the diagonal."""
    features = torch.randn(3, 20, 5, generator=generator, dtype=torch.float64)
    matrix = diversity.pairwise_cka(features)
    assert torch.equal(matrix, matrix.T)
    assert matrix.diagonal().tolist() == [1.0, 1.0, 1.0]
    assert matrix[0, 2].item() == pytest.approx(linear_cka_slow(features[0], features[2]), abs=1e-12)


# ---------------------------------------------------------------- permutation-aligned weights

def _mlp_members(generator, k: int, sizes: list[int]) -> dict[str, torch.Tensor]:
    return {f"layer{l}": torch.randn(k, b, a, generator=generator, dtype=torch.float64)
            for l, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))}


def test_aligned_distance_of_a_hidden_unit_permutation_of_the_same_network_is_zero(generator):
    """Member 1 = member 0 with its hidden units permuted in every hidden layer (the same function): raw cosine is
    far below 1, the aligned distance is 0 and the aligned cosine 1 (float64, 1e-12)."""
    base = _mlp_members(generator, 1, [7, 6, 5, 3])
    perms = [torch.randperm(6, generator=generator).numpy(), torch.randperm(5, generator=generator).numpy()]
    first = [w[0].numpy() for w in base.values()]
    second = diversity.apply_hidden_permutations(first, perms)
    weights = {name: torch.stack([torch.from_numpy(a), torch.from_numpy(b)])
               for name, a, b in zip(base, first, second)}
    raw = diversity.mean_off_diagonal(diversity.pairwise_cosine(diversity.network_weights(weights)))
    aligned = diversity.aligned_weight_geometry(weights, "mlp")
    assert raw < 0.9
    assert aligned["mean_relative_distance"] < 1e-12 and abs(aligned["mean_cosine"] - 1) < 1e-12


def test_weight_matching_with_one_hidden_layer_finds_the_brute_force_minimum(generator):
    """One hidden layer of 5 units: the matched permutation attains min over all 120 permutations of
    |A_1 − P B_1|² + |A_2 − B_2 Pᵀ|² (exact, float64 tolerance 1e-9)."""
    import itertools
    weights = _mlp_members(generator, 2, [4, 5, 3])
    reference, other = [w[0].numpy() for w in weights.values()], [w[1].numpy() for w in weights.values()]
    cost = lambda perm: sum(float(((a - b) ** 2).sum()) for a, b in zip(  # noqa: E731
        reference, diversity.apply_hidden_permutations(other, [np.array(perm)])))
    brute = min(cost(perm) for perm in itertools.permutations(range(5)))
    assert abs(cost(diversity.match_hidden_units(reference, other)[0]) - brute) < 1e-9


def test_aligned_distance_is_at_most_the_raw_distance_and_needs_a_dense_chain(generator):
    """Alignment starts from the identity and only accepts better assignments, so the aligned relative distance is at
    most the raw one for two independent random networks; conv kernels (no hidden-unit chain) give None."""
    weights = _mlp_members(generator, 2, [20, 16, 8, 4])
    raw = diversity.mean_off_diagonal(diversity.pairwise_relative_distance(diversity.network_weights(weights)))
    assert diversity.aligned_weight_geometry(weights, "mlp")["mean_relative_distance"] <= raw + 1e-12
    assert diversity.aligned_weight_geometry({"conv": torch.randn(2, 4, 3, 3, 3, generator=generator)}, "mlp") is None


@pytest.mark.parametrize("method", ["batchensemble", "deep-ensemble"])
def test_a_vit_gets_no_aligned_distance_and_an_mlp_still_does(method):
    """A ViT's layer shapes chain (patch embedding → Q → K → V → out → fc1 → fc2 → head), but permuting units between
    Q and K or across the residual stream is no symmetry: no aligned distance. An MLP of the same method has one."""
    vit = Config(arch="vit", method=method, patch_size=7, vit_width=16, depth=1, heads=2, mlp_ratio=2, seed=0)
    mlp = Config(method=method, widths=[8, 4], seed=0)
    weights = {name: member_weight_tuples(build_model(config.model_spec()), torch.Generator().manual_seed(0))
               for name, config in (("vit", vit), ("mlp", mlp))}
    assert diversity.is_dense_chain(weights["vit"]), "the ViT's shapes must chain, or this test checks nothing"
    assert diversity.aligned_weight_geometry(weights["vit"], vit.arch) is None
    assert diversity.aligned_weight_geometry(weights["mlp"], mlp.arch)["mean_relative_distance"] > 0


def test_reachable_fraction_does_not_depend_on_the_batch_regime():
    """The split training regime changes how members see batches, not the parametrisation: same fraction."""
    fields = {"widths": [8, 4], "members": 3, "method": "batchensemble"}
    repeat = diversity.reachable_fraction(Config.from_dict(fields))
    assert diversity.reachable_fraction(Config.from_dict({**fields, "batch_regime": "split"})) == repeat


def test_count_sketch_inner_products_are_unbiased(generator):
    """E⟨S(u), S(v)⟩ = ⟨u, v⟩ over the hash: the mean over 200 seeds lies within 4 standard errors of the exact
    inner product (4 SE: a two-sided miss probability below 1e-4 for a normal mean)."""
    u, v = torch.randn(2, 3000, generator=generator, dtype=torch.float64)
    estimates = torch.tensor([float(s[0] @ s[1]) for s in
                              (diversity.count_sketch(torch.stack([u, v]), dim=64, seed=seed) for seed in range(200))])
    standard_error = estimates.std() / math.sqrt(len(estimates))
    assert abs(float(estimates.mean()) - float(u @ v)) < 4 * standard_error


def test_sketched_cosine_is_within_its_error_bound_and_a_tiny_sketch_is_not(generator):
    """Variance of ⟨S(u), S(v)⟩ ≤ 2|u|²|v|²/d: at d = SKETCH_DIM the sketched cosine of two vectors with cosine 0.6
    is within 5 bound-σ (5·√(2/d) ≈ 0.078) of the exact one; at d = 2 the same bound (computed for SKETCH_DIM) is
    missed for most seeds — the tolerance is not loose enough to pass anything."""
    base = torch.randn(2, 20000, generator=generator, dtype=torch.float64)
    u = base[0]
    v = 0.6 * u / u.norm() + 0.8 * base[1] / base[1].norm()
    exact = float(diversity.cross_cosine(u[None], v[None]))
    tolerance = 5 * math.sqrt(2 / diversity.SKETCH_DIM)
    sketched = diversity.cross_cosine(*diversity.count_sketch(torch.stack([u, v])).split(1))
    assert abs(float(sketched) - exact) < tolerance
    misses = sum(abs(float(diversity.cross_cosine(*diversity.count_sketch(torch.stack([u, v]), 2, seed).split(1)))
                     - exact) > tolerance for seed in range(20))
    assert misses >= 10


def test_count_sketch_is_the_same_for_the_same_seed_and_linear(generator):
    x = torch.randn(3, 500, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(diversity.count_sketch(x, 32, 7), diversity.count_sketch(x, 32, 7), rtol=0, atol=0)
    torch.testing.assert_close(diversity.count_sketch(2 * x[:1] - x[1:2], 32, 7),
                               2 * diversity.count_sketch(x[:1], 32, 7) - diversity.count_sketch(x[1:2], 32, 7))


def test_cross_disagreement_is_visible_arithmetic():
    a = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 0]])
    b = torch.tensor([[0, 1, 2, 3], [1, 1, 1, 1]])
    expected = torch.tensor([[0.0, 0.75], [0.25, 0.75]], dtype=torch.float64)
    torch.testing.assert_close(diversity.cross_disagreement(a, b), expected)


@pytest.mark.parametrize("method, de_mode", [("single", "vectorised"), ("batchensemble", "vectorised"),
                                             ("deep-ensemble", "vectorised"), ("deep-ensemble", "sequential"),
                                             ("mc-dropout", "vectorised")])
def test_last_stage_features_are_the_penultimate_features(method, de_mode, generator):
    """The ResNet's penultimate features are the pooled output of its last stage, so ``member_stage_features``'s
    stage4 must equal ``member_features`` for every method (float64: equal to rounding, 1e-10)."""
    torch.manual_seed(0)
    config = Config(arch="resnet18", width_mult=1 / 16, method=method, de_mode=de_mode, dropout=0.1, members=3,
                    mc_samples=3)
    model = build_model(config.model_spec()).double().eval()
    images = torch.randn(5, 1, 28, 28, generator=generator, dtype=torch.float64)
    stages = diversity.member_stage_features(model, images, 2, torch.device("cpu"))
    assert list(stages) == ["stage1", "stage2", "stage3", "stage4"]
    with torch.no_grad():
        torch.testing.assert_close(stages["stage4"].double(), model.member_features(images), rtol=1e-10, atol=1e-10)
    assert stages["stage1"].shape == (model.members, 5, 4)


def test_vit_reachable_fraction_counts_attention_scope_and_shared_embeddings():
    """A BE ViT's reachable fraction equals theory's count of its shape-only twin (class token and position embedding
    shared); with attention projections shared (``be_scope='mlp'``) it is smaller; a DE reaches 1."""
    from theory.network import attention_roles, build_arch, network_counts

    base = dict(arch="vit", method="batchensemble", patch_size=7, vit_width=16, depth=2, heads=2, mlp_ratio=2)
    reachable_fraction = diversity.reachable_fraction
    everywhere = reachable_fraction(Config(**base))
    shapes = build_arch("vit", 1, 10, patch_size=7, width=16, depth=2, heads=2, mlp_ratio=2)
    assert everywhere == network_counts(shapes, 4, embeddings="shared", certify_route="none").fraction_reached
    mlp_only = reachable_fraction(Config(**base, be_scope="mlp"))
    assert mlp_only == network_counts(shapes, 4, embeddings="shared", roles=attention_roles(shapes),
                                      certify_route="none").fraction_reached
    assert mlp_only < everywhere < 1 == reachable_fraction(Config(**{**base, "method": "deep-ensemble"}))


def test_the_rank1_link_pairs_the_distance_to_the_rank1_set_with_each_tasks_function_space_diversity():
    """Classification: distance to the rank-1 BE set vs MI under shift; regression (no MI): vs the epistemic variance
    under shift, and a regression link analysis measures that pair (ρ = −1 for points ordered against each other).
    An unknown task is a one-line error naming it."""
    distance = "distance/network/rank1/relative_residual"
    assert diversity.link_pair("classification", "rank1") == (distance, "shift/mutual_information")
    assert diversity.link_pair("regression", "rank1") == (distance, "shift/epistemic_variance")
    assert diversity.link_pair("regression", "headline") == diversity.REGRESSION_HEADLINE_LINK
    points = [{"run": f"run-{i}", distance: 0.1 * i, "weights/network/mean_relative_distance": 0.1 * i,
               "shift/epistemic_variance": 1.0 - 0.1 * i} for i in range(5)]
    pairs = diversity.link_analysis(points)["pairs"]
    rank1 = next(pair for pair in pairs if (pair["parameter_key"], pair["function_key"])
                 == diversity.link_pair("regression", "rank1"))
    assert rank1["rho"] == pytest.approx(-1.0) and rank1["n"] == 5
    with pytest.raises(BadInput, match="link pair \\('ranking', 'rank1'\\): expected a task in"):
        diversity.link_pair("ranking", "rank1")


def test_the_rank1_link_ties_runs_whose_distance_to_the_set_is_solver_noise():
    """Two BE configurations at relative distances 1.7e-8 and 2.0e-8 (both on the rank-1 set up to the ALS residual)
    and a DE at 0.57, with epistemic variances 0.033, 0.017, 0.012: the BE runs tie (ranks 1.5, 1.5, 3 against
    3, 2, 1), so ρ = −1.5 / √(1.5 · 2) = −√3/2, not the −1 the noise's order would give. A distance of 1e-5 (above
    ON_RANK1_SET) is kept."""
    distance, epistemic = diversity.link_pair("regression", "rank1")
    points = [{"run": run, distance: d, "weights/network/mean_relative_distance": d, epistemic: e}
              for run, d, e in (("be", 1.7e-8, 0.033), ("be-sign", 2.0e-8, 0.017), ("de", 0.57, 0.012))]
    pair = next(pair for pair in diversity.link_analysis(points)["pairs"]
                if (pair["parameter_key"], pair["function_key"]) == (distance, epistemic))
    assert pair["rho"] == pytest.approx(-math.sqrt(3) / 2, abs=1e-12)
    assert diversity.rank1_distance_resolved(1e-5) == 1e-5 and diversity.rank1_distance_resolved(3e-8) == 0.0
