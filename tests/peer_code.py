"""torch-uncertainty's own layer and model code (the PyPI package of the test extra), loaded by file path.

``import torch_uncertainty`` pulls in Lightning and its CLI stack; the BatchEnsemble layers
(``layers/batch_ensemble.py``, needs only torch and einops) and the batched ResNet
(``models/classification/resnet/{utils,batched}.py``) do not. ``load_torch_uncertainty`` executes exactly those
three files of the installed package under their real module names, with empty parent packages, and removes every
name it added from ``sys.modules`` afterwards, so nothing else in the test session sees a partial package.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import types
from functools import lru_cache
from pathlib import Path

PACKAGE = "torch_uncertainty"


def _package_root() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # finds the folder without executing its __init__
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("torch-uncertainty is not installed: `pip install -e '.[test]'` installs it")
    return Path(spec.submodule_search_locations[0])


@lru_cache(maxsize=1)
def load_torch_uncertainty() -> types.SimpleNamespace:
    """``BatchLinear``, ``BatchConv2d``, ``batched_resnet`` and ``version`` of the installed torch-uncertainty."""
    root = _package_root()
    added: list[str] = []

    def package(name: str, path: Path) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
        added.append(name)
        return module

    def source(name: str, path: Path) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        added.append(name)
        spec.loader.exec_module(module)
        return module

    if any(name == PACKAGE or name.startswith(PACKAGE + ".") for name in sys.modules):
        raise RuntimeError("torch_uncertainty is already imported: load_torch_uncertainty would shadow it")
    try:
        package(PACKAGE, root)
        layers = package(f"{PACKAGE}.layers", root / "layers")
        batch_ensemble = source(f"{PACKAGE}.layers.batch_ensemble", root / "layers" / "batch_ensemble.py")
        layers.BatchLinear, layers.BatchConv2d = batch_ensemble.BatchLinear, batch_ensemble.BatchConv2d
        resnet_dir = root / "models" / "classification" / "resnet"
        package(f"{PACKAGE}.models", root / "models")
        package(f"{PACKAGE}.models.classification", root / "models" / "classification")
        package(f"{PACKAGE}.models.classification.resnet", resnet_dir)
        source(f"{PACKAGE}.models.classification.resnet.utils", resnet_dir / "utils.py")
        batched = source(f"{PACKAGE}.models.classification.resnet.batched", resnet_dir / "batched.py")
    finally:
        for name in added:
            sys.modules.pop(name, None)
    return types.SimpleNamespace(BatchLinear=batch_ensemble.BatchLinear, BatchConv2d=batch_ensemble.BatchConv2d,
                                 batched_resnet=batched.batched_resnet,
                                 version=importlib.metadata.version("torch-uncertainty"))
