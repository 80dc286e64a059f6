"""Datasets through torchvision: MNIST, Fashion-MNIST, CIFAR-10, SVHN; splits, distribution shift and OOD pairs.

Where the data lives (``resolve_data_root``): ``--data-root``, else the environment variable ``EGEO_DATA_ROOT``,
else ``<cache>/data`` where ``<cache>`` is ``EGEO_CACHE_DIR`` or ``$XDG_CACHE_HOME/ensemble-geometry`` (default
``~/.cache/ensemble-geometry``). Nothing is downloaded unless ``download=True`` (the CLI's ``--download``).

Layouts under the root are torchvision's: ``MNIST/raw/``, ``FashionMNIST/raw/`` (IDX files, decompressed or
``.gz``), ``cifar-10-batches-py/``, ``train_32x32.mat``/``test_32x32.mat`` (SVHN), and optionally
``CIFAR-10-C/<corruption>.npy`` + ``labels.npy`` (Hendrycks & Dietterich 2019).

The root is only ever read (it may be read-only, e.g. a shared folder): ``.gz`` IDX files are decompressed into a
temporary file in the cache, decoded by torchvision's ``read_image_file``/``read_label_file``, and the decoded
uint8 tensors are cached as ``<cache>/decoded/<dataset>-<split>-<digest>.pt`` where the digest is a BLAKE2b hash of
the source files' bytes, so a changed file is never served stale.

Images come back as float32 ``(N, C, H, W)`` normalised per channel, ``(x/255 − mean) / std``, with the dataset's
usual statistics (``NORMALISATION``); OOD sets are normalised with the *in-distribution* statistics, as the model
sees them (``ood_test_set``). Corruptions act on pixels in [0, 1] before normalisation (``shifted_test_set``).
Evaluation can use a fixed seeded subset of the test, shift and OOD sets (``n_eval``, ``evaluation_indices``).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from scipy.io.matlab import MatReadError
from torchvision.datasets.mnist import read_image_file, read_label_file
from tqdm import tqdm

from empirics.data import regression
from empirics.data.corruptions import CORRUPTIONS, corrupt
from infra.errors import BadInput, require
from infra.files import atomic_write_bytes

DATASETS = ("mnist", "fashion-mnist", "cifar10", "svhn")
SPLITS = ("train", "test")
ENV_DATA_ROOT = "EGEO_DATA_ROOT"
ENV_CACHE_DIR = "EGEO_CACHE_DIR"

# Per-channel mean and std of the training pixels in [0, 1] (the constants every reference uses).
NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}
INPUT_SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32), "svhn": (3, 32, 32)}
OOD_PAIRS = {"mnist": "fashion-mnist", "fashion-mnist": "mnist", "cifar10": "svhn"}
IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
TORCHVISION_CLASSES = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}
CIFAR10_C_FOLDER = "CIFAR-10-C"
EVAL_SUBSET_SEED = 0  # fixed: every run of a study is evaluated on the same images (``evaluation_indices``)
_CHUNK = 1 << 20
Pair = tuple[torch.Tensor, torch.Tensor]  # (images, labels)


def _check_dataset(name: str) -> str:
    require(name in DATASETS, f"dataset={name!r} is not known: expected one of {', '.join(DATASETS)}")
    return name


def _check_split(split: str) -> str:
    require(split in SPLITS, f"split={split!r} is not known: expected one of {', '.join(SPLITS)}")
    return split


TASKS = ("classification", "regression")


def task_of(name: str) -> str:
    """The task a data set poses: ``regression`` for ``regression.REGRESSION_DATASETS``, else ``classification``
    (the one place the pipeline learns it; ``empirics.runs.tasks.task_for``)."""
    if name in regression.REGRESSION_DATASETS:
        return "regression"
    _check_dataset(name)
    return "classification"


def num_classes(name: str) -> int:
    """Network outputs: 10 classes, or a regression data set's (mean, variance) pair."""
    if task_of(name) == "regression":
        return regression.OUTPUTS
    return 10


