"""Claims of the dimension theory (docs/theory.md §2–5): each one a sweep of certificates or an exact symbolic identity.

Every ``check_*`` helper takes the sizes it sweeps, so tests can run a smaller sweep of the same check; the
registered claim runs the default sizes (``full=True``: larger sweeps).
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable

from theory import dimension, symbolic
from theory.batchensemble import VARIANTS, BatchEnsembleSpec
from theory.certificate import Certificate, certify_cached
from theory.claims.registry import Evidence, claim
from theory.network import build_arch, network_counts

DENSE_SIZES, DENSE_SIZES_FULL = 12, 16
DENSE_MEMBERS, DENSE_MEMBERS_FULL = 6, 8
CONV_CHANNELS, CONV_HW, CONV_MEMBERS = 6, (1, 4, 9), 4
CONV_RANK_CHANNELS, CONV_RANK_CHANNELS_FULL = 4, 6
RESNET_MEMBERS = 4
MLP_EXAMPLE = {"widths": (784, 400, 400, 10), "members": 4, "de_dim": 1_913_640, "be_params": 490_416,
               "be_image_dim": 488_013, "codim": 1_425_627}  # docs/theory.md §5


def _verdict(ok: bool, exact: bool = True) -> str:
    return ("certified" if exact else "verified") if ok else "failed"


def _certificate(spec: BatchEnsembleSpec) -> Certificate:
    return certify_cached(spec, "auto", 0)


def _compare(specs: Iterable[BatchEnsembleSpec], expected_dim) -> tuple[bool, int, list[dict[str, Any]]]:
    """Certify each spec and compare the certified dimension with ``expected_dim(spec)``; report mismatches."""
    count, failures = 0, []
    for spec in specs:
        certificate = _certificate(spec)
        count += 1
        if certificate.status != "certified" or certificate.lower != expected_dim(spec):
            failures.append({"spec": [list(spec.kernel_shape), spec.members, spec.rank, spec.variant],
                             "expected": expected_dim(spec), **certificate.to_json()})
    return not failures, count, failures[:10]


def dense_specs(max_size: int, max_members: int, ranks: str = "all") -> list[BatchEnsembleSpec]:
    """Dense m, n ≤ max_size, k ≤ max_members; ``ranks``: ``one``, ``above-one`` or ``all`` (every r ≤ min(m,n))."""
    specs = []
    for m, n, k in itertools.product(range(1, max_size + 1), range(1, max_size + 1), range(1, max_members + 1)):
        low, high = (1, 1) if ranks == "one" else (2 if ranks == "above-one" else 1, min(m, n))
        specs += [BatchEnsembleSpec((m, n), k, r) for r in range(low, high + 1)]
    return specs


def check_rank1_dense(max_size: int, max_members: int) -> Evidence:
    ok, count, failures = _compare(dense_specs(max_size, max_members, "one"),
                                   lambda s: s.ambient_dim - (s.members - 1) * (s.kernel_shape[0] - 1) * (s.kernel_shape[1] - 1))
    return Evidence(_verdict(ok), f"m,n 1..{max_size}, k 1..{max_members} ({count} shapes, toric)",
                    {"failures": failures})


@claim("rank1-dense-codim", "rank-1 dense BE: codim Im Φ = (k−1)(m−1)(n−1)", "toric certificate vs closed form", kind="proved")
def rank1_dense_codim(full: bool) -> Evidence:
    return check_rank1_dense(DENSE_SIZES_FULL if full else DENSE_SIZES, DENSE_MEMBERS_FULL if full else DENSE_MEMBERS)


def check_degenerate_fills(max_size: int, max_members: int) -> Evidence:
    """fills ⇔ (k = 1 or m = 1 or n = 1), from certified rank-1 dimensions."""
    mismatches = []
    specs = dense_specs(max_size, max_members, "one")
    for spec in specs:
        certificate = _certificate(spec)
        degenerate = spec.members == 1 or 1 in spec.kernel_shape
        reaches_all = certificate.status == "certified" and certificate.lower == spec.ambient_dim
        if degenerate != reaches_all:
            mismatches.append([list(spec.kernel_shape), spec.members])
    return Evidence(_verdict(not mismatches), f"m,n 1..{max_size}, k 1..{max_members} ({len(specs)} shapes)",
                    {"mismatches": mismatches[:10]})


@claim("degenerate-fills", "rank-1 dense BE fills R^{kmn} iff k = 1, m = 1 or n = 1 (else measure zero)",
       "toric certificates", kind="proved")
def degenerate_fills(full: bool) -> Evidence:
    return check_degenerate_fills(DENSE_SIZES_FULL if full else DENSE_SIZES, DENSE_MEMBERS_FULL if full else DENSE_MEMBERS)


def check_parameter_counting(max_members: int) -> Evidence:
    rows = []
    for k in range(2, max_members + 1):
        spec = BatchEnsembleSpec((2, 2), k)
        certificate = _certificate(spec)
        rows.append({"k": k, "params": spec.num_params, "ambient": spec.ambient_dim,
                     "codim": spec.ambient_dim - certificate.lower, "status": certificate.status})
    ok = all(r["params"] > r["ambient"] and r["codim"] == r["k"] - 1 and r["status"] == "certified" for r in rows)
    return Evidence(_verdict(ok), f"m = n = 2, k 2..{max_members}", {"rows": rows})


@claim("parameter-counting-insufficient", "m = n = 2: 4 + 4k parameters exceed 4k, yet codim = k − 1 > 0",
       "toric certificate")
def parameter_counting_insufficient(full: bool) -> Evidence:
    return check_parameter_counting(DENSE_MEMBERS_FULL if full else DENSE_MEMBERS)


def check_rank_r_dense(max_size: int, max_members: int) -> Evidence:
    ok, count, failures = _compare(dense_specs(max_size, max_members, "above-one"), dimension.image_dim)
    return Evidence(_verdict(ok), f"m,n 1..{max_size}, k 1..{max_members}, 2 <= r <= min(m,n) ({count} shapes, "
                    "modular Schur; r = 1 in rank1-dense-codim)", {"failures": failures})


@claim("rank-r-dense-dim", "CONJECTURE (upper bound proved, equality certified on the grid): rank-r dense BE: "
       "dim = min(kmn, mn + k·r(m+n−r) − (m+n−1))",
       "modular certificate (Schur) vs closed form", kind="conjecture")
def rank_r_dense_dim(full: bool) -> Evidence:
    return check_rank_r_dense(DENSE_SIZES_FULL if full else DENSE_SIZES, DENSE_MEMBERS_FULL if full else DENSE_MEMBERS)


def check_filling_threshold(max_size: int, max_members: int) -> Evidence:
    """Certified 'fills' equals k(m−r)(n−r) ≤ (m−1)(n−1) for every r, and ``filling_rank`` is the first such r."""
    mismatches = []
    specs = dense_specs(max_size, max_members, "all")
    for spec in specs:
        (m, n), k, r = spec.kernel_shape, spec.members, spec.rank
        certificate = _certificate(spec)
        certified_fills = certificate.status == "certified" and certificate.lower == spec.ambient_dim
        predicted = k * (m - r) * (n - r) <= (m - 1) * (n - 1)
        first = dimension.filling_rank(m, n, k)
        if certified_fills != predicted or predicted != (r >= first):
            mismatches.append([m, n, k, r])
    ok = not mismatches and symbolic.threshold_identity_holds()
    return Evidence(_verdict(ok), f"m,n 1..{max_size}, k 1..{max_members}, every r ({len(specs)} shapes) + sympy",
                    {"mismatches": mismatches[:10]})


@claim("rank-r-fills-iff", "CONJECTURE (certified on the grid): rank-r dense BE fills R^{kmn} iff "
       "k(m−r)(n−r) <= (m−1)(n−1)",
       "certificates + symbolic identity", kind="conjecture")
def rank_r_fills_iff(full: bool) -> Evidence:
    return check_filling_threshold(DENSE_SIZES_FULL if full else DENSE_SIZES, DENSE_MEMBERS_FULL if full else DENSE_MEMBERS)


@claim("naive-threshold-wrong", "(m,n,k,r) = (4,4,3,2): k(m−r)(n−r) = 12 <= mn = 16, yet dim = 45 < 48",
       "modular certificate")
def naive_threshold_wrong(full: bool) -> Evidence:
    spec = BatchEnsembleSpec((4, 4), 3, 2)
    certificate = _certificate(spec)
    naive_says_fills = 3 * (4 - 2) * (4 - 2) <= 4 * 4
    ok = naive_says_fills and certificate.status == "certified" and certificate.lower == 45 < spec.ambient_dim == 48
    return Evidence(_verdict(ok), "(4,4,3,2)", certificate.as_dict())


def conv_specs(max_channels: int, hws: tuple[int, ...], max_members: int, ranks: str) -> list[BatchEnsembleSpec]:
    """Conv kernels c_out × c_in × hw × 1; ``ranks``: ``one`` (every variant) or ``above-one`` (two-block variants)."""
    specs = []
    for c_out, c_in, hw, k in itertools.product(range(1, max_channels + 1), range(1, max_channels + 1), hws,
                                                range(1, max_members + 1)):
        shape = (c_out, c_in, hw, 1)
        if ranks == "one":
            specs += [BatchEnsembleSpec(shape, k, 1, variant) for variant in VARIANTS]
        else:
            for variant in ("channel-wise", "flattened-kernel"):
                top = BatchEnsembleSpec(shape, k, 1, variant).max_rank
                specs += [BatchEnsembleSpec(shape, k, r, variant) for r in range(2, top + 1)]
    return specs


def check_conv_rank1(max_channels: int, hws: tuple[int, ...], max_members: int) -> Evidence:
    ok, count, failures = _compare(conv_specs(max_channels, hws, max_members, "one"),
                                   lambda s: s.ambient_dim - dimension.rank1_codim(s))
    return Evidence(_verdict(ok), f"c_out,c_in 1..{max_channels}, hw {set(hws)}, k 1..{max_members}, "
                    f"{len(VARIANTS)} variants ({count} shapes, toric)", {"failures": failures})


@claim("conv-rank1-codim", "rank-1 block variants: codim = (k−1)(D − 1 − Σ_j (D_j − 1)) (table of docs/theory.md §3)",
       "toric certificate vs closed form", kind="proved")
def conv_rank1_codim(full: bool) -> Evidence:
    return check_conv_rank1(CONV_CHANNELS, CONV_HW, CONV_MEMBERS)


def check_conv_rank_r(max_channels: int, hws: tuple[int, ...], max_members: int) -> Evidence:
    ok, count, failures = _compare(conv_specs(max_channels, hws, max_members, "above-one"), dimension.image_dim)
    return Evidence(_verdict(ok), f"c_out,c_in 1..{max_channels}, hw {set(hws)}, k 1..{max_members}, r >= 2, "
                    f"channel-wise + flattened ({count} shapes, modular Schur)", {"failures": failures})


@claim("conv-rank-r-dim", "CONJECTURE (certified on the grid): rank-r channel-wise conv: dim = min(kD, D + k·r(c_out+c_in−r) − max(c_out+c_in−1, "
       "c_out·c_in − k(c_out−r)(c_in−r)))", "modular certificate (Schur) vs closed form", kind="conjecture")
def conv_rank_r_dim(full: bool) -> Evidence:
    return check_conv_rank_r(CONV_RANK_CHANNELS_FULL if full else CONV_RANK_CHANNELS, CONV_HW, CONV_MEMBERS)


def resnet18_layer_specs(members: int = RESNET_MEMBERS) -> list[BatchEnsembleSpec]:
    """Every distinct Linear/Conv2d kernel of torchvision's and the CIFAR-style (1 and 3 channels) ResNet-18."""
    shapes = set()
    for arch, channels in (("resnet18", 3), ("resnet18-cifar", 1), ("resnet18-cifar", 3)):
        for row in network_counts(build_arch(arch, channels), members, certify_route="none").rows:
            if len(row.shape) > 1:
                shapes.add(row.shape)
    return [BatchEnsembleSpec(shape, members) for shape in sorted(shapes)]


