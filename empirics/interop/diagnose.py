"""Diagnose any ensemble: per-layer weight diversity, distance to the rank-1 BatchEnsemble set, certified codimension,
and (given inputs) function-space diversity — for this project's runs and for ensembles trained elsewhere.

    python -m empirics diagnose PATH [PATH ...] [--members K] [--dataset NAME|FILE] [--out DIR]

What PATH may be:

* a run folder of this project (``config.json`` + ``checkpoint.pt``): its model, weights from ``member_weight_tuples``;
* one BatchEnsemble ``state_dict`` file (``torch.save(model.state_dict())``, or a checkpoint holding it under
  ``state_dict``/``model``), read with ``torch.load(weights_only=True)`` — no peer library is imported:
  - torch-uncertainty ``BatchLinear``/``BatchConv2d``: ``P.r_group`` (k, in), ``P.s_group`` (k, out), ``P.bias``
    (k, out) and the slow weight ``P.linear.weight``/``P.conv.weight``; member i's kernel is W ∘ s_i r_iᵀ (their
    ``r_group`` scales the input: our ``fast_factors[1][:, 0, :]``; ``s_group`` the output: ``fast_factors[0][:, 0, :]``);
  - TabM ``LinearBatchEnsemble``: ``P.weight`` (out, in), ``P.r`` (k, in), ``P.s`` (k, out), ``P.bias`` (k, out);
  - every other Linear/Conv2d kernel (``P.weight`` of 2 or 4 dimensions) is one plain layer that every member
    applies (torch-uncertainty's 1×1 shortcuts): role ``shared``, its one kernel read once;
* k >= 2 ``state_dict`` files of one plain architecture: a Deep Ensemble, role ``independent``.

k comes from the file (``r_group``/``r``) or the number of files; ``--members K`` is checked against it. In Python,
``ensemble_from_modules`` takes a live BatchEnsemble module or k live modules (types are checked by class, so an
unknown layer is named with its type) and can also run them on inputs (``function_space``).

Per layer (and for the whole network, the concatenation): mean pairwise weight cosine and relative
distance (``empirics.analysis.diversity.weight_geometry``), the distance of the member tuple to the rank-1 channel-wise
BE set and the relative residual (``empirics.analysis.diversity.distance_to_be_sets``: an ALS fit, so an upper bound on
the distance), and the codimension of that set in the layer's Deep-Ensemble space with its certificate
(``theory.network.kernel_row``: rank 1 has the proved closed form codim = (k−1)(D − 1 − Σ_j (D_j − 1)), the certificate
re-derives it by exact modular rank; a shared layer reaches only the diagonal, codim (k−1)·D). Given inputs: mutual
information, pairwise JSD, disagreement (``empirics.analysis.metrics``) and linear CKA of the inputs of the last kernel
layer (``empirics.analysis.diversity.pairwise_cka``). Everything is written as ``diagnose.json``, ``diagnose.md`` and
``diagnose.png``/``.pdf``.

A parameter this module does not understand (a layer type it cannot read the members of) is a ``BadInput`` naming
the layer and its type; no member tuple is ever built from a weight it did not read.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from empirics.analysis import diversity, metrics
from empirics.data import datasets as data
from empirics.models.ensembles import EnsembleModel, member_weight_tuples
from empirics.runs import folder
from empirics.studies.report import markdown_table
from infra.errors import BadInput
from infra.files import atomic_write_json, atomic_write_text
from infra.provenance import provenance
from theory.batchensemble import BatchEnsembleSpec, member_weights
from theory.network import batch_layer, kernel_row

RESULTS_DIR = Path("results") / "diagnose"
KERNEL_NDIMS = (2, 4)
NORM_BUFFERS = {"running_mean", "running_var", "num_batches_tracked"}
VECTOR_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
ROLES = ("perturbed", "shared", "independent", "sampled")
DEFAULT_SAMPLES = 512
Runner = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class LayerTuple:
    """One kernel layer's member tuple ``weights`` (k, out, in[, h, w]), what it came from and its role:
    ``perturbed`` (a BE layer), ``shared`` (one plain kernel for all members), ``independent`` (a Deep Ensemble's
    own kernels) or ``sampled`` (MC-Dropout masks)."""

    name: str
    kind: str
    role: str
    weights: torch.Tensor


@dataclass
class Ensemble:
    """The member tuples of an ensemble, and optionally a runner ``x -> (member logits (k, B, C), member features
    (k, B, F) or None)`` for function-space diversity."""

    source: str
    method: str
    members: int
    layers: list[LayerTuple]
    runner: Runner | None = field(default=None, repr=False)

    def weights(self) -> dict[str, torch.Tensor]:
        return {layer.name: layer.weights for layer in self.layers}


# ---------------------------------------------------------------- state_dicts (read without the peer libraries)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``state_dict`` file (or of a checkpoint holding one under ``state_dict`` or ``model``)."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path} is not a file: expected a state_dict saved with torch.save, or a run folder")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a file that is not a tensor pickle
        raise BadInput(f"{path} is not a readable torch state_dict ({type(error).__name__}: {error})") from None
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise BadInput(f"{path} holds {type(loaded).__name__}, not a state_dict: expected a mapping of names to "
                       "tensors (torch.save(model.state_dict(), path))")
    return dict(loaded)


def _group(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{layer prefix: {parameter name: tensor}} (the prefix is everything before the last dot)."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        prefix, _, name = key.rpartition(".")
        groups.setdefault(prefix, {})[name] = value
    return groups


def _describe(prefix: str, params: Mapping[str, torch.Tensor]) -> str:
    shapes = ", ".join(f"{name} {tuple(value.shape)}" for name, value in params.items())
    return f"layer {prefix or '<root>'!r} of unknown type (parameters {shapes})"


def rank_one_members(weight: torch.Tensor, in_scale: torch.Tensor, out_scale: torch.Tensor) -> torch.Tensor:
    """(k, out, in[, h, w]): member i's kernel W ∘ s_i r_iᵀ, r = ``in_scale`` (k, in) scaling the input channels and
    s = ``out_scale`` (k, out) the output channels (``theory.batchensemble.member_weights``, rank 1, channel-wise:
    factor 0 is the output block, factor 1 the input block)."""
    members = in_scale.shape[0]
    spec = BatchEnsembleSpec(tuple(weight.shape), members, 1, "channel-wise")
    factors = (out_scale.detach().double().unsqueeze(1), in_scale.detach().double().unsqueeze(1))
    return member_weights(spec, weight.detach().double(), factors)


def _check_factor(prefix: str, name: str, tensor: torch.Tensor, expected: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != expected:
        raise BadInput(f"layer {prefix!r}: {name} has shape {tuple(tensor.shape)}, expected {expected}")


def _child(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _batch_layers(groups: dict[str, dict[str, torch.Tensor]]) -> list[LayerTuple]:
    """Pop every torch-uncertainty and TabM BatchEnsemble layer out of ``groups`` as perturbed member tuples."""
    found = []
    for prefix in list(groups):
        params = groups.get(prefix, {})  # a popped slow-weight child is gone
        if {"r_group", "s_group"} <= set(params):  # torch-uncertainty BatchLinear / BatchConv2d
            inner = [child for child in (_child(prefix, "linear"), _child(prefix, "conv")) if child in groups]
            extra = set(params) - {"r_group", "s_group", "bias"}
            if len(inner) != 1 or set(groups[inner[0]]) != {"weight"} or extra:
                raise BadInput(_describe(prefix, params) + ": r_group/s_group without torch-uncertainty's "
                               "layout (P.linear.weight or P.conv.weight, P.r_group, P.s_group, P.bias)")
            weight = groups.pop(inner[0])["weight"]
            kind = "BatchLinear (torch-uncertainty)" if inner[0].endswith("linear") else "BatchConv2d (torch-uncertainty)"
            in_scale, out_scale = params["r_group"], params["s_group"]
        elif {"r", "s", "weight"} <= set(params) and params["weight"].dim() == 2:  # TabM LinearBatchEnsemble
            if set(params) - {"r", "s", "weight", "bias"}:
                raise BadInput(_describe(prefix, params) + ": r/s without TabM's LinearBatchEnsemble layout")
            weight, in_scale, out_scale = params["weight"], params["r"], params["s"]
            kind = "LinearBatchEnsemble (TabM)"
        else:
            continue
        if weight.dim() not in KERNEL_NDIMS:
            raise BadInput(f"layer {prefix!r} ({kind}): slow weight of shape {tuple(weight.shape)}, expected "
                           "(out, in) or (out, in, h, w)")
        members = in_scale.shape[0]
        _check_factor(prefix, "input scale", in_scale, (members, weight.shape[1]))
        _check_factor(prefix, "output scale", out_scale, (members, weight.shape[0]))
        if "bias" in params:
            _check_factor(prefix, "bias", params["bias"], (members, weight.shape[0]))
        groups.pop(prefix)
        found.append(LayerTuple(prefix, kind, "perturbed", rank_one_members(weight, in_scale, out_scale)))
    return found


def plain_kernels(groups: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """{prefix: kernel} of the plain Linear/Conv2d layers; normalisation layers (1-D ``weight``/``bias``, running
    statistics) are skipped; any other parameter is a ``BadInput`` naming its layer."""
    kernels = {}
    for prefix, params in groups.items():
        names = set(params)
        weight = params.get("weight")
        if names <= NORM_BUFFERS | {"weight", "bias"} and all(value.dim() <= 1 for value in params.values()):
            continue  # BatchNorm / LayerNorm: per-channel vectors, no kernel
        if names <= {"weight", "bias"} and weight is not None and weight.dim() in KERNEL_NDIMS:
            if "bias" in params and tuple(params["bias"].shape) != (weight.shape[0],):
                raise BadInput(_describe(prefix, params) + ": a kernel's bias must have one entry per output")
            kernels[prefix] = weight.detach().double()
            continue
        raise BadInput(_describe(prefix, params) + ": diagnose reads Linear/Conv2d kernels, BatchNorm/LayerNorm, "
                       "torch-uncertainty BatchLinear/BatchConv2d and TabM LinearBatchEnsemble")
    return kernels


def plain_kind(kernel: torch.Tensor) -> str:
    """A plain kernel's layer type as its state_dict shows it: (out, in) Linear, (out, in, h, w) Conv2d."""
    return "Linear" if kernel.dim() == 2 else "Conv2d"


