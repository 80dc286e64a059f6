"""empirics.interop.diagnose: member tuples read from torch-uncertainty's own layers (state_dicts and live modules),
TabM's layout, Deep Ensembles of k state_dicts and this project's models; the CLI's acceptance cases; unknown layers."""
from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from empirics.analysis import metrics
from empirics.analysis.diversity import mean_off_diagonal, pairwise_cka
from empirics.cli import main
from empirics.interop.diagnose import (ensemble_from_modules, ensemble_from_state_dict, ensemble_from_state_dicts,
                                       function_space, layer_rows, rank_one_members)
from empirics.models.ensembles import ModelSpec, build_model, member_weight_tuples
from empirics.models.layers import BatchEnsembleConv2d
from empirics.models.networks import LayerFactory
from infra.cli import run_cli
from infra.errors import BadInput

K = 4
EXACT = 1e-12  # float64 rounding of a few products and sums: 1e-12 is ~1e4 ulps, far below any real difference


def _member_rows(x: torch.Tensor, members: int) -> torch.Tensor:
    return x.repeat(members, *([1] * (x.dim() - 1)))


def test_torch_uncertainty_batchconv2d_members_are_its_forward(torch_uncertainty, generator):
    """Member i of a BatchConv2d read by diagnose, applied as a plain conv plus bias_i, equals torch-uncertainty's
    own forward on member i's rows (float64); the same kernels come out of our BatchEnsembleConv2d with
    fast_factors[1][:, 0] = r_group (input scale) and fast_factors[0][:, 0] = s_group (output scale)."""
    torch.manual_seed(1)
    layer = torch_uncertainty.BatchConv2d(3, 5, 3, num_estimators=K, padding=1).double()
    ensemble = ensemble_from_state_dict(layer.state_dict())
    kernels = ensemble.layers[0].weights
    x = torch.randn(2, 3, 6, 6, generator=generator, dtype=torch.float64)
    theirs = layer(_member_rows(x, K)).view(K, 2, 5, 6, 6)
    for member in range(K):
        ours = F.conv2d(x, kernels[member], padding=1) + layer.bias[member].view(1, -1, 1, 1)
        torch.testing.assert_close(ours, theirs[member], rtol=0, atol=EXACT)
    mirror = BatchEnsembleConv2d(3, 5, 3, K, padding=1).double()
    with torch.no_grad():
        mirror.weight.copy_(layer.conv.weight)
        mirror.fast_factors[1][:, 0].copy_(layer.r_group)
        mirror.fast_factors[0][:, 0].copy_(layer.s_group)
    torch.testing.assert_close(mirror.effective_weights(), kernels, rtol=0, atol=EXACT)


def test_tabm_linear_batch_ensemble_layout_is_read():
    """TabM's LinearBatchEnsemble keys (weight (out, in), r (k, in), s (k, out), bias (k, out); its forward
    ((x ∘ r_i) Wᵀ) ∘ s_i + b_i): member i's kernel is W ∘ s_i r_iᵀ, checked against that forward written out."""
    torch.manual_seed(2)
    weight, r, s, bias = torch.randn(5, 3), torch.randn(K, 3), torch.randn(K, 5), torch.randn(K, 5)
    ensemble = ensemble_from_state_dict({"block.weight": weight, "block.r": r, "block.s": s, "block.bias": bias})
    assert ensemble.layers[0].kind == "LinearBatchEnsemble (TabM)" and ensemble.members == K
    x = torch.randn(7, 3, dtype=torch.float64)
    for member in range(K):
        forward = ((x * r[member].double()) @ weight.double().T) * s[member].double()
        torch.testing.assert_close(x @ ensemble.layers[0].weights[member].T, forward, rtol=0, atol=EXACT)


def test_rank_one_members_is_w_times_s_r_transposed():
    """rank_one_members(W, r, s)[i] = W ∘ s_i r_iᵀ, broadcast over the spatial modes of a conv kernel."""
    torch.manual_seed(3)
    weight, r, s = (torch.randn(*shape, dtype=torch.float64) for shape in ((4, 3, 2, 2), (2, 3), (2, 4)))
    expected = torch.stack([weight * (s[i][:, None] * r[i][None, :])[..., None, None] for i in range(2)])
    torch.testing.assert_close(rank_one_members(weight, r, s), expected, rtol=0, atol=EXACT)


def _cosines(kernels: torch.Tensor) -> float:
    flat = kernels.reshape(kernels.shape[0], -1)
    pairs = [F.cosine_similarity(flat[i], flat[j], dim=0) for i, j in itertools.permutations(range(len(flat)), 2)]
    return float(torch.stack(pairs).mean())


