"""Train-step and eval timings of single / BatchEnsemble / Deep Ensemble / MC Dropout models, side by side.

One *group* (an architecture and input shape) is measured per process: its cases run round-robin
(``harness.time_interleaved``) so their ratios share the machine's load. Every case at the same effective batch: the
plain model sees k·B images, BE / DE see B images for each of their k members, MC Dropout evaluates B images k times.

    python benchmarks/training.py group GROUP          # writes benchmarks/results/training_GROUP.json
    python benchmarks/training.py rss GROUP ...        # each train case of the groups in its own forked process:
                                                       # two train steps, one JSON line with its peak RSS (MiB)

``benchmarks/run_all.py`` runs every group in a fresh process, then the RSS of every training case.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from empirics.models.ensembles import ModelSpec, build_model
from empirics.models.layers import BatchEnsembleConv2d, BatchEnsembleLinear
from empirics.models.networks import LayerFactory
from empirics.models.precision import compute_dtype
from empirics.runs.train import ensemble_loss
from infra.files import atomic_write_json
from infra.provenance import provenance

from harness import load_average, machine, matmul_gflops, peak_rss_mib, ratio, set_threads, time_interleaved

RESULTS = Path(__file__).resolve().parent / "results"
MEMBERS = 4
SEED = 0


@dataclass(frozen=True)
class Case:
    """One contender: ``method`` with ``factory`` options; ``layout``/``forward_mode``/``compiled`` are experiments."""

    name: str
    method: str = "single"
    rank: int | str = 1
    variant: str = "channel-wise"
    de_mode: str = "vectorised"
    dropout: float = 0.0
    channels_last: bool = False
    forward_mode: str | None = None
    compiled: bool = False
    precision: str = "fp32"


@dataclass(frozen=True)
class Group:
    arch: str
    in_shape: tuple[int, int, int]
    batch: int                      # images per member in a train step (the plain model gets k·batch)
    eval_batch: int                 # images per member in an eval pass
    train: tuple[Case, ...]
    eval: tuple[Case, ...]
    widths: tuple[int, ...] = (64, 32, 16)
    width_mult: float = 1.0
    repeats: int = 5
    warmup: int = 2
    gflops: bool = False            # FLOP-count the train step and compare with the measured matmul rate
    ratios: tuple[tuple[str, str], ...] = field(default=())
    timeout_s: float = 420          # run_all's limit for the group's process


PLAIN, BE = Case("plain"), Case("be-r1", "batchensemble")
RANKS = tuple(Case(f"be-r{r}", "batchensemble", rank=r) for r in (2, 4, 8)) + (Case("be-full", "batchensemble",
                                                                                      rank="full"),)
DE = (Case("de-vectorised", "deep-ensemble"), Case("de-sequential", "deep-ensemble", de_mode="sequential"))
MCD = Case("mcd", "mc-dropout", dropout=0.1)
CONV_VARIANTS = tuple(Case(f"be-{v}", "batchensemble", variant=v)
                      for v in ("flattened-kernel", "per-kernel-scalar", "cp-spatial", "output-scale"))
LAYOUT = (Case("plain-channels-last", channels_last=True),
          Case("be-r1-channels-last", "batchensemble", channels_last=True),
          Case("be-r1-materialised", "batchensemble", forward_mode="materialised"))
COMPILED = (Case("plain-compiled", compiled=True), Case("be-r1-compiled", "batchensemble", compiled=True))
MAIN_RATIOS = (("be-r1", "plain"), ("de-vectorised", "de-sequential"), ("de-vectorised", "be-r1"),
               ("de-sequential", "be-r1"))
RANK_RATIOS = tuple((case.name, "be-r1") for case in RANKS)
VARIANT_RATIOS = tuple((case.name, "be-r1") for case in CONV_VARIANTS)
LAYOUT_RATIOS = (("plain-channels-last", "plain"), ("be-r1-channels-last", "be-r1"), ("be-r1-materialised", "be-r1"),
                 ("be-r1-channels-last", "plain-channels-last"))
EVAL_RATIOS = (("be-r1", "plain"), ("mcd", "plain"))
# bf16 vs fp32 for every method, one interleaved run per width: "NAME/NAME-bf16" is the fp32 time over the bf16 time
# (the bf16 speed-up), "be-r1-bf16/plain-bf16" BE's cost over the plain model in bf16.
BF16_BASE = (PLAIN, BE, RANKS[1], DE[0], MCD)
BF16 = tuple(case for base in BF16_BASE for case in (base, replace(base, name=f"{base.name}-bf16", precision="bf16")))
BF16_RATIOS = tuple((base.name, f"{base.name}-bf16") for base in BF16_BASE) + (("be-r1-bf16", "plain-bf16"),)
BF16_EVAL = tuple(case for case in BF16 if case.method != "deep-ensemble")

GROUPS: dict[str, Group] = {
    "mlp": Group("mlp", (1, 28, 28), 32, 512, (PLAIN, BE, *RANKS, *DE, MCD), (PLAIN, BE, MCD),
                 repeats=15, warmup=3, ratios=MAIN_RATIOS + RANK_RATIOS),
    "mlp-wide": Group("mlp", (1, 28, 28), 32, 512, (PLAIN, BE, RANKS[2], *DE), (PLAIN, BE, MCD),
                      widths=(1024, 1024, 1024), repeats=9, warmup=2, ratios=MAIN_RATIOS + RANK_RATIOS[2:3]),
    "resnet18-w0.25-28x28": Group("resnet18", (1, 28, 28), 8, 64, (PLAIN, BE, *RANKS, *CONV_VARIANTS, *DE, MCD,
                                                                    *LAYOUT), (PLAIN, BE, MCD), width_mult=0.25,
                                  repeats=5, warmup=1,
                                  ratios=MAIN_RATIOS + RANK_RATIOS + VARIANT_RATIOS + LAYOUT_RATIOS),
    "resnet18-w0.25-32x32": Group("resnet18", (3, 32, 32), 8, 64, (PLAIN, BE, RANKS[2], *DE, MCD), (PLAIN, BE, MCD),
                                  width_mult=0.25, repeats=5, warmup=1, ratios=MAIN_RATIOS + RANK_RATIOS[2:3]),
    "resnet18-w1-28x28": Group("resnet18", (1, 28, 28), 8, 16, (PLAIN, BE), (PLAIN, BE), width_mult=1.0, repeats=5,
                               warmup=1, gflops=True, ratios=MAIN_RATIOS[:1]),
    "resnet18-w1-32x32": Group("resnet18", (3, 32, 32), 8, 16, (PLAIN, BE), (PLAIN, BE, MCD), width_mult=1.0,
                               repeats=5, warmup=1, gflops=True, ratios=MAIN_RATIOS[:1]),
    # bf16 autocast + channels-last vs fp32 (empirics.models.precision); sized for CPUs without bf16 units too, where
    # bf16 convolutions run on PyTorch's slow reference kernel (about 10x slower than fp32)
    "bf16-w0.25": Group("resnet18", (1, 28, 28), 8, 32, BF16, BF16_EVAL, width_mult=0.25, repeats=5, warmup=1,
                        gflops=True, ratios=BF16_RATIOS, timeout_s=3600),
    "bf16-w1": Group("resnet18", (1, 28, 28), 2, 4, BF16, BF16_EVAL, width_mult=1.0, repeats=5, warmup=1,
                     gflops=True, ratios=BF16_RATIOS, timeout_s=3600),
    # the MLP, whose step is dominated by per-op overhead (what compiling removes); compiling ResNet-18's backward
    # takes minutes on this CPU, beyond the make-bench budget
    "compile": Group("mlp", (1, 28, 28), 32, 512, (PLAIN, BE, *COMPILED), (), repeats=15, warmup=3,
                     ratios=(("plain-compiled", "plain"), ("be-r1-compiled", "be-r1"),
                             ("be-r1-compiled", "plain-compiled"))),
}


def build(group: Group, case: Case) -> torch.nn.Module:
    torch.manual_seed(SEED)
    factory = LayerFactory(method=case.method, members=MEMBERS, rank=case.rank, variant=case.variant,
                           dropout=case.dropout)
    model = build_model(ModelSpec(arch=group.arch, in_shape=group.in_shape, widths=group.widths,
                                  width_mult=group.width_mult, mc_samples=MEMBERS, de_mode=case.de_mode,
                                  precision=case.precision, factory=factory))
    if case.forward_mode:
        for layer in model.modules():
            if isinstance(layer, (BatchEnsembleConv2d, BatchEnsembleLinear)):
                layer.forward_mode = case.forward_mode
    if case.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def inputs(group: Group, case: Case, per_member: int, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """k·B images for the plain model (and for MC Dropout's single training pass), B for every ensemble."""
    plain_rows = case.method == "single" or (case.method == "mc-dropout" and train)
    rows = per_member * (MEMBERS if plain_rows else 1)
    generator = torch.Generator().manual_seed(SEED)
    images = torch.randn(rows, *group.in_shape, generator=generator)
    if case.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, torch.randint(0, 10, (rows,), generator=generator)


def train_step(group: Group, case: Case):
    """A closure running one SGD step (momentum 0.9) on the ensemble loss, and the model it trains."""
    model = build(group, case).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = inputs(group, case, group.batch, train=True)
    forward = torch.compile(model.member_logits) if case.compiled else model.member_logits

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        ensemble_loss(forward(images), labels).backward()
        optimizer.step()

    return step, model, images, labels


def eval_pass(group: Group, case: Case):
    model = build(group, case).eval()
    images, _ = inputs(group, case, group.eval_batch, train=False)
    forward = torch.compile(model.member_logits) if case.compiled else model.member_logits

    def run() -> None:
        with torch.no_grad():
            forward(images)

    return run


def train_flops(group: Group, case: Case) -> int:
    """FLOPs of one forward + backward pass (torch.utils.flop_counter: matmuls and convolutions)."""
    model = build(group, case).train()
    images, labels = inputs(group, case, group.batch, train=True)
    with FlopCounterMode(display=False) as counter:
        ensemble_loss(model.member_logits(images), labels).backward()
    return counter.get_total_flops()


def timings_record(timings: dict, rows: dict[str, int], ratios: tuple[tuple[str, str], ...]) -> dict:
    return {"cases": {name: {**timing.as_dict(), "rows": rows[name], "ms_per_row": 1e3 * timing.median / rows[name]}
                      for name, timing in timings.items()},
            "ratios": {f"{a}/{b}": ratio(timings[a], timings[b]) for a, b in ratios
                       if a in timings and b in timings}}


def measure_group(name: str) -> dict:
    group = GROUPS[name]
    set_threads()
    load_before = load_average()
    steps = {case.name: train_step(group, case)[0] for case in group.train}
    train = time_interleaved(steps, group.repeats, group.warmup)
    del steps
    effective = {case.name: MEMBERS * group.batch for case in group.train}
    record = {"group": name, "arch": group.arch, "in_shape": list(group.in_shape), "widths": list(group.widths),
              "width_mult": group.width_mult, "members": MEMBERS, "batch_per_member": group.batch,
              "eval_batch_per_member": group.eval_batch,
              "train": timings_record(train, effective, group.ratios)}
    if group.eval:
        passes = {case.name: eval_pass(group, case) for case in group.eval}
        evals = time_interleaved(passes, group.repeats, group.warmup)
        record["eval"] = timings_record(evals, {case.name: MEMBERS * group.eval_batch for case in group.eval},
                                        group.ratios if any(c.precision != "fp32" for c in group.eval) else EVAL_RATIOS)
    if group.gflops:
        record["gflops"] = gflops_record(group, train)
    record["load_average"] = {"before": load_before, "after": load_average()}
    record["machine"] = machine()
    record["provenance"] = provenance({"group": name, "members": MEMBERS}, SEED)
    return record


def gflops_record(group: Group, train: dict) -> dict:
    """Achieved GFLOP/s of each train step over the dense matmul rate, in the case's precision, measured in this
    process right after (``matmul`` fp32, ``matmul_bf16`` when the group has bf16 cases)."""
    precisions = sorted({case.precision for case in group.train})
    peaks = {precision: matmul_gflops(size=1024 if precision == "fp32" else 2048, dtype=compute_dtype(precision))
             for precision in precisions}
    record = {"matmul" if precision == "fp32" else f"matmul_{precision}": peak for precision, peak in peaks.items()}
    for case in group.train:
        flops = train_flops(group, case)
        peak = peaks[case.precision]
        achieved = flops / train[case.name].median / 1e9
        record[case.name] = {"flops": flops, "gflops": achieved, "precision": case.precision,
                             "fraction_of_matmul": achieved / peak["gflops"],
                             "fraction_min": flops / train[case.name].max / 1e9 / peak["gflops_max"],
                             "fraction_max": flops / train[case.name].min / 1e9 / peak["gflops_min"]}
    return record


def measure_rss(group_name: str, case_name: str, steps: int = 2) -> dict:
    group = GROUPS[group_name]
    set_threads()
    case = next(case for case in group.train if case.name == case_name)
    step = train_step(group, case)[0]
    for _ in range(steps):
        step()
    return {"group": group_name, "case": case_name, "steps": steps, "peak_rss_mib": peak_rss_mib()}


def rss_in_forked_child(group_name: str, case_name: str) -> dict:
    """``measure_rss`` in a child forked from this process, which has imported torch and the project but built no
    model and run no parallel op (a fresh interpreter per case costs ~15 s here, beyond the make-bench budget). The
    child's ``ru_maxrss`` counts the pages it maps: the parent's anonymous memory plus what the case allocates and the
    library code it touches, so it reads ~300 MiB below a fresh process's peak (whose imports touch more of the
    libraries); ``parent_peak_rss_mib`` records the parent's peak for reference. Differences between cases are what
    each configuration's training costs in memory."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        try:
            payload = measure_rss(group_name, case_name)
        except Exception as error:  # reported in the results, never raised across the fork
            payload = {"group": group_name, "case": case_name, "error": repr(error)}
        with os.fdopen(writer, "w") as pipe:
            pipe.write(json.dumps(payload))
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    payload = json.loads(text) if text else {"group": group_name, "case": case_name, "error": "child died"}
    return {**payload, "parent_peak_rss_mib": peak_rss_mib()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    group_parser = sub.add_parser("group")
    group_parser.add_argument("name", choices=sorted(GROUPS))
    rss_parser = sub.add_parser("rss")
    rss_parser.add_argument("groups", nargs="+", choices=sorted(GROUPS))
    args = parser.parse_args(argv)
    if args.command == "group":
        record = measure_group(args.name)
        atomic_write_json(RESULTS / f"training_{args.name}.json", record)
        return 0
    for name in args.groups:
        for case in GROUPS[name].train:
            print(json.dumps(rss_in_forked_child(name, case.name)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
