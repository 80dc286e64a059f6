"""Claims about the geometry of the BE set: distance to it, ε-tubes around it, and function-space dimension."""
from __future__ import annotations

import torch

from theory import dimension
from theory.batchensemble import DENSE_VARIANTS, VARIANTS, BatchEnsembleSpec, member_weights, random_factors
from theory.claims.registry import Evidence, claim
from theory.distance import distance_by_rank, log_contrasts
from theory.functional import MLPSpec, functional_dimension, linear_fills, linear_functional_codim
from theory.tube import (DEFAULT_SAMPLES, FULL_SAMPLES, PLAIN_SAMPLES, PLAIN_SAMPLES_RESULTS, TUBE_CASES,
                         plain_tube_probability, tube_probability)

SEED = 20260125
BE_ZERO_TOL = 1e-10  # relative residual of a BE point: float64 round-off is ~1e-15; 1e-10 leaves room for ALS stops
DE_POSITIVE_TOL = 1e-3  # relative residual of a generic DE point when codim > 0 (observed 0.05–0.7)
CONTRAST_TOL = 1e-12  # |g| on BE points: a few float64 log round-offs of values with |log| < 10
SLOPE_TOL = {1: 0.15, 2: 0.15, 3: 0.15, 4: 0.3}  # the acceptance bands of the issue
DISTANCE_SHAPES = ((4, 5), (2, 3, 2, 2))


def _variants(shape: tuple[int, ...]) -> tuple[str, ...]:
    return DENSE_VARIANTS if len(shape) == 2 else VARIANTS


def _rank_range(spec: BatchEnsembleSpec) -> range:
    """Ranks with a reliable projection: all for one or two blocks; rank 1 for cp-spatial (rank ≥ 2 is a CP fit
    with local minima, an open item)."""
    return range(1, (spec.max_rank if len(spec.blocks) <= 2 else 1) + 1)


def distance_cases(members: int = 3):
    """(spec, BE point, DE point) for every variant and reliable rank of the DISTANCE_SHAPES."""
    generator = torch.Generator().manual_seed(SEED)
    for shape in DISTANCE_SHAPES:
        k = members if len(shape) == 2 else 2
        for variant in _variants(shape):
            for rank in _rank_range(BatchEnsembleSpec(shape, k, 1, variant)):
                spec = BatchEnsembleSpec(shape, k, rank, variant)
                be = member_weights(spec, *random_factors(spec, generator))
                yield spec, be, torch.randn((k, *shape), generator=generator, dtype=torch.float64)


@claim("distance-zero-on-be-positive-on-de",
       "Euclidean distance to the rank-r BE set is 0 (round-off) on BE points and > 0 on DE points when codim > 0",
       "ALS + Levenberg–Marquardt projection, 3 starts, every variant and rank", kind="verified")
def check_distance(full: bool) -> Evidence:
    failures, count = [], 0
    for spec, be, de in distance_cases():
        at_be = distance_by_rank(be, spec.rank, spec.variant, seed=SEED)[-1].relative_residual
        at_de = distance_by_rank(de, spec.rank, spec.variant, seed=SEED)[-1].relative_residual
        positive_expected = dimension.codim(spec) > 0
        count += 1
        if at_be > BE_ZERO_TOL or (positive_expected and at_de <= DE_POSITIVE_TOL) or (
                not positive_expected and at_de > BE_ZERO_TOL):
            failures.append(f"{spec.kernel_shape} {spec.variant} r={spec.rank}: BE {at_be:.1e} DE {at_de:.1e}")
    return Evidence("failed" if failures else "verified", f"{count} (shape, variant, rank) cases",
                    {"failures": failures, "be_tol": BE_ZERO_TOL, "de_tol": DE_POSITIVE_TOL})


@claim("distance-monotone-in-rank", "the distance to the rank-r BE set never increases with r",
       "warm-started projections r = 1..min(m, n) on random DE points", kind="verified")
def check_monotone(full: bool) -> Evidence:
    generator = torch.Generator().manual_seed(SEED)
    shapes = ((4, 5), (5, 5), (3, 4, 2, 2)) if full else ((4, 5), (3, 4, 2, 2))
    profiles = {}
    for shape in shapes:
        weights = torch.randn((3, *shape), generator=generator, dtype=torch.float64)
        max_rank = min(shape[:2])
        profiles[str(shape)] = [r.distance for r in distance_by_rank(weights, max_rank, seed=SEED)]
    ok = all(b <= a for p in profiles.values() for a, b in zip(p, p[1:]))
    return Evidence("verified" if ok else "failed", f"{len(shapes)} shapes, k = 3, every rank", {"profiles": profiles})