@pytest.mark.slow
def test_cli_on_torch_uncertainty_batched_resnet_state_dict(torch_uncertainty, tmp_path, capsys):
    """Acceptance: ``diagnose FILE --members 4`` on torch-uncertainty's batched_resnet(18, cifar, k=4) state_dict
    (width ×0.25 to keep CI fast) exits 0; every BE layer's distance to the rank-1 set is below 1e-6 relative (an
    exact BE tuple: the fit reaches rounding, ~1e-16); each layer's mean cosine equals a direct computation from
    the file's r_group, s_group and slow weight; JSON, markdown, PNG and PDF are written."""
    torch.manual_seed(4)
    model = torch_uncertainty.batched_resnet(in_channels=3, num_classes=10, arch=18, num_estimators=K,
                                             style="cifar", width_multiplier=0.25)
    path = tmp_path / "be.pt"
    torch.save(model.state_dict(), path)
    assert main(["diagnose", str(path), "--members", str(K), "--out", str(tmp_path / "out")]) == 0
    payload = json.loads((tmp_path / "out" / "diagnose.json").read_text())
    rows = {row["layer"]: row for row in payload["layers"]}
    perturbed = [row for row in payload["layers"] if row["role"] == "perturbed"]
    assert len(perturbed) == 18 and all(row["rank1_relative_residual"] < 1e-6 for row in perturbed)
    assert all(row["codim_certified"] for row in payload["layers"])
    state = model.state_dict()
    for name in ("conv1", "layer3.0.conv2", "linear"):
        inner = "linear" if name == "linear" else "conv"
        weight, r, s = (state[f"{name}.{key}"].double() for key in (f"{inner}.weight", "r_group", "s_group"))
        view = (K, -1, 1) + (1, 1) * (weight.dim() == 4)
        direct = weight * s.view(*view) * r.view(K, 1, -1, *([1] * (weight.dim() - 2)))
        assert rows[name]["mean_cosine"] == pytest.approx(_cosines(direct), abs=EXACT)
    assert {row["role"] for row in payload["layers"][:-1]} == {"perturbed", "shared"}
    for suffix in ("json", "md", "png", "pdf"):
        assert (tmp_path / "out" / f"diagnose.{suffix}").stat().st_size > 0
    assert "| linear | BatchLinear (torch-uncertainty) | perturbed |" in capsys.readouterr().out


def _small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def test_cli_on_deep_ensemble_of_independent_nets_finds_large_distances(tmp_path):
    """k = 4 independently initialised nets, one state_dict file each: a Deep Ensemble whose layers lie far from the
    rank-1 BE set. Random independent kernels keep most of their norm off the set: every layer's relative residual
    exceeds 0.3 (an exact BE tuple gives < 1e-6, see above; measured here 0.5–0.8)."""
    torch.manual_seed(5)
    paths = []
    for member in range(K):
        paths.append(tmp_path / f"member{member}.pt")
        torch.save(_small_cnn().state_dict(), paths[-1])
    assert main(["diagnose", *map(str, paths), "--out", str(tmp_path / "out"), "--certify", "none"]) == 0
    payload = json.loads((tmp_path / "out" / "diagnose.json").read_text())
    assert payload["method"] == "deep-ensemble" and payload["members"] == K
    assert [row["layer"] for row in payload["layers"]] == ["0", "3", "7", "network"]
    assert all(row["rank1_relative_residual"] > 0.3 for row in payload["layers"])
    assert all(row["role"] == "independent" for row in payload["layers"][:-1])


def test_cli_unknown_layer_type_exits_2_naming_it(tmp_path, capsys):
    """A state_dict with a Conv1d kernel (3-D weight: not a kernel diagnose reads): exit 2, one line naming the layer
    and its parameters; a live module names the layer and its class."""
    torch.manual_seed(6)
    state = {**_small_cnn().state_dict(), "extra.weight": torch.randn(4, 3, 5)}
    for member in range(2):
        torch.save(state, tmp_path / f"odd{member}.pt")
    with pytest.raises(SystemExit) as stopped:
        run_cli(main, ["diagnose", str(tmp_path / "odd0.pt"), str(tmp_path / "odd1.pt")])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "layer 'extra' of unknown type (parameters weight (4, 3, 5))" in error
    with pytest.raises(BadInput, match="layer '1' of modules has type Conv1d, which diagnose cannot read"):
        ensemble_from_modules(nn.Sequential(nn.Linear(3, 3), nn.Conv1d(3, 3, 1)))


def test_state_dict_without_batch_layers_is_not_an_ensemble():
    """One plain state_dict is one model: a BadInput pointing to k files; --members must match the file's k."""
    with pytest.raises(BadInput, match="no BatchEnsemble layer .* give k >= 2 state_dicts for a Deep Ensemble"):
        ensemble_from_state_dict(_small_cnn().state_dict())
    with pytest.raises(BadInput, match="--members 3 does not match .* k=4"):
        ensemble_from_state_dicts([_small_cnn().state_dict() for _ in range(K)], members=3)


