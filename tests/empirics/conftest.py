"""Empirics fixtures: tiny MNIST / Fashion-MNIST (IDX, gzip), CIFAR-10 (python pickles) and SVHN (.mat) roots in
torchvision's formats, digit-like images, and a per-test cache directory so no test reads or writes the user's
cache."""
from __future__ import annotations

import gzip
import json
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from empirics.runs.config import Config
from empirics.runs.folder import load_checkpoint

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


def colour_images(count: int, generator: torch.Generator) -> np.ndarray:
    """uint8 (count, 32, 32, 3): digit-like shapes tinted with a random colour per image."""
    shapes = digit_like_images(count, generator, size=32).squeeze(1)
    tint = 0.3 + 0.7 * torch.rand(count, 1, 1, 3, generator=generator)
    return (shapes.unsqueeze(-1) * tint * 255).round().to(torch.uint8).numpy()


def write_cifar10_batch(path: Path, pixels_hwc: np.ndarray, labels: np.ndarray) -> None:
    """One CIFAR-10 python batch as torchvision reads it: a pickled dict whose ``data`` is uint8 (N, 3·32·32) in
    channel-major order and ``labels`` a list of ints."""
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = {"batch_label": path.name, "labels": [int(label) for label in labels],
             "data": np.ascontiguousarray(pixels_hwc.transpose(0, 3, 1, 2)).reshape(len(labels), -1),
             "filenames": [f"{path.name}_{i}.png" for i in range(len(labels))]}
    with open(path, "wb") as handle:
        pickle.dump(batch, handle)


def write_tiny_cifar10(root: Path, generator: torch.Generator, per_batch: int, n_test: int) -> None:
    """``root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``: 5·per_batch train, n_test test."""
    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        count = n_test if name == "test_batch" else per_batch
        write_cifar10_batch(folder / name, colour_images(count, generator),
                            torch.randint(0, 10, (count,), generator=generator).numpy())
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch,
                     "num_vis": 3 * 32 * 32}, handle)


def write_svhn_mat(path: Path, pixels_hwc: np.ndarray, digits: np.ndarray) -> None:
    """An SVHN ``.mat`` as torchvision reads it: ``X`` uint8 (32, 32, 3, N), ``y`` (N, 1) with digit 0 stored as 10."""
    labels = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)
    scipy.io.savemat(path, {"X": np.ascontiguousarray(pixels_hwc.transpose(1, 2, 3, 0)), "y": labels})


def write_tiny_svhn(root: Path, generator: torch.Generator, n_train: int, n_test: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n_train), ("test", n_test)):
        write_svhn_mat(root / f"{split}_32x32.mat", colour_images(count, generator),
                       torch.randint(0, 10, (count,), generator=generator).numpy())


def write_tiny_cifar10_c(root: Path, generator: torch.Generator, families: tuple[str, ...], n_test: int) -> None:
    """``root/CIFAR-10-C/<family>.npy`` (uint8 (5·n_test, 32, 32, 3): severities 1..5 as consecutive blocks, as the
    release) and ``labels.npy`` (5·n_test labels)."""
    folder = root / "CIFAR-10-C"
    folder.mkdir(parents=True, exist_ok=True)
    for family in families:
        np.save(folder / f"{family}.npy", colour_images(5 * n_test, generator))
    np.save(folder / "labels.npy", np.tile(torch.randint(0, 10, (n_test,), generator=generator).numpy(), 5))


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
def cifar10_batch_writer():
    """``write(path, uint8 (N, 32, 32, 3), labels)``: a CIFAR-10 python batch in torchvision's format."""
    return write_cifar10_batch


@pytest.fixture
def svhn_mat_writer():
    """``write(path, uint8 (N, 32, 32, 3), digits 0..9)``: an SVHN .mat file in torchvision's format."""
    return write_svhn_mat


@pytest.fixture
def digit_images(generator: torch.Generator) -> torch.Tensor:
    """48 digit-like 28×28 images in [0, 1]."""
    return digit_like_images(48, generator)


@pytest.fixture
def tiny_image_root(tmp_path: Path) -> Path:
    """A data root holding all four datasets in torchvision's formats, seeded and tiny (enough for the presets'
    ``--tiny`` runs: n_train up to 256 after a 10% validation hold-out): MNIST and Fashion-MNIST 300 train / 64 test,
    CIFAR-10 5·16 = 80 train / 64 test, SVHN 16 train / 64 test."""
    generator = torch.Generator().manual_seed(777)
    root = tmp_path / "images"
    for folder in ("MNIST", "FashionMNIST"):
        write_tiny_idx_dataset(root / folder, generator, n_train=300, n_test=64)
    write_tiny_cifar10(root, generator, per_batch=16, n_test=64)
    write_tiny_svhn(root, generator, n_train=16, n_test=64)
    return root


# ---------------------------------------------------------------- training runs (tests of empirics.runs and models)

REPO = Path(__file__).resolve().parents[2]


def tiny_config(root: Path, **overrides) -> Config:
    """58 training images in 4 batches of 16, 6 validation images, 2 members, one corruption family."""
    fields = dict(dataset="mnist", arch="mlp", widths=[16], method="batchensemble", members=2, epochs=4,
                  batch_size=16, eval_batch_size=64, data_root=str(root), shift_families=["rotate"], threads=1)
    return Config.from_dict({**fields, **overrides})


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def assert_same_run(first: Path, second: Path) -> None:
    """Identical per-epoch numbers, final metrics and final weights (exact equality, no tolerance)."""
    a, b = read_json(first / "metrics.json"), read_json(second / "metrics.json")
    assert a["epochs"] == b["epochs"] and a["final"] == b["final"] and a["best_epoch"] == b["best_epoch"]
    model_a, model_b = load_checkpoint(first)["model"], load_checkpoint(second)["model"]
    assert all(torch.equal(model_a[name], model_b[name]) for name in model_a)


KILL_SCRIPT = """
import json, os, signal, sys
import empirics.runs.train as T
from empirics.runs.config import Config
mode, payload, run_dir = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
if mode == "kill-after-epoch-2":
    write = T._write_metrics
    def write_then_kill(run_dir, config, state, final):
        write(run_dir, config, state, final)
        if state["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    T._write_metrics = write_then_kill
else:  # SIGTERM during the 6th step (epoch 2, batch 2)
    loss, calls = T.ensemble_loss, []
    def loss_then_term(logits, labels):
        calls.append(1)
        if len(calls) == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss(logits, labels)
    T.ensemble_loss = loss_then_term
T.train(Config.from_dict(payload), run_dir)
"""


def run_kill_script(mode: str, config: Config, run_dir: Path) -> subprocess.CompletedProcess:
    """Train ``config`` in a child process that kills itself: SIGKILL right after epoch 2's checkpoint
    (``kill-after-epoch-2``) or SIGTERM during the 6th step (``sigterm``)."""
    return subprocess.run([sys.executable, "-c", KILL_SCRIPT, mode, json.dumps(config.to_dict()), str(run_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
