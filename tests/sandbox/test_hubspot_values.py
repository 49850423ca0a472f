"""HubSpot sandbox: how wire values are read, stored and written back (pure functions, no HTTP)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sandbox.hubspot.properties import PropertyDef, coerce, iso_ms, parse_moment, render
from sandbox.hubspot.search import contains_token

MS = st.integers(min_value=-2_208_988_800_000, max_value=4_102_444_800_000)  # 1900..2100


@given(MS)
def test_datetimes_round_trip_through_hubspots_string(ms):
    text = iso_ms(ms)
    assert len(text) == 24 and text.endswith("Z")
    assert parse_moment(text) == ms
    assert parse_moment(str(ms)) == ms


@given(
    st.one_of(
        st.integers(min_value=-(10**15), max_value=10**15),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
    )
)
def test_numbers_round_trip(value):
    defn = PropertyDef("n", "n", "number", "number", "g")
    stored, error = coerce(defn, str(value))
    assert error is None
    again, error = coerce(defn, render("number", stored))
    assert error is None and again == stored


@given(
    st.lists(st.from_regex(r"[A-Za-z0-9äöüßéèàçñøåÄÖÜ]{1,8}", fullmatch=True), min_size=1, max_size=6),
    st.data(),
)
def test_every_word_of_a_value_is_a_token_of_it(words, data):
    value = " ".join(words) + " GmbH"
    word = data.draw(st.sampled_from(words))
    assert contains_token(value, word.upper())
    assert contains_token(value, word[:1] + "*")
    assert not contains_token(value, "zzzzzzzzz9")


def test_dates_must_be_midnight_and_enumerations_listed():
    date = PropertyDef("d", "d", "date", "date", "g")
    assert coerce(date, "2024-05-01") == (1_714_521_600_000, None)
    assert coerce(date, "2024-05-01T10:00:00Z")[1].code == "INVALID_DATE"
    tier = PropertyDef("t", "t", "enumeration", "select", "g", options=[{"value": "A", "label": "A"}])
    assert coerce(tier, "A") == ("A", None)
    assert coerce(tier, "a")[1].code == "INVALID_OPTION"
    assert coerce(tier, "") == (None, None)
