"""empirics.runs.evaluate end to end on CIFAR-10 files in the real formats: the preset's recipe on CPU with tiny
CIFAR-10 pickles, SVHN .mat files and CIFAR-10-C .npy release files, severity 5, every shift family named by its
source."""
from __future__ import annotations

import json

import pytest
import torch

from empirics.data import datasets as data
from empirics.runs.config import Config
from empirics.runs.evaluate import evaluate_run
from empirics.runs.train import train
from empirics.studies.runner import load_preset

from conftest import write_tiny_cifar10_c


@pytest.mark.slow
def test_cifar10_preset_recipe_evaluates_on_cifar10_c_release_files_and_svhn(tiny_image_root, tmp_path):
    """The resnet18-cifar10 preset's BE run (its [base] and [tiny] overrides, default shift families) trained and
    evaluated on CPU: the shift set is the two CIFAR-10-C release files present at severity 5, eval.json names each
    as its release file and reports per-family metrics; OOD is SVHN read from its .mat file."""
    write_tiny_cifar10_c(tiny_image_root, torch.Generator().manual_seed(11), ("frost", "contrast"), n_test=64)
    preset = load_preset("resnet18-cifar10")
    fields = {**preset.runs["be-r1"], **preset.tiny, "shift_families": [], "n_eval": 16, "data_root":
              str(tiny_image_root), "seed": 0}
    config = Config.from_dict(fields)
    assert (config.dataset, config.shift_severity, config.ood_name) == ("cifar10", 5, "svhn")
    train(config, tmp_path / "run")
    results = evaluate_run(tmp_path / "run")
    evaluated = json.loads((tmp_path / "run" / "eval.json").read_text())
    folder = tiny_image_root / "CIFAR-10-C"
    assert evaluated["shift_sources"] == {family: f"CIFAR-10-C release file {folder / (family + '.npy')}, severity 5"
                                          for family in ("frost", "contrast")}
    assert {"shift/frost/ensemble/accuracy", "shift/contrast/ensemble/accuracy", "ood/max_prob/auroc"} <= set(results)
    assert evaluated["ood_dataset"] == "svhn"
    (folder / "labels.npy").unlink()  # no release files: the generated families, named as generated
    assert set(data.shift_sources("cifar10", tiny_image_root, None, 5).values()) == {data.GENERATED_SOURCE}
