"""Markdown summary of ``benchmarks/results/*.json``: ``results/summary.md`` and the README's Performance table.

Everything here is read from the result files; the README block between ``<!-- bench:start -->`` and
``<!-- bench:end -->`` is replaced by the ratio table (``python benchmarks/summary.py`` redoes it without measuring).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from infra.files import atomic_write_text

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"

# (ratio key, phase, target predicate as text, predicate): the targets, checked against the median.
TARGETS = {
    ("be-r1/plain", "train"): ("<= 1.15", lambda v: v <= 1.15),
    ("be-r1/plain", "eval"): ("<= 1.0", lambda v: v <= 1.0),
    ("be-r2/be-r1", "train"): ("<= 1.5", lambda v: v <= 1.5),
    ("be-r4/be-r1", "train"): ("<= 1.5", lambda v: v <= 1.5),
    ("be-r8/be-r1", "train"): ("<= 1.5", lambda v: v <= 1.5),
    ("de-vectorised/de-sequential", "train"): ("< 1.0", lambda v: v < 1.0),
    ("be-r1-bf16/plain-bf16", "train"): ("<= 1.15", lambda v: v <= 1.15),
}
# The bf16 speed-up of every method's train step ("NAME/NAME-bf16" = fp32 time / bf16 time), by group.
BF16_SPEEDUP_TARGETS = {"bf16-w1": 2.5, "bf16-w0.25": 1.8}
# Achieved fraction of the matmul rate of the step's own precision: fp32 steps of the fp32 width-1.0 groups >= 0.75,
# bf16 steps at width 1.0 >= 0.40. The bf16 target presumes bf16 units: where the bf16 matmul is slower than the fp32
# one (PyTorch's reference kernel on a CPU without AVX-512-BF16/AMX) a fraction of it says nothing, and is marked so.
FRACTION_TARGETS = {"fp32": 0.75, "bf16": 0.40}


def fraction_target(group: dict, precision: str) -> tuple[str, object]:
    """(target as text, predicate on the median, or a reason why none applies) of a step's matmul fraction."""
    if precision == "fp32" and group["group"] in BF16_SPEEDUP_TARGETS:
        return "", None  # the bf16 groups' fp32 steps are the speed-up's reference, at their own small batches
    rates = group["gflops"]
    if precision == "bf16" and rates[f"matmul_{precision}"]["gflops"] < rates["matmul"]["gflops"]:
        return (f">= {FRACTION_TARGETS[precision]}", f"n/a: bf16 matmul {rates['matmul_bf16']['gflops']:.2f} GFLOP/s "
                f"< fp32 {rates['matmul']['gflops']:.1f} (no bf16 units)")
    goal = FRACTION_TARGETS[precision]
    return f">= {goal}", lambda v: v >= goal


def target(group: str, key: str, phase: str) -> tuple[str, object]:
    """(target as text, predicate on the median) of a ratio in a group; ("", None) for a ratio without target."""
    numerator, _, denominator = key.partition("/")
    if phase == "train" and group in BF16_SPEEDUP_TARGETS and denominator == f"{numerator}-bf16":
        goal = BF16_SPEEDUP_TARGETS[group]
        return f">= {goal}", lambda v: v >= goal
    return TARGETS.get((key, phase), ("", None))


def load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def training_groups() -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(RESULTS.glob("training_*.json"))]


def spread(values: dict) -> str:
    return f"{values['median']:.2f} ({values['min']:.2f}–{values['max']:.2f})"