def _check_members(found: int, members: int | None, source: str) -> int:
    if members is not None and members != found:
        raise BadInput(f"--members {members} does not match {source}: it holds k={found} members")
    if found < 2:
        raise BadInput(f"{source} holds k={found} member: a diversity diagnosis needs k >= 2")
    return found


def ensemble_from_state_dict(state: Mapping[str, torch.Tensor], members: int | None = None,
                             source: str = "state_dict") -> Ensemble:
    """A BatchEnsemble from one ``state_dict`` (torch-uncertainty or TabM layers, plain kernels shared)."""
    groups = _group(state)
    perturbed = _batch_layers(groups)
    if not perturbed:
        raise BadInput(f"{source} has no BatchEnsemble layer (torch-uncertainty r_group/s_group or TabM r/s): one "
                       "plain state_dict is one model; give k >= 2 state_dicts for a Deep Ensemble")
    counts = {layer.name: layer.weights.shape[0] for layer in perturbed}
    if len(set(counts.values())) != 1:
        raise BadInput(f"{source}: its BatchEnsemble layers disagree on k ({counts})")
    k = _check_members(next(iter(counts.values())), members, source)
    shared = [LayerTuple(name, plain_kind(kernel), "shared", kernel.unsqueeze(0).expand(k, *kernel.shape).clone())
              for name, kernel in plain_kernels(groups).items()]
    return Ensemble(source, "batchensemble", k, _in_state_order(state, perturbed + shared))