@claim("resnet18-layers-rank1", "every ResNet-18 layer shape, rank 1, k = 4: codim = (k−1)(D − 1 − Σ_j (D_j − 1))",
       "toric certificate vs closed form")
def resnet18_layers_rank1(full: bool) -> Evidence:
    specs = resnet18_layer_specs()
    ok, count, failures = _compare(specs, dimension.image_dim)
    return Evidence(_verdict(ok), f"{count} layer shapes up to 512×512×3×3, k = {RESNET_MEMBERS}",
                    {"failures": failures, "shapes": [list(s.kernel_shape) for s in specs]})


def check_network_totals(members: int) -> Evidence:
    mlp_counts = network_counts(build_arch("mlp", widths=MLP_EXAMPLE["widths"]), MLP_EXAMPLE["members"])
    observed = {key: getattr(mlp_counts, key) for key in ("de_dim", "be_params", "be_image_dim", "codim")}
    expected = {key: MLP_EXAMPLE[key] for key in observed}
    certified = {"mlp-784-400-400-10": mlp_counts.certified}
    for name, model in (("mlp-784-64-32-16-10", build_arch("mlp", widths=(784, 64, 32, 16, 10))),
                        ("resnet18-cifar-1ch", build_arch("resnet18-cifar", 1)), ("resnet18", build_arch("resnet18"))):
        certified[name] = network_counts(model, members).certified
    ok = observed == expected and all(certified.values())
    return Evidence(_verdict(ok), f"2 MLPs, ResNet-18 (torchvision, CIFAR 1-channel), k = {members}",
                    {"mlp_observed": observed, "mlp_expected": expected, "certified": certified})