def input_shape(name: str) -> tuple[int, ...]:
    """``(C, H, W)`` of one image, or ``(F,)`` of a regression data set's feature vector."""
    if task_of(name) == "regression":
        return regression.input_shape(name)
    return INPUT_SHAPES[_check_dataset(name)]


def ood_dataset_for(name: str) -> str:
    """The out-of-distribution partner: MNIST → Fashion-MNIST, Fashion-MNIST → MNIST, CIFAR-10 → SVHN."""
    require(name in OOD_PAIRS, f"dataset={name!r} has no OOD partner: expected one of {', '.join(OOD_PAIRS)}")
    return OOD_PAIRS[name]


def cache_dir() -> Path:
    """``EGEO_CACHE_DIR``, else ``$XDG_CACHE_HOME/ensemble-geometry`` (``~/.cache/ensemble-geometry``)."""
    explicit = os.environ.get(ENV_CACHE_DIR)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ensemble-geometry"


def resolve_data_root(cli_value: str | os.PathLike | None) -> Path:
    """The data root: ``--data-root`` if given, else ``EGEO_DATA_ROOT``, else ``cache_dir()/data``."""
    if cli_value:
        return Path(cli_value).expanduser()
    from_env = os.environ.get(ENV_DATA_ROOT)
    if from_env:
        return Path(from_env).expanduser()
    return cache_dir() / "data"


# ---------------------------------------------------------------- pixels (uint8, N×C×H×W) and labels (int64)