def _in_state_order(state: Mapping[str, torch.Tensor], layers: list[LayerTuple]) -> list[LayerTuple]:
    order = {key.rpartition(".")[0]: index for index, key in reversed(list(enumerate(state)))}
    return sorted(layers, key=lambda layer: order.get(layer.name, order.get(
        _child(layer.name, "conv"), order.get(_child(layer.name, "linear"), 0))))


def ensemble_from_state_dicts(states: Sequence[Mapping[str, torch.Tensor]], members: int | None = None,
                              source: str = "state_dicts") -> Ensemble:
    """A Deep Ensemble from k ``state_dict``s of one plain architecture (every kernel stacked over members)."""
    k = _check_members(len(states), members, source)
    per_member = []
    for index, state in enumerate(states):
        groups = _group(state)
        if _batch_layers(groups):
            raise BadInput(f"member {index} of {source} is a BatchEnsemble: a Deep Ensemble's members are plain nets")
        per_member.append(plain_kernels(groups))
    reference = {name: tuple(kernel.shape) for name, kernel in per_member[0].items()}
    for index, kernels in enumerate(per_member[1:], start=1):
        shapes = {name: tuple(kernel.shape) for name, kernel in kernels.items()}
        if shapes != reference:
            differing = sorted(set(shapes.items()) ^ set(reference.items()))[:3]
            raise BadInput(f"member {index} of {source} is not the architecture of member 0 (differs in {differing})")
    layers = [LayerTuple(name, plain_kind(per_member[0][name]), "independent",
                         torch.stack([kernels[name] for kernels in per_member])) for name in per_member[0]]
    return Ensemble(source, "deep-ensemble", k, layers)


