"""Data loading: root resolution, IDX .gz decoding without writing into the root, the decoded-tensor cache, clear
errors for missing or damaged files, local CIFAR-10 / SVHN files read without md5, deterministic splits and evaluation
subsets, shifted and OOD test sets."""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from empirics.data import datasets as data
from empirics.data.corruptions import CORRUPTIONS
from empirics.data.datasets import (DATASETS, NORMALISATION, evaluation_indices, input_shape, load_pixels, load_split,
                                    num_classes, ood_dataset_for, ood_test_set, resolve_data_root, shifted_test_set,
                                    train_val_split)
from infra.errors import BadInput

SHARED_DATA = Path(__file__).resolve().parents[4] / "shared" / "data"
TINY_TRAIN, TINY_TEST = 64, 32  # the sizes tiny_mnist_root writes
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049
PIXEL = 1e-4  # float32 (x − mean)/std undone and times 255: integers to within 1e-4


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def idx_payload(path: Path) -> np.ndarray:
    """The uint8 body of an IDX .gz file, parsed by hand (the slow reference): skip magic and dimensions."""
    raw = gzip.open(path).read()
    dims = raw[3]
    return np.frombuffer(raw[4 + 4 * dims:], dtype=np.uint8)


def as_pixels(images: torch.Tensor, name: str) -> torch.Tensor:
    """Undo the normalisation: (x · std + mean) · 255."""
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in NORMALISATION[name])
    return (images * std + mean) * 255