def ratio_table(groups: list[dict]) -> list[str]:
    lines = ["| group | phase | ratio (median time / median time) | median (min–max) | target | met |",
             "|---|---|---|---|---|---|"]
    for group in groups:
        for phase in ("train", "eval"):
            for key, values in group.get(phase, {}).get("ratios", {}).items():
                goal, check = target(group["group"], key, phase)
                met = "" if check is None else ("yes" if check(values["median"]) else "**no**")
                lines.append(f"| {group['group']} | {phase} | {key} | {spread(values)} | {goal} | {met} |")
    for group in groups:
        for case, values in group.get("gflops", {}).items():
            precision = values.get("precision", "fp32") if "flops" in values else None
            if precision is None or (precision == "bf16" and group["width_mult"] < 1):
                continue
            fraction = {"median": values["fraction_of_matmul"], "min": values["fraction_min"],
                        "max": values["fraction_max"]}
            goal, check = fraction_target(group, precision)
            met = check if isinstance(check, str) else "" if check is None else \
                ("yes" if check(values["fraction_of_matmul"]) else "**no**")
            lines.append(f"| {group['group']} | train | {case} GFLOP/s / {precision} matmul GFLOP/s | "
                         f"{spread(fraction)} | {goal} | {met} |")
    return lines


def timing_table(groups: list[dict], rss: dict[tuple[str, str], float]) -> list[str]:
    lines = ["| group | case | train step ms, median (min–max) | eval pass ms, median (min–max) | rows (train/eval) "
             "| peak RSS MiB (forked child) |", "|---|---|---|---|---|---|"]
    for group in groups:
        train, evals = group["train"]["cases"], group.get("eval", {}).get("cases", {})
        for case in dict.fromkeys([*train, *evals]):
            cells = []
            for table in (train, evals):
                t = table.get(case)
                cells.append(f"{1e3 * t['median']:.1f} ({1e3 * t['min']:.1f}–{1e3 * t['max']:.1f})" if t else "")
            rows = f"{train[case]['rows'] if case in train else ''}/{evals[case]['rows'] if case in evals else ''}"
            memory = rss.get((group["group"], case))
            lines.append(f"| {group['group']} | {case} | {cells[0]} | {cells[1]} | {rows} | "
                         f"{'' if memory is None else f'{memory:.0f}'} |")
    return lines


def gflops_table(groups: list[dict]) -> list[str]:
    lines = ["| group | case | FLOPs per train step | achieved GFLOP/s | matmul GFLOP/s (same run) | fraction |",
             "|---|---|---|---|---|---|"]
    for group in groups:
        record = group.get("gflops")
        if not record:
            continue
        for case, values in record.items():
            if "flops" in values:
                precision = values.get("precision", "fp32")
                peak = record["matmul" if precision == "fp32" else f"matmul_{precision}"]["gflops"]
                lines.append(f"| {group['group']} | {case} | {values['flops']:.3g} | {values['gflops']:.1f} | "
                             f"{peak:.1f} ({precision}) | {values['fraction_of_matmul']:.2f} |")
    return lines


def theory_tables(quick: dict | None, theory: dict | None) -> list[str]:
    """The ladder and ResNet-18 rows of this run (``theory_quick.json``, else the full theory benchmark's), and the
    largest layers within budget from ``make bench-theory`` (``theory_certification.json``), cited by commit."""
    quick = quick or theory
    if not quick:
        return ["(no theory results: run `make bench` or `make bench-theory`)"]
    lines = ["| route | layer m×n | k | r | seconds | status |", "|---|---|---|---|---|---|"]
    for row in quick.get("ladder", []):
        lines.append(f"| {row['route']} | {row['m']}×{row['n']} | {row['k']} | {row['r']} | {row['seconds']} | "
                     f"{row['status']} |")
    for rank, budget in (theory or {}).get("budget", {}).items():
        within = [row for row in budget.get("runs", []) if row["m"] == budget.get("largest_m")]
        if within:
            largest = within[0]
            lines.append(f"| {largest['route']} (largest within {theory['provenance']['config']['budget_s']:.0f} s, "
                         f"{rank}; `make bench-theory` at {theory['provenance']['git_commit'][:8]}) | "
                         f"{largest['m']}×{largest['n']} | "
                         f"{largest['k']} | {largest['r']} | {largest['seconds']} | {largest['status']} |")
    resnet = quick.get("resnet18_k4")
    if resnet:
        lines.append(f"| whole ResNet-18 (torchvision), every layer | — | 4 | 1 | {resnet['seconds']} | "
                     f"{'certified' if resnet.get('certified') else 'not certified'} |")
    return lines