# ---------------------------------------------------------------- live modules


def _check_types(module: nn.Module, label: str) -> None:
    """Every module with parameters of its own must be a kind diagnose reads: otherwise a ``BadInput`` naming it."""
    readable: list[str] = []
    for name, child in module.named_modules():
        if any(name.startswith(parent + ".") or parent == "" for parent in readable):
            continue
        if batch_layer(child) is not None or _is_tabm_layer(child):
            readable.append(name)
            continue
        if isinstance(child, (nn.Linear, nn.Conv2d, *VECTOR_TYPES)):
            continue
        if any(True for _ in child.parameters(recurse=False)):
            raise BadInput(f"layer {name!r} of {label} has type {type(child).__name__}, which diagnose cannot read: "
                           "expected Linear, Conv2d, BatchNorm, LayerNorm, torch-uncertainty BatchLinear/BatchConv2d "
                           "or TabM LinearBatchEnsemble")


def _is_tabm_layer(module: nn.Module) -> bool:
    own = {name for name, _ in module.named_parameters(recurse=False)}
    return {"weight", "r", "s"} <= own <= {"weight", "r", "s", "bias"}


def _project_layers(module: nn.Module) -> dict[str, torch.Tensor]:
    """This project's BE layers of a live module: {name: effective_weights()} (they know their rank and variant)."""
    return {name: layer.effective_weights().detach().double() for name, layer in module.named_modules()
            if batch_layer(layer) is not None and hasattr(layer, "effective_weights")}


def ensemble_from_modules(modules: nn.Module | Sequence[nn.Module], members: int | None = None,
                          source: str = "modules") -> Ensemble:
    """One live BatchEnsemble module, or k live modules of one architecture (a Deep Ensemble); this project's
    ``EnsembleModel`` too. The result can run the members on inputs (``function_space``)."""
    if isinstance(modules, EnsembleModel):
        return _project_ensemble(modules, source, members)
    modules = [modules] if isinstance(modules, nn.Module) else list(modules)
    for index, module in enumerate(modules):
        _check_types(module, f"{source}[{index}]" if len(modules) > 1 else source)
    if len(modules) > 1:
        ensemble = ensemble_from_state_dicts([module.state_dict() for module in modules], members, source)
        ensemble.runner = _deep_ensemble_runner(modules)
        return ensemble
    module = modules[0]
    own = _project_layers(module)
    state = {key: value for key, value in module.state_dict().items()
             if not any(key.startswith(prefix + ".") for prefix in own)}
    if own:
        k = next(iter(own.values())).shape[0]
        layers = [LayerTuple(name, "BatchEnsemble (ensemble-geometry)", "perturbed", weights)
                  for name, weights in own.items()]
        groups = _group(state)
        layers += _batch_layers(groups)
        layers += [LayerTuple(name, plain_kind(kernel), "shared", kernel.unsqueeze(0).expand(k, *kernel.shape).clone())
                   for name, kernel in plain_kernels(groups).items()]
        ensemble = Ensemble(source, "batchensemble", _check_members(k, members, source), layers)
    else:
        ensemble = ensemble_from_state_dict(state, members, source)
    ensemble.runner = _batch_ensemble_runner(module, ensemble.members)
    return ensemble


def _last_kernel_layer(module: nn.Module) -> nn.Module:
    """The head: the last kernel layer in registration order (its input = the penultimate features), a BatchEnsemble
    layer as a whole (not its slow-weight child, whose input is already scaled per member)."""
    heads: list[tuple[str, nn.Module]] = []
    for name, child in module.named_modules():
        if heads and batch_layer(heads[-1][1]) is not None and name.startswith(_child(heads[-1][0], "")):
            continue
        if batch_layer(child) is not None or _is_tabm_layer(child) or isinstance(child, (nn.Linear, nn.Conv2d)):
            heads.append((name, child))
    return heads[-1][1]


