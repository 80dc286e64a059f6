"""Whether a study on this machine should train in bf16: measure, profile, decide, record.

Times one ResNet-18 (width 0.25, 28×28×1) train step of every method of the ``bf16-w0.25`` group in fp32 and in bf16
(``training.train_step``; medians of interleaved calls), profiles the bf16 BatchEnsemble step (the operators that take
the time) and reads PyTorch's CPU capability. bf16 is used by a study only if it is faster here *and* the parity
preset (``resnet18-parity``) finds every difference within the seed spread; this script records the first half and
the decision it implies:

    .venv/bin/python benchmarks/precision_decision.py   # -> results/resnet18-parity/decision.{json,md}
"""
from __future__ import annotations

import sys
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

from infra.files import atomic_write_json, atomic_write_text
from infra.provenance import provenance

from harness import machine, set_threads, time_interleaved
from training import BF16_BASE, GROUPS, train_step

OUT = Path(__file__).resolve().parent.parent / "results" / "resnet18-parity"
GROUP = "bf16-w0.25"
TOP_OPERATORS = 6


def speedups() -> dict[str, dict]:
    """fp32 and bf16 median train-step seconds of every method and the speed-up fp32 / bf16."""
    group = GROUPS[GROUP]
    steps = {case.name: train_step(group, case)[0] for case in group.train}
    timings = time_interleaved(steps, repeats=5, warmup=1)
    return {base.name: {"fp32_s": timings[base.name].median, "bf16_s": timings[f"{base.name}-bf16"].median,
                        "speedup": timings[base.name].median / timings[f"{base.name}-bf16"].median}
            for base in BF16_BASE}


def bf16_profile() -> list[dict]:
    """The operators with the most self CPU time in one bf16 BatchEnsemble train step."""
    group = GROUPS[GROUP]
    step = train_step(group, next(case for case in group.train if case.name == "be-r1-bf16"))[0]
    step()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        step()
    events = sorted(profiler.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in events)
    return [{"operator": event.key, "self_cpu_share": event.self_cpu_time_total / total, "calls": event.count}
            for event in events[:TOP_OPERATORS]]


def decide(measured: dict[str, dict]) -> str:
    slower = [name for name, row in measured.items() if row["speedup"] < 1]
    if slower:
        return (f"fp32: bf16 is slower than fp32 here for {', '.join(slower)}, so the parity check (which would cost "
                f"more than the study) is not run on this machine and studies stay fp32")
    return "bf16 is faster here: run the resnet18-parity preset; a study may use bf16 if every row is within spread"


def markdown(record: dict) -> str:
    info = record["machine"]
    lines = ["# bf16 on this machine: measured, profiled, decided", "",
             f"Machine: {info['cpu_model']}, PyTorch CPU capability {info['cpu_capability']}, "
             f"{info['torch_threads']} threads, torch {info['torch']}; git {info['git_commit']}.", "",
             "| method | fp32 step (s) | bf16 step (s) | speed-up fp32/bf16 |", "|---|---|---|---|"]
    lines += [f"| {name} | {row['fp32_s']:.3f} | {row['bf16_s']:.3f} | {row['speedup']:.2f} |"
              for name, row in record["train_step"].items()]
    lines += ["", "Where a bf16 BatchEnsemble train step spends its time (self CPU time):", "",
              "| operator | share | calls |", "|---|---|---|"]
    lines += [f"| `{row['operator']}` | {row['self_cpu_share']:.1%} | {row['calls']} |" for row in record["profile"]]
    lines += ["", f"**Decision:** {record['decision']}.", "",
              "PyTorch's CPU bf16 convolutions use oneDNN only on CPUs with AVX-512 (BF16) or AMX units; elsewhere "
              "(`aten::_slow_conv2d_*` above) they run on a reference kernel. On a GPU or an AMX CPU, run "
              "`python -m empirics study resnet18-parity` first: its report holds the parity table.", ""]
    return "\n".join(lines)


def main() -> int:
    set_threads()
    record = {"group": GROUP, "train_step": speedups(), "profile": bf16_profile(), "machine": machine()}
    record["decision"] = decide(record["train_step"])
    record["provenance"] = provenance({"group": GROUP})
    atomic_write_json(OUT / "decision.json", record)
    atomic_write_text(OUT / "decision.md", markdown(record))
    print(markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
