"""infra.errors: a bad value is one line naming it and the accepted range; integer ranges are checked on both sides."""
from __future__ import annotations

import pytest

from infra.errors import BadInput, describe_error, require, require_int_in_range


@pytest.mark.parametrize("value, low, high", [(1, 1, 3), (3, 1, 3), (2.0, 1, 3), ("2", 1, None), (10 ** 9, 1, None)])
def test_integers_in_range_are_accepted_as_ints(value, low, high):
    found = require_int_in_range("n", value, low, high)
    assert isinstance(found, int) and found == int(float(value))


@pytest.mark.parametrize("value, message", [(0, r"n=0 is out of range: expected an integer in 1\.\.3"),
                                            (4, r"n=4 is out of range: expected an integer in 1\.\.3"),
                                            (2.5, r"n=2\.5 is not valid: expected an integer in 1\.\.3"),
                                            (True, r"n=True is not valid"), ("two", r"n='two' is not valid")])
def test_values_outside_the_range_or_not_integers_name_the_value_and_the_range(value, message):
    with pytest.raises(BadInput, match=message):
        require_int_in_range("n", value, 1, 3)


def test_require_raises_its_message_only_when_the_condition_fails():
    require(True, "never raised")
    with pytest.raises(BadInput, match="^the message$"):
        require(False, "the message")


def test_describe_error_is_the_type_and_first_line_or_just_the_type():
    assert describe_error(ValueError("first\nsecond")) == "ValueError: first"
    assert describe_error(EOFError()) == "EOFError"
