"""Segments: first match wins, the default, the size bands, and config validation with locations."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings

from scoring.errors import ConditionError
from scoring.segments import SegmentRule, assign_segments, rules_from_config, validate_rules
from tests.scoring.strategies import accounts_frames


@pytest.fixture
def df() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "industry": pd.array(["Manufacturing", "Software", "Manufacturing", None], dtype="string"),
            "employees": pd.array([5000, 20, 30, None], dtype="Int64"),
            "country": pd.array(["DE", "US", "FR", "DE"], dtype="string"),
        },
        index=["w", "x", "y", "z"],
    )


def test_first_matching_rule_wins_and_default_catches_the_rest(df):
    rules = [
        SegmentRule(
            "Big industry",
            [
                {"field": "industry", "op": "==", "value": "manufacturing"},
                {"field": "employees", "op": ">=", "value": 1000},
            ],
        ),
        SegmentRule("Industry", [{"field": "industry", "op": "==", "value": "Manufacturing"}]),
        SegmentRule("Europe", [{"field": "country", "op": "in", "value": ["DE", "FR"]}]),
    ]
    got = assign_segments(df, rules, default="Rest")
    assert list(got) == ["Big industry", "Rest", "Industry", "Europe"]
    assert list(got.index) == ["w", "x", "y", "z"]
    assert str(got.dtype) == "string"


def test_default_size_bands(df):
    bands = assign_segments(df.assign(employees=pd.array([1000, 49, 50, None], dtype="Int64")))
    assert list(bands) == ["Enterprise", "SMB", "Mid-market", "Unknown size"]
    bands = assign_segments(df.assign(employees=pd.array([999, 0, 10**6, 50], dtype="Int64")))
    assert list(bands) == ["Mid-market", "SMB", "Enterprise", "Mid-market"]


def test_no_employees_column_means_unknown_size(df):
    assert set(assign_segments(df.drop(columns=["employees"]))) == {"Unknown size"}


def test_rules_from_config_and_validation_messages(df):
    rules = rules_from_config(
        [
            {"name": "DACH", "when": [{"field": "country", "op": "in", "value": ["DE", "AT", "CH"]}]},
            {"name": "All"},
        ]
    )
    assert list(assign_segments(df, rules)) == ["DACH", "All", "All", "DACH"]

    problems = validate_rules(
        [
            {"name": "ok", "when": []},
            {"when": []},
            {"name": "bad", "when": [{"field": "sector", "op": "=~", "value": 1}]},
            {"name": "q", "when": [{"field": "employees", "op": ">", "value": "p90"}]},
        ],
        df.columns,
    )
    assert any(p.startswith('segments[1]: missing "name"') for p in problems)
    assert any(p.startswith('segments[2].when[0]: unknown field "sector"') for p in problems)
    assert any(p.startswith('segments[2].when[0]: unknown operator "=~"') for p in problems)
    assert any(
        p.startswith("segments[3].when[0]:") and "only allowed in club criteria" in p for p in problems
    )
    with pytest.raises(ConditionError, match=r"segments\[2\]\.when\[0\]"):
        rules_from_config(
            [{"name": "ok"}, {"name": "x"}, {"name": "bad", "when": [{"field": "a", "op": "?"}]}]
        )


@settings(max_examples=40)
@given(frame=accounts_frames())
def test_segments_match_a_row_by_row_reading_of_the_rules(frame):
    rules = [
        SegmentRule("Target", [{"field": "industry", "op": "in", "value": ["manufacturing", "logistics"]}]),
        SegmentRule("Large", [{"field": "employees", "op": ">=", "value": 1000}]),
    ]
    got = list(assign_segments(frame, rules))
    for seg, industry, employees in zip(
        got, frame["industry"].astype(object), frame["employees"].astype(object), strict=True
    ):
        if industry is not pd.NA and industry.strip().casefold() in ("manufacturing", "logistics"):
            assert seg == "Target"
        elif employees is not pd.NA and employees >= 1000:
            assert seg == "Large"
        else:
            assert seg == "Other"
