"""The condition language: every operator, missing values, text normalisation, quantiles, validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.conditions import (
    OPERATORS,
    ConditionError,
    describe_conditions,
    evaluate,
    resolve_conditions,
    validate_conditions,
)
from tests.scoring.strategies import COUNTRIES, accounts_frames


@pytest.fixture
def df() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "industry": pd.array(
                ["Manufacturing", " manufacturing ", "Software", None, "", "Logistics"], dtype="string"
            ),
            "employees": pd.array([10, 200, 5000, None, 999, 50], dtype="Int64"),
            "revenue": pd.array([1.0, 2.0, 3.0, 4.0, None, 6.0], dtype="Float64"),
            "active": pd.array([True, False, None, True, True, False], dtype="boolean"),
            "created_at": pd.to_datetime(
                ["2023-01-01", "2024-06-01", None, "2025-01-01", "2022-01-01", "2024-01-01"], utc=True
            ),
        }
    )


def rows(df: pd.DataFrame, *conditions: dict) -> list[int]:
    return list(np.flatnonzero(evaluate(df, list(conditions)).to_numpy()))


def c(field: str, op: str, value=None) -> dict:
    return (
        {"field": field, "op": op, "value": value}
        if value is not None or op != "is_missing"
        else {
            "field": field,
            "op": op,
        }
    )


def test_text_equality_ignores_case_and_surrounding_spaces(df):
    assert rows(df, c("industry", "==", "MANUFACTURING")) == [0, 1]


def test_missing_never_matches_even_negations(df):
    # Rows 3 (NA) and 4 (blank) have no industry: neither != nor not_in may pick them up.
    assert rows(df, c("industry", "!=", "Software")) == [0, 1, 5]
    assert rows(df, c("industry", "not_in", ["software"])) == [0, 1, 5]
    assert rows(df, c("employees", "!=", 10)) == [1, 2, 4, 5]
    assert rows(df, c("revenue", "not_in", [1, 2])) == [2, 3, 5]


def test_is_missing_and_is_present(df):
    assert rows(df, c("industry", "is_missing")) == [3, 4]
    assert rows(df, c("industry", "is_missing", True)) == [3, 4]
    assert rows(df, c("industry", "is_missing", False)) == [0, 1, 2, 5]
    assert rows(df, c("employees", "is_missing")) == [3]
    assert rows(df, c("created_at", "is_missing")) == [2]


def test_numeric_comparisons_and_between_inclusive(df):
    assert rows(df, c("employees", "<", 50)) == [0]
    assert rows(df, c("employees", "<=", 50)) == [0, 5]
    assert rows(df, c("employees", ">", 999)) == [2]
    assert rows(df, c("employees", ">=", 999)) == [2, 4]
    assert rows(df, c("employees", "between", [50, 999])) == [1, 4, 5]
    assert rows(df, c("employees", "in", [10, 5000])) == [0, 2]
    assert rows(df, c("employees", "==", "200")) == [1]  # a numeric string in config is read as a number


def test_conditions_are_anded(df):
    assert rows(df, c("employees", ">=", 50), c("industry", "in", ["manufacturing", "logistics"])) == [1, 5]


def test_contains_text_and_list(df):
    assert rows(df, c("industry", "contains", "FACT")) == [0, 1]
    assert rows(df, c("industry", "contains", ["soft", "logis"])) == [2, 5]


def test_dates_compare_with_iso_strings(df):
    assert rows(df, c("created_at", ">=", "2024-01-01")) == [1, 3, 5]
    assert rows(df, c("created_at", "between", ["2023-01-01", "2024-01-01"])) == [0, 5]


def test_boolean_columns(df):
    assert rows(df, c("active", "==", True)) == [0, 3, 4]
    assert rows(df, c("active", "!=", True)) == [1, 5]


def test_empty_rule_matches_everyone(df):
    assert evaluate(df, []).all()


def test_quantile_is_resolved_among_rows_meeting_the_other_conditions():
    df = pd.DataFrame({"won_deals": [0, 0, 1, 1, 1, 1], "won_amount": [0.0, 0.0, 10.0, 20.0, 30.0, 40.0]})
    resolved = resolve_conditions(df, [c("won_deals", ">=", 1), c("won_amount", ">=", "p75")])
    expected = np.quantile([10.0, 20.0, 30.0, 40.0], 0.75)  # buyers only, not the zeros
    assert resolved[1].value == pytest.approx(expected)
    assert resolved[1].quantile == "p75"
    assert rows(df, c("won_deals", ">=", 1), c("won_amount", ">=", "p75")) == [5]
    assert "(p75)" in describe_conditions(resolved)
    assert rows(df, c("won_amount", ">", "median")) == [3, 4, 5]  # median of all six is 15


def test_ordering_on_text_is_an_error(df):
    with pytest.raises(ConditionError, match='"industry" is text'):
        evaluate(df, [c("industry", "<", 5)])


def test_non_numeric_value_for_numeric_field_is_an_error(df):
    with pytest.raises(ConditionError, match="not a number"):
        evaluate(df, [c("employees", "==", "lots")])


def test_validate_lists_every_problem_with_its_location():
    problems = validate_conditions(
        [
            {"field": "employees", "op": "=~", "value": 5},
            {"field": "sector", "op": "==", "value": "x"},
            {"field": "employees", "op": "in", "value": 5},
            {"field": "employees", "op": "between", "value": [10, 1]},
            {"field": "employees", "op": ">", "valeu": 1},
            "not a table",
        ],
        ["employees", "industry"],
        "segments[2].when",
    )
    assert problems[0] == ('segments[2].when[0]: unknown operator "=~"; allowed: ' + ", ".join(OPERATORS))
    assert problems[1].startswith(
        'segments[2].when[1]: unknown field "sector"; known fields: employees, industry'
    )
    assert any(p.startswith("segments[2].when[2]:") and "list" in p for p in problems)
    assert any(p.startswith("segments[2].when[3]:") and "low <= high" in p for p in problems)
    assert any(p.startswith("segments[2].when[4]:") and 'unknown key "valeu"' in p for p in problems)
    assert any(p.startswith("segments[2].when[5]:") for p in problems)


def test_validate_suggests_a_close_field_name():
    (problem,) = validate_conditions([{"field": "industy", "op": "==", "value": "x"}], ["industry"], "w")
    assert 'did you mean "industry"' in problem


def test_validate_accepts_valid_rules_and_quantiles_only_when_allowed():
    rule = [{"field": "won_amount", "op": ">=", "value": "p75"}]
    assert validate_conditions(rule, ["won_amount"], "club") == []
    (problem,) = validate_conditions(rule, ["won_amount"], "segments[0].when", allow_quantiles=False)
    assert "only allowed in club criteria" in problem


def test_evaluate_raises_with_the_validation_message(df):
    with pytest.raises(ConditionError, match='unknown field "sector"'):
        evaluate(df, [c("sector", "==", "x")])


@settings(max_examples=60)
@given(frame=accounts_frames(), wanted=st.lists(st.sampled_from(COUNTRIES), min_size=1, max_size=3))
def test_in_not_in_and_missing_partition_the_rows(frame, wanted):
    is_in = evaluate(frame, [c("country", "in", wanted)]).to_numpy()
    not_in = evaluate(frame, [c("country", "not_in", wanted)]).to_numpy()
    missing = evaluate(frame, [c("country", "is_missing")]).to_numpy()
    assert (is_in.astype(int) + not_in + missing == 1).all()
    # And the same answer row by row, the slow way.
    expected = [
        v is not pd.NA and v.strip() != "" and v.strip().casefold() in {w.strip().casefold() for w in wanted}
        for v in frame["country"].astype(object)
    ]
    assert list(is_in) == expected


@settings(max_examples=60)
@given(frame=accounts_frames(), threshold=st.integers(0, 300_000))
def test_numeric_compare_matches_row_by_row(frame, threshold):
    got = evaluate(frame, [c("employees", ">=", threshold)]).to_numpy()
    expected = [v is not pd.NA and v >= threshold for v in frame["employees"].astype(object)]
    assert list(got) == expected