def _run_capturing_features(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    captured: list[torch.Tensor] = []
    handle = _last_kernel_layer(module).register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0]))
    try:
        logits = module(x)
    finally:
        handle.remove()
    return logits, captured[-1].flatten(1)


def _batch_ensemble_runner(module: nn.Module, members: int) -> Runner:
    """Runs a BatchEnsemble module in eval mode on a batch of B inputs. Output rows k·B are member-major
    (torch-uncertainty's models repeat the input in eval); a module that returns B rows did not repeat it, and is run
    again on the input repeated k times member-major."""
    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        module.eval()
        with torch.no_grad():
            logits, features = _run_capturing_features(module, x)
            if logits.shape[0] == x.shape[0]:
                logits, features = _run_capturing_features(module, x.repeat(members, *([1] * (x.dim() - 1))))
        if logits.shape[0] != members * x.shape[0]:
            raise BadInput(f"the module returned {logits.shape[0]} rows for {x.shape[0]} inputs: expected "
                           f"k·B = {members * x.shape[0]} member-major rows")
        return logits.view(members, x.shape[0], -1), features.view(members, x.shape[0], -1)
    return run


def _deep_ensemble_runner(modules: Sequence[nn.Module]) -> Runner:
    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = []
        for module in modules:
            module.eval()
            with torch.no_grad():
                outputs.append(_run_capturing_features(module, x))
        return torch.stack([o[0] for o in outputs]), torch.stack([o[1] for o in outputs])
    return run


def _project_ensemble(model: EnsembleModel, source: str, members: int | None = None,
                      seed: int = 0) -> Ensemble:
    """This project's model: ``member_weight_tuples`` (MC Dropout: k Bernoulli-mask samples of ``seed``)."""
    roles = {"batchensemble": "perturbed", "deep-ensemble": "independent", "mc-dropout": "sampled"}
    if model.method not in roles:
        raise BadInput(f"{source} is a {model.method} model (k=1): a diversity diagnosis needs an ensemble")
    weights = member_weight_tuples(model, torch.Generator().manual_seed(seed))
    k = _check_members(model.members, members, source)
    net = getattr(model, "net", None) or (model.template if model.mode == "vectorised" else model.nets[0])
    layers = []
    for name, tensor in weights.items():
        layer = net.get_submodule(name)
        role = "shared" if model.method == "batchensemble" and batch_layer(layer) is None else roles[model.method]
        layers.append(LayerTuple(name, type(layer).__name__, role, tensor.detach().double()))

    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model.eval()
        torch.manual_seed(seed)  # MC Dropout's test-time masks
        with torch.no_grad():
            return model.member_logits(x), model.member_features(x)
    return Ensemble(source, model.method, k, layers, run)


def ensemble_from_paths(paths: Sequence[str | Path], members: int | None = None) -> Ensemble:
    """A run folder, one BatchEnsemble state_dict file, or k state_dict files of a Deep Ensemble."""
    paths = [Path(path) for path in paths]
    if not paths:
        raise BadInput("no PATH given: expected a run folder, a state_dict file or k state_dict files")
    if len(paths) == 1 and paths[0].is_dir():
        if not folder.is_started(paths[0]):
            raise BadInput(f"{paths[0]} is a folder without {folder.CONFIG}: expected a run folder or state_dict files")
        config, model, _ = folder.load_run(paths[0], torch.device("cpu"))
        return _project_ensemble(model, str(paths[0]), members, config.seed)
    if len(paths) == 1:
        return ensemble_from_state_dict(read_state_dict(paths[0]), members, str(paths[0]))
    return ensemble_from_state_dicts([read_state_dict(path) for path in paths], members,
                                     f"{len(paths)} state_dicts ({paths[0].name}, ...)")


# ---------------------------------------------------------------- the diagnosis


