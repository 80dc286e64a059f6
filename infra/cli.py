"""Shared command-line behaviour: bad input is one clear line on stderr and exit code 2, never a traceback.

Output flags mean the same in every subcommand of ``python -m theory`` and ``python -m empirics``: ``--json`` prints
the result as JSON on stdout (instead of the table), ``--out PATH`` writes it (a JSON file with provenance, or the
output folder of commands that write several files: ``study``, ``report``, ``results``)."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Callable, NoReturn

from infra.errors import BadInput
from infra.files import atomic_write_json, json_text
from infra.provenance import provenance

EXIT_BAD_INPUT = 2


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run ``main`` turning ``BadInput`` into one line on stderr and exit code 2."""
    try:
        return main(argv)
    except BadInput as error:
        fail(str(error))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


class OneLineParser(argparse.ArgumentParser):
    """``argparse`` parser whose errors are one line naming the bad value, exit code 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        fail(f"{self.prog}: {message}")


def add_subcommands(subparsers, modules: list[str]) -> None:
    """Let each module in ``modules`` add its subcommand: ``module.register(subparsers)``."""
    for module in modules:
        importlib.import_module(module).register(subparsers)


def dispatch(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse ``argv`` and call the chosen subcommand's ``handler(args)``; its return value is the exit code."""
    args = parser.parse_args(argv)
    return args.handler(args)


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--json`` (print JSON on stdout) and ``--out PATH`` (write a JSON file with provenance), see the module."""
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout instead of a table")
    parser.add_argument("--out", metavar="PATH", help="also write the result, with provenance, to the JSON file PATH")


def emit_json(args: argparse.Namespace, payload: dict[str, Any], seed: int | None = None) -> None:
    """Write ``{provenance, **payload}`` to ``args.out`` (atomically) when given; print ``payload`` with ``--json``.
    The provenance records the command's arguments and ``seed``."""
    if args.out:
        arguments = {key: value for key, value in vars(args).items() if key != "handler"}
        atomic_write_json(args.out, {"provenance": provenance(arguments, seed), **payload})
    if args.json:
        print(json_text(payload))