def load_pixels(name: str, split: str, root: str | os.PathLike,
                download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw images as uint8 ``(N, C, H, W)`` and labels as int64 ``(N,)``, checked against ``input_shape``."""
    _check_dataset(name)
    _check_split(split)
    root = Path(root)
    if name in IDX_FOLDERS:
        images, labels = _load_idx(name, split, root, download)
    elif name == "cifar10":
        images, labels = _load_cifar10(split, root, download)
    else:
        images, labels = _load_svhn(split, root, download)
    _check_decoded(name, split, root, images, labels)
    return images, labels


def _check_decoded(name: str, split: str, root: Path, images: torch.Tensor, labels: torch.Tensor) -> None:
    where = f"{name} {split} data under {root}"
    require(tuple(images.shape[1:]) == input_shape(name),
            f"{where} has images of shape {tuple(images.shape[1:])}: expected {input_shape(name)}")
    require(images.shape[0] == labels.shape[0],
            f"{where} has {images.shape[0]} images but {labels.shape[0]} labels: expected equal counts")
    require(bool(((labels >= 0) & (labels < num_classes(name))).all()),
            f"{where} has labels outside 0..{num_classes(name) - 1}")


def _idx_stems(split: str) -> tuple[str, str]:
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _idx_sources(name: str, split: str, root: Path) -> list[Path] | None:
    """For each IDX file of the split: the decompressed file if present, else its ``.gz``; None if one is missing."""
    raw = root / IDX_FOLDERS[name] / "raw"
    sources = []
    for stem in _idx_stems(split):
        candidates = [raw / stem, raw / f"{stem}.gz"]
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            return None
        sources.append(found)
    return sources


def _missing_message(name: str, split: str, root: Path, expected: Sequence[str]) -> str:
    return (f"{name} {split} data not found under {root}: expected {', '.join(expected)}; "
            f"set {ENV_DATA_ROOT} (or --data-root) to the folder that holds them, or pass --download to fetch them")


def _load_idx(name: str, split: str, root: Path, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    sources = _idx_sources(name, split, root)
    if sources is None and download:
        _torchvision_download(name, root, lambda: TORCHVISION_CLASSES[name](str(root), train=split == "train",
                                                                              download=True))
        sources = _idx_sources(name, split, root)
    if sources is None:
        folder = f"{IDX_FOLDERS[name]}/raw"
        raise BadInput(_missing_message(name, split, root, [f"{folder}/{stem}[.gz]" for stem in _idx_stems(split)]))
    cached = cache_dir() / "decoded" / f"{name}-{split}-{_digest(sources)}.pt"
    if cached.is_file():
        try:
            stored = torch.load(cached, weights_only=True)
            return stored["images"], stored["labels"]
        except (OSError, RuntimeError, KeyError, EOFError):
            cached.unlink(missing_ok=True)  # a damaged cache entry is rebuilt from the sources below
    images = _read_idx(sources[0], read_image_file).unsqueeze(1)
    labels = _read_idx(sources[1], read_label_file)
    buffer = io.BytesIO()
    torch.save({"images": images, "labels": labels}, buffer)
    try:
        atomic_write_bytes(cached, buffer.getvalue())
    except OSError as error:  # the cache only saves time: loading goes on without it
        warnings.warn(f"could not cache decoded {name} {split} in {cached.parent} ({error}); set {ENV_CACHE_DIR}")
    return images, labels


def _digest(paths: Sequence[Path]) -> str:
    """BLAKE2b of the files' bytes (in order): the cache key."""
    digest = hashlib.blake2b(digest_size=12)
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _read_idx(path: Path, reader) -> torch.Tensor:
    """Decode one IDX file with torchvision's ``reader``; a ``.gz`` is first decompressed into a cache temp file."""
    if path.suffix != ".gz":
        return _decode_idx(path, path, reader)
    tmp_dir = cache_dir() / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{path.stem}.", dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(path, "rb") as compressed:
            shutil.copyfileobj(compressed, out, _CHUNK)
        return _decode_idx(Path(tmp), path, reader)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise BadInput(f"{path} is corrupted or truncated ({error}): restore the file or re-fetch it with --download") \
            from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _decode_idx(path: Path, shown_as: Path, reader) -> torch.Tensor:
    try:
        return reader(str(path)).clone()  # clone: own the memory, not the file buffer
    except (AssertionError, RuntimeError, ValueError, TypeError, KeyError, IndexError) as error:
        # torchvision signals a bad header with assert/KeyError and a short body with a failing view()
        raise BadInput(f"{shown_as} is not a valid IDX file ({type(error).__name__}: {error}): "
                       "restore the file or re-fetch it with --download") from None


def _torchvision_download(name: str, root: Path, fetch) -> object:
    try:
        return fetch()
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        raise BadInput(f"downloading {name} into {root} failed ({type(error).__name__}: {error}): "
                       f"check the network and that {root} is writable") from None


CIFAR10_FOLDER = "cifar-10-batches-py"


class _LocalCIFAR10(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR-10 reader with its md5 sums set to None, so ``check_integrity(path, None)`` only checks that
    each file exists: local files in torchvision's format are read whatever their checksum (our own checks follow in
    ``_check_decoded``). Downloads go through ``torchvision.datasets.CIFAR10`` itself, which verifies md5."""
    train_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.test_list]
    meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}


class _LocalSVHN(torchvision.datasets.SVHN):
    """torchvision's SVHN reader with its md5 sums set to None (existence check only), as ``_LocalCIFAR10``."""
    split_list = {split: [url, name, None] for split, (url, name, _) in torchvision.datasets.SVHN.split_list.items()}


def _cifar10_files() -> list[str]:
    """Every file torchvision's CIFAR-10 reader opens (it checks all batches whichever split is read)."""
    names = [name for name, _ in _LocalCIFAR10.train_list + _LocalCIFAR10.test_list]
    return [f"{CIFAR10_FOLDER}/{name}" for name in names + [_LocalCIFAR10.meta["filename"]]]


def _read_local(name: str, split: str, root: Path, files: Sequence[str], download: bool, fetch, read) -> object:
    """``read()`` the local ``files`` (relative to ``root``); when one is missing, ``fetch()`` it if ``download``,
    else a ``BadInput`` naming the missing files. A file that torchvision cannot decode is a ``BadInput`` too."""
    missing = [file for file in files if not (root / file).is_file()]
    if missing and download:
        _torchvision_download(name, root, fetch)
        missing = [file for file in files if not (root / file).is_file()]
    if missing:
        raise BadInput(_missing_message(name, split, root, missing))
    try:
        return read()
    except (pickle.UnpicklingError, MatReadError, EOFError, KeyError, ValueError, TypeError, OSError) as error:
        raise BadInput(f"{name} {split} data under {root} is corrupted or truncated ({type(error).__name__}: "
                       f"{error}): restore the files {', '.join(files)} or re-fetch them with --download") from None


def _load_cifar10(split: str, root: Path, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    train = split == "train"
    dataset = _read_local("cifar10", split, root, _cifar10_files(), download,
                          lambda: torchvision.datasets.CIFAR10(str(root), train=train, download=True),
                          lambda: _LocalCIFAR10(str(root), train=train))
    images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2).contiguous()
    return images, torch.as_tensor(dataset.targets, dtype=torch.int64)


def _load_svhn(split: str, root: Path, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = _read_local("svhn", split, root, [_LocalSVHN.split_list[split][1]], download,
                          lambda: torchvision.datasets.SVHN(str(root), split=split, download=True),
                          lambda: _LocalSVHN(str(root), split=split))
    return torch.from_numpy(np.ascontiguousarray(dataset.data)), torch.as_tensor(dataset.labels, dtype=torch.int64)


# ---------------------------------------------------------------- normalised tensors, splits, shift and OOD sets

def to_unit_interval(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels → float32 in [0, 1] (x / 255)."""
    return TF.to_dtype(pixels, torch.float32, scale=True)


def normalise(images01: torch.Tensor, name: str) -> torch.Tensor:
    """``(x − mean) / std`` per channel with ``name``'s statistics; ``x`` in [0, 1]."""
    mean, std = NORMALISATION[_check_dataset(name)]
    return TF.normalize(images01, list(mean), list(std))


def evaluation_indices(count: int, n_eval: int) -> torch.Tensor:
    """Indices of the evaluation subset of a set of ``count`` images: the first ``n_eval`` of one permutation seeded
    with ``EVAL_SUBSET_SEED``, sorted; every index when ``n_eval`` is 0 or at least ``count``.

    The seed is fixed (not the run's), so every run of a study — every method and seed — scores the same images, the
    shifted set corrupts the same images as the clean test subset, and a smaller ``n_eval`` takes a subset of a larger
    one's images."""
    require(isinstance(n_eval, int) and not isinstance(n_eval, bool) and n_eval >= 0,
            f"n_eval={n_eval!r} is out of range: expected an integer >= 0 (0 = every image)")
    if n_eval == 0 or n_eval >= count:
        return torch.arange(count)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(EVAL_SUBSET_SEED))
    return order[:n_eval].sort().values


def evaluation_subset(images: torch.Tensor, labels: torch.Tensor, n_eval: int) -> Pair:
    """``(images, labels)`` restricted to ``evaluation_indices(len(labels), n_eval)``."""
    chosen = evaluation_indices(int(labels.shape[0]), n_eval)
    return images[chosen], labels[chosen]


def load_split(name: str, split: str, root: str | os.PathLike, download: bool = False,
               normalise_as: str | None = None, n_eval: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images float32 ``(N, C, H, W)`` normalised with ``normalise_as``'s statistics (default: ``name``'s), labels;
    with ``n_eval`` > 0 only the evaluation subset (``evaluation_indices``)."""
    pixels, labels = evaluation_subset(*load_pixels(name, split, root, download), n_eval)
    return normalise(to_unit_interval(pixels), normalise_as or name), labels


def ood_test_set(name: str, root: str | os.PathLike, download: bool = False,
                 n_eval: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The test split of ``ood_dataset_for(name)``, normalised with ``name``'s statistics (what the model expects)."""
    return load_split(ood_dataset_for(name), "test", root, download, normalise_as=name, n_eval=n_eval)


def train_val_split(images: torch.Tensor, labels: torch.Tensor, val_fraction: float, seed: int,
                    n_train: int | None = None) -> tuple[Pair, Pair]:
    """Deterministic split: one seeded permutation; its first ``round(N · val_fraction)`` indices are validation,
    the next ``n_train`` (default: all the rest) are training. The validation set does not depend on ``n_train``, and
    a smaller ``n_train`` takes a prefix of a larger one's training set."""
    total = int(labels.shape[0])
    require(images.shape[0] == total, f"images ({images.shape[0]}) and labels ({total}) differ in length")
    require(isinstance(val_fraction, (int, float)) and 0.0 <= val_fraction < 1.0,
            f"val_fraction={val_fraction!r} is out of range: expected a number in [0, 1)")
    n_val = round(total * val_fraction)
    available = total - n_val
    if n_train is None:
        n_train = available
    require(isinstance(n_train, int) and not isinstance(n_train, bool) and 1 <= n_train <= available,
            f"n_train={n_train!r} is out of range: expected an integer in 1..{available} "
            f"({total} examples, {n_val} held out for validation)")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:n_val], order[n_val:n_val + n_train]
    return (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx])