def header(run: dict | None, groups: list[dict]) -> list[str]:
    source = run or (groups[0] if groups else {})
    info = source.get("machine", {})
    lines = [f"Machine: {info.get('cpu_model', info.get('cpu', '?'))} (PyTorch CPU capability "
             f"{info.get('cpu_capability', '?')}), {info.get('cores', '?')} cores, torch {info.get('torch', '?')}, "
             f"{run['threads'] if run else info.get('torch_threads', '?')} threads"
             f"{', OMP_WAIT_POLICY=' + run['omp_wait_policy'] if run else ''}; git {info.get('git_commit', '?')}."]
    if run:
        every = sorted(group["group"] for group in groups)
        command = "`make bench`" if sorted(run["groups"]) == every else \
            f"`benchmarks/run_all.py --only {' '.join(run['groups'])}` (the last run)"
        lines.append(f"{command} wall time {run['wall_seconds']:.0f} s; load average (1/5/15 min) "
                     f"{run['load_average']['start']} at start, {run['load_average']['end']} at end "
                     f"(the benchmark's own 2 threads account for about 2; more means other work shared the cores).")
        if run.get("failures"):
            lines.append(f"Failed: {run['failures']}.")
        earlier = {group["group"]: group["machine"]["git_commit"] for group in groups
                   if group["machine"].get("git_commit") != info.get("git_commit")}
        if earlier:
            commits = {name: commit[:8] + ("+dirty" if commit.endswith("+dirty") else "")
                       for name, commit in sorted(earlier.items())}
            lines.append("Measured in earlier runs (git commit of each group): "
                         + ", ".join(f"{name} at {commit}" for name, commit in commits.items()) + ".")
    lines.append("Each time is the median of >= 5 calls after warm-up (min–max in brackets); the cases of a group "
                 "run round-robin in one process, so their ratios share its load. Ratio spreads pair the extremes "
                 "(min/max, max/min): they bound, not estimate, the ratio's noise. Every contender gets the same "
                 "effective batch (k = 4 members × B images; the plain model k·B images).")
    return lines


def render() -> tuple[str, str]:
    """(summary.md, README block)."""
    groups, run, theory = training_groups(), load("run.json"), load("theory_certification.json")
    quick = load("theory_quick.json")
    rss_rows = (load("peak_rss.json") or {}).get("rows", [])
    rss = {(row["group"], row["case"]): row["peak_rss_mib"] for row in rss_rows if "peak_rss_mib" in row}
    ratios = ratio_table(groups)
    body = ["# Benchmark summary", "", *header(run, groups), "", "## Ratios and targets", "", *ratios, "",
            "## Times and peak memory (each training case in its own forked process: training.rss_in_forked_child)",
            "", *timing_table(groups, rss), "",
            "## Achieved GFLOP/s of the ResNet-18 train step", "", *gflops_table(groups), "",
            "## Theory: certification time", "", *theory_tables(quick, theory), ""]
    readme = [*header(run, groups), "", *ratios, "", "Certification (theory):", "", *theory_tables(quick, theory)]
    return "\n".join(body), "\n".join(readme)


def update_readme(block: str) -> bool:
    text = README.read_text()
    if START not in text or END not in text:
        return False
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: f"{START}\n{block}\n{END}", text,
                 flags=re.DOTALL)
    atomic_write_text(README, new)
    return True


def main() -> int:
    text, block = render()
    atomic_write_text(RESULTS / "summary.md", text)
    if not update_readme(block):
        print(f"README.md has no {START} … {END} block: table not copied", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
