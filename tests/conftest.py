"""Suite-wide settings: float64 verification math, seeded generators, hypothesis profile for CI."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

os.environ.setdefault("MPLBACKEND", "Agg")
settings.register_profile("project", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
settings.load_profile("project")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def generator() -> torch.Generator:
    """A seeded torch generator: every test that draws random numbers draws them from here."""
    return torch.Generator().manual_seed(20260125)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20260125)


@pytest.fixture(scope="session")
def torch_uncertainty():
    """torch-uncertainty's own BatchLinear, BatchConv2d and batched_resnet (``tests/peer_code.py``)."""
    from peer_code import load_torch_uncertainty  # tests/ is on sys.path (conftest rootdir, no __init__)

    return load_torch_uncertainty()