def _family_seed(seed: int, family: str) -> int:
    """A seed per (seed, family), independent of which other families are requested and of the severity."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{family}".encode(), digest_size=7).digest(), "little")


def _cifar10_c_file(root: Path, family: str, severity: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Severity ``s`` of CIFAR-10-C is rows ``(s−1)·10000 .. s·10000`` of ``<family>.npy`` (uint8 N×32×32×3)."""
    folder = root / CIFAR10_C_FOLDER
    images_file, labels_file = folder / f"{family}.npy", folder / "labels.npy"
    if not (images_file.is_file() and labels_file.is_file()):
        return None
    try:
        images = np.load(images_file, mmap_mode="r")
        labels = np.load(labels_file, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise BadInput(f"{images_file} or {labels_file} is not a readable .npy file ({error})") from None
    per_severity = labels.shape[0] // 5
    require(images.shape[0] == labels.shape[0] and images.shape[1:] == (32, 32, 3),
            f"{images_file} has shape {images.shape}: expected ({labels.shape[0]}, 32, 32, 3) to match labels.npy")
    rows = slice((severity - 1) * per_severity, severity * per_severity)
    pixels = torch.from_numpy(np.array(images[rows])).permute(0, 3, 1, 2).contiguous()  # np.array: copy the mmap
    return pixels, torch.from_numpy(np.array(labels[rows])).to(torch.int64)


# The 19 corruptions of the CIFAR-10-C release (Hendrycks & Dietterich 2019), ``CIFAR-10-C/<family>.npy`` each.
CIFAR10_C_FAMILIES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "defocus_blur", "glass_blur",
                      "motion_blur", "zoom_blur", "gaussian_blur", "snow", "frost", "fog", "brightness", "contrast",
                      "elastic_transform", "pixelate", "jpeg_compression", "spatter", "saturate")
