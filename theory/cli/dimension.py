"""``python -m theory dim`` (one layer's counts and certificate) and ``python -m theory network`` (a whole network).

    python -m theory dim --layer dense --fan-out 512 --fan-in 512 --members 4 --rank 1 --json
    python -m theory network --arch resnet18-cifar --in-channels 1 --members 4

Before certifying, the route's memory and time are estimated (``theory.certificate.estimate_cost``): past
``--max-memory-gb`` / ``--max-minutes`` the default route (``auto``) reports the closed form (``--route none``) and
says why on stderr, and an explicitly requested route is refused with a one-line message naming ``--route none``.
A long certification announces its estimate; ``network`` shows a progress bar over the layers.
"""
from __future__ import annotations

import sys

from infra.cli import add_output_options, emit_json
from infra.errors import BadInput, require_int_in_range
from theory import dimension
from theory.batchensemble import DENSE_VARIANTS, VARIANTS, BatchEnsembleSpec
from theory.certificate import (MEMORY_LIMIT_BYTES, ROUTES, TIME_LIMIT_S, CostLimits, certify, closed_form_note,
                                estimate_cost, planned_route)
from theory.network import ARCHS, attention_roles, build_arch, network_counts

ANNOUNCE_AFTER_S = 10.0  # a certification estimated to take longer says so on stderr before it starts


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(cell).rjust(width) if index else str(cell).ljust(width)  # noqa: E731
                                   for index, (cell, width) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(row) for row in rows])


def layer_spec(args) -> BatchEnsembleSpec:
    """Validate the ``dim`` arguments (one line naming the bad value on failure) and build the spec."""
    out = require_int_in_range("--fan-out", args.fan_out, 1)
    fan_in = require_int_in_range("--fan-in", args.fan_in, 1)
    members = require_int_in_range("--members", args.members, 1)
    if args.layer == "dense":
        if args.kernel is not None:
            raise BadInput(f"--kernel {' '.join(args.kernel)} is not valid for --layer dense: omit it or use --layer conv")
        shape: tuple[int, ...] = (out, fan_in)
        accepted = DENSE_VARIANTS
    else:
        if args.kernel is None:
            raise BadInput("--kernel is missing: --layer conv needs --kernel H W (integers >= 1)")
        if len(args.kernel) != 2:
            raise BadInput(f"--kernel {' '.join(args.kernel)} is not valid: expected two integers H W >= 1")
        shape = (out, fan_in, *(require_int_in_range(f"--kernel {name}", value, 1)
                                for name, value in zip(("H", "W"), args.kernel)))
        accepted = VARIANTS
    if args.variant not in accepted:
        raise BadInput(f"--variant {args.variant!r} is unknown for --layer {args.layer}: expected one of "
                       f"{', '.join(accepted)}")
    top = BatchEnsembleSpec(shape, members, 1, args.variant).max_rank
    rank = require_int_in_range("--rank", args.rank, 1, top)
    return BatchEnsembleSpec(shape, members, rank, args.variant)


def cost_limits(args) -> CostLimits:
    """``--max-memory-gb`` and ``--max-minutes`` as the limits a certification is estimated against."""
    memory = _positive_number("--max-memory-gb", args.max_memory_gb)
    minutes = _positive_number("--max-minutes", args.max_minutes)
    return CostLimits(memory * 2**30, minutes * 60)


