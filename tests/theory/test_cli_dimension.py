"""``python -m theory dim`` and ``python -m theory network`` (theory.cli_dimension): acceptance commands and
one-line errors with exit code 2 for bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from theory.cli import main
from theory.cli_support import run_cli


def _run(argv, capsys):
    code = run_cli(main, argv)
    return code, capsys.readouterr()


def test_dim_dense_512_reports_certified_codim(capsys):
    """Acceptance: dense 512×512, k = 4, r = 1 → codim 783,363 = 3·511·511, certified (toric)."""
    code, out = _run(["dim", "--layer", "dense", "--out", "512", "--in", "512", "--members", "4", "--rank", "1",
                      "--json"], capsys)
    payload = json.loads(out.out)
    assert code == 0 and payload["codim"] == 783_363
    assert payload["certificate"] == {"lower": 265_213, "upper": 265_213, "status": "certified"}
    assert {"ambient_dim", "image_dim", "params", "redundancy", "fills"} <= payload.keys()


def test_dim_conv_rank2_table(capsys):
    """A conv layer at rank 2 prints the counts table with a certified line."""
    code, out = _run(["dim", "--layer", "conv", "--out", "4", "--in", "3", "--kernel", "3", "3", "--members", "3",
                      "--rank", "2"], capsys)
    assert code == 0 and "certified" in out.out and "codim" in out.out


def test_network_resnet18_cifar_totals_certified(capsys):
    """Acceptance: resnet18-cifar, 1 channel, k = 4: per-layer table and certified totals."""
    code, out = _run(["network", "--arch", "resnet18-cifar", "--in-channels", "1", "--members", "4"], capsys)
    assert code == 0 and "layer4.1.conv2" in out.out and "totals certified" in out.out


def test_network_mlp_json(capsys):
    """MLP widths through the CLI: JSON totals match the accounting of docs/theory.md §5."""
    code, out = _run(["network", "--arch", "mlp", "--widths", "784", "400", "400", "10", "--members", "4", "--json"],
                     capsys)
    totals = json.loads(out.out)["totals"]
    assert code == 0 and totals["codim"] == 1_425_627 and totals["certified"]


BAD = [
    (["dim", "--layer", "dense", "--out", "4", "--in", "3", "--members", "2", "--rank", "4"], "--rank=4"),
    (["dim", "--layer", "dense", "--out", "4", "--in", "3", "--members", "2", "--rank", "0"], "--rank=0"),
    (["dim", "--layer", "dense", "--out", "4", "--in", "3", "--members", "0"], "--members=0"),
    (["dim", "--layer", "dense", "--out", "2.5", "--in", "3", "--members", "2"], "--out='2.5'"),
    (["dim", "--layer", "dense", "--out", "-3", "--in", "3", "--members", "2"], "--out=-3"),
    (["dim", "--layer", "dense", "--out", "4", "--in", "3", "--members", "2", "--variant", "cp-spatial"],
     "cp-spatial"),
    (["dim", "--layer", "conv", "--out", "4", "--in", "3", "--members", "2", "--variant", "nope", "--kernel", "3",
      "3"], "nope"),
    (["network", "--arch", "vgg", "--members", "2"], "vgg"),
    (["network", "--arch", "mlp", "--widths", "5", "x", "--members", "2"], "'x'"),
]


@pytest.mark.parametrize("argv, named", BAD, ids=[b[1] for b in BAD])
def test_bad_input_is_one_line_exit_2(argv, named, capsys):
    """Bad input: exit 2, one stderr line naming the value and the accepted range, no traceback."""
    with pytest.raises(SystemExit) as stop:
        run_cli(main, argv)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and named in err and "Traceback" not in err
    assert "expected" in err or "choose from" in err


@pytest.mark.slow
def test_bad_input_subprocess_has_no_traceback():
    """The real entry point: python -m theory dim with r > min(m, n) exits 2 with one line."""
    done = subprocess.run([sys.executable, "-m", "theory", "dim", "--layer", "dense", "--out", "3", "--in", "3",
                           "--members", "2", "--rank", "9"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == "error: --rank=9 is out of range: expected an integer in 1..3"
