"""The Makefile: `make clean` removes caches and tiny smoke results, never a committed file."""
from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None or not (ROOT / ".git").exists(),
                    reason="needs make and a git checkout")
def test_make_clean_deletes_no_committed_file():
    """Defect 10: `make clean` ran `rm -rf results`, deleting the committed studies and the theory JSON the figures
    read. Every path its `rm -rf` names (from `make -n clean`, nothing deleted here) must hold no tracked file."""
    commands = subprocess.run(["make", "-n", "clean"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    removed = [word for line in commands.splitlines() if line.startswith("rm -rf")
               for word in shlex.split(line)[2:]]
    assert removed, commands
    tracked = subprocess.run(["git", "ls-files", "--", *removed], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked == []
    assert "results" not in removed and any(path.startswith("results/") for path in removed)
