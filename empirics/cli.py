"""``python -m empirics``: ``train`` and ``evaluate``; more subcommands come from the modules in
``SUBCOMMAND_MODULES``, each exposing ``register(subparsers)`` that adds a parser with ``set_defaults(handler=fn)``,
``fn(args) -> int`` the exit code (as ``theory.cli.main``).

    python -m empirics train --config FILE.toml --set key=value [key=value ...] [--run-dir DIR]
    python -m empirics train --run-dir DIR --resume      (the run's own config.json; --set may change execution keys)
    python -m empirics evaluate RUN_DIR
    python -m empirics diagnose PATH [PATH ...] [--members K] [--dataset NAME|FILE]   (empirics.interop.diagnose)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from empirics.runs import folder
from empirics.runs.config import field_names, load_config
from empirics.runs.evaluate import evaluate_run
from empirics.runs.train import require_resumable_folder, train
from infra.cli import OneLineParser, add_subcommands, dispatch, run_cli
from infra.errors import BadInput

SUBCOMMAND_MODULES: list[str] = ["empirics.studies.runner", "empirics.studies.report", "empirics.interop.diagnose"]
RUNS_DIR = Path("results") / "runs"
SUMMARY_KEYS = ("accuracy", "rmse", "nll", "ece", "coverage_90")  # those a run has (classification or regression)


def default_run_dir(config) -> Path:
    return RUNS_DIR / f"{config.dataset}-{config.arch}-{config.method}-seed{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def _summary(results: dict[str, float], splits: tuple[str, ...]) -> str:
    parts = [f"{split}/ensemble/{key} {results[f'{split}/ensemble/{key}']:.4f}"
             for split in splits for key in SUMMARY_KEYS if f"{split}/ensemble/{key}" in results]
    parts += [f"{key} {results[key]:.4f}" for key in ("test/mutual_information", "ood/max_prob/auroc") if key in results]
    return ", ".join(parts)


def run_train(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    if args.data_root:
        overrides.append(f"data_root={args.data_root}")
    if args.download:
        overrides.append("download=true")
    if args.resume and args.run_dir is None:
        raise BadInput("--resume needs --run-dir: the run directory to continue")
    # --resume continues the run's own config.json; --config / --set may only change execution keys (train checks).
    stored = _resumed_config(args.run_dir) if args.resume else None
    config = load_config(args.config, overrides, base=stored)
    run_dir = args.run_dir or default_run_dir(config)
    if not args.resume and folder.is_started(run_dir):
        raise BadInput(f"run directory {run_dir} already holds a run: pass --resume to continue it or choose "
                       f"another --run-dir (nothing was overwritten)")
    results = train(config, run_dir, resume=args.resume)
    print(f"run directory: {run_dir}")
    print(_summary(results, ("test",)))
    return 0


def _resumed_config(run_dir: Path):
    """The config a run in ``run_dir`` was started with (``BadInput`` when there is no such run)."""
    require_resumable_folder(run_dir)
    return folder.read_config(run_dir)


def run_evaluate(args: argparse.Namespace) -> int:
    results = evaluate_run(args.run_dir, args.data_root)
    print(f"wrote {args.run_dir / folder.EVAL} ({len(results)} metrics)")
    print(_summary(results, ("test", "shift")))
    return 0


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m empirics", description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    train_parser = subparsers.add_parser("train", help="train one run (single, batchensemble, deep-ensemble, mc-dropout)")
    train_parser.add_argument("--config", type=Path, help="TOML file of config keys (top level or a [config] table)")
    train_parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                              help=f"override config keys (repeatable); keys: {', '.join(field_names())}")
    train_parser.add_argument("--run-dir", type=Path, help=f"run directory (default {RUNS_DIR}/<dataset>-<arch>-...)")
    train_parser.add_argument("--resume", action="store_true",
                              help="continue the run in --run-dir from its checkpoint, with its config.json")
    train_parser.add_argument("--data-root", help="data folder (default $EGEO_DATA_ROOT, else the user cache)")
    train_parser.add_argument("--download", action="store_true", help="download missing datasets via torchvision")
    train_parser.set_defaults(handler=run_train)
    evaluate_parser = subparsers.add_parser("evaluate", help="evaluate a run's checkpoint on test, shift and OOD data")
    evaluate_parser.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    evaluate_parser.add_argument("--data-root", help="data folder (default: the run's, else $EGEO_DATA_ROOT)")
    evaluate_parser.set_defaults(handler=run_evaluate)
    add_subcommands(subparsers, SUBCOMMAND_MODULES)
    return parser


def main(argv: list[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


def entry_point() -> int:
    return run_cli(main)
