"""The small study that the tests of ``empirics.studies`` run for real: a single model and a rank-1 BatchEnsemble, an
MNIST MLP of 8 hidden units, one seed, on the genuine data (``EGEO_DATA_ROOT`` or ``../shared/data``)."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DATA_ROOT = Path(os.environ.get("EGEO_DATA_ROOT", ROOT.parent / "shared" / "data"))


def two_run_preset(epochs: int = 2, n_train: int = 128, n_eval: int = 0) -> str:
    """The preset's TOML text (``n_eval = 0``: the whole test split)."""
    subset = f"n_eval = {n_eval}\n" if n_eval else ""
    return f"""
[study]
claim = "test preset"
evidence = "two tiny runs"
seeds = 1
distance_max_iter = 5

[base]
dataset = "mnist"
arch = "mlp"
widths = [8]
epochs = {epochs}
n_train = {n_train}
{subset}patience = 0
threads = 1
shift_families = ["rotate"]

[runs.single]
method = "single"

[runs.be-r1]
method = "batchensemble"
rank = 1
"""


TWO_RUN_PRESET = two_run_preset()