def test_data_root_is_cli_value_then_environment_then_user_cache(monkeypatch, tmp_path):
    """--data-root wins over EGEO_DATA_ROOT, which wins over <EGEO_CACHE_DIR>/data."""
    monkeypatch.setenv("EGEO_DATA_ROOT", str(tmp_path / "env"))
    assert resolve_data_root(str(tmp_path / "cli")) == tmp_path / "cli"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("EGEO_DATA_ROOT")
    monkeypatch.setenv("EGEO_CACHE_DIR", str(tmp_path / "cache"))
    assert resolve_data_root(None) == tmp_path / "cache" / "data"
    monkeypatch.delenv("EGEO_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_root(None) == tmp_path / "xdg" / "ensemble-geometry" / "data"


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_gz_loads_the_file_contents_normalised_without_writing_into_the_root(name, folder, tiny_mnist_root):
    """load_split returns float32 (N, 1, 28, 28) whose un-normalised pixels are the IDX bytes, int64 labels equal to
    the label file, and leaves the root untouched (names, sizes, modification times)."""
    before = snapshot(tiny_mnist_root)
    for split, count, prefix in (("train", TINY_TRAIN, "train"), ("test", TINY_TEST, "t10k")):
        images, labels = load_split(name, split, tiny_mnist_root)
        assert images.dtype == torch.float32 and images.shape == (count, 1, 28, 28)
        assert labels.dtype == torch.int64 and labels.shape == (count,)
        raw = tiny_mnist_root / folder / "raw"
        expected = torch.from_numpy(idx_payload(raw / f"{prefix}-images-idx3-ubyte.gz").copy()).float()
        torch.testing.assert_close(as_pixels(images, name).flatten(), expected, rtol=0, atol=PIXEL)
        assert labels.tolist() == idx_payload(raw / f"{prefix}-labels-idx1-ubyte.gz").tolist()
    assert snapshot(tiny_mnist_root) == before


def test_decompressed_idx_files_are_read_as_torchvision_leaves_them(tiny_mnist_root):
    """A root holding decompressed IDX files (torchvision's layout after download) loads the same tensors."""
    from_gz = load_split("mnist", "test", tiny_mnist_root)
    raw = tiny_mnist_root / "MNIST" / "raw"
    for gz in raw.glob("t10k-*.gz"):
        gz.with_suffix("").write_bytes(gzip.open(gz).read())
        gz.unlink()
    from_raw = load_split("mnist", "test", tiny_mnist_root)
    torch.testing.assert_close(from_raw, from_gz, rtol=0, atol=0)


def test_second_load_is_served_from_the_cache_and_a_changed_file_is_decoded_again(tiny_mnist_root, monkeypatch,
                                                                                     isolated_cache, idx_gz_writer):
    """The decoded tensors are cached under EGEO_CACHE_DIR keyed by the files' bytes: an unchanged file is not
    decoded again; a changed file is."""
    first = load_split("mnist", "train", tiny_mnist_root)
    assert len(list((isolated_cache / "decoded").glob("mnist-train-*.pt"))) == 1

    def no_decoding(*args):
        raise AssertionError("decoded again although cached")

    with monkeypatch.context() as patch:
        patch.setattr(data, "_read_idx", no_decoding)
        torch.testing.assert_close(load_split("mnist", "train", tiny_mnist_root), first, rtol=0, atol=0)
    labels_file = tiny_mnist_root / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    new_labels = (idx_payload(labels_file) + 1) % 10
    idx_gz_writer(labels_file, new_labels, IDX_LABELS_MAGIC)
    assert load_split("mnist", "train", tiny_mnist_root)[1].tolist() == new_labels.tolist()


def test_missing_files_name_the_expected_files_the_root_and_the_remedies(tmp_path):
    """No MNIST under the root: one line naming MNIST/raw/train-images-idx3-ubyte[.gz], the root,
    EGEO_DATA_ROOT and --download."""
    with pytest.raises(BadInput) as error:
        load_split("mnist", "train", tmp_path)
    message = str(error.value)
    assert "\n" not in message
    for part in ("MNIST/raw/train-images-idx3-ubyte[.gz]", "MNIST/raw/train-labels-idx1-ubyte[.gz]", str(tmp_path),
                 "EGEO_DATA_ROOT", "--download"):
        assert part in message


@pytest.mark.parametrize("name, expected", [("cifar10", "cifar-10-batches-py/test_batch"),
                                            ("svhn", "test_32x32.mat")])
def test_missing_cifar10_and_svhn_name_their_files(name, expected, tmp_path):
    """torchvision's 'Dataset not found' becomes a one-line BadInput naming the expected file and the root."""
    with pytest.raises(BadInput, match=expected) as error:
        load_split(name, "test", tmp_path)
    assert str(tmp_path) in str(error.value) and "--download" in str(error.value)


def test_local_cifar10_and_svhn_files_are_read_by_torchvision_without_md5(tmp_path, cifar10_batch_writer,
                                                                         svhn_mat_writer, generator):
    """Files in torchvision's formats whose md5 differs from the published one (any locally made file) are read:
    pixels exactly as written (N, C, H, W), CIFAR-10 labels as written, SVHN's stored 10 read back as digit 0."""
    pixels = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8, generator=generator).numpy()
    labels = np.array([0, 9, 3, 0, 7])
    folder = tmp_path / "cifar-10-batches-py"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        cifar10_batch_writer(folder / name, pixels, labels)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    svhn_mat_writer(tmp_path / "test_32x32.mat", pixels, labels)
    expected = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    for name in ("cifar10", "svhn"):
        images, read_labels = load_pixels(name, "test", tmp_path)
        assert torch.equal(images, expected) and read_labels.tolist() == labels.tolist()
    assert load_pixels("cifar10", "train", tmp_path)[0].shape == (25, 3, 32, 32)  # 5 batches of 5


