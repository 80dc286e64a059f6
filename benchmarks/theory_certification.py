"""Benchmark: how long certification takes as layers grow, per route (not a timed test).

Measures, for dense m×m layers with k = 4:
* the ``modular`` route (dense Jacobian, python-flint rank mod p), the ``schur`` route (W and B_i eliminated) and
  the ``toric`` route (rank 1, structural) on a ladder of sizes;
* the largest m certified by the modular (Schur) route within ``BUDGET_S`` seconds, for r = 1 and r = 2;
* the whole torchvision ResNet-18 at k = 4 (every layer certified, toric).
Writes ``benchmarks/results/theory_certification.json`` (with provenance) and prints a table.

    python benchmarks/theory_certification.py          # or: make bench-theory
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
from theory.certificate import certify, certify_cached
from theory.network import build_arch, network_counts

CONFIG = {
    "members": 4,                                     # k
    "seed": 0,                                        # seed of the random integer points
    "budget_s": 60.0,                                 # seconds allowed for "largest layer within budget"
    "plain_sizes": [8, 16, 24, 32],                   # m = n for the dense-Jacobian modular route
    "schur_sizes": [8, 16, 32, 64],                   # m = n for the Schur route ladder (rank 1)
    "toric_sizes": [64, 128, 256, 512, 1024],         # m = n for the toric route (rank 1)
    "budget_ladder": [64, 128, 192, 256, 384, 512, 768],  # m = n tried until one run exceeds the budget
}
OUTPUT = Path(__file__).resolve().parent / "results" / "theory_certification.json"


def timed(spec: BatchEnsembleSpec, route: str) -> dict:
    start = time.perf_counter()
    certificate = certify(spec, route, CONFIG["seed"])
    seconds = time.perf_counter() - start
    return {"m": spec.kernel_shape[0], "n": spec.kernel_shape[1], "k": spec.members, "r": spec.rank, "route": route,
            "seconds": round(seconds, 3), "status": certificate.status, "lower": certificate.lower,
            "expected": dimension.image_dim(spec), "jacobian_shape": [spec.ambient_dim, spec.num_params]}


def ladder(progress: tqdm) -> list[dict]:
    k, rows = CONFIG["members"], []
    for route, sizes in (("modular", CONFIG["plain_sizes"]), ("schur", CONFIG["schur_sizes"]),
                         ("toric", CONFIG["toric_sizes"])):
        for m in sizes:
            progress.set_postfix_str(f"{route} m={m}")
            rows.append(timed(BatchEnsembleSpec((m, m), k, 1), route))
            progress.update()
    return rows


def largest_within_budget(rank: int, progress: tqdm) -> tuple[list[dict], int | None]:
    """Walk up the ladder with the Schur route; stop after the first run over budget."""
    rows, largest = [], None
    for m in CONFIG["budget_ladder"]:
        progress.set_postfix_str(f"budget r={rank} m={m}")
        row = timed(BatchEnsembleSpec((m, m), CONFIG["members"], rank), "schur")
        rows.append(row)
        progress.update()
        if row["seconds"] > CONFIG["budget_s"] or row["status"] != "certified":
            break
        largest = m
    return rows, largest


def whole_resnet18(progress: tqdm) -> dict:
    certify_cached.cache_clear()
    progress.set_postfix_str("resnet18")
    start = time.perf_counter()
    counts = network_counts(build_arch("resnet18"), CONFIG["members"])
    progress.update()
    return {"seconds": round(time.perf_counter() - start, 2), "certified": counts.certified, **counts.totals_dict()}


def main() -> int:
    steps = sum(len(CONFIG[key]) for key in ("plain_sizes", "schur_sizes", "toric_sizes")) \
        + 2 * len(CONFIG["budget_ladder"]) + 1
    with tqdm(total=steps, desc="bench-theory", disable=not sys.stderr.isatty()) as progress:
        rows = ladder(progress)
        budget_rows, largest = {}, {}
        for rank in (1, 2):
            budget_rows[rank], largest[rank] = largest_within_budget(rank, progress)
        resnet = whole_resnet18(progress)
    payload = {"provenance": provenance(CONFIG, CONFIG["seed"]), "ladder": rows,
               "budget": {f"r={rank}": {"runs": budget_rows[rank], "largest_m": largest[rank]} for rank in (1, 2)},
               "resnet18_k4": resnet}
    atomic_write_json(OUTPUT, payload)
    print(f"{'route':8} {'m':>5} {'r':>2} {'J shape':>22} {'status':>10} {'seconds':>8}")
    for row in rows + budget_rows[1] + budget_rows[2]:
        shape = f"{row['jacobian_shape'][0]}x{row['jacobian_shape'][1]}"
        print(f"{row['route']:8} {row['m']:>5} {row['r']:>2} {shape:>22} {row['status']:>10} {row['seconds']:>8.2f}")
    for rank in (1, 2):
        print(f"largest dense m×m layer (k = {CONFIG['members']}, r = {rank}) certified by the modular Schur route "
              f"within {CONFIG['budget_s']:.0f} s: m = {largest[rank]}")
    print(f"torchvision ResNet-18, k = {CONFIG['members']}: {resnet['seconds']} s, "
          f"{'certified' if resnet['certified'] else 'NOT certified'}, codim {resnet['codim']:,}")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
