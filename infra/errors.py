"""User-facing errors: a bad value is one line naming the value and the accepted range, never a traceback."""
from __future__ import annotations


class BadInput(ValueError):
    """A user-facing error: the message names the bad value and the accepted range."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise BadInput(message)


def require_int_in_range(name: str, value: object, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int in [low, high] (``high=None``: no upper limit) or raise ``BadInput`` naming both."""
    accepted = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
    if isinstance(value, bool):  # True is an int to Python, not a count to a user
        raise BadInput(f"{name}={value!r} is not valid: expected {accepted}")
    if not isinstance(value, int):
        try:
            as_float = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise BadInput(f"{name}={value!r} is not valid: expected {accepted}") from None
        if not as_float.is_integer():
            raise BadInput(f"{name}={value!r} is not valid: expected {accepted}")
        value = int(as_float)
    if value < low or (high is not None and value > high):
        raise BadInput(f"{name}={value} is out of range: expected {accepted}")
    return value


def describe_error(error: BaseException) -> str:
    """``TypeName: first line of the message`` (just the type when the message is empty, as for an empty file)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
