"""``python -m theory check`` and the output flags of every subcommand: a selection that matches no claim is bad
input (not "0 of 0 claims" with exit 0); ``--json`` and ``--out`` mean the same everywhere."""
from __future__ import annotations

import pytest

from infra.cli import run_cli
from theory.cli.main import main


def test_check_only_matching_no_claim_is_one_line_exit_2(capsys):
    """Defect 9: `check --only nosuchclaim` exited 0 ("0 of 0 claims certified or verified"); now exit 2 and one
    line naming the selection and the claim ids it can match."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["check", "--only", "nosuchclaim"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert "--only nosuchclaim matches no claim: expected part of one of" in err and "network-totals" in err


def _subcommands(parser) -> dict:
    import argparse
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_json_and_out_mean_the_same_in_every_subcommand():
    """Deliver 4: `--json` is always a flag that prints JSON on stdout, and `--out` always names where results are
    written (a file, or a folder for study / report / results); `dim` names the layer sizes --fan-out / --fan-in."""
    from empirics.cli import build_parser as empirics_parser
    from theory.cli.main import build_parser as theory_parser

    for parser in (theory_parser(), empirics_parser()):
        for name, sub in _subcommands(parser).items():
            options = {option: action for action in sub._actions for option in action.option_strings}
            if "--json" in options:
                assert options["--json"].nargs == 0, f"{name} --json takes a value"
            if "--out" in options:
                text = (options["--out"].help or "").lower()
                assert options["--out"].nargs is None and any(word in text for word in ("file", "folder")), name


def test_out_writes_the_json_file_and_json_prints_the_same_payload(tmp_path, capsys):
    """`dim --json --out F`: stdout is the payload, F holds it with provenance."""
    import json
    path = tmp_path / "dim.json"
    assert run_cli(main, ["dim", "--layer", "dense", "--fan-out", "5", "--fan-in", "4", "--members", "3", "--json",
                          "--out", str(path)]) == 0
    printed, written = json.loads(capsys.readouterr().out), json.loads(path.read_text())
    assert written.pop("provenance")["config"]["fan_out"] == "5" and written == printed
