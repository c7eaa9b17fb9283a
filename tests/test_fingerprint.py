"""The request fingerprint's canonical form (issue 15, defect 4): equal requests, however a client
serialises them, get one fingerprint; different requests never share one. Property-based cases
(hypothesis) over floats, big integers, decimals, unicode and key order, plus RFC 8785's vectors.
No Redis here: the end-to-end REPLAY of a re-serialised retry is in tests/test_idempotency.py."""

from __future__ import annotations

import json
import math
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from smoke.strategies.idempotency import canonical_json, fingerprint

# Hypothesis keeps caches in a .hypothesis/ folder; build/ is ignored by git and `make clean`.
set_hypothesis_home_dir(str(Path(__file__).resolve().parents[1] / "build" / "hypothesis"))

# JSON values as a request body parses them (json.loads: int, float, str, bool, None, list, dict).
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | st.integers() | finite_floats | st.text()
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


# No example database: it would be a .hypothesis/ folder in the work tree. No deadline: a stall of
# the shared machine inside one example is not a failure of the fingerprint.
examples = settings(database=None, max_examples=300, deadline=None)
few = settings(database=None, deadline=None)


def reordered(value: Any) -> Any:
    """The same value with every object's members in reverse insertion order."""
    if isinstance(value, dict):
        return {k: reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(v) for v in value]
    return value


