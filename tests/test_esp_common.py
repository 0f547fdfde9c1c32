"""The provider modules' shared helpers (monitor/collectors/esp/common.py)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from monitor.collectors.esp.common import tag, tags_of

_UNSAFE = re.compile(r"[,\x00-\x1f\x7f]+")


@given(st.one_of(st.none(), st.integers(), st.booleans(),
                 st.text(st.sampled_from(",\x00\x1f\x7f \t\n\x85\xa0\u2028\u200bab1é"), max_size=12),
                 st.text(max_size=40)))  # fmt: skip
def test_a_tag_is_the_value_stripped_with_separators_and_controls_blanked(value: object) -> None:
    """What is stored is what a plain substitution would give, whether or not the value
    had anything to blank (the common case skips the substitution)."""
    found = None if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
    found = _UNSAFE.sub(" ", found.strip()).strip() if found and found.strip() else None
    assert tag("k", value) == (f"k:{found}"[:128] if found else None)


def test_absent_values_make_no_tags_and_the_rest_keep_their_order() -> None:
    pairs = [("campaign", None), ("category", "a,b"), ("asm_group", 7), ("category", "a b"),
             ("stream", " \x00 ")]  # fmt: skip
    assert tags_of(pairs) == ("category:a b", "asm_group:7")
