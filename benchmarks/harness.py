"""Shared benchmark machinery: medians of repeated timings after warm-up, machine description, matmul peak.

Every figure is the median of ``repeats`` (>= 5) timed calls after ``warmup`` untimed ones, with min and max, so
ratios computed side by side in one run carry their spread. No benchmark asserts a wall-clock bound.
"""
from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from infra.provenance import provenance

BENCH_THREADS = 2


@dataclass(frozen=True)
class Timing:
    median: float
    min: float
    max: float
    repeats: int

    def as_dict(self) -> dict:
        return asdict(self)


def time_call(fn: Callable[[], object], repeats: int = 5, warmup: int = 2) -> Timing:
    """Median / min / max seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    if repeats < 5:
        raise ValueError(f"repeats={repeats}: every benchmark figure is a median of at least 5 repeats")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return Timing(statistics.median(samples), min(samples), max(samples), repeats)


def ratio(numerator: Timing, denominator: Timing) -> dict:
    """Ratio of medians, with the spread bracketed by min/max of both sides (worst and best pairing)."""
    return {"median": numerator.median / denominator.median,
            "min": numerator.min / denominator.max,
            "max": numerator.max / denominator.min}


def matmul_gflops(size: int = 2048, dtype: torch.dtype = torch.float32, repeats: int = 7) -> dict:
    """The machine's dense matmul rate: 2·n³ flops per ``torch.mm`` of two n×n matrices, median over repeats."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    timing = time_call(lambda: torch.mm(a, b), repeats=repeats, warmup=2)
    flops = 2.0 * size ** 3
    return {"size": size, "dtype": str(dtype), "timing": timing.as_dict(), "gflops": flops / timing.median / 1e9,
            "gflops_min": flops / timing.max / 1e9, "gflops_max": flops / timing.min / 1e9}


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's machine name where that file does not exist."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def machine() -> dict:
    """The machine a result was measured on. ``cpu_capability`` is the widest vector ISA PyTorch dispatches to
    (``AVX2``, ``AVX512``, ...); bf16 convolutions are fast on the CPU only with AVX-512-BF16 or AMX units."""
    return {"cpu": platform.processor() or platform.machine(), "cpu_model": cpu_model(), "cores": os.cpu_count(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(), "mkldnn": torch.backends.mkldnn.is_available(),
            **provenance()["versions"], "git_commit": provenance()["git_commit"]}


def set_threads(threads: int = BENCH_THREADS) -> None:
    torch.set_num_threads(threads)


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 2) -> dict[str, Timing]:
    """``time_call`` for several functions at once, called round-robin (a, b, c, a, b, c, ...) so that a change in the
    machine's load during the run hits every contender alike and their ratios stay comparable."""
    if repeats < 5:
        raise ValueError(f"repeats={repeats}: every benchmark figure is a median of at least 5 repeats")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: Timing(statistics.median(s), min(s), max(s), repeats) for name, s in samples.items()}


def load_average() -> list[float]:
    """1-, 5- and 15-minute load averages (other jobs on the machine distort timings; recorded with every result)."""
    return [round(value, 2) for value in os.getloadavg()]
