"""``python -m theory check``: a selection that matches no claim is bad input, not "0 of 0 claims" with exit 0."""
from __future__ import annotations

import pytest

from theory.cli import main
from theory.cli_support import run_cli


def test_check_only_matching_no_claim_is_one_line_exit_2(capsys):
    """Defect 9: `check --only nosuchclaim` exited 0 ("0 of 0 claims certified or verified"); now exit 2 and one
    line naming the selection and the claim ids it can match."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["check", "--only", "nosuchclaim"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert "--only nosuchclaim matches no claim: expected part of one of" in err and "network-totals" in err