GENERATED_SOURCE = "generated by empirics.data.corruptions (not the CIFAR-10-C release)"


def cifar10_c_release_families(root: str | os.PathLike) -> list[str]:
    """The CIFAR-10-C release families whose ``<family>.npy`` lies under ``root/CIFAR-10-C`` beside ``labels.npy``
    (release order); empty when the folder or ``labels.npy`` is absent."""
    folder = Path(root) / CIFAR10_C_FOLDER
    if not (folder / "labels.npy").is_file():
        return []
    return [family for family in CIFAR10_C_FAMILIES if (folder / f"{family}.npy").is_file()]


def resolve_shift_families(name: str, root: str | os.PathLike, families: Sequence[str] | None) -> list[str]:
    """The families a shift evaluation uses: ``families`` when given; for CIFAR-10 by default every CIFAR-10-C
    release family present under the root (the real corruption files); otherwise every generated family
    (``empirics.data.corruptions.CORRUPTIONS``)."""
    if families:
        return list(families)
    release = cifar10_c_release_families(root) if name == "cifar10" else []
    return release or list(CORRUPTIONS)


def shift_sources(name: str, root: str | os.PathLike, families: Sequence[str] | None,
                  severity: int) -> dict[str, str]:
    """{family: where its images come from}: the CIFAR-10-C release file (rows of ``severity``) when
    ``shifted_test_set`` reads one, else ``GENERATED_SOURCE`` — so a generated family is never reported as the
    release's corruption of the same name."""
    folder = Path(root) / CIFAR10_C_FOLDER
    release = set(cifar10_c_release_families(root)) if name == "cifar10" and 1 <= severity <= 5 else set()
    return {family: (f"CIFAR-10-C release file {folder / (family + '.npy')}, severity {severity}"
                     if family in release else GENERATED_SOURCE)
            for family in resolve_shift_families(name, root, families)}


