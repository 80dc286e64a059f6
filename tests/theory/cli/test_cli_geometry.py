"""``python -m theory distance | tube | fdim``: JSON outputs and one-line bad-input errors with exit code 2."""
import json

import numpy as np
import pytest
import torch

from infra.cli import run_cli
from theory.cli.main import main


def _run(argv):
    return run_cli(main, argv)


def test_distance_cli_writes_json_for_a_random_be_point(tmp_path, capsys):
    """A random BE point has distance ~0 (relative residual < 1e-10) and consistent signs; JSON has provenance."""
    out = tmp_path / "d.json"
    assert _run(["distance", "--random-be", "3", "4", "5", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["ranks"][0]["relative_residual"] < 1e-10
    assert payload["log_contrasts"]["signs_consistent"] and "git_commit" in payload["provenance"]


def test_distance_cli_reads_npy_and_pt_files(tmp_path):
    """Weights load from .npy and .pt; the rank profile has one entry per rank."""
    weights = np.random.default_rng(0).standard_normal((2, 3, 4))
    np.save(tmp_path / "w.npy", weights)
    torch.save(torch.from_numpy(weights), tmp_path / "w.pt")
    for name in ("w.npy", "w.pt"):
        out = tmp_path / f"{name}.json"
        assert _run(["distance", "--weights", str(tmp_path / name), "--max-rank", "2", "--out", str(out)]) == 0
        assert len(json.loads(out.read_text())["ranks"]) == 2


def test_tube_and_fdim_cli_write_json(tmp_path):
    """tube reports a slope within 0.15 of codim 1; fdim reports functional and parameter codims."""
    tube = tmp_path / "t.json"
    assert _run(["tube", "--case", "2", "2", "2", "--samples", "2000", "--out", str(tube)]) == 0
    assert abs(json.loads(tube.read_text())["slope"] - 1) <= 0.15
    fdim = tmp_path / "f.json"
    assert _run(["fdim", "--widths", "3", "3", "3", "--activation", "identity", "--out", str(fdim)]) == 0
    assert json.loads(fdim.read_text())["functional_codim"] == 0


@pytest.mark.parametrize("argv,needle", [
    (["distance", "--random-de", "1", "3", "3"], "k=1"),
    (["distance", "--random-be", "1", "3", "3"], "K=1"),
    (["distance", "--random-de", "2", "3"], "K OUT IN"),
    (["distance"], "exactly one"),
    (["distance", "--weights", "missing.npy"], "does not exist"),
    (["tube", "--eps-min", "0"], "ε > 0"),
    (["tube", "--eps-min", "-1"], "ε > 0"),
    (["tube", "--samples", "0"], "samples"),
    (["tube", "--case", "1", "2", "2"], "members"),
    (["fdim", "--widths", "3", "3", "--activation", "gelu"], "gelu"),
    (["fdim", "--widths", "3", "3", "--members", "0"], "members"),
])
def test_bad_input_is_one_line_and_exit_code_2(argv, needle, capsys):
    """Bad shapes, k < 2, ε <= 0, sample counts <= 0, unknown activations: one line on stderr, exit code 2."""
    with pytest.raises(SystemExit) as exit_info:
        _run(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_nan_weights_are_rejected(tmp_path, capsys):
    """A weights file with NaN entries: one line naming the NaN/Inf count, exit code 2."""
    weights = np.ones((2, 3, 3))
    weights[0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", weights)
    with pytest.raises(SystemExit) as exit_info:
        _run(["distance", "--weights", str(tmp_path / "nan.npy")])
    assert exit_info.value.code == 2 and "NaN/Inf" in capsys.readouterr().err


@pytest.mark.parametrize("name,content", [("garbage.pt", b"not a torch file" * 8), ("empty.pt", b""),
                                          ("garbage.npy", b"not an array")])
def test_unreadable_weights_file_is_one_line_exit_2(name, content, tmp_path, capsys):
    """Defect 8: a garbage file given to --weights gave an UnpicklingError traceback; now one line naming the file."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        _run(["distance", "--weights", str(path)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert f"--weights {str(path)!r} is not a readable" in err and "Traceback" not in err
