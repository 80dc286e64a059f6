"""``python -m theory results``: --only selects results, unknown names are a one-line error, trained_points only on
request (it needs local training runs)."""
import pytest

from infra.errors import BadInput
from theory.cli import results as theory_results
from theory.cli.main import main


def test_unknown_result_name_is_rejected_with_the_accepted_names(tmp_path):
    """BadInput (the CLI entry point turns it into one line and exit 2) before anything is written."""
    with pytest.raises(BadInput, match="--only nosuch is unknown: expected names from codim_fraction"):
        main(["results", "--only", "nosuch", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


def test_only_writes_just_the_named_result(tmp_path):
    assert main(["results", "--only", "codim_fraction", "--out", str(tmp_path)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["codim_fraction.json"]


def test_trained_points_run_only_on_request():
    assert "trained_points" in theory_results.ON_REQUEST
