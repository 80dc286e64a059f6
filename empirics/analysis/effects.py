"""Statistics that respect a study's design: the unit of replication is a seed within a run configuration.

* ``cluster_bootstrap_spearman`` — Spearman's ρ between two measures over the runs × seeds of a study with a
  *hierarchical* (cluster) percentile bootstrap: resample configurations with replacement, then seeds with
  replacement within each drawn configuration (Davison & Hinkley 1997, §3.8; Field & Welsh 2007). Next to the pooled ρ
  it reports the *between-configuration* ρ (of configuration means; what a study with a handful of methods mostly
  measures) and the *within-configuration* ρ (of the deviations from each configuration's mean: does the link hold
  among the seeds of one configuration?), each with its CI from the same resamples.
* ``contrast`` — the effect size of a headline contrast: the ratio or difference of two runs' means over seeds, or a
  ratio of two such ratios, with a Welch t-interval (delta method, log scale for ratios; paired by seed when two
  sides are the same run, e.g. one run at two epochs; independent otherwise), and the verdict of a pre-registered
  test "the CI lies above / below a value".
"""
from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
from scipy import stats

from infra.errors import BadInput

N_RESAMPLES = 2000
CONFIDENCE = 0.95
# A cluster bootstrap over c configurations draws at most C(2c − 1, c) distinct sets of them: 10, 35, 126 for
# c = 3, 4, 5. Below 5 its percentile interval is a handful of atoms (with 3, "ρ = −0.87 [−1.00, −0.87]"): no CI.
MIN_CLUSTERS = 5
EXPECTATIONS = ("above", "below")


def rowwise_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ of each row pair of (R, n) arrays (average ranks for ties, as ``scipy.stats.spearmanr``); NaN for
    a row with a constant coordinate."""
    rank_x = stats.rankdata(x, axis=1)
    rank_y = stats.rankdata(y, axis=1)
    rank_x -= rank_x.mean(axis=1, keepdims=True)
    rank_y -= rank_y.mean(axis=1, keepdims=True)
    scale = np.sqrt((rank_x ** 2).sum(axis=1) * (rank_y ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scale > 0, (rank_x * rank_y).sum(axis=1) / scale, np.nan)


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """ρ of two samples, ``None`` for fewer than 3 points or a constant coordinate."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(rowwise_spearman(x[None], y[None])[0])


