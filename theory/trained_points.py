"""Theory at trained points of the paper-mnist MLP recipe (784-64-32-16-10, k = 4, rank-1 BE): the second-order
diversity link along training, and the function-space codimension of the network's head.

Reads run folders written by ``python -m empirics train`` (checkpoints are not committed: ``theory results --only
trained_points`` needs the runs of ``TRAINED_RUNS`` under ``results/theory/trained``; the JSON it writes, and each
run's config.json and metrics.json, are committed). The runs (about 1–2 min each on one thread):

    COMMON="arch=mlp widths=[64,32,16] n_train=10000 n_eval=1000 shift_families=[rotate] threads=1 seed=0 patience=0"
    python -m empirics train --set $COMMON method=batchensemble epochs=E --run-dir results/theory/trained/be-r1-eE
        (E = 1, 3, 8)
    python -m empirics train --set $COMMON method=batchensemble init=random_sign epochs=3 \
        --run-dir results/theory/trained/be-sign-e3

Function space at a trained point (what is computed, exactly): the full 784-64-32-16-10 ensemble has 212,072 DE
parameters, beyond a dense Jacobian rank here. We take the **head** — the last two weight layers 32-16-10 — with the
first two layers frozen at their trained values, so each member's input is its own trained 32-dim feature of N test
images. fdim_BE = rank ∂(all members' logits)/∂(head BE parameters: W, fast factors, per-member biases), fdim_DE =
Σ_i rank ∂(member i's logits)/∂(member i's dense head weights and biases) at the same point (the members' effective
weights W ∘ r_i s_iᵀ), both float SVD ranks with their singular-value gaps; functional codim = fdim_DE − fdim_BE,
beside the parameter codim of the head and the proved ReLU bound dim Im Φ − kH.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.func import jacrev

from theory import dimension
from theory.batchensemble import BatchEnsembleSpec, member_weights
from theory.diversity_theory import BEMLP, member_logits, second_order
from theory.exact_rank import float_rank
from theory.functional import forward

TRAINED_RUNS = ("be-r1-e1", "be-r1-e3", "be-r1-e8", "be-sign-e3")
HEAD_LAYERS = 2  # the last two weight layers (32-16-10)
LINK_IMAGES = 500  # test images for the diversity link
FDIM_IMAGES = 120  # test images for the head's functional dimension: 120·10 outputs per member > 698 parameters


def bemlp_from_model(model) -> BEMLP:
    """The theory's view of an ``empirics`` rank-1 BE MLP (hidden layers then head), float64."""
    layers = [*model.net.hidden, model.net.head]
    as64 = lambda t: t.detach().to(torch.float64)  # noqa: E731
    return BEMLP(tuple(as64(layer.weight) for layer in layers),
                 tuple((as64(layer.fast_factors[0]), as64(layer.fast_factors[1])) for layer in layers),
                 tuple(as64(layer.bias) for layer in layers))


def head_and_features(net: BEMLP, images: torch.Tensor, head_layers: int = HEAD_LAYERS) -> tuple[BEMLP, torch.Tensor]:
    """The last ``head_layers`` layers as a BEMLP and each member's input to them, (k, N, d)."""
    cut = len(net.weights) - head_layers
    body = BEMLP(net.weights[:cut], net.factors[:cut], net.biases[:cut], net.activation)
    features = torch.relu(member_logits(body, images.flatten(1).to(torch.float64)))
    return BEMLP(net.weights[cut:], net.factors[cut:], net.biases[cut:], net.activation), features