def layer_rows(ensemble: Ensemble, starts: int = 1, max_iter: int = 100, certify: str = "auto",
               seed: int = 0) -> list[dict[str, Any]]:
    """Per layer and for the network: geometry, distance to the rank-1 BE set, codimension and certificate."""
    weights = ensemble.weights()
    geometry = diversity.weight_geometry(weights)
    distance = diversity.distance_to_be_sets(weights, [1], "channel-wise", starts=starts, max_iter=max_iter,
                                             seed=seed)
    rows = []
    codim = ambient = 0
    for layer in ensemble.layers:
        counted = kernel_row(layer.name, layer.weights.shape[1:], ensemble.members,
                             "shared" if layer.role == "shared" else "perturbed", route=certify, seed=seed)
        codim, ambient = codim + counted.counts.codim, ambient + counted.counts.ambient_dim
        rows.append({"layer": layer.name, "kind": layer.kind, "role": layer.role,
                     "shape": list(layer.weights.shape[1:]), **_measures(geometry[layer.name], distance[layer.name]),
                     "codim": counted.counts.codim, "ambient_dim": counted.counts.ambient_dim,
                     "codim_certified": counted.certified,
                     "certificate": counted.certificate.as_dict() if counted.certificate else None})
    network = {"layer": diversity.NETWORK, "kind": "all kernels", "role": ensemble.method,
               **_measures(geometry[diversity.NETWORK], distance[diversity.NETWORK]), "codim": codim,
               "ambient_dim": ambient, "codim_certified": all(row["codim_certified"] for row in rows)}
    return rows + [network]


def _measures(geometry: Mapping[str, Any], distance: Mapping[str, float]) -> dict[str, float]:
    return {"mean_cosine": geometry["mean_cosine"],
            "mean_relative_distance": geometry["mean_relative_distance"],
            "rank1_distance": distance["rank1/distance"], "rank1_relative_residual": distance["rank1/relative_residual"]}


def function_space(ensemble: Ensemble, images: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """MI, pairwise JSD, disagreement (``empirics.analysis.metrics.label_free_metrics``, natural log) and mean pairwise
    linear CKA of the members' penultimate features on ``images``."""
    if ensemble.runner is None:
        raise BadInput(f"{ensemble.source}: function-space diversity needs a model to run; a state_dict file has "
                       "none (give a run folder, or live modules to empirics.interop.diagnose.ensemble_from_modules)")
    logits, features = [], []
    for start in range(0, len(images), batch_size):
        batch_logits, batch_features = ensemble.runner(images[start:start + batch_size])
        logits.append(batch_logits.double())
        features.append(None if batch_features is None else batch_features.double())
    probs = torch.cat(logits, dim=1).softmax(-1)
    result = {key.split("/", 1)[1]: value for key, value in metrics.label_free_metrics(probs, "inputs").items()}
    if features[0] is not None:
        result["mean_cka"] = diversity.mean_off_diagonal(diversity.pairwise_cka(torch.cat(features, dim=1)))
    result["inputs"] = int(len(images))
    return result


def load_inputs(dataset: str, data_root: str | None = None, samples: int = DEFAULT_SAMPLES) -> torch.Tensor:
    """Inputs for the function-space measures: a dataset of ours (its test split's evaluation subset of ``samples``
    images, normalised as for training) or a tensor file (a (N, ...) tensor, or a dict with ``images``/``inputs``)."""
    if dataset in data.DATASETS:
        return data.load_split(dataset, "test", data.resolve_data_root(data_root), n_eval=samples)[0]
    path = Path(dataset)
    if not path.is_file():
        raise BadInput(f"--dataset {dataset!r} is neither one of {', '.join(data.DATASETS)} nor a tensor file")
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, dict):
        loaded = next((loaded[key] for key in ("images", "inputs", "x") if key in loaded), None)
    if not isinstance(loaded, torch.Tensor) or loaded.dim() < 2:
        raise BadInput(f"{path} holds no (N, ...) tensor: expected a tensor or a dict with 'images' or 'inputs'")
    return loaded[:samples].float()


def diagnose(ensemble: Ensemble, images: torch.Tensor | None = None, starts: int = 1, max_iter: int = 100,
             certify: str = "auto", seed: int = 0) -> dict[str, Any]:
    """The diagnosis payload: provenance, the ensemble's description, per-layer rows and function-space measures."""
    config = {"source": ensemble.source, "method": ensemble.method, "members": ensemble.members,
              "distance_fit": {"starts": starts, "max_iter": max_iter}, "certify": certify}
    return {"provenance": provenance(config, seed), "source": ensemble.source, "method": ensemble.method,
            "members": ensemble.members, "layers": layer_rows(ensemble, starts, max_iter, certify, seed),
            "function_space": None if images is None else function_space(ensemble, images)}


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(payload: Mapping[str, Any]) -> str:
    header = ["layer", "kind", "role", "cosine", "rel. distance", "dist. to rank-1 BE (rel.)",
              "codim", "certified"]
    rows = [[row["layer"], row["kind"], row["role"], *(_fmt(row[key]) for key in (
        "mean_cosine", "mean_relative_distance", "rank1_relative_residual", "codim")),
        "yes" if row["codim_certified"] else "no"] for row in payload["layers"]]
    lines = [f"# Diagnosis of {payload['source']}", "",
             f"{payload['method']}, k = {payload['members']} members. Means over member pairs; the distance to the "
             "rank-1 BatchEnsemble set is an ALS fit (an upper bound), relative to the tuple's norm; codim is that "
             "set's codimension in the layer's Deep-Ensemble space.", "", markdown_table(header, rows)]
    if payload["function_space"]:
        space = payload["function_space"]
        lines += ["", f"Function space on {space['inputs']} inputs: "
                  + ", ".join(f"{key} {_fmt(value)}" for key, value in space.items() if key != "inputs")]
    return "\n".join(lines) + "\n"