@claim("network-totals", "whole networks: codims add; MLP 784-400-400-10, k = 4: DE 1,913,640, BE image 488,013, "
       "codim 1,425,627; all totals certified", "per-layer certificates")
def network_totals(full: bool) -> Evidence:
    return check_network_totals(RESNET_MEMBERS)


# ---------------------------------------------------------------- symbolic claims

SYMBOLIC_SPECS = (BatchEnsembleSpec((2, 3), 3), BatchEnsembleSpec((2, 2, 2, 1), 2, 1, "cp-spatial"),
                  BatchEnsembleSpec((2, 3, 2, 1), 2, 1, "flattened-kernel"),
                  BatchEnsembleSpec((2, 2, 2, 1), 2, 1, "per-kernel-scalar"),
                  BatchEnsembleSpec((3, 2, 2, 1), 2, 1, "output-scale"))
TANGENT_SPECS = (BatchEnsembleSpec((2, 3), 2, 2), BatchEnsembleSpec((3, 3), 2, 1),
                 BatchEnsembleSpec((2, 2, 2, 1), 2, 2, "cp-spatial"), BatchEnsembleSpec((2, 2, 2, 1), 2, 2),
                 BatchEnsembleSpec((2, 3, 2, 1), 2, 1, "output-scale"))


def _spec_list(specs: Iterable[BatchEnsembleSpec]) -> str:
    return "; ".join(f"{'x'.join(map(str, s.kernel_shape))} k={s.members} r={s.rank} {s.variant}" for s in specs)


