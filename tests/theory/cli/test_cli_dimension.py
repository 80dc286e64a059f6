"""``python -m theory dim`` and ``python -m theory network`` (theory.cli.dimension): acceptance commands and
one-line errors with exit code 2 for bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from infra.cli import run_cli
from theory.cli.main import main


def _run(argv, capsys):
    code = run_cli(main, argv)
    return code, capsys.readouterr()


def test_dim_dense_512_reports_certified_codim(capsys):
    """Acceptance: dense 512×512, k = 4, r = 1 → codim 783,363 = 3·511·511, certified (toric)."""
    code, out = _run(["dim", "--layer", "dense", "--fan-out", "512", "--fan-in", "512", "--members", "4", "--rank", "1",
                      "--json"], capsys)
    payload = json.loads(out.out)
    assert code == 0 and payload["codim"] == 783_363
    assert payload["certificate"] == {"lower": 265_213, "upper": 265_213, "status": "certified"}
    assert {"ambient_dim", "image_dim", "params", "redundancy", "fills"} <= payload.keys()


def test_dim_conv_rank2_table(capsys):
    """A conv layer at rank 2 prints the counts table with a certified line."""
    code, out = _run(["dim", "--layer", "conv", "--fan-out", "4", "--fan-in", "3", "--kernel", "3", "3", "--members", "3",
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


@pytest.mark.parametrize("rank", ["1", "2"])
def test_default_route_on_a_huge_layer_reports_the_closed_form_and_says_why(rank, capsys):
    """Defect 2: `dim --layer dense --out 100000 --in 100000 --members 4` tried to allocate 80 GB (rank 2: a numpy
    _ArrayMemoryError traceback). Now the route's cost is estimated first: past the limits the default route reports
    the closed form at once, exit 0, with a one-line note naming the skipped route and its estimate."""
    code, out = _run(["dim", "--layer", "dense", "--fan-out", "100000", "--fan-in", "100000", "--members", "4", "--rank",
                      rank, "--json"], capsys)
    payload = json.loads(out.out)
    assert code == 0 and payload["certificate"]["status"] == "not-run"
    # closed forms, m = n = 10^5, k = 4: r = 1: kmn − (k−1)(m−1)(n−1); r = 2: mn + k·r(m+n−r) − (m+n−1)
    assert payload["image_dim"] == (4 * 10**10 - 3 * 99_999**2 if rank == "1" else 10**10 + 8 * 199_998 - 199_999)
    note = out.err.strip()
    assert len(note.splitlines()) == 1 and note.startswith("note: certificate skipped: the ")
    assert ("toric" if rank == "1" else "schur") in note and "TB of memory" in note


def test_explicit_route_past_the_limits_is_refused_naming_route_none(capsys):
    """Defect 2: an explicitly requested route estimated past the limits is a one-line error, exit 2, that names the
    cheaper route; a lower --max-memory-gb moves the limit."""
    with pytest.raises(SystemExit) as stop:
        run_cli(main, ["dim", "--layer", "dense", "--fan-out", "300", "--fan-in", "300", "--members", "4", "--route", "toric",
                       "--max-memory-gb", "0.001"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1
    assert "--route toric for 300x300" in err and "use --route none for the closed form" in err


BAD = [
    (["dim", "--layer", "dense", "--fan-out", "4", "--fan-in", "3", "--members", "2", "--rank", "4"], "--rank=4"),
    (["dim", "--layer", "dense", "--fan-out", "4", "--fan-in", "3", "--members", "2", "--rank", "0"], "--rank=0"),
    (["dim", "--layer", "dense", "--fan-out", "4", "--fan-in", "3", "--members", "0"], "--members=0"),
    (["dim", "--layer", "dense", "--fan-out", "2.5", "--fan-in", "3", "--members", "2"], "--fan-out='2.5'"),
    (["dim", "--layer", "dense", "--fan-out", "-3", "--fan-in", "3", "--members", "2"], "--fan-out=-3"),
    (["dim", "--layer", "dense", "--fan-out", "4", "--fan-in", "3", "--members", "2", "--variant", "cp-spatial"],
     "cp-spatial"),
    (["dim", "--layer", "conv", "--fan-out", "4", "--fan-in", "3", "--members", "2", "--variant", "nope", "--kernel", "3",
      "3"], "nope"),
    (["network", "--arch", "vgg", "--members", "2"], "vgg"),
    (["network", "--arch", "mlp", "--widths", "5", "x", "--members", "2"], "'x'"),
    (["dim", "--layer", "dense", "--fan-out", "4", "--fan-in", "3", "--members", "2", "--max-memory-gb", "0"],
     "--max-memory-gb='0'"),
    (["network", "--arch", "mlp", "--members", "2", "--max-minutes", "soon"], "--max-minutes='soon'"),
    # defect 9: three kernel sizes were rejected as "unrecognized arguments: 3", without naming --kernel
    (["dim", "--layer", "conv", "--fan-out", "4", "--fan-in", "3", "--members", "2", "--kernel", "3", "3", "3"],
     "--kernel 3 3 3 is not valid"),
    (["dim", "--layer", "conv", "--fan-out", "4", "--fan-in", "3", "--members", "2", "--kernel", "3", "0"], "--kernel W=0"),
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
    done = subprocess.run([sys.executable, "-m", "theory", "dim", "--layer", "dense", "--fan-out", "3", "--fan-in", "3",
                           "--members", "2", "--rank", "9"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == "error: --rank=9 is out of range: expected an integer in 1..3"


def test_network_vit_prints_the_certified_per_layer_table(capsys):
    """Acceptance (issue 15): `theory network --arch vit` lists each attention projection as a dense layer and
    certifies the totals."""
    code, out = _run(["network", "--arch", "vit", "--members", "4", "--image-size", "8", "--patch-size", "4",
                      "--width", "8", "--depth", "1", "--heads", "2"], capsys)
    lines = out.out.splitlines()
    for projection in ("query", "key", "value", "out"):
        assert any(line.startswith(f"blocks.0.attention.{projection} ") and line.rstrip().endswith("yes")
                   for line in lines)
    assert "totals certified" in out.out and code == 0


def test_network_vit_options_rejected_for_other_archs(capsys):
    with pytest.raises(SystemExit) as stop:
        run_cli(main, ["network", "--arch", "mlp", "--members", "2", "--depth", "3"])
    assert stop.value.code == 2 and "--arch vit" in capsys.readouterr().err
