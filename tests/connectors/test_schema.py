"""The shared schema: value parsers, the parse report, and conforming raw frames to canonical dtypes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.schema import (
    _BARE_HOST,
    ACCOUNT_SCHEMA,
    DEAL_SCHEMA,
    KIND_DTYPES,
    NA_TOKENS,
    TEXT_DTYPE,
    ParseReport,
    Tally,
    clean_string,
    conform,
    normalize_domain,
    parse_bool,
    parse_datetime,
    parse_int,
    parse_number,
)


def _one(parser, value, **kw):
    values, bad = parser(pd.Series([value], dtype="string"), **kw)
    return values.iloc[0], bool(bad.iloc[0])


# ---------------------------------------------------------------------------------------------------------
# Numbers


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1200", 1200.0),
        ("1,200", 1200.0),
        ("1 200", 1200.0),
        ("1\u00a0200", 1200.0),
        ("1,200,000.50", 1200000.5),
        ("$2.5M", 2_500_000.0),
        ("2.5k", 2500.0),
        ("2.5 K", 2500.0),
        ("$5mm", 5_000_000.0),
        ("1.2bn", 1_200_000_000.0),
        ("€3,000", 3000.0),
        ("3 000 €", 3000.0),
        ("USD 3,000", 3000.0),
        ("-12.5", -12.5),
        ("(1,200)", -1200.0),
        ("$-40", -40.0),
        ("1.5E+06", 1_500_000.0),
        (".5", 0.5),
        ("  42  ", 42.0),
    ],
)
def test_parse_number_reads_unambiguous_cells(raw, expected):
    assert _one(parse_number, raw) == (expected, False)


@pytest.mark.parametrize(
    "raw", ["", "   ", "n/a", "N/A", "NA", "-", "--", "none", "None", "null", "NULL", "nan", "#N/A"]
)
def test_placeholders_are_missing_but_not_errors(raw):
    value, bad = _one(parse_number, raw)
    assert value is pd.NA
    assert bad is False


@pytest.mark.parametrize(
    "raw",
    [
        "12%",
        "about 50",
        "50-100",
        "50 - 100",
        "500+",
        "~50",
        "1,2,3",
        "12.5.3",
        "(12",
        "1e999",
        "$",
        "k",
        "1.5e3k",
    ],
)
def test_parse_number_counts_what_it_cannot_read(raw):
    value, bad = _one(parse_number, raw)
    assert value is pd.NA
    assert bad is True


def test_decimal_comma_column_is_detected_from_unambiguous_cells():
    values, bad = parse_number(pd.Series(["1.200,50", "12,5", "1.200", "3 000,25", "7"]))
    assert values.tolist() == [1200.5, 12.5, 1200.0, 3000.25, 7.0]
    assert not bad.any()


def test_decimal_point_is_the_default_when_nothing_tells():
    values, _ = parse_number(pd.Series(["1,200", "1.200"]))
    assert values.tolist() == [1200.0, 1.2]


def test_a_column_mixing_conventions_keeps_only_convention_free_cells():
    values, bad = parse_number(pd.Series(["1.200,50", "1,200.50", "1200", "1 200", "1,200"]))
    assert values.isna().tolist() == [True, True, False, False, True]
    assert values[2] == 1200 and values[3] == 1200
    assert bad.tolist() == [True, True, False, False, True]


def test_the_majority_convention_wins_and_the_stray_cell_is_counted():
    values, bad = parse_number(pd.Series(["1,200.50", "3,000", "12.5", "1,5"]))
    assert values.tolist()[:3] == [1200.5, 3000.0, 12.5]
    assert values[3] is pd.NA
    assert bad.tolist() == [False, False, False, True]


def test_decimal_can_be_pinned():
    values, bad = parse_number(pd.Series(["1.200", "1,5"]), decimal=",")
    assert values.tolist() == [1200.0, 1.5]
    values, bad = parse_number(pd.Series(["1.200", "1,5"]), decimal=".")
    assert values[0] == 1.2 and values[1] is pd.NA and bad.tolist() == [False, True]
    with pytest.raises(ValueError, match="decimal"):
        parse_number(pd.Series(["1"]), decimal=";")


def test_parse_number_keeps_the_index_and_accepts_numbers():
    raw = pd.Series([" 5 ", "x"], index=[10, 20])
    values, bad = parse_number(raw)
    assert values.index.tolist() == [10, 20] and bad.index.tolist() == [10, 20]
    values, bad = parse_number(pd.Series([1.5, np.nan, np.inf]))
    assert values.dtype == "Float64"
    assert values[0] == 1.5 and values[1] is pd.NA and values[2] is pd.NA
    assert bad.tolist() == [False, False, True]


def test_thousands_groups_never_lead_with_zero():
    # "0.500" can only be a half, so it votes for the decimal point and "1.200" reads 1.2.
    values, _ = parse_number(pd.Series(["0.500", "1.200"]))
    assert values.tolist() == [0.5, 1.2]
    values, _ = parse_number(pd.Series(["0,500", "1.200"]))
    assert values.tolist() == [0.5, 1200.0]


def test_parsers_keep_any_index_even_repeated_labels():
    idx = [7, 7, 3]
    for parser, cells in [
        (parse_number, ["1,200", "x", "2"]),
        (parse_datetime, ["2024-01-01", "x", ""]),
        (normalize_domain, ["https://www.A.com/", "x", "b.org"]),
        (parse_bool, ["yes", "x", "no"]),
    ]:
        values, bad = parser(pd.Series(cells, index=idx))
        assert values.index.tolist() == idx and bad.index.tolist() == idx
        assert bad.tolist() == [False, True, False], parser.__name__
    assert normalize_domain(pd.Series(["https://www.A.com/", "x", "b.org"], index=idx))[0].tolist()[::2] == [
        "a.com",
        "b.org",
    ]


def test_parse_int_rejects_fractions_and_returns_int64():
    values, bad = parse_int(pd.Series(["1,200", "2.5k", "12.5", "n/a", "9" * 20]))
    assert values.dtype == "Int64"
    assert values[0] == 1200 and values[1] == 2500
    assert values[2:].isna().all()
    assert bad.tolist() == [False, False, True, False, True]


@given(st.integers(min_value=-(2**53), max_value=2**53))
def test_grouped_integers_parse_back(n):
    styles = [str(n), f"{n:,}", f"{n:,}".replace(",", " "), f"{n:,}".replace(",", "\u00a0")]
    for parser in (parse_int, parse_number):
        values, bad = parser(pd.Series(styles))
        assert values.tolist() == [n] * len(styles)
        assert not bad.any()


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=20), st.randoms())
def test_a_column_of_mixed_grouping_styles_parses_back(ns, rnd):
    # Grouping with "," and spaces never votes for a decimal comma, so every cell reads back exactly.
    fmt = [str, "{:,}".format, lambda n: f"{n:,}".replace(",", " ")]
    cells = [rnd.choice(fmt)(n) for n in ns]
    values, bad = parse_int(pd.Series(cells))
    assert values.tolist() == ns
    assert not bad.any()


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_python_float_text_parses_back_exactly(x):
    value, bad = _one(parse_number, repr(x))
    assert value == x and bad is False


@given(st.lists(st.text(max_size=12), max_size=15))  # the suite's 100 examples (tests/conftest.py)
def test_junk_never_raises_and_the_mask_is_consistent(cells):
    raw = pd.Series(cells, dtype="string")
    for parser in (parse_number, parse_int, parse_datetime, normalize_domain, parse_bool):
        values, bad = parser(raw)
        assert len(values) == len(raw) and bad.dtype == bool
        assert values[bad.to_numpy()].isna().all()  # an unreadable cell is left missing, never guessed
        blank = raw.str.strip().fillna("") == ""
        assert not bad[blank.to_numpy()].any()  # an empty cell is missing, not an error
    assert clean_string(raw).isna().sum() == int((raw.str.strip() == "").sum())


# ---------------------------------------------------------------------------------------------------------
# Dates, domains, booleans, strings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-03-19", "2024-03-19T00:00:00Z"),
        ("2024-03-19T10:15:00Z", "2024-03-19T10:15:00Z"),
        ("2024-03-19T10:15:00+02:00", "2024-03-19T08:15:00Z"),
        ("2024-03-19T10:15:00.000+0000", "2024-03-19T10:15:00Z"),
        ("2024-03-19 10:15", "2024-03-19T10:15:00Z"),  # naive: taken as UTC
        ("2024-03-19T10:15:00-05:00", "2024-03-19T15:15:00Z"),
    ],
)
def test_parse_datetime_reads_iso_into_utc(raw, expected):
    value, bad = _one(parse_datetime, raw)
    assert value == pd.Timestamp(expected) and bad is False


@pytest.mark.parametrize("raw", ["03/04/2024", "2024-02-30", "2024-13-01", "yesterday", "2024"])
def test_parse_datetime_counts_non_iso_or_impossible_dates(raw):
    value, bad = _one(parse_datetime, raw)
    assert value is pd.NaT and bad is True


def test_parse_datetime_dtype_and_placeholders():
    values, bad = parse_datetime(pd.Series(["2024-01-01", "", "n/a"]))
    assert str(values.dtype) == KIND_DTYPES["datetime"]
    assert values[1:].isna().all() and not bad.any()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://www.Acme.com/about", "acme.com"),
        ("http://acme.com", "acme.com"),
        ("www.acme.co.uk/", "acme.co.uk"),
        ("ACME.COM.", "acme.com"),
        ("bob@acme.com", "acme.com"),
        ("mailto:Bob@Acme.com", "acme.com"),
        ("https://user@shop.acme.com:8443/x?y=1#z", "shop.acme.com"),
        ("www2.acme.io", "acme.io"),
        ("Müller-Bau.DE", "müller-bau.de"),
    ],
)
def test_normalize_domain(raw, expected):
    assert _one(normalize_domain, raw) == (expected, False)


@pytest.mark.parametrize("raw", ["acme", "acme .com", "acme.com, acme.de", "192.168.0.1", "http://"])
def test_normalize_domain_counts_non_domains(raw):
    value, bad = _one(normalize_domain, raw)
    assert value is pd.NA and bad is True


def test_parse_bool():
    values, bad = parse_bool(pd.Series(["Yes", "no", "TRUE", "0", "", "maybe"]))
    assert values.dtype == "boolean"
    assert values.tolist()[:4] == [True, False, True, False]
    assert values[4:].isna().all()
    assert bad.tolist() == [False, False, False, False, False, True]


def test_clean_string_strips_and_keeps_unicode():
    out = clean_string(pd.Series(["  Łódź Works ", "", "   ", "São Bento\u00a0", "東京 株式会社", None]))
    assert out.dtype == "string"
    assert out.tolist()[:1] == ["Łódź Works"]
    assert out[1:3].isna().all()
    assert out[3] == "São Bento" and out[4] == "東京 株式会社" and out[5] is pd.NA


# ---------------------------------------------------------------------------------------------------------
# Report and conform


def test_tally_keeps_three_examples_but_counts_all():
    t = Tally()
    t.add([2, 3, 4, 5], ["a", "b", "c", "d"])
    t.add([9], ["e"])
    assert t.count == 5
    assert t.examples == [(2, "a"), (3, "b"), (4, "c")]


def test_report_merge_lines_and_json():
    a, b = ParseReport(rows={"accounts": 2}), ParseReport(rows={"accounts": 3})
    a.note_unparseable(
        "accounts.employees", pd.Series([True, False]), pd.Series(["about 50", "7"]), pd.Series([2, 3])
    )
    b.note_unparseable("accounts.employees", pd.Series([True]), pd.Series(["12%"]), pd.Series([9]))
    b.unknown_stages = {"Prospecting": 4}
    a.merge(b)
    assert a.rows == {"accounts": 5}
    assert a.unparseable["accounts.employees"].count == 2
    assert a.unparseable_total == 2
    lines = a.lines()
    assert (
        'accounts.employees: 2 unreadable value(s) left missing (e.g. row 2: "about 50"; row 9: "12%")'
        in lines
    )
    assert any('"Prospecting" (4)' in line for line in lines)
    assert json.loads(json.dumps(a.to_dict()))["unparseable"]["accounts.employees"]["examples"][0] == {
        "row": 2,
        "value": "about 50",
    }


def test_conform_fills_unmapped_columns_with_typed_missing_values():
    raw = pd.DataFrame(
        {"id": [" A1 ", "A2"], "employees": ["1,200", "about 50"], "tier_custom": [" Gold ", ""]}
    )
    frame, report = conform(raw, ACCOUNT_SCHEMA, table="accounts", rows=pd.Series([2, 3]))
    assert list(frame.columns) == [*ACCOUNT_SCHEMA, "tier_custom"]
    for column, kind in ACCOUNT_SCHEMA.items():
        assert frame[column].dtype == pd.api.types.pandas_dtype(KIND_DTYPES[kind]), column
    assert frame["tier_custom"].dtype == TEXT_DTYPE  # extra attributes are text of the same dtype
    assert frame["id"].tolist() == ["A1", "A2"]
    assert frame["employees"][0] == 1200 and frame["employees"][1] is pd.NA
    assert frame["tier_custom"][0] == "Gold" and frame["tier_custom"][1] is pd.NA
    assert frame["created_at"].isna().all() and frame["annual_revenue"].isna().all()
    assert report.unparseable["accounts.employees"].examples == [(3, "about 50")]


def test_deal_schema_dtypes():
    frame, _ = conform(pd.DataFrame({"account_id": ["A1"]}), DEAL_SCHEMA, table="deals")
    expected = {c: pd.api.types.pandas_dtype(KIND_DTYPES[k]) for c, k in DEAL_SCHEMA.items()}
    assert dict(frame.dtypes.items()) == expected


def test_text_columns_are_object_backed_whatever_the_input_string_dtype():
    # pandas 3 reads text as `str` (Arrow-backed when pyarrow is installed); canonical text is string[python].
    for dtype in ("object", "string", "str", "category"):
        raw = pd.DataFrame(
            {"id": pd.Series([" A1 ", "A2", None], dtype=dtype), "domain": ["x.com", None, "y"]}
        )
        frame, _ = conform(raw, ACCOUNT_SCHEMA, table="accounts")
        assert frame["id"].dtype == TEXT_DTYPE and frame["domain"].dtype == TEXT_DTYPE, dtype
        assert frame["id"].tolist() == ["A1", "A2", pd.NA], dtype


def _domain_step_by_step(raw: pd.Series) -> list:
    """normalize_domain as first written (pandas .str, every rewrite on every cell that is not a bare host):
    the reference the one-pass version must equal."""
    s = raw.astype("string").str.strip()
    low = s.str.lower()
    placeholder = (s.isna() | low.isin(list(NA_TOKENS))).to_numpy(dtype=bool)
    bare = low.str.fullmatch(_BARE_HOST).fillna(False) & ~low.str.startswith("www").fillna(False)
    host = (
        low.str.replace(r"^[a-z][a-z0-9+.\-]*://", "", regex=True)
        .str.replace(r"^mailto:", "", regex=True)
        .str.replace(r"[/?#].*$", "", regex=True)
        .str.replace(r"^.*@", "", regex=True)
        .str.replace(r":\d+$", "", regex=True)
        .str.replace(r"^www\d*\.", "", regex=True)
        .str.rstrip(".")
    )
    valid = host.str.fullmatch(r"[^\s./:@,;]+(?:\.[^\s./:@,;]+)+").fillna(False) & ~host.str.contains(
        r"\.\d+$", regex=True
    ).fillna(False)
    out = []
    for i in range(len(raw)):
        if placeholder[i]:
            out.append((None, False))
        elif bare.iloc[i]:
            out.append((low.iloc[i], False))
        elif valid.iloc[i]:
            out.append((host.iloc[i], False))
        else:
            out.append((None, True))
    return out


_URLISH = st.lists(
    st.sampled_from(
        [
            "http",
            "https",
            "://",
            "www",
            "www2",
            ".",
            "acme",
            "Co",
            "com",
            "1",
            "/",
            "?q",
            "#f",
            "@",
            ":",
            "8080",
            "mailto:",
            " ",
            "-",
            "x",
            "\n",
            "\r",
            "\x1c",
            "é",
            "Σ",
        ]
    ),
    max_size=9,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.lists(_URLISH | st.none(), max_size=12))  # a whole column: cells are read as one text, a line each
def test_normalize_domain_equals_the_step_by_step_rewrite(cells):
    raw = pd.Series(cells, dtype="object")
    values, bad = normalize_domain(raw)
    got = [(None if v is pd.NA else v, b) for v, b in zip(values.tolist(), bad.tolist(), strict=True)]
    assert got == _domain_step_by_step(raw)
