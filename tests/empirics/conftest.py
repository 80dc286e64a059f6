"""Empirics fixtures: tiny MNIST / Fashion-MNIST roots in the real formats (IDX, gzip), digit-like images, and a
per-test cache directory so no test reads or writes the user's cache."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

TINY_TRAIN, TINY_TEST = 64, 32
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049  # IDX: 0x0000 0x08 (uint8) 0x03 / 0x01 (dimensions)


def digit_like_images(count: int, generator: torch.Generator, size: int = 28) -> torch.Tensor:
    """Float images (count, 1, size, size) in [0, 1]: a bright ring (random centre, radii) and a stroke on black,
    so geometric corruptions have structure to move."""
    grid = torch.arange(size, dtype=torch.float32)
    rows, cols = grid.view(1, size, 1), grid.view(1, 1, size)
    centre = size / 2 + (torch.rand(2, count, 1, 1, generator=generator) - 0.5) * size / 7
    radii = size * (0.18 + 0.12 * torch.rand(2, count, 1, 1, generator=generator))
    ellipse = ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2
    ring = (1 - (ellipse.sqrt() - 1).abs() * 6).clamp(0, 1)
    slope = torch.rand(count, 1, 1, generator=generator) * 2 - 1
    stroke = (1 - ((cols - centre[1]) - slope * (rows - centre[0])).abs() / 1.5).clamp(0, 1)
    stroke = stroke * ((rows - centre[0]).abs() < radii[0])
    return torch.maximum(ring, stroke).unsqueeze(1)


def write_idx_gz(path: Path, array: np.ndarray, magic: int) -> None:
    """An IDX file (big-endian magic and dimensions, then uint8 data), gzip-compressed."""
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def write_tiny_idx_dataset(folder: Path, generator: torch.Generator, n_train: int = TINY_TRAIN,
                           n_test: int = TINY_TEST) -> None:
    """``folder/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` with digit-like images and labels 0..9."""
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        pixels = (digit_like_images(count, generator) * 255).round().to(torch.uint8).squeeze(1).numpy()
        labels = torch.randint(0, 10, (count,), generator=generator).numpy()
        write_idx_gz(folder / "raw" / f"{prefix}-images-idx3-ubyte.gz", pixels, IDX_IMAGES_MAGIC)
        write_idx_gz(folder / "raw" / f"{prefix}-labels-idx1-ubyte.gz", labels, IDX_LABELS_MAGIC)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every empirics test gets its own ``EGEO_CACHE_DIR``."""
    path = tmp_path_factory.mktemp("egeo-cache")
    monkeypatch.setenv("EGEO_CACHE_DIR", str(path))
    return path


@pytest.fixture
def tiny_mnist_root(tmp_path: Path) -> Path:
    """A data root with ``MNIST/raw`` and ``FashionMNIST/raw`` tiny IDX .gz datasets (64 train / 32 test images,
    seeded, digit-like); returns the root."""
    generator = torch.Generator().manual_seed(4242)
    write_tiny_idx_dataset(tmp_path / "data" / "MNIST", generator)
    write_tiny_idx_dataset(tmp_path / "data" / "FashionMNIST", generator)
    return tmp_path / "data"


@pytest.fixture
def idx_gz_writer():
    """``write(path, uint8 array, magic)``: an IDX .gz file (magic 2051 for images, 2049 for labels)."""
    return write_idx_gz


@pytest.fixture
def digit_images(generator: torch.Generator) -> torch.Tensor:
    """48 digit-like 28×28 images in [0, 1]."""
    return digit_like_images(48, generator)
