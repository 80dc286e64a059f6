"""``python -m theory``: one subcommand per module; each module adds its parser through ``register(subparsers)``.

Subcommands: ``check`` (all claims), and those of the modules in ``SUBCOMMAND_MODULES``.
"""
from __future__ import annotations

import sys

from tqdm import tqdm

from infra.cli import OneLineParser, add_output_options, add_subcommands, dispatch, emit_json, run_cli
from infra.errors import BadInput
from theory.claims import registry as claims

# Modules with ``register(subparsers)``; each adds one subcommand whose handler returns an exit code.
SUBCOMMAND_MODULES: list[str] = ["theory.cli.dimension", "theory.cli.geometry", "theory.cli.results",
                                  "theory.claims.table"]


def _format_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(row) for row in rows])


def run_check(args) -> int:
    registry = claims.load_all()
    selected = [c for c in registry.values() if not args.only or any(part in c.id for part in args.only)]
    if not selected:
        raise BadInput(f"--only {' '.join(args.only)} matches no claim: expected part of one of "
                       f"{', '.join(registry)}")
    results = []
    for item in tqdm(selected, desc="claims", unit="claim", disable=not sys.stderr.isatty()):
        results.append(claims.run_claim(item, full=args.full))
    failed = [r.claim.id for r in results if not r.passed]
    emit_json(args, {"claims": [r.as_dict() for r in results]})
    if args.json:
        return 1 if failed else 0
    rows = [[r.claim.id, r.claim.statement, r.claim.method, r.evidence.sizes, r.evidence.verdict,
             f"{r.seconds:.2f}"] for r in results]
    print(_format_table(rows, ["id", "statement", "method", "sizes covered", "verdict", "seconds"]))
    print(f"\n{len(results) - len(failed)} of {len(results)} claims certified or verified"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m theory", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    check = subparsers.add_parser("check", help="run every registered claim and print the claims table")
    check.add_argument("--full", action="store_true", help="run the long sweeps too")
    check.add_argument("--only", nargs="*", default=[], help="run only claims whose id contains one of these")
    add_output_options(check)
    check.set_defaults(handler=run_check)
    add_subcommands(subparsers, SUBCOMMAND_MODULES)
    return parser


def main(argv: list[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


def entry_point() -> int:
    return run_cli(main)
