"""infra.cli: a BadInput or an argparse error becomes one line on stderr and exit code 2; ``--json`` prints,
``--out`` writes the result with provenance."""
from __future__ import annotations

import argparse
import json

import pytest

from infra.cli import EXIT_BAD_INPUT, OneLineParser, add_output_options, emit_json, run_cli
from infra.errors import BadInput


def test_bad_input_is_one_line_on_stderr_and_exit_code_2(capsys):
    def main(argv):
        raise BadInput("n=0 is out of range: expected an integer >= 1")

    with pytest.raises(SystemExit) as stopped:
        run_cli(main, [])
    assert stopped.value.code == EXIT_BAD_INPUT
    assert capsys.readouterr().err == "error: n=0 is out of range: expected an integer >= 1\n"


def test_argparse_errors_are_one_line_without_usage(capsys):
    parser = OneLineParser(prog="tool")
    parser.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["--n", "x"])
    assert stopped.value.code == EXIT_BAD_INPUT
    assert capsys.readouterr().err.count("\n") == 1


def test_json_prints_the_payload_and_out_writes_it_with_provenance(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_output_options(parser)
    args = parser.parse_args(["--json", "--out", str(tmp_path / "r.json")])
    emit_json(args, {"dim": 5}, seed=2)
    assert json.loads(capsys.readouterr().out) == {"dim": 5}
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["dim"] == 5 and written["provenance"]["seed"] == 2
    assert written["provenance"]["config"]["json"] is True