@claim("be-entries-monomial", "rank-1 BE entries are monomials; the log map is linear with matrix Aᵀ",
       "sympy, exact", kind="proved")
def be_entries_monomial(full: bool) -> Evidence:
    return Evidence(_verdict(all(symbolic.log_map_is_linear_with_exponent_matrix(s) for s in SYMBOLIC_SPECS)),
                    _spec_list(SYMBOLIC_SPECS))


@claim("cross-ratio-binomials-vanish", "the degree-4 cross-ratio binomials vanish identically on rank-1 BE points",
       "sympy, exact")
def cross_ratio_binomials_vanish(full: bool) -> Evidence:
    shapes = ((2, 2, 2), (3, 2, 3), (2, 3, 3)) + (((3, 3, 3),) if full else ())
    ok = all(symbolic.vanishes_on_be(symbolic.cross_ratio_binomials(symbolic.member_symbols(k, m, n)), k, m, n)
             for k, m, n in shapes)
    return Evidence(_verdict(ok), "(k,m,n) in " + ", ".join(map(str, shapes)))


@claim("torus-only-caveat", "k=2, m=n=3: a point satisfies all degree-4 binomials but the degree-6 one equals "
       "30030, which vanishes on BE points", "sympy, exact")
def torus_only_caveat(full: bool) -> Evidence:
    result = symbolic.torus_counterexample()
    ok = (result["degree4_count"] == 18 and not any(result["degree4_values"]) and result["degree6_value"] == 30030
          and result["degree6_vanishes_on_be"])
    return Evidence(_verdict(ok), "k=2, m=n=3", result)


@claim("symmetry-tangents-in-kernel", "symmetry-orbit tangent vectors lie in the kernel of JΦ (polynomial identity)",
       "sympy, exact")
def symmetry_tangents_in_kernel(full: bool) -> Evidence:
    return Evidence(_verdict(all(symbolic.tangents_in_jacobian_kernel(s) for s in TANGENT_SPECS)),
                    _spec_list(TANGENT_SPECS))


@claim("rank-identities", "mn − r(m+n−r) = (m−r)(n−r); rank-r bound − kmn = (m−1)(n−1) − k(m−r)(n−r)",
       "sympy, exact", kind="proved")
def rank_identities(full: bool) -> Evidence:
    return Evidence(_verdict(symbolic.rank_identity_holds() and symbolic.threshold_identity_holds()),
                    "indeterminates m, n, r, k")