def figure(payload: Mapping[str, Any], stem: Path) -> list[Path]:
    """Per-layer weight cosine, relative distance and distance to the rank-1 BE set: ``stem``.png and .pdf."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in payload["layers"] if row["layer"] != diversity.NETWORK]
    index = range(len(rows))
    fig, axes = plt.subplots(3, 1, figsize=(max(6, 0.25 * len(rows)), 6), sharex=True)
    for axis, key, label in zip(axes, ("mean_cosine", "mean_relative_distance", "rank1_relative_residual"),
                                ("weight cosine", "relative distance", "distance to rank-1 BE\n(relative)")):
        axis.bar(index, [row[key] for row in rows], color=["C1" if row["role"] == "shared" else "C0" for row in rows])
        axis.set_ylabel(label)
    axes[-1].set_xticks(list(index), [row["layer"] for row in rows], rotation=90, fontsize=6)
    axes[0].set_title(f"{payload['method']} (k = {payload['members']}): {Path(payload['source']).name} "
                      "(orange: a layer shared by all members)")
    fig.tight_layout()
    paths = [stem.with_suffix(suffix) for suffix in (".png", ".pdf")]
    for path in paths:
        fig.savefig(path)
    plt.close(fig)
    return paths


def write_outputs(payload: Mapping[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "diagnose.json", payload)
    atomic_write_text(out / "diagnose.md", markdown(payload))
    return [out / "diagnose.json", out / "diagnose.md", *figure(payload, out / "diagnose")]


# ---------------------------------------------------------------- command line


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("diagnose", help="diagnose any ensemble: weight diversity, distance to the "
                                   "rank-1 BE set, codimension, function-space diversity",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="a run folder, a BatchEnsemble state_dict file, or k state_dict files (Deep Ensemble)")
    parser.add_argument("--members", type=int, help="k, checked against what the files hold")
    parser.add_argument("--dataset", help=f"inputs for function-space diversity: one of {', '.join(data.DATASETS)} "
                        "(test split) or a tensor file")
    parser.add_argument("--data-root", help="data folder (default $EGEO_DATA_ROOT, else the user cache)")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="inputs used (default %(default)s)")
    parser.add_argument("--starts", type=int, default=1, help="ALS starts of the distance fit (default 1)")
    parser.add_argument("--max-iter", type=int, default=100, help="ALS sweeps of the distance fit (default 100)")
    parser.add_argument("--certify", choices=("auto", "none"), default="auto",
                        help="certify each layer's codimension by exact modular rank (default) or use the closed form")
    parser.add_argument("--out", type=Path, help=f"output folder (default {RESULTS_DIR}/<name of PATH>)")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    if args.samples < 1 or args.starts < 1 or args.max_iter < 1:
        raise BadInput(f"--samples {args.samples}, --starts {args.starts}, --max-iter {args.max_iter}: each must "
                       "be an integer >= 1")
    ensemble = ensemble_from_paths(args.paths, args.members)
    if args.dataset and ensemble.runner is None:
        raise BadInput(f"--dataset needs a model to run, and {ensemble.source} holds only weights: give a run folder "
                       "here, or live modules to empirics.interop.diagnose.ensemble_from_modules in Python")
    images = load_inputs(args.dataset, args.data_root, args.samples) if args.dataset else None
    payload = diagnose(ensemble, images, args.starts, args.max_iter, args.certify)
    out = args.out or RESULTS_DIR / args.paths[0].stem
    written = write_outputs(payload, out)
    print(markdown(payload))
    print("wrote " + ", ".join(str(path) for path in written))
    return 0
