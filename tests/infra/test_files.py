"""infra.files: a write interrupted at any point leaves the old file (never half a file, never a stray temporary),
JSON in the project's form, and unreadable torch files as one-line errors."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from infra import files
from infra.errors import BadInput


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    files.atomic_write_json(target, {"old": 1})

    def crash(*args):
        raise KeyboardInterrupt  # a kill between writing the temporary and renaming it

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        files.atomic_write_json(target, {"new": 2})
    assert files.json_text({"old": 1}) + "\n" == target.read_text()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["result.json"]


def test_a_completed_write_replaces_the_file_and_creates_missing_folders(tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    files.atomic_write_text(target, "first")
    files.atomic_write_text(target, "second")
    assert target.read_text() == "second"


def test_json_text_stores_tensors_tuples_sets_and_paths_and_refuses_other_objects():
    payload = {"tensor": torch.tensor([1.5, 2.0]), "tuple": (1, 2), "set": {3}, "path": Path("x/y")}
    assert files.json_text(payload) == files.json_text({"tensor": [1.5, 2.0], "tuple": [1, 2], "set": [3],
                                                        "path": "x/y"})
    with pytest.raises(TypeError, match="cannot store object in JSON"):
        files.json_text({"bad": object()})


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"not a torch file"])
def test_an_unreadable_torch_file_is_one_line_naming_what_was_read(content, tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(BadInput) as error:
        files.load_torch_file(path, "--weights 'weights.pt'", "give a state_dict file")
    message = str(error.value)
    assert "\n" not in message and message.startswith("--weights 'weights.pt' is not a readable torch file")
    assert message.endswith("; give a state_dict file")


def test_a_readable_torch_file_loads_on_the_cpu(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"w": torch.ones(2)}, path)
    assert torch.equal(files.load_torch_file(path, "state")["w"], torch.ones(2))
