"""split_records: a body's records, decoded; what cannot be decoded, said why."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.collectors.jsonbody import NOT_JSON, TOO_DEEP, Undecodable, split_records


def records(text: str) -> list[Any]:
    return [f"<{r.reason}>" if isinstance(r, Undecodable) else r for r in split_records(text)]


@pytest.mark.parametrize(("body", "expected"), [
    ('[{"a": 1}, {"b": [2, 3]}]', [{"a": 1}, {"b": [2, 3]}]),
    (" [ ] ", []),
    ('[{"a": 1}, {"b": oops}, {"c": 3}]', [{"a": 1}, f"<{NOT_JSON}>"]),
    ('[{"a": 1} {"b": 2}]', [{"a": 1}, {"b": 2}]),  # a missing comma, read as before
    ('[{"a": 1}, {"b": 2}] trailing', [{"a": 1}, {"b": 2}]),
    ('[{"a": 1}, {"b": 2}', [{"a": 1}, {"b": 2}]),  # cut short after an element
    ('[{"a": 1}, {"b": ', [{"a": 1}, f"<{NOT_JSON}>"]),
    ('[{"a": 1}, ' + "[" * 100_000 + "]" * 100_000 + "]", [{"a": 1}, f"<{TOO_DEEP}>"]),
    ('{"a": 1}\n{"b": 2}\n', [{"a": 1}, {"b": 2}]),
])  # fmt: skip
def test_an_array_is_read_whole_when_it_can_be_and_element_by_element_when_not(
    body: str, expected: list[Any]
) -> None:
    """A well-formed array is decoded in one call; any other keeps the elements before its
    first bad one, as an element-by-element reading finds them."""
    assert records(body) == expected
