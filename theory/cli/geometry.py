"""``python -m theory distance | tube | fdim``: distance to the BE set, ε-tube scaling, functional dimension.

    python -m theory distance --weights member_kernels.pt --max-rank 1 --out out.json     # (k, out, in[, h, w])
    python -m theory distance --random-de 4 64 32 3 3 --max-rank 2                      # demo on a random point
    python -m theory tube --case 2 3 3 --samples 20000 --out tube.json
    python -m theory fdim --widths 4 4 4 --activation relu --members 2 --out fdim.json
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from infra.cli import add_output_options, emit_json
from infra.errors import BadInput, describe_error, require, require_int_in_range
from infra.files import UNREADABLE_FILE_ERRORS, load_torch_file
from theory.batchensemble import VARIANTS, BatchEnsembleSpec, member_weights, random_factors
from theory.distance import distance_by_rank, log_contrasts, validate_weights
from theory.functional import ACTIVATIONS, MLPSpec, functional_dimension
from theory.tube import DEFAULT_EPSILONS, DEFAULT_SAMPLES, FULL_SAMPLES, tube_probability


def load_weights(path: str) -> torch.Tensor:
    """A (k, out, in[, h, w]) tensor from ``.pt`` (a tensor) or ``.npy``."""
    file = Path(path)
    require(file.is_file(), f"--weights {path!r} does not exist: expected a .pt or .npy file")
    if file.suffix == ".npy":
        try:
            return torch.from_numpy(np.load(file, allow_pickle=False))
        except UNREADABLE_FILE_ERRORS as error:
            raise BadInput(f"--weights {path!r} is not a readable .npy array ({describe_error(error)})") from None
    if file.suffix == ".pt":
        loaded = load_torch_file(file, f"--weights {path!r}")
        require(isinstance(loaded, torch.Tensor), f"--weights {path!r} holds a {type(loaded).__name__}: expected a tensor")
        return loaded
    raise BadInput(f"--weights {path!r} has suffix {file.suffix!r}: expected .pt or .npy")


def _random_point(shape: list[int], kind: str, variant: str, seed: int) -> torch.Tensor:
    sizes = [require_int_in_range(f"--random-{kind} size", size, 1) for size in shape]
    require(len(sizes) in (3, 5), f"--random-{kind} {' '.join(map(str, shape))} is not valid: expected K OUT IN [H W]")
    generator = torch.Generator().manual_seed(seed)
    if kind == "de":
        return torch.randn(sizes, generator=generator, dtype=torch.float64)
    spec = BatchEnsembleSpec(tuple(sizes[1:]), require_int_in_range("K", sizes[0], 2), 1, variant)
    return member_weights(spec, *random_factors(spec, generator))


def run_distance(args) -> int:
    if sum(x is not None for x in (args.weights, args.random_be, args.random_de)) != 1:
        raise BadInput("give exactly one of --weights PATH, --random-be K OUT IN [H W], --random-de K OUT IN [H W]")
    if args.weights is not None:
        weights = load_weights(args.weights)
    else:
        weights = _random_point(args.random_be or args.random_de, "be" if args.random_be else "de", args.variant,
                                args.seed)
    weights = validate_weights(weights)
    start = time.perf_counter()
    results = distance_by_rank(weights, args.max_rank, args.variant, args.starts, args.seed, args.max_iter)
    seconds = time.perf_counter() - start
    payload = {"shape": list(weights.shape), "variant": args.variant, "ranks": [r.as_dict() for r in results],
               "seconds": seconds}
    payload["log_contrasts"] = log_contrasts(weights, args.variant).as_dict()
    emit_json(args, payload, args.seed)
    if args.json:
        return 0
    print(f"shape {tuple(weights.shape)}, variant {args.variant}, {seconds:.2f}s")
    for r in results:
        print(f"  rank {r.spec.rank}: distance {r.distance:.6g}, relative residual {r.relative_residual:.3e}")
    lc = payload["log_contrasts"]
    print(f"  rank-1 log-contrasts: {lc['num_contrasts']} values, max |g| = {lc['max_abs_contrast']:.3g}, "
          f"signs consistent: {lc['signs_consistent']}")
    return 0


def run_tube(args) -> int:
    require(args.eps_min > 0, f"--eps-min {args.eps_min} is not valid: expected ε > 0")
    require(args.eps_max > args.eps_min, f"--eps-max {args.eps_max} is not valid: expected > --eps-min {args.eps_min}")
    require_int_in_range("--num-eps", args.num_eps, 2)
    samples = args.samples if args.samples is not None else (FULL_SAMPLES if args.full else DEFAULT_SAMPLES)
    require_int_in_range("--samples", samples, 1)
    epsilons = np.logspace(np.log10(args.eps_min), np.log10(args.eps_max), args.num_eps)
    result = tube_probability(*args.case, epsilons=epsilons, samples=samples, seed=args.seed)
    emit_json(args, result.as_dict(), args.seed)
    if not args.json:
        print(f"(k,m,n)={result.case}: codim {result.codim}, slope {result.slope:.4f} "
              f"[{result.slope_ci[0]:.4f}, {result.slope_ci[1]:.4f}], {result.samples} draws, {result.seconds:.2f}s")
    return 0


def run_fdim(args) -> int:
    spec = MLPSpec(tuple(args.widths), args.activation, args.members, args.rank)
    result = functional_dimension(spec, args.batch, args.seed)
    row = result.as_dict()
    emit_json(args, row, args.seed)
    if args.json:
        return 0
    print(f"widths {list(spec.widths)} {spec.activation} k={spec.members} r={spec.rank} batch {result.batch}")
    for name in ("single", "de", "be"):
        print(f"  fdim {name}: {row[f'{name}_lower'] if row[f'{name}_lower'] is not None else row[f'{name}_float_rank']}"
              f" (upper {row[f'{name}_upper']}, {row[f'{name}_status']}, float gap {row[f'{name}_gap']:.2g})")
    print(f"  functional codim {result.functional_codim}, parameter codim {spec.parameter_codim}")
    return 0



def register(subparsers) -> None:
    distance = subparsers.add_parser("distance", help="distance of member kernels to the rank-r BE set")
    distance.add_argument("--weights", metavar="PATH", help=".pt or .npy tensor (k, out, in[, h, w])")
    distance.add_argument("--random-be", nargs="+", type=int, metavar="N", help="demo: random BE point K OUT IN [H W]")
    distance.add_argument("--random-de", nargs="+", type=int, metavar="N", help="demo: random DE point K OUT IN [H W]")
    distance.add_argument("--max-rank", type=int, default=1, help="project onto ranks 1..R (default 1)")
    distance.add_argument("--variant", default="channel-wise", choices=VARIANTS)
    distance.add_argument("--starts", type=int, default=3)
    distance.add_argument("--max-iter", type=int, default=300)
    distance.add_argument("--seed", type=int, default=0)
    add_output_options(distance)
    distance.set_defaults(handler=run_distance)

    tube = subparsers.add_parser("tube", help="ε-tube probability around the rank-1 BE set and its log-log slope")
    tube.add_argument("--case", nargs=3, type=int, default=[2, 2, 2], metavar=("K", "M", "N"))
    tube.add_argument("--samples", type=int, default=None, help=f"IS draws (default {DEFAULT_SAMPLES})")
    tube.add_argument("--eps-min", type=float, default=min(DEFAULT_EPSILONS))
    tube.add_argument("--eps-max", type=float, default=max(DEFAULT_EPSILONS))
    tube.add_argument("--num-eps", type=int, default=len(DEFAULT_EPSILONS))
    tube.add_argument("--full", action="store_true", help=f"{FULL_SAMPLES} draws unless --samples is given")
    tube.add_argument("--seed", type=int, default=0)
    add_output_options(tube)
    tube.set_defaults(handler=run_tube)

    fdim = subparsers.add_parser("fdim", help="batch functional dimension of single / DE / BE MLPs")
    fdim.add_argument("--widths", nargs="+", type=int, required=True, metavar="N")
    fdim.add_argument("--activation", default="relu", choices=list(ACTIVATIONS))
    fdim.add_argument("--members", type=int, default=2)
    fdim.add_argument("--rank", type=int, default=1)
    fdim.add_argument("--batch", type=int, default=None, help="inputs in the batch (default: saturating)")
    fdim.add_argument("--seed", type=int, default=0)
    add_output_options(fdim)
    fdim.set_defaults(handler=run_fdim)