def test_live_torch_uncertainty_module_function_space_equals_direct_computation(torch_uncertainty, generator):
    """A live batched_resnet (eval repeats the input k times): MI, JSD, disagreement equal empirics.analysis.metrics on
    its own output split member-major, and CKA equals pairwise_cka on the head's inputs captured directly."""
    torch.manual_seed(7)
    model = torch_uncertainty.batched_resnet(in_channels=3, num_classes=10, arch=18, num_estimators=K,
                                             style="cifar", width_multiplier=0.125).eval()
    images = torch.randn(6, 3, 16, 16, generator=generator)
    ensemble = ensemble_from_modules(model)
    measured = function_space(ensemble, images, batch_size=4)
    captured = []
    handle = model.linear.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0]))
    with torch.no_grad():
        probs = model(images).double().softmax(-1).view(K, 6, 10)
    handle.remove()
    expected = metrics.label_free_metrics(probs, "x")
    for key in ("mutual_information", "pairwise_jsd", "disagreement"):
        assert measured[key] == pytest.approx(expected[f"x/{key}"], abs=1e-9)
    cka = mean_off_diagonal(pairwise_cka(captured[0].double().view(K, 6, -1)))
    assert measured["mean_cka"] == pytest.approx(cka, abs=1e-9)


def test_project_models_read_through_member_weight_tuples():
    """This project's BE model (live): the tuples are member_weight_tuples', BE layers perturbed and the plain
    shortcut shared; a Deep Ensemble's rows are independent and lie off the rank-1 set."""
    torch.manual_seed(8)
    factory = LayerFactory(method="batchensemble", members=K)
    spec = ModelSpec(arch="resnet18", in_shape=(1, 8, 8), width_mult=0.0625, factory=factory)
    model = build_model(spec)
    ensemble = ensemble_from_modules(model)
    reference = member_weight_tuples(model)
    assert [layer.name for layer in ensemble.layers] == list(reference)
    for layer in ensemble.layers:
        torch.testing.assert_close(layer.weights, reference[layer.name].double(), rtol=0, atol=0)
        assert layer.role == ("shared" if "shortcut" in layer.name else "perturbed")
    deep = build_model(ModelSpec(arch="mlp", in_shape=(1, 4, 4), widths=(6,),
                                 factory=LayerFactory(method="deep-ensemble", members=K)))
    rows = layer_rows(ensemble_from_modules(deep), certify="none")
    assert all(row["role"] == "independent" and row["rank1_relative_residual"] > 0.1 for row in rows[:-1])


@pytest.mark.slow
def test_cli_on_our_run_folder_with_dataset_and_tensor_file(tiny_mnist_root, tmp_path):
    """A trained BE run folder with --dataset mnist: the layer rows are those of member_weight_tuples, and the
    function-space measures equal empirics.analysis.metrics on the run's own member probabilities over the same inputs;
    a tensor file of the same inputs gives the same numbers."""
    from empirics.data.datasets import load_split
    from empirics.runs.config import Config
    from empirics.runs.folder import load_run
    from empirics.runs.train import train

    config = Config.from_dict({"dataset": "mnist", "arch": "mlp", "widths": [8], "method": "batchensemble",
                               "members": K, "epochs": 1, "n_train": 48, "patience": 0, "threads": 1,
                               "data_root": str(tiny_mnist_root), "shift_families": ["rotate"]})
    train(config, tmp_path / "run")
    images = load_split("mnist", "test", tiny_mnist_root, n_eval=16)[0]
    torch.save(images, tmp_path / "inputs.pt")
    payloads = []
    for dataset in ("mnist", str(tmp_path / "inputs.pt")):
        out = tmp_path / f"out-{len(payloads)}"
        assert main(["diagnose", str(tmp_path / "run"), "--dataset", dataset, "--data-root", str(tiny_mnist_root),
                     "--samples", "16", "--out", str(out), "--certify", "none"]) == 0
        payloads.append(json.loads((out / "diagnose.json").read_text()))
    assert payloads[0]["function_space"] == payloads[1]["function_space"]
    _, model, _ = load_run(tmp_path / "run")
    with torch.no_grad():
        probs = model.member_logits(images).double().softmax(-1)
    expected = metrics.label_free_metrics(probs, "x")
    for key in ("mutual_information", "pairwise_jsd", "disagreement"):
        assert payloads[0]["function_space"][key] == pytest.approx(expected[f"x/{key}"], abs=1e-9)
    assert [row["layer"] for row in payloads[0]["layers"]] == [*member_weight_tuples(model), "network"]


def test_dataset_with_a_weights_only_file_is_a_clear_error(torch_uncertainty, tmp_path):
    """A torch-uncertainty state_dict cannot be run: --dataset is refused before any measurement, naming the file."""
    torch.save(nn.Sequential(torch_uncertainty.BatchLinear(3, 2, num_estimators=K)).state_dict(), tmp_path / "be.pt")
    with pytest.raises(BadInput, match=r"--dataset needs a model to run, and .*be\.pt holds only weights"):
        main(["diagnose", str(tmp_path / "be.pt"), "--dataset", "mnist"])