def test_unreadable_cifar10_batch_is_a_clear_error(tiny_image_root):
    """A CIFAR-10 batch that is not a pickle: one-line BadInput naming the data, the root and --download."""
    (tiny_image_root / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(BadInput, match="cifar10 test data under .* is corrupted or truncated") as error:
        load_split("cifar10", "test", tiny_image_root)
    assert "\n" not in str(error.value) and "--download" in str(error.value)


def test_evaluation_subset_is_fixed_nested_and_shared_by_test_and_shift(tiny_image_root):
    """n_eval keeps the same images whatever the run's seed; a smaller n_eval keeps a subset of a larger one's
    images; the shifted set is built from the clean subset (its labels, in its order, for any seed); 0 or more than the
    set keeps everything; a negative n_eval is rejected."""
    assert torch.equal(evaluation_indices(64, 0), torch.arange(64))
    assert torch.equal(evaluation_indices(64, 100), torch.arange(64))
    small, large = evaluation_indices(64, 10), evaluation_indices(64, 40)
    assert len(small) == 10 and len(set(small.tolist())) == 10 and set(small.tolist()) <= set(large.tolist())
    assert small.tolist() == sorted(small.tolist()) and small.tolist() != list(range(10))
    test_images, test_labels = load_split("mnist", "test", tiny_image_root, n_eval=10)
    all_images, all_labels = load_split("mnist", "test", tiny_image_root)
    torch.testing.assert_close(test_images, all_images[small], rtol=0, atol=0)
    for seed in (0, 3):
        shift_images, shift_labels, _ = shifted_test_set("mnist", tiny_image_root, ["brightness"], 3, seed, n_eval=10)
        assert shift_labels.tolist() == test_labels.tolist() and shift_images.shape == test_images.shape
    ood_images, _ = ood_test_set("cifar10", tiny_image_root, n_eval=7)
    assert ood_images.shape == (7, 3, 32, 32)
    with pytest.raises(BadInput, match="n_eval=-1 is out of range"):
        evaluation_indices(64, -1)


def test_truncated_gz_is_a_clear_error_naming_the_file(tiny_mnist_root):
    """A .gz cut in half raises BadInput naming that file as corrupted or truncated."""
    target = tiny_mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    with pytest.raises(BadInput, match=f"{target}.*corrupted or truncated"):
        load_split("mnist", "train", tiny_mnist_root)


def test_not_gzip_is_a_clear_error_naming_the_file(tiny_mnist_root):
    """A .gz that is not gzip at all raises BadInput naming the file."""
    target = tiny_mnist_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(b"this is not gzip")
    with pytest.raises(BadInput, match=f"{target}.*corrupted or truncated"):
        load_split("mnist", "test", tiny_mnist_root)


@pytest.mark.parametrize("damage", ["bad magic", "short body"])
def test_invalid_idx_content_is_a_clear_error_naming_the_file(damage, tiny_mnist_root):
    """A well-formed gzip holding a bad IDX header, or fewer bytes than its header promises, raises BadInput."""
    target = tiny_mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    raw = gzip.open(target).read()
    damaged = b"\x00\x00\x77\x03" + raw[4:] if damage == "bad magic" else raw[:-100]
    with gzip.open(target, "wb") as handle:
        handle.write(damaged)
    with pytest.raises(BadInput, match=f"{target} is not a valid IDX file"):
        load_split("mnist", "test", tiny_mnist_root)


def test_image_and_label_counts_must_agree(tiny_mnist_root, idx_gz_writer):
    """31 images with 32 labels: BadInput naming both counts."""
    target = tiny_mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    idx_gz_writer(target, idx_payload(target).reshape(-1, 28, 28)[:31], IDX_IMAGES_MAGIC)
    with pytest.raises(BadInput, match="31 images but 32 labels"):
        load_split("mnist", "test", tiny_mnist_root)


def test_train_val_split_is_deterministic_disjoint_and_nested_in_n_train():
    """Same seed → same split; validation and training are disjoint; the validation set does not depend on n_train
    and n_train = 10 takes the first 10 of n_train = 20's training examples."""
    images = torch.arange(100).view(100, 1, 1, 1).float()
    labels = torch.arange(100)
    (x_tr, y_tr), (x_val, y_val) = train_val_split(images, labels, 0.2, seed=3, n_train=20)
    (x_tr2, y_tr2), (x_val2, y_val2) = train_val_split(images, labels, 0.2, seed=3, n_train=20)
    assert torch.equal(y_tr, y_tr2) and torch.equal(y_val, y_val2) and torch.equal(x_tr, x_tr2)
    assert len(y_val) == 20 and len(y_tr) == 20 and not set(y_tr.tolist()) & set(y_val.tolist())
    assert torch.equal(x_tr.flatten().long(), y_tr)  # images and labels stay paired
    (_, y_small), (_, y_val_small) = train_val_split(images, labels, 0.2, seed=3, n_train=10)
    assert torch.equal(y_small, y_tr[:10]) and torch.equal(y_val_small, y_val)
    (_, y_all), _ = train_val_split(images, labels, 0.2, seed=3)
    assert len(y_all) == 80 and set(y_all.tolist()) | set(y_val.tolist()) == set(range(100))
    (_, y_other), _ = train_val_split(images, labels, 0.2, seed=4, n_train=20)
    assert not torch.equal(y_other, y_tr)


@pytest.mark.parametrize("val_fraction, n_train, match", [
    (1.0, None, "val_fraction=1.0 is out of range"),
    (-0.1, None, "val_fraction=-0.1 is out of range"),
    (0.2, 81, "n_train=81 is out of range: expected an integer in 1..80"),
    (0.2, 0, "n_train=0 is out of range"),
])
def test_train_val_split_rejects_bad_sizes(val_fraction, n_train, match):
    """Fractions outside [0, 1) and n_train outside 1..(N − n_val) raise BadInput naming the accepted range."""
    with pytest.raises(BadInput, match=match):
        train_val_split(torch.zeros(100, 1, 1, 1), torch.zeros(100, dtype=torch.int64), val_fraction, 0, n_train)


def test_shifted_test_set_stacks_families_deterministically(tiny_mnist_root):
    """F families × N test images, labels repeated, family_index = position; same seed → same images; a family's
    images do not depend on which other families are asked for; pixels are 8-bit like stored MNIST-C."""
    images, labels, family = shifted_test_set("mnist", tiny_mnist_root, ["fog", "rotate"], 3, seed=5)
    clean_labels = load_split("mnist", "test", tiny_mnist_root)[1]
    assert images.shape == (2 * TINY_TEST, 1, 28, 28)
    assert labels.tolist() == clean_labels.tolist() * 2
    assert family.tolist() == [0] * TINY_TEST + [1] * TINY_TEST
    again, _, _ = shifted_test_set("mnist", tiny_mnist_root, ["fog", "rotate"], 3, seed=5)
    torch.testing.assert_close(again, images, rtol=0, atol=0)
    alone, _, _ = shifted_test_set("mnist", tiny_mnist_root, ["rotate"], 3, seed=5)
    torch.testing.assert_close(alone, images[TINY_TEST:], rtol=0, atol=0)
    other_seed, _, _ = shifted_test_set("mnist", tiny_mnist_root, ["rotate"], 3, seed=6)
    assert not torch.equal(other_seed, alone)
    pixels = as_pixels(images, "mnist")
    torch.testing.assert_close(pixels, pixels.round(), rtol=0, atol=PIXEL)


def test_shifted_test_set_defaults_to_every_family_and_rejects_unknown_ones(tiny_mnist_root):
    """families=None → all of CORRUPTIONS; an unknown family or severity raises BadInput."""
    _, _, family = shifted_test_set("fashion-mnist", tiny_mnist_root, None, 1, seed=0)
    assert family.max().item() == len(CORRUPTIONS) - 1 and len(family) == len(CORRUPTIONS) * TINY_TEST
    with pytest.raises(BadInput, match="family='snow' is not known"):
        shifted_test_set("mnist", tiny_mnist_root, ["snow"], 1, seed=0)
    with pytest.raises(BadInput, match="severity=9 is out of range"):
        shifted_test_set("mnist", tiny_mnist_root, ["fog"], 9, seed=0)


def test_cifar10_c_is_read_from_its_npy_files_at_the_requested_severity(tmp_path):
    """CIFAR-10-C/<family>.npy holds severities 1..5 as consecutive blocks; severity 2 is the second block."""
    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    per_severity = 4
    blocks = np.stack([np.full((per_severity, 32, 32, 3), 10 * s, dtype=np.uint8) for s in range(1, 6)])
    np.save(folder / "frost.npy", blocks.reshape(-1, 32, 32, 3))
    np.save(folder / "labels.npy", np.tile(np.arange(per_severity), 5))
    images, labels, family = shifted_test_set("cifar10", tmp_path, ["frost"], 2, seed=0)
    assert images.shape == (per_severity, 3, 32, 32) and labels.tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(as_pixels(images, "cifar10"), torch.full_like(images, 20.0), rtol=0, atol=PIXEL)


def test_ood_sets_are_the_partner_test_split_normalised_as_the_in_distribution():
    """MNIST ↔ Fashion-MNIST, CIFAR-10 → SVHN; SVHN has no partner."""
    assert [ood_dataset_for(name) for name in ("mnist", "fashion-mnist", "cifar10")] == ["fashion-mnist", "mnist",
                                                                                          "svhn"]
    with pytest.raises(BadInput, match="no OOD partner"):
        ood_dataset_for("svhn")


def test_ood_test_set_uses_the_in_distribution_statistics(tiny_mnist_root):
    """ood_test_set('mnist') = Fashion-MNIST test pixels normalised with MNIST's mean and std."""
    images, labels = ood_test_set("mnist", tiny_mnist_root)
    expected = torch.from_numpy(idx_payload(tiny_mnist_root / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte.gz")
                                .copy()).float()
    torch.testing.assert_close(as_pixels(images, "mnist").flatten(), expected, rtol=0, atol=PIXEL)
    assert len(labels) == TINY_TEST


def test_dataset_facts_and_unknown_names():
    """Every dataset has 10 classes and its image shape; unknown names raise BadInput listing the valid ones."""
    assert DATASETS == ("mnist", "fashion-mnist", "cifar10", "svhn")
    assert [num_classes(name) for name in DATASETS] == [10] * 4
    assert [input_shape(name) for name in DATASETS] == [(1, 28, 28)] * 2 + [(3, 32, 32)] * 2
    with pytest.raises(BadInput, match="dataset='imagenet' is not known: expected one of mnist, fashion-mnist"):
        load_split("imagenet", "train", Path("."))
    with pytest.raises(BadInput, match="split='val' is not known"):
        load_split("mnist", "val", Path("."))


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="the shared MNIST files are not here")
def test_real_mnist_has_the_usual_size_and_statistics_and_its_folder_is_untouched():
    """The shared MNIST: 60,000 train images whose pixels/255 have mean 0.1307 and std 0.3081 (to the 4 decimals
    the constants are quoted with); Fashion-MNIST: 60,000 / 10,000; the read-only folder is not written."""
    before = snapshot(SHARED_DATA)
    images, labels = data.load_pixels("mnist", "train", SHARED_DATA)
    unit = images.double() / 255
    assert images.shape == (60000, 1, 28, 28) and labels.bincount().tolist()[0] == 5923  # digit 0: 5,923 images
    assert round(unit.mean().item(), 4) == 0.1307 and round(unit.std().item(), 4) == 0.3081
    assert load_split("fashion-mnist", "train", SHARED_DATA)[0].shape[0] == 60000
    assert load_split("fashion-mnist", "test", SHARED_DATA)[0].shape[0] == 10000
    assert snapshot(SHARED_DATA) == before


def test_cifar10_default_shift_uses_the_release_files_present_and_names_generated_families(tiny_image_root):
    """CIFAR-10, default families: without CIFAR-10-C under the root every generated family, each named as generated;
    with release files (frost, fog) exactly those, in release order, each named as its release file; an explicit
    list mixes both and says which is which (a generated family never passes for the release's)."""
    from conftest import write_tiny_cifar10_c

    assert data.resolve_shift_families("cifar10", tiny_image_root, None) == list(CORRUPTIONS)
    assert set(data.shift_sources("cifar10", tiny_image_root, None, 5).values()) == {data.GENERATED_SOURCE}
    write_tiny_cifar10_c(tiny_image_root, torch.Generator().manual_seed(3), ("fog", "frost"), n_test=64)
    assert data.resolve_shift_families("cifar10", tiny_image_root, None) == ["frost", "fog"]
    sources = data.shift_sources("cifar10", tiny_image_root, ["rotate", "fog"], 5)
    assert sources["rotate"] == data.GENERATED_SOURCE
    assert sources["fog"] == f"CIFAR-10-C release file {tiny_image_root / 'CIFAR-10-C' / 'fog.npy'}, severity 5"
    images, labels, family = shifted_test_set("cifar10", tiny_image_root, None, 5, seed=0, n_eval=16)
    assert images.shape == (32, 3, 32, 32) and family.tolist() == [0] * 16 + [1] * 16
    assert data.resolve_shift_families("mnist", tiny_image_root, None) == list(CORRUPTIONS)


def test_download_goes_through_torchvision(tmp_path, monkeypatch, generator):
    """download=True with the files missing calls torchvision's own CIFAR10 / SVHN with download=True into the data
    root (the fetch is replaced by writing tiny files in the real formats, so no network is used)."""
    import torchvision

    from conftest import write_tiny_cifar10, write_tiny_svhn

    calls = []

    def fake(writer):
        def dataset(root, download=False, **kwargs):
            calls.append((kwargs, download))
            writer(Path(root))
        return dataset

    monkeypatch.setattr(torchvision.datasets, "CIFAR10",
                        fake(lambda root: write_tiny_cifar10(root, generator, per_batch=2, n_test=3)))
    monkeypatch.setattr(torchvision.datasets, "SVHN", fake(lambda root: write_tiny_svhn(root, generator, 2, 3)))
    assert load_pixels("cifar10", "test", tmp_path, download=True)[0].shape == (3, 3, 32, 32)
    assert load_pixels("svhn", "test", tmp_path, download=True)[0].shape == (3, 3, 32, 32)
    assert calls == [({"train": False}, True), ({"split": "test"}, True)]
