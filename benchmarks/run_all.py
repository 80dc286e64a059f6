"""``make bench``: every benchmark, each group in a fresh process, then the summary and the README table.

1. training groups (``benchmarks/training.py group NAME``) -> ``results/training_NAME.json``;
2. peak RSS of every training case (the bf16 groups' aside: the same models as the fp32 groups'), each in its own
   (forked) process for its own ``ru_maxrss`` ->
   ``results/peak_rss.json``;
3. theory certification times: the size ladder (modular, Schur, toric routes) and the whole ResNet-18 (k = 4) from
   ``benchmarks/theory_certification.py`` -> ``results/theory_quick.json``; its walk to the largest layer certified
   within 60 s takes ~10 minutes alone, so it stays in ``make bench-theory`` (``results/theory_certification.json``,
   which the summary cites with its commit);
4. ``results/run.json`` (machine, threads, versions, load average, wall time) and ``results/summary.md``, copied
   into README.md between the ``bench`` markers.

Subprocesses run with ``OMP_WAIT_POLICY=PASSIVE`` unless set: on a 2-core machine shared with other jobs, spinning
OpenMP workers made a 2-thread ResNet step ~10x slower (measured 6.3 s vs 0.57 s); passive waiting removes that.

    .venv/bin/python benchmarks/run_all.py [--only GROUP ...] [--skip-theory] [--skip-rss]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from infra.files import atomic_write_json
from infra.provenance import provenance

import summary
import theory_certification
from harness import BENCH_THREADS, load_average, machine
from training import GROUPS, RESULTS

HERE = Path(__file__).resolve().parent
GROUP_TIMEOUT_S = 420   # torch.compile of the "compile" group may take minutes on a loaded CPU; others take < 2 min


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["OMP_NUM_THREADS"] = str(BENCH_THREADS)
    return env


def run_child(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=HERE, env=child_env(), capture_output=True, text=True,
                          timeout=timeout)


def run_groups(names: list[str], progress: tqdm) -> dict[str, str]:
    """Run each group in its own process; returns the groups that failed with the reason."""
    failures = {}
    for name in names:
        progress.set_postfix_str(name)
        try:
            done = run_child(["training.py", "group", name], GROUPS[name].timeout_s)
            if done.returncode:
                failures[name] = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        except subprocess.TimeoutExpired:
            failures[name] = f"timed out after {GROUPS[name].timeout_s:.0f} s"
        progress.update()
    return failures


def run_rss(names: list[str], progress: tqdm) -> list[dict]:
    """Peak RSS of every training case, each in its own process forked from one that imported torch once."""
    progress.set_postfix_str("peak RSS")
    try:
        done = run_child(["training.py", "rss", *names], GROUP_TIMEOUT_S)
        rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode:
            rows.append({"error": done.stderr.strip()[-300:]})
    except subprocess.TimeoutExpired as error:
        rows = [{"error": f"timed out after {GROUP_TIMEOUT_S} s: {(error.stdout or b'')[-300:]!r}"}]
    progress.update()
    return rows


def run_theory() -> None:
    """The theory benchmark's size ladder and whole-ResNet-18 certification (its own functions, this process)."""
    with tqdm(disable=True) as silent:
        rows = theory_certification.ladder(silent)
        resnet = theory_certification.whole_resnet18(silent)
    config = theory_certification.CONFIG
    atomic_write_json(RESULTS / "theory_quick.json", {"ladder": rows, "resnet18_k4": resnet,
                                                      "provenance": provenance(config, config["seed"])})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(GROUPS), help="run these groups only")
    parser.add_argument("--skip-theory", action="store_true", help="keep the existing theory_certification.json")
    parser.add_argument("--skip-rss", action="store_true", help="keep the existing peak_rss.json")
    args = parser.parse_args(argv)
    names = args.only or list(GROUPS)
    start, load_start = time.perf_counter(), load_average()
    with tqdm(total=len(names) + (not args.skip_rss) + (not args.skip_theory), desc="bench",
              disable=not sys.stderr.isatty()) as progress:
        failures = run_groups(names, progress)
        if not args.skip_rss:
            atomic_write_json(RESULTS / "peak_rss.json",
                              {"rows": run_rss([n for n in names if n != "compile" and not n.startswith("bf16")],
                                               progress),
                               "provenance": provenance({"groups": names}, 0)})
        if not args.skip_theory:
            progress.set_postfix_str("theory certification")
            run_theory()
            progress.update()
    env = child_env()
    atomic_write_json(RESULTS / "run.json", {
        "wall_seconds": round(time.perf_counter() - start, 1), "groups": names, "failures": failures,
        "threads": BENCH_THREADS, "omp_wait_policy": env["OMP_WAIT_POLICY"],
        "load_average": {"start": load_start, "end": load_average()}, "machine": machine(),
        "provenance": provenance({"groups": names, "skip_theory": args.skip_theory}, 0)})
    summary.main()
    for name, reason in failures.items():
        print(f"benchmark {name} failed: {reason}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