def as_floats(value: Any) -> Any:
    """The same value with every integer that a double holds exactly re-serialised as a float
    (``10`` -> ``10.0``), as a client's retry through another JSON library may send it."""
    if isinstance(value, dict):
        return {k: as_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_floats(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= 2**53:
        return float(value)
    return value


@examples
@given(json_values)
def test_key_order_never_changes_the_fingerprint(value: Any) -> None:
    assert fingerprint(reordered(value)) == fingerprint(value)


@examples
@given(json_values)
def test_an_integer_and_the_same_number_as_a_float_share_a_fingerprint(value: Any) -> None:
    assert fingerprint(as_floats(value)) == fingerprint(value)


@examples
@given(json_values)
def test_the_canonical_text_is_json_that_reads_back_as_the_same_request(value: Any) -> None:
    text = canonical_json(value)
    # (parse_float=Decimal: an integer above 10^21 is written in exponent form, which json.loads
    # would read as a double, rounding it.)
    assert canonical_json(json.loads(text, parse_float=Decimal)) == text
    assert canonical_json(json.loads(json.dumps(value, indent=2, ensure_ascii=True))) == text


@few
@given(finite_floats)
def test_a_float_is_written_as_its_shortest_round_trip_decimal(number: float) -> None:
    text = canonical_json(number)
    assert float(text) == number
    assert text == canonical_json(Decimal(repr(number))) == canonical_json(json.loads(json.dumps(number)))
    if number == int(number) and abs(number) <= 2**53:
        assert text == canonical_json(int(number))


@few
@given(st.integers(), st.integers())
def test_distinct_integers_never_share_a_fingerprint_even_above_2_53(a: int, b: int) -> None:
    """RFC 8785 would round integers to doubles (2^53 + 1 becomes 2^53): two different payments
    would look like one request. Integers are written exactly."""
    assert (fingerprint({"n": a}) == fingerprint({"n": b})) == (a == b)
    assert canonical_json(a) == str(a) or abs(a) >= 10**21


@few
@given(finite_floats, finite_floats)
def test_distinct_floats_never_share_a_fingerprint(a: float, b: float) -> None:
    assert (fingerprint([a]) == fingerprint([b])) == (a == b)  # 0.0 == -0.0: one number


@few
@given(st.decimals(allow_nan=False, allow_infinity=False), st.integers(min_value=0, max_value=6))
def test_a_decimal_with_trailing_zeros_is_the_same_amount(amount: Decimal, zeros: int) -> None:
    """PIX amounts are decimals with two places: 10.5, 10.50 and Decimal("10.500") are one amount."""
    sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)
    padded = Decimal((sign, (*digits, *([0] * zeros)), exponent - zeros))
    assert padded == amount
    assert fingerprint({"amount": padded}) == fingerprint({"amount": amount})


@few
@given(st.decimals(allow_nan=False, allow_infinity=False), st.decimals(allow_nan=False, allow_infinity=False))
def test_distinct_decimals_never_share_a_fingerprint(a: Decimal, b: Decimal) -> None:
    assert (canonical_json(a) == canonical_json(b)) == (a == b)


@few
@given(st.text(), st.text())
def test_unicode_strings_are_kept_exactly(a: str, b: str) -> None:
    """No normalisation (NFC and NFD forms of one name are different strings, as the directory
    compares them); the canonical text is UTF-8 and reads back as the same string."""
    assert json.loads(canonical_json(a)) == a
    assert (fingerprint({"s": a}) == fingerprint({"s": b})) == (a == b)
    canonical_json(a).encode("utf-8")


def test_equal_numbers_in_the_review_share_a_fingerprint() -> None:
    assert fingerprint({"amount": 10}) == fingerprint({"amount": 10.0}) == fingerprint({"amount": Decimal("10.00")})
    assert fingerprint({"amount": 0.0}) == fingerprint({"amount": -0.0}) == fingerprint({"amount": 0})
    assert fingerprint({"amount": 10}) != fingerprint({"amount": "10"})  # a string is not a number
    assert fingerprint({"ok": True}) != fingerprint({"ok": 1})  # nor is a boolean
    assert fingerprint({"n": 2**53 + 1}) != fingerprint({"n": 2**53})


def test_rfc_8785_example_is_reproduced() -> None:
    """RFC 8785 §3.2.2 (numbers, strings, literals) and §3.2.3 (member order by UTF-16 code units)."""
    body = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/", "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_json(json.loads(body)) == expected
    names = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    ordered = list(json.loads(canonical_json(dict.fromkeys(names, 0))))
    assert ordered == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


@pytest.mark.parametrize(
    ("bits", "text"),
    [
        (0x0000000000000000, "0"),
        (0x8000000000000000, "0"),
        (0x0000000000000001, "5e-324"),
        (0x7FEFFFFFFFFFFFFF, "1.7976931348623157e+308"),
        (0x4340000000000000, "9007199254740992"),
        (0x4430000000000000, "295147905179352830000"),
        (0x44B52D02C7E14AF6, "1e+23"),
        (0x444B1AE4D6E2EF50, "1e+21"),
        (0x3EB0C6F7A0B5ED8D, "0.000001"),
    ],
)
def test_rfc_8785_number_vectors(bits: int, text: str) -> None:
    (number,) = struct.unpack(">d", bits.to_bytes(8, "big"))
    assert canonical_json(number) == text


@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        ({"amount": math.nan}, ValueError, r"payload\.amount: .*NaN"),
        ([1, math.inf], ValueError, r"payload\[1\]: .*inf"),
        ({"amount": Decimal("NaN")}, ValueError, "NaN"),
        ({"name": "\udc80"}, ValueError, r"payload\.name: .*cannot be encoded as UTF-8"),
        ({"\ud800": 1}, ValueError, "cannot be encoded as UTF-8"),
        ({1: "a"}, TypeError, "object member names must be strings"),
        ({"when": object()}, TypeError, r"payload\.when: object"),
    ],
)
def test_what_has_no_canonical_form_is_refused_naming_where(payload: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        fingerprint(payload)


def test_huge_exponents_stay_short() -> None:
    """A decimal such as 1E+999999 (json.loads with parse_float=Decimal accepts it) is written in
    exponent form, not expanded to a million digits."""
    assert canonical_json(Decimal("1E+999999")) == "1e+999999"
    assert canonical_json(Decimal("-12.5E-999999")) == "-1.25e-999998"
