"""``python -m theory results --out results/theory``: compute and save every JSON the theory figures read.

Files (each with provenance: config, seed, versions, git commit):
    codim_fraction.json      rank-1 dense codim/(kmn) over m, n in 1..16 for k = 2, 4, 8
    image_dim_vs_rank.json   dense image dim vs rank r, the filling rank and the DE dim kmn, several (m, n, k)
    tube.json                ε-tube curves, fitted slopes and bootstrap CIs for the five (k, m, n) cases
    fdim.json                functional vs parameter codim over MLP depth, width, k and activation
    resnet18_layers.json     per-layer fraction of the DE dimension reached by rank-1 BE, CIFAR ResNet-18, k = 4, and
                             the codim split into parameter counting and algebraic redundancy
    tube_plain.json          plain Monte Carlo ε-tube (Euclidean distance) for the five cases, slopes and bootstrap CIs
    rank_r_search.json       rank-r closed forms certified on random shapes beyond the grid; the largest certified
    trained_points.json      diversity link and head functional dimension at trained paper-mnist-recipe MLPs
                             (needs the runs under results/theory/trained: ``--only trained_points``)
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm

from infra.files import atomic_write_json
from infra.provenance import provenance
from theory import dimension
from theory.batchensemble import BatchEnsembleSpec
from theory.functional import MLPSpec, functional_dimension
from theory.network import build_arch, network_counts
from theory.proofs import certify_against_closed_form, random_rank_r_specs, search_summary
from theory.tube import (DEFAULT_SAMPLES, FULL_SAMPLES, PLAIN_SAMPLES_RESULTS, TUBE_CASES, plain_tube_probability,
                         tube_probability)

SEED = 20260125
FRACTION_MEMBERS = (2, 4, 8)
FRACTION_SIZES = range(1, 17)
RANK_CASES = ((8, 8, 2), (8, 8, 4), (16, 16, 4), (16, 8, 4), (32, 32, 4))
FDIM_DEPTHS = (2, 3)
FDIM_WIDTHS = (3, 4, 8, 16)
FDIM_QUICK_SKIP = ((3, 16),)  # (depth, width) left out without --full: ~1 min per case on 2 cores
FDIM_MEMBERS = (2, 3, 4)
FDIM_ACTIVATIONS = ("relu", "identity", "tanh")


# Written only when named with --only: trained_points needs local training runs (checkpoints are not committed);
# tube_plain (~8 min of CPU) and rank_r_search (~1.5 min) would take `make reproduce` past its 15-minute budget, so
# their committed JSON is what the figures read and `make theory-results-heavy` rewrites them (`check` verifies a
# bounded part of each).
ON_REQUEST = ("trained_points", "tube_plain", "rank_r_search")


def codim_fraction() -> dict:
    grid = {str(k): [[dimension.codim(BatchEnsembleSpec((m, n), k)) / (k * m * n) for n in FRACTION_SIZES]
                     for m in FRACTION_SIZES] for k in FRACTION_MEMBERS}
    return {"sizes": list(FRACTION_SIZES), "members": list(FRACTION_MEMBERS), "fraction": grid,
            "formula": "(k-1)(m-1)(n-1)/(kmn)"}


def image_dim_vs_rank() -> dict:
    cases = []
    for m, n, k in RANK_CASES:
        ranks = list(range(1, min(m, n) + 1))
        cases.append({"m": m, "n": n, "k": k, "ranks": ranks, "de_dim": k * m * n,
                      "image_dim": [dimension.image_dim(BatchEnsembleSpec((m, n), k, r)) for r in ranks],
                      "params": [BatchEnsembleSpec((m, n), k, r).num_params for r in ranks],
                      "filling_rank": dimension.filling_rank(m, n, k)})
    return {"cases": cases}


def tube_results(full: bool) -> dict:
    samples = FULL_SAMPLES if full else DEFAULT_SAMPLES
    return {"cases": [tube_probability(*case, samples=samples, seed=SEED).as_dict() for case in TUBE_CASES]}


def fdim_results(full: bool) -> dict:
    grid = [(depth, width, k, act) for depth in FDIM_DEPTHS for width in FDIM_WIDTHS for k in FDIM_MEMBERS
            for act in FDIM_ACTIVATIONS if full or (depth, width) not in FDIM_QUICK_SKIP]
    rows = []
    for depth, width, k, act in tqdm(grid, desc="fdim", disable=not sys.stderr.isatty()):
        start = time.perf_counter()
        row = functional_dimension(MLPSpec((width,) * (depth + 1), act, k), seed=SEED).as_dict()
        rows.append(row | {"depth": depth, "width": width, "seconds": time.perf_counter() - start})
    return {"rows": rows}


def tube_plain_results() -> dict:
    cases = []
    for case in TUBE_CASES:
        codim = dimension.codim(BatchEnsembleSpec(case[1:], case[0]))
        cases.append(plain_tube_probability(*case, samples=PLAIN_SAMPLES_RESULTS[codim], seed=SEED).as_dict())
    return {"cases": cases}


def rank_r_search_results() -> dict:
    from theory.claims.proofs import SEARCH_RESULTS
    specs = random_rank_r_specs(SEARCH_RESULTS["count"], SEARCH_RESULTS["sizes"], SEARCH_RESULTS["max_members"], SEED)
    return {"search": SEARCH_RESULTS, "seed": SEED, **search_summary(certify_against_closed_form(specs, SEED))}


def trained_points_results() -> dict:
    from theory.trained_points import trained_results
    return trained_results(Path("results/theory/trained"))


def counting_split(counts) -> dict:
    """Codim = max(0, kD − #params) (parameter counting alone) + the rest (algebraic redundancy), over perturbed
    layers; shared and per-member vectors are counted as they are."""
    return {"codim": counts.codim, "counting": max(0, counts.ambient_dim - counts.params),
            "algebraic": counts.codim - max(0, counts.ambient_dim - counts.params)}


def resnet18_layers(members: int = 4) -> dict:
    counts = network_counts(build_arch("resnet18-cifar", in_channels=1), members)
    layers = [{"name": row.name, "kind": row.kind, "shape": list(row.shape), "role": row.role,
               "ambient_dim": row.counts.ambient_dim, "image_dim": row.counts.image_dim,
               "fraction": row.counts.image_dim / row.counts.ambient_dim if row.counts.ambient_dim else 1.0,
               "certified": row.certified, "params": row.counts.params,
               **{f"codim_{key}": value for key, value in counting_split(row.counts).items() if key != "codim"}}
              for row in counts.rows if row.kind.startswith(("Conv2d", "Linear"))]
    splits = [counting_split(row.counts) for row in counts.rows]
    split = {key: sum(item[key] for item in splits) for key in ("codim", "counting", "algebraic")}
    return {"arch": "resnet18-cifar", "in_channels": 1, "members": members, "layers": layers,
            "totals": counts.totals_dict(), "codim_split": split}


def write_all(out: Path, full: bool, only: list[str] | None = None) -> list[Path]:
    jobs = {"codim_fraction.json": codim_fraction, "image_dim_vs_rank.json": image_dim_vs_rank,
            "tube.json": lambda: tube_results(full), "fdim.json": lambda: fdim_results(full),
            "resnet18_layers.json": resnet18_layers, "tube_plain.json": tube_plain_results,
            "rank_r_search.json": rank_r_search_results, "trained_points.json": trained_points_results}
    unknown = sorted(set(only or []) - {name.removesuffix(".json") for name in jobs})
    if unknown:
        from infra.errors import BadInput
        raise BadInput(f"--only {' '.join(unknown)} is unknown: expected names from "
                       f"{', '.join(name.removesuffix('.json') for name in jobs)}")
    written = []
    for name, job in jobs.items():
        stem = name.removesuffix(".json")
        if (only and stem not in only) or (not only and stem in ON_REQUEST):
            continue
        start = time.perf_counter()
        payload = job()
        path = out / name
        atomic_write_json(path, {"provenance": provenance({"result": name, "full": full}, SEED), **payload})
        print(f"{path}: {time.perf_counter() - start:.1f}s", flush=True)
        written.append(path)
    return written


def run_results(args) -> int:
    write_all(Path(args.out), args.full, args.only)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("results", help="compute and save every JSON the theory figures read")
    parser.add_argument("--out", default="results/theory", help="output folder (default results/theory)")
    parser.add_argument("--full", action="store_true", help="adds depth-3 width-16 MLPs to the fdim grid and uses 400k tube draws")
    parser.add_argument("--only", nargs="*", default=[], metavar="NAME",
                        help="write only these results (file names without .json, e.g. tube_plain trained_points)")
    parser.set_defaults(handler=run_results)
