"""Files that never lose data: atomic writes (readers see the old or the new file), the project's JSON form, and
torch files read without a traceback."""
from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from infra.errors import BadInput, describe_error

# What a truncated, empty or foreign file makes torch.load / np.load raise (the weights-only unpickler included).
UNREADABLE_FILE_ERRORS = (RuntimeError, EOFError, IndexError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile,
                          ValueError, OSError)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, payload: Any) -> None:
    atomic_write_text(path, json_text(payload) + "\n")


def json_text(payload: Any) -> str:
    """``payload`` as indented JSON (arrays, tuples, sets and paths converted), as every result file stores it."""
    return json.dumps(payload, indent=2, sort_keys=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


def load_torch_file(path: str | os.PathLike, what: str, hint: str = "") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; an empty, truncated or foreign file is a one-line
    ``BadInput`` naming ``what`` (e.g. ``--weights 'x.pt'``) and the error, never a traceback."""
    import torch  # here, so writing records does not import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE_FILE_ERRORS as error:
        raise BadInput(f"{what} is not a readable torch file (empty, truncated or corrupted: "
                       f"{describe_error(error)}){'; ' + hint if hint else ''}") from None