def head_functional_dimension(head: BEMLP, features: torch.Tensor) -> dict:
    """fdim_BE, fdim_DE at the members' weights, their gaps, and the head's parameter counts (module docstring)."""
    k = head.members
    be_params = (*head.weights, *[f for pair in head.factors for f in pair], *head.biases)
    count = len(head.weights)

    def be_outputs(*params):
        weights, factors = params[:count], params[count:3 * count]
        net = BEMLP(weights, tuple(zip(factors[0::2], factors[1::2])), params[3 * count:], head.activation)
        return member_logits(net, features).reshape(-1)

    be_jac = torch.cat([j.reshape(j.shape[0], -1) for j in jacrev(be_outputs, argnums=tuple(range(len(be_params))))(
        *be_params)], dim=1)
    be = float_rank(be_jac.numpy())
    members = [member_weights(BatchEnsembleSpec(tuple(w.shape), k), w, pair) for w, pair in zip(head.weights, head.factors)]
    de_ranks, de_gaps = [], []
    for i in range(k):
        params = (*[m[i] for m in members], *[b[i] for b in head.biases])

        def de_outputs(*theta, i=i):
            return forward(theta[:count], theta[count:], features[i], head.activation).reshape(-1)

        jac = torch.cat([j.reshape(j.shape[0], -1) for j in jacrev(de_outputs, argnums=tuple(range(len(params))))(
            *params)], dim=1)
        rank = float_rank(jac.numpy())
        de_ranks.append(rank.rank)
        de_gaps.append(rank.gap)
    specs = [BatchEnsembleSpec(tuple(w.shape), k) for w in head.weights]
    image_dim = sum(dimension.image_dim(s) + k * s.kernel_shape[0] for s in specs)
    per_member = sum(s.kernel_size + s.kernel_shape[0] for s in specs)
    hidden = sum(s.kernel_shape[0] for s in specs[:-1])
    return {"widths": [specs[0].kernel_shape[1]] + [s.kernel_shape[0] for s in specs], "members": k,
            "images": features.shape[1], "fdim_be": be.rank, "be_gap": be.gap, "fdim_de": sum(de_ranks),
            "de_gap": min(de_gaps), "functional_codim": sum(de_ranks) - be.rank, "de_dim": k * per_member,
            "be_image_dim": image_dim, "parameter_codim": k * per_member - image_dim,
            "relu_bound_be": image_dim - k * hidden, "relu_bound_de": k * (per_member - hidden)}


def analyse_network(net: BEMLP, images: torch.Tensor) -> dict:
    """Diversity link on ``LINK_IMAGES`` images and the head's functional dimension on ``FDIM_IMAGES``."""
    link = second_order(net, images[:LINK_IMAGES].flatten(1))
    head, features = head_and_features(net, images[:FDIM_IMAGES])
    return {"link": link.as_dict(), "head_fdim": head_functional_dimension(head, features)}


def trained_results(runs_dir: Path) -> dict:
    """Rows for the init point and the trained checkpoint of every run in ``TRAINED_RUNS`` (empirics imported here:
    the maths above does not depend on it)."""
    from empirics.data import datasets as data
    from empirics.models.ensembles import build_model
    from empirics.runs.folder import load_run
    from empirics.runs.tasks import data_root

    rows = []
    for name in TRAINED_RUNS:
        config, model, _ = load_run(runs_dir / name, torch.device("cpu"))
        images, _ = data.load_split(config.dataset, "test", data_root(config), n_eval=LINK_IMAGES)
        torch.manual_seed(config.seed)
        init = build_model(config.model_spec()).eval()  # the run's own initial point (train seeds the same way)
        with torch.no_grad():
            check = (member_logits(bemlp_from_model(model), images.flatten(1).double()).float()
                     - model.member_logits(images)).abs().max()
        for stage, which, epochs in (("init", init, 0), ("trained", model, config.epochs)):
            rows.append({"run": name, "stage": stage, "epochs": epochs, "init": config.init,
                         "init_std": config.init_std, "forward_check_max_abs": float(check),
                         **analyse_network(bemlp_from_model(which), images)})
    unique = {(r["run"] if r["stage"] == "trained" else f"init-{r['init']}"): r for r in rows}
    return {"runs": list(TRAINED_RUNS), "link_images": LINK_IMAGES, "fdim_images": FDIM_IMAGES,
            "rows": list(unique.values()), "note": "test images of the runs' n_eval subset; float64 recomputation"}