def cluster_means(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The mean of ``values`` over each label, in order of first appearance."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    return (sums / np.bincount(inverse))[np.argsort(first)]


def within_deviations(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """values − the mean of their label's values (the within-cluster part)."""
    _, inverse = np.unique(labels, return_inverse=True)
    means = np.bincount(inverse, weights=values) / np.bincount(inverse)
    return values - means[inverse]


def cluster_resamples(clusters: Sequence[Hashable], n_resamples: int, rng: np.random.Generator
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Hierarchical resamples of points grouped by ``clusters``: draw C clusters with replacement, then within each
    drawn cluster its points (seeds) with replacement. Each resample is (point indices, resample cluster label); a
    cluster drawn twice counts as two clusters (labels 0..C−1 by draw)."""
    names = list(dict.fromkeys(clusters))
    codes = np.asarray([names.index(c) for c in clusters])
    order = np.argsort(codes, kind="stable")  # points of cluster c occupy order[start_c : start_c + size_c]
    sizes = np.bincount(codes, minlength=len(names))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = []
    for _ in range(n_resamples):
        drawn = rng.integers(0, len(names), size=len(names))
        labels = np.repeat(np.arange(len(drawn)), sizes[drawn])
        within = np.floor(rng.random(len(labels)) * sizes[drawn][labels]).astype(int)
        out.append((order[starts[drawn][labels] + within], labels))
    return out


def _by_length(values: list[np.ndarray]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for position, row in enumerate(values):
        groups.setdefault(len(row), []).append(position)
    return groups


def _batched_spearman(xs: list[np.ndarray], ys: list[np.ndarray]) -> np.ndarray:
    """ρ of every (x, y) pair of rows of possibly different lengths (rows of one length in one vectorised call)."""
    result = np.full(len(xs), np.nan)
    for length, positions in _by_length(xs).items():
        if length >= 3:
            result[positions] = rowwise_spearman(np.stack([xs[p] for p in positions]),
                                                  np.stack([ys[p] for p in positions]))
    return result


def _interval(samples: np.ndarray, confidence: float) -> tuple[float | None, float | None, int]:
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return None, None, 0
    alpha = 1 - confidence
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high), int(len(samples))


def cluster_bootstrap_spearman(x: Sequence[float], y: Sequence[float], clusters: Sequence[Hashable],
                               n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE,
                               seed: int = 0) -> dict[str, Any]:
    """Pooled, between- and within-configuration Spearman ρ with cluster-bootstrap percentile CIs (module docstring).

    Points with a non-finite coordinate are left out. ``n`` runs × seeds, ``n_configs`` configurations; a ρ is
    ``None`` when undefined (fewer than 3 points, or a constant coordinate); ``n_boot`` counts the resamples where the
    pooled ρ is defined. Between needs >= 3 configurations; within needs some spread inside configurations. With
    fewer than ``MIN_CLUSTERS`` configurations the ρ's are given without CIs."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    labels = np.asarray(list(clusters), dtype=object)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y, labels = x[keep], y[keep], labels[keep]
    names = list(dict.fromkeys(labels.tolist()))
    codes = np.asarray([names.index(label) for label in labels])
    result: dict[str, Any] = {"n": int(len(x)), "n_configs": len(names)}
    if len(x) < 3:
        return {**result, **_empty("rho"), "between": _empty("rho"), "within": _empty("rho"), "n_boot": 0}
    resamples = cluster_resamples(codes.tolist(), n_resamples, np.random.default_rng(seed))
    pooled_x = [x[idx] for idx, _ in resamples]
    pooled_y = [y[idx] for idx, _ in resamples]
    between_x = [cluster_means(x[idx], lab) for idx, lab in resamples]
    between_y = [cluster_means(y[idx], lab) for idx, lab in resamples]
    within_x = [within_deviations(x[idx], lab) for idx, lab in resamples]
    within_y = [within_deviations(y[idx], lab) for idx, lab in resamples]
    estimates = {
        "pooled": (spearman(x, y), _batched_spearman(pooled_x, pooled_y)),
        "between": (spearman(cluster_means(x, codes), cluster_means(y, codes)) if len(names) >= 3 else None,
                    _batched_spearman(between_x, between_y) if len(names) >= 3 else np.array([])),
        "within": (spearman(within_deviations(x, codes), within_deviations(y, codes)),
                   _batched_spearman(within_x, within_y)),
    }
    summary = {}
    for name, (rho, boot) in estimates.items():
        defined = rho is not None and len(names) >= MIN_CLUSTERS
        low, high, kept = _interval(boot, confidence) if defined else (None, None, 0)
        summary[name] = {"rho": rho, "ci_low": low, "ci_high": high, "n_boot": kept}
    pooled = summary.pop("pooled")
    return {**result, **pooled, "between": {**summary["between"], "n": len(names)},
            "within": {**summary["within"], "n": int(len(x))}}


def _empty(key: str) -> dict[str, Any]:
    return {key: None, "ci_low": None, "ci_high": None, "n_boot": 0}


def excludes_zero(entry: dict[str, Any]) -> bool:
    """The entry's CI exists and lies entirely above or below 0."""
    return entry.get("ci_low") is not None and (entry["ci_low"] > 0 or entry["ci_high"] < 0)


# ---------------------------------------------------------------- headline contrasts

SIGNS = {"ratio": {"a": 1, "b": -1}, "difference": {"a": 1, "b": -1},
         "ratio_of_ratios": {"a": 1, "b": -1, "c": -1, "d": 1}}  # the statistic's exponent (or sign) of each side
STATISTIC_SIDES = {name: tuple(signs) for name, signs in SIGNS.items()}


def _statistic(means: Mapping[str, np.ndarray], statistic: str) -> np.ndarray:
    """mean_a / mean_b (``ratio``), mean_a − mean_b (``difference``) or (mean_a / mean_b) / (mean_c / mean_d)
    (``ratio_of_ratios``: e.g. BE's share of DE's diversity at one scale over its share at another); NaN where a
    denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if statistic == "difference":
            return means["a"] - means["b"]
        ratio = np.where(means["b"] != 0, means["a"] / means["b"], np.nan)
        if statistic == "ratio":
            return ratio
        other = np.where(means["d"] != 0, means["c"] / means["d"], np.nan)
        return np.where(other != 0, ratio / other, np.nan)


CONTRAST_CI = "95% Welch t-intervals over seeds (delta method, log scale for ratios)"  # what the report cites


def contrast(samples: Mapping[str, Sequence[float]], statistic: str = "ratio",
             groups: Mapping[str, Hashable] | None = None, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Effect size of ``statistic`` over the means of the seed samples ``samples[side]`` (sides a, b[, c, d]) with a
    Welch t-interval (docs/theory.md §11, "Contrasts"). The estimate is linearised around the side means (the delta
    method): each *group* g of sides contributes the per-seed values u_gi = Σ_{s∈g} c_s x_si, with c_s = ±1 for a
    difference and c_s = ±1/mean_s for log(ratio) and log(ratio of ratios), so SE² = Σ_g var(u_g)/n_g; the degrees of
    freedom are Welch–Satterthwaite's, df = SE⁴ / Σ_g (var(u_g)/n_g)² / (n_g − 1); a ratio's interval is
    exp(log estimate ± t_df SE). Sides in the same ``groups`` entry (the same run measured twice, e.g. at two epochs)
    are paired by seed (they need equal lengths); other sides are independent. A difference of two independent sides
    is exactly Welch's interval, of two paired sides the paired t-interval. A percentile bootstrap over 3 seeds would
    cover far less than 95% (its spread shrinks by √((n−1)/n) and it has no t quantile). ``estimate`` is ``None`` when
    a side is empty or a denominator mean is 0; the CI is ``None`` when a side has fewer than 2 seeds, or a ratio's
    side mean is not positive (no log scale)."""
    if statistic not in STATISTIC_SIDES:
        raise BadInput(f"statistic={statistic!r} is unknown: expected one of {', '.join(STATISTIC_SIDES)}")
    sides = STATISTIC_SIDES[statistic]
    missing = [side for side in sides if side not in samples]
    if missing:
        raise BadInput(f"statistic={statistic!r} needs samples {', '.join(sides)}; missing {', '.join(missing)}")
    values = {side: np.asarray(samples[side], dtype=float) for side in sides}
    groups = {side: (groups or {}).get(side, side) for side in sides}
    base = {"statistic": statistic, "n": {side: int(len(values[side])) for side in sides},
            "paired": sorted({g for g in groups.values() if list(groups.values()).count(g) > 1}, key=str)}
    undefined = {"ci_low": None, "ci_high": None, "df": None}
    if any(not len(v) for v in values.values()):
        return {**base, "estimate": None, **undefined}
    for group in set(groups.values()):
        lengths = {len(values[side]) for side in sides if groups[side] == group}
        if len(lengths) > 1:
            raise BadInput(f"paired sides of {group!r} need the same seeds, got {sorted(lengths)} values")
    means = {side: float(v.mean()) for side, v in values.items()}
    estimate = float(_statistic(means, statistic))
    estimate = estimate if np.isfinite(estimate) else None
    log_scale = statistic != "difference"
    if estimate is None or any(len(v) < 2 for v in values.values()) or (
            log_scale and min(means.values()) <= 0):  # one seed has no spread; a log needs positive means
        return {**base, "estimate": estimate, **undefined}
    coefficients = {side: SIGNS[statistic][side] / (means[side] if log_scale else 1.0) for side in sides}
    variances, dofs = [], []
    for group in dict.fromkeys(groups.values()):
        members = [side for side in sides if groups[side] == group]
        influence = sum(coefficients[side] * values[side] for side in members)
        variances.append(float(np.var(influence, ddof=1)) / len(influence))
        dofs.append(len(influence) - 1)
    se = float(np.sqrt(sum(variances)))
    centre = float(np.log(estimate)) if log_scale else estimate
    if se == 0.0:  # every seed gives the same value: the interval is the point
        low, high, df = centre, centre, None
    else:
        df = se ** 4 / sum(v ** 2 / d for v, d in zip(variances, dofs))
        half = float(stats.t.ppf(1 - (1 - confidence) / 2, df)) * se
        low, high = centre - half, centre + half
    if log_scale:
        low, high = float(np.exp(low)), float(np.exp(high))
    return {**base, "estimate": estimate, "ci_low": low, "ci_high": high, "df": df}


def contrast_of_runs(runs: Mapping[str, Any], sides: Mapping[str, tuple[str, str]], statistic: str) -> dict[str, Any]:
    """``contrast`` of a study's summarised runs (``summary["runs"]``: per run its ``seeds`` and per metric its
    per-seed ``values``): side s is (run, metric); sides of the same run are paired on the seeds they all have."""
    by_seed = {}
    for side, (run, key) in sides.items():
        entry = runs.get(run, {})
        found = entry.get("metrics", {}).get(key)
        by_seed[side] = dict(zip(entry.get("seeds", []), found["values"])) if found else {}
    samples = {}
    for side, (run, _) in sides.items():
        twins = [other for other, (other_run, _) in sides.items() if other_run == run]
        common = sorted(set.intersection(*(set(by_seed[other]) for other in twins)))
        samples[side] = [by_seed[side][s] for s in common]
    return contrast(samples, statistic, groups={side: run for side, (run, _) in sides.items()})


def verdict(found: dict[str, Any], expect: str, value: float) -> str:
    """The pre-registered test: ``supported`` when the CI lies entirely on the ``expect`` side of ``value``,
    ``contradicted`` when entirely on the other side, ``inconclusive`` otherwise (or ``undefined``)."""
    if expect not in EXPECTATIONS:
        raise BadInput(f"expect={expect!r} is unknown: expected one of {', '.join(EXPECTATIONS)}")
    if found.get("ci_low") is None:
        return "undefined"
    above, below = found["ci_low"] > value, found["ci_high"] < value
    if (above and expect == "above") or (below and expect == "below"):
        return "supported"
    if above or below:
        return "contradicted"
    return "inconclusive"