def _positive_number(name: str, value: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number > 0 or number == float("inf"):
        raise BadInput(f"{name}={value!r} is not valid: expected a number > 0")
    return number


def _announce(spec: BatchEnsembleSpec, route: str, limits: CostLimits) -> None:
    """On stderr, before a certification estimated to take more than a few seconds: its route and cost."""
    chosen, _ = planned_route(spec, route, limits)
    cost = estimate_cost(spec, chosen)
    if cost.seconds > ANNOUNCE_AFTER_S:
        print(f"certifying by the {chosen} route: estimated {cost.describe()} (--route none gives "
              f"{closed_form_note(spec)} at once)", file=sys.stderr)


def run_dim(args) -> int:
    spec = layer_spec(args)
    limits = cost_limits(args)
    counts = dimension.layer_counts(spec)
    _announce(spec, args.route, limits)
    certificate = certify(spec, args.route, args.seed, limits)
    if certificate.details.get("reason"):
        print(f"note: {certificate.details['reason']}", file=sys.stderr)
    payload = {"layer": args.layer, "kernel_shape": list(spec.kernel_shape), "members": spec.members,
               "rank": spec.rank, "variant": spec.variant, **counts.as_dict(),
               "upper_bound": dimension.upper_bound(spec), "certificate": certificate.to_json(),
               "certificate_details": certificate.as_dict()}
    emit_json(args, payload, args.seed)
    if args.json:
        return 0
    rows = [[key, f"{payload[key]:,}" if isinstance(payload[key], int) and not isinstance(payload[key], bool)
             else str(payload[key])] for key in ("ambient_dim", "image_dim", "codim", "params", "redundancy", "fills")]
    rows.append(["certificate", f"{certificate.status} (lower {certificate.lower:,}, upper {certificate.upper:,}, "
                                f"{certificate.route}, {certificate.seconds:.2f} s)"])
    print(f"{args.layer} {'x'.join(map(str, spec.kernel_shape))}, k = {spec.members}, r = {spec.rank}, {spec.variant}")
    print(_table(rows, ["quantity", "value"]))
    if not counts.closed_form:
        print("note: no closed form for this variant at rank >= 2; image_dim is the proved upper bound")
    return 0


VIT_FLAGS = ("image_size", "patch_size", "width", "depth", "heads", "mlp_ratio")


def _vit_options(args) -> dict:
    """The ViT shape flags that were given (``--image-size`` … ``--mlp-ratio``, ``--pooling``); an error off --arch vit."""
    given = {name: getattr(args, name) for name in VIT_FLAGS if getattr(args, name) is not None}
    if args.arch != "vit":
        if given or args.be_scope != "all" or args.layernorm != "shared" or args.pooling != "cls":
            raise BadInput(f"the ViT options are only valid for --arch vit (got --arch {args.arch})")
        return {}
    options = {name: require_int_in_range(f"--{name.replace('_', '-')}", value, 1) for name, value in given.items()}
    return {**options, "pooling": args.pooling}


def run_network(args) -> int:
    members = require_int_in_range("--members", args.members, 1)
    widths = [require_int_in_range("--widths", width, 1) for width in args.widths] if args.widths else None
    if widths is not None and args.arch != "mlp":
        raise BadInput(f"--widths is only valid for --arch mlp (got --arch {args.arch})")
    channels = require_int_in_range("--in-channels", args.in_channels, 1) if args.in_channels is not None else None
    if channels is not None and args.arch == "mlp":
        raise BadInput("--in-channels is not valid for --arch mlp: the input width is the first of --widths")
    classes = require_int_in_range("--num-classes", args.num_classes, 1) if args.num_classes is not None else None
    vit_options = _vit_options(args)
    model = build_arch(args.arch, channels, classes, widths, **vit_options)
    transformer = {}
    if args.arch == "vit":
        roles = attention_roles(model) if args.be_scope == "mlp" else {}
        transformer = {"roles": roles, "layernorm": args.layernorm, "embeddings": "shared"}
    counts = network_counts(model, members, rank=require_int_in_range("--rank", args.rank, 1), bias=args.bias,
                            norm=args.norm, shortcuts=args.shortcuts, certify_route=args.route, seed=args.seed,
                            limits=cost_limits(args), **transformer)
    for row in counts.rows:
        if row.certificate is not None and row.certificate.details.get("reason"):
            print(f"note: {row.name}: {row.certificate.details['reason']}", file=sys.stderr)
    emit_json(args, {"arch": args.arch, **counts.as_dict()}, args.seed)
    if args.json:
        return 0
    rows = [[row.name or "(root)", row.kind, "x".join(map(str, row.shape)), row.role, f"{row.counts.ambient_dim:,}",
             f"{row.counts.params:,}", f"{row.counts.image_dim:,}", f"{row.counts.codim:,}",
             f"{row.counts.redundancy:,}", "yes" if row.certified else "NO"] for row in counts.rows]
    totals = counts.totals
    rows.append(["TOTAL", "", "", "", f"{totals.ambient_dim:,}", f"{totals.params:,}", f"{totals.image_dim:,}",
                 f"{totals.codim:,}", f"{totals.redundancy:,}", "yes" if counts.certified else "NO"])
    print(_table(rows, ["layer", "kind", "shape", "role", "DE dim", "BE params", "BE image dim", "codim",
                        "redundancy", "certified"]))
    print(f"\n{args.arch}, k = {members}: BE reaches {counts.be_image_dim:,} of {counts.de_dim:,} Deep-Ensemble "
          f"dimensions ({100 * counts.fraction_reached:.4f}%); codim {counts.codim:,}; totals "
          f"{'certified' if counts.certified else 'NOT certified'}")
    return 0


def register(subparsers) -> None:
    dim = subparsers.add_parser("dim", help="counts and certificate of one BatchEnsemble layer")
    dim.add_argument("--layer", choices=("dense", "conv"), required=True)
    dim.add_argument("--fan-out", required=True, help="output features / channels (m)")
    dim.add_argument("--fan-in", required=True, help="input features / channels (n)")
    dim.add_argument("--kernel", nargs="+", metavar="H W", help="spatial kernel size H W (conv only)")
    dim.add_argument("--members", required=True, help="ensemble size k >= 1")
    dim.add_argument("--rank", default="1", help="BatchEnsemble rank r, 1..min(m, n) (default 1)")
    dim.add_argument("--variant", default="channel-wise", help=f"one of {', '.join(VARIANTS)}")
    dim.add_argument("--route", default="auto", choices=ROUTES, help="certificate route (default: toric for r = 1)")
    dim.add_argument("--seed", type=int, default=0, help="seed of the random integer point (modular routes)")
    _add_limit_options(dim)
    add_output_options(dim)
    dim.set_defaults(handler=run_dim)

    network = subparsers.add_parser("network", help="per-layer and total counts of a whole network")
    network.add_argument("--arch", choices=ARCHS, required=True)
    network.add_argument("--widths", nargs="+", help="MLP widths, input first (default 784 400 400 10)")
    network.add_argument("--members", required=True, help="ensemble size k >= 1")
    network.add_argument("--in-channels", help="input channels of the ResNets (default 3)")
    network.add_argument("--num-classes", help="output classes (default 1000 for resnet18, else 10)")
    network.add_argument("--rank", default="1", help="BatchEnsemble rank (clamped per layer to its maximum)")
    network.add_argument("--bias", choices=("per-member", "shared"), default="per-member")
    network.add_argument("--norm", choices=("shared", "per-member"), default="shared",
                         help="BatchNorm affine parameters (torch-uncertainty: shared)")
    network.add_argument("--shortcuts", choices=("shared", "perturbed"), default="shared",
                         help="1×1 shortcut convs (torch-uncertainty: plain, i.e. shared)")
    network.add_argument("--route", default="auto", choices=ROUTES)
    network.add_argument("--seed", type=int, default=0)
    _add_limit_options(network)
    add_output_options(network)
    vit_group = network.add_argument_group("--arch vit (each projection Q, K, V, O is one dense layer)")
    for flag, meaning in (("image-size", "image side, pixels (default 28)"), ("patch-size", "patch side p (default 7)"),
                          ("width", "token width d (default 64)"), ("depth", "transformer blocks (default 4)"),
                          ("heads", "attention heads (default 4)"), ("mlp-ratio", "MLP hidden = ratio · d (default 2)")):
        vit_group.add_argument(f"--{flag}", help=meaning)
    vit_group.add_argument("--pooling", choices=("cls", "mean"), default="cls", help="class token or mean pooling")
    vit_group.add_argument("--be-scope", choices=("all", "mlp"), default="all",
                           help="'mlp': attention projections plain and shared; patch embedding, MLP "
                                "blocks and head BE")
    vit_group.add_argument("--layernorm", choices=("shared", "per-member"), default="shared",
                           help="LayerNorm scale and shift shared or per member")
    network.set_defaults(handler=run_network)


def _add_limit_options(parser) -> None:
    parser.add_argument("--max-memory-gb", default=str(MEMORY_LIMIT_BYTES / 2**30),
                        help="refuse (or, with --route auto, skip) a certification estimated to need more memory "
                             f"(default {MEMORY_LIMIT_BYTES / 2**30:g})")
    parser.add_argument("--max-minutes", default=str(TIME_LIMIT_S / 60),
                        help=f"the same for the estimated time (default {TIME_LIMIT_S / 60:g})")