def shifted_test_set(name: str, root: str | os.PathLike, families: Sequence[str] | None, severity: int, seed: int,
                     download: bool = False, n_eval: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The test split corrupted by each family at ``severity``, concatenated in ``families`` order.

    Returns normalised images ``(F·N, C, H, W)``, labels ``(F·N,)`` and ``family_index`` ``(F·N,)`` (position in
    ``families``). ``families=None`` means ``resolve_shift_families``: for CIFAR-10 every CIFAR-10-C release file
    present under the root, else every family of ``empirics.data.corruptions.CORRUPTIONS``; ``shift_sources`` says which
    family came from where. For CIFAR-10 a
    family with ``CIFAR-10-C/<family>.npy`` under the root is read from that file; any other family is generated
    by ``empirics.data.corruptions`` from the clean test set (MNIST-C style), quantised to 8 bits like the stored sets.
    With ``n_eval`` > 0 each family covers only the clean test set's evaluation subset (``evaluation_indices``),
    selected before corrupting.
    """
    _check_dataset(name)
    root = Path(root)
    families = resolve_shift_families(name, root, families) if families is None else list(families)
    require(len(families) > 0, "families is empty: expected at least one of " + ", ".join(CORRUPTIONS))
    require(len(set(families)) == len(families), f"families={families} repeats a family")
    clean: tuple[torch.Tensor, torch.Tensor] | None = None
    parts_x, parts_y, parts_f = [], [], []
    progress = tqdm(families, desc=f"{name} shift (severity {severity})", unit="family", leave=False, disable=None)
    for position, family in enumerate(progress):
        stored = _cifar10_c_file(root, family, severity) if name == "cifar10" and 1 <= severity <= 5 else None
        if stored is None:
            require(family in CORRUPTIONS, f"family={family!r} is not known: expected one of "
                    f"{', '.join(CORRUPTIONS)} (or a CIFAR-10-C .npy file under {root / CIFAR10_C_FOLDER})")
            clean = clean or evaluation_subset(*load_pixels(name, "test", root, download), n_eval)
            generator = torch.Generator().manual_seed(_family_seed(seed, family))
            corrupted = corrupt(to_unit_interval(clean[0]), family, severity, generator)
            images01, labels = torch.round(corrupted * 255) / 255, clean[1]
        else:
            pixels, labels = evaluation_subset(*stored, n_eval)
            images01 = to_unit_interval(pixels)
        parts_x.append(normalise(images01, name))
        parts_y.append(labels)
        parts_f.append(torch.full_like(labels, position))
    return torch.cat(parts_x), torch.cat(parts_y), torch.cat(parts_f)