@claim("log-contrasts-vanish-on-be", "the (k−1)(D−1−Σ(D_j−1)) log-contrasts vanish on rank-1 BE points, signs consistent",
       "log_contrasts at random BE points of every variant (|g| ≤ 1e-12) and nonzero at DE points", kind="verified")
def check_contrasts(full: bool) -> Evidence:
    generator = torch.Generator().manual_seed(SEED)
    worst, failures = 0.0, []
    for shape in ((3, 4), (2, 3, 3, 3)):
        for variant in _variants(shape):
            spec = BatchEnsembleSpec(shape, 3, 1, variant)
            lc = log_contrasts(member_weights(spec, *random_factors(spec, generator)), variant)
            worst = max(worst, lc.max_abs)
            if lc.num_contrasts != dimension.codim(spec) or lc.max_abs > CONTRAST_TOL or not lc.signs_consistent:
                failures.append(f"{shape} {variant}")
    return Evidence("failed" if failures else "verified", "dense 3×4 and conv 2×3×3×3, k = 3, every variant",
                    {"max_abs_contrast": worst, "failures": failures})


def _tube_check(case: tuple[int, int, int]):
    def check(full: bool) -> Evidence:
        result = tube_probability(*case, samples=FULL_SAMPLES if full else DEFAULT_SAMPLES, seed=SEED)
        ok = abs(result.slope - result.codim) <= SLOPE_TOL[result.codim]
        return Evidence("verified" if ok else "failed", f"(k,m,n)={case}, {result.samples} IS draws",
                        {"slope": result.slope, "ci": result.slope_ci, "codim": result.codim,
                         "seconds": result.seconds})
    return check


for _case in TUBE_CASES:
    claim(f"tube-slope-matches-codim-({_case[0]},{_case[1]},{_case[2]})",
          f"importance sampler consistency, (k,m,n)={_case}: log P(‖g‖_∞ < ε) vs log ε has slope codim (the IS weight "
          "scales as ε^codim by construction, so this checks the sampler, not the exponent: see "
          "tube-plain-mc-slope-matches-codim)",
          "importance-sampled ε-tube (log-contrast sup-norm), bootstrap CI", kind="verified")(_tube_check(_case))


PLAIN_CHECK_CASES = ((2, 2, 2), (3, 2, 2))  # codim 1 and 2: enough hits at small ε with 2,000 draws


def check_plain_tube(cases, samples_for_codim) -> Evidence:
    """The plain-MC slope's bootstrap CI contains the codimension for every case (the estimator does not know it)."""
    rows = []
    for case in cases:
        spec = BatchEnsembleSpec(case[1:], case[0])
        result = plain_tube_probability(*case, samples=samples_for_codim(dimension.codim(spec)), seed=SEED)
        rows.append({"case": list(case), "codim": result.codim, "slope": result.slope, "ci": list(result.slope_ci),
                     "samples": result.samples, "epsilon_range": [result.epsilons[0], result.epsilons[-1]]})
    ok = all(row["ci"][0] <= row["codim"] <= row["ci"][1] for row in rows)
    sizes = ", ".join(f"{tuple(r['case'])}: {r['samples']}" for r in rows)
    return Evidence("verified" if ok else "failed", f"(k,m,n): draws = {sizes}", {"rows": rows})


@claim("tube-plain-mc-slope-matches-codim",
       "plain Monte Carlo, X ~ N(0, I), Euclidean distance to the rank-1 BE set: the slope of log P(d < ε) vs log ε "
       "has a 95% bootstrap CI containing codim = (k−1)(m−1)(n−1)",
       "batched ALS projection (3 starts), indicator estimate, bootstrap over draws; --full: all five tube cases", kind="verified")
def check_plain_tube_claim(full: bool) -> Evidence:
    if full:
        return check_plain_tube(TUBE_CASES, PLAIN_SAMPLES_RESULTS.__getitem__)
    return check_plain_tube(PLAIN_CHECK_CASES, lambda codim: PLAIN_SAMPLES)


FDIM_GRID = {"relu": [((3, 3, 3), 2), ((3, 3, 3), 3), ((4, 4, 4), 2), ((4, 4, 4), 3)],
             "tanh": [((3, 3, 3), 2), ((4, 4, 4), 2)]}


@claim("fdim-relu-codim-equals-parameter-codim",
       "for one-hidden-layer ReLU MLPs (two weight layers) at generic points, functional codim (DE vs BE) equals "
       "parameter codim (deeper ReLU nets: only bounds, see fdim.json)",
       "modular rank at integer points = proved bounds k(P−H) and dim Im Φ − kH")
def check_fdim_relu(full: bool) -> Evidence:
    rows = [functional_dimension(MLPSpec(w, "relu", k), seed=SEED) for w, k in FDIM_GRID["relu"]]
    ok = all(r.certified and r.functional_codim == r.spec.parameter_codim for r in rows)
    return Evidence("certified" if ok else "failed", "widths [3,3,3], [4,4,4]; k = 2, 3",
                    {"rows": [r.as_dict() for r in rows]})


LINEAR_GRID = {"widths": (2, 3, 4), "depths": (1, 2, 3), "members": (2, 3, 4)}
LINEAR_GRID_FULL = {"widths": (2, 3, 4, 5), "depths": (1, 2, 3, 4), "members": (2, 3, 4, 5)}


def linear_rows(grid: dict) -> list[dict]:
    """Certified functional dimensions of rank-1 linear BE for widths (n,)·(L + 1), with the closed form beside."""
    rows = []
    for n in grid["widths"]:
        for depth in grid["depths"]:
            for k in grid["members"]:
                result = functional_dimension(MLPSpec((n,) * (depth + 1), "identity", k), seed=SEED)
                rows.append({"width": n, "depth": depth, "members": k, "certified": result.certified,
                             "functional_codim": result.functional_codim,
                             "closed_form": linear_functional_codim(n, depth, k),
                             "fills_predicted": linear_fills(n, depth, k)})
    return rows


def check_linear_closed_form(grid: dict) -> Evidence:
    rows = linear_rows(grid)
    bad = [row for row in rows if not row["certified"] or row["functional_codim"] != row["closed_form"]]
    return Evidence("failed" if bad else "certified",
                    f"n in {grid['widths']}, L in {grid['depths']}, k in {grid['members']} ({len(rows)} networks)",
                    {"mismatches": bad[:10], "positive_codim": [r for r in rows if r["closed_form"] > 0][:20]})


@claim("fdim-linear-codim-closed-form",
       "rank-1 linear BE, widths (n,)·(L+1), per-member biases: functional codim = (n−1)·max(0, k(n−L) − L(n−1))",
       "modular rank at integer points = proved diagonal-rescaling bound (docs/proofs.md §4)")
def check_fdim_linear(full: bool) -> Evidence:
    return check_linear_closed_form(LINEAR_GRID_FULL if full else LINEAR_GRID)


def check_linear_fills(grid: dict) -> Evidence:
    rows = linear_rows(grid)
    bad = [row for row in rows if not row["certified"] or (row["functional_codim"] == 0) != row["fills_predicted"]]
    return Evidence("failed" if bad else "certified",
                    f"n in {grid['widths']}, L in {grid['depths']}, k in {grid['members']} ({len(rows)} networks)",
                    {"mismatches": bad[:10],
                     "not_filling": [[r["width"], r["depth"], r["members"]] for r in rows if not r["fills_predicted"]]})


@claim("fdim-linear-fills-iff",
       "rank-1 linear BE reaches the whole DE function space iff k(n − L) <= L(n − 1) (e.g. n = 4, L = 2, k = 4 "
       "does not: codim 6)", "certified functional dimensions vs the condition")
def check_fdim_linear_fills(full: bool) -> Evidence:
    return check_linear_fills(LINEAR_GRID_FULL if full else LINEAR_GRID)


@claim("fdim-tanh-codim-equals-parameter-codim",
       "for tanh MLPs at random points, functional codim equals parameter codim",
       "float SVD rank with singular-value gap >= 1e6", kind="verified")
def check_fdim_tanh(full: bool) -> Evidence:
    rows = [functional_dimension(MLPSpec(w, "tanh", k), seed=SEED) for w, k in FDIM_GRID["tanh"]]
    ok = all(r.functional_codim == r.spec.parameter_codim and min(r.de.gap, r.be.gap) >= 1e6 for r in rows)
    return Evidence("verified" if ok else "failed", "widths [3,3,3], [4,4,4]; k = 2",
                    {"rows": [r.as_dict() for r in rows]})
