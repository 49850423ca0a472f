"""Fit: scores, tiers, reasons and completeness, checked against a row-by-row reference and by properties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scoring.errors import ScoringError
from scoring.fit import (
    FIT_COLUMNS,
    REASONS_MAX_LEN,
    Tiers,
    attribute_matches,
    iter_chunks,
    score,
    score_chunks,
    summarize,
)
from scoring.profile import Profile, ProfileAttribute
from tests.scoring.naive import naive_score
from tests.scoring.strategies import accounts_frames, profiles

PROFILE = Profile(
    (
        ProfileAttribute("industry", "categorical", 0.8, values=("Manufacturing",)),
        ProfileAttribute("employees", "numeric", 0.6, low=200, high=2500, log=True, half_life=2.0),
        ProfileAttribute("country", "categorical", 0.5, values=("FR", "DE")),
    )
)


def frame(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    data = {"id": pd.array([f"A{i}" for i in range(n)], dtype="string")}
    for name, values in columns.items():
        dtype = "Int64" if name == "employees" else "Float64" if name == "annual_revenue" else "string"
        data[name] = pd.array(values, dtype=dtype)
    return pd.DataFrame(data)


def test_reasons_read_like_the_design():
    scored = score(frame(industry=["Manufacturing"], employees=[1000], country=["BR"]), PROFILE)
    assert scored["icp_reasons"].iloc[0] == (
        "+ industry is Manufacturing; + 200-2,500 employees; - country BR (profile: FR, DE)"
    )
    assert scored["icp_fit_score"].iloc[0] == round(100 * 1.4 / 1.9)
    assert scored["data_completeness"].iloc[0] == 1.0


def test_output_shape_and_dtypes():
    accounts = frame(industry=["Manufacturing", None], employees=[1000, None], country=["DE", "US"])
    accounts.index = [7, 3]
    scored = score(accounts, PROFILE)
    assert list(scored.columns) == list(FIT_COLUMNS)
    assert list(scored.index) == [7, 3]
    assert str(scored["icp_fit_score"].dtype) == "Int64"
    assert str(scored["icp_tier"].dtype) == "string" and str(scored["icp_reasons"].dtype) == "string"
    assert str(scored["data_completeness"].dtype) == "Float64"


def test_missing_values_neither_match_nor_crash_and_lower_completeness():
    scored = score(frame(industry=[None], employees=[None], country=["  "]), PROFILE)
    row = scored.iloc[0]
    assert row["icp_fit_score"] == 0 and row["icp_tier"] == "D"
    assert row["data_completeness"] == 0.0
    assert row["icp_reasons"] == "? industry unknown; ? employees unknown; ? country unknown"
    partial = score(frame(industry=["manufacturing "], employees=[None], country=["de"]), PROFILE).iloc[0]
    assert partial["icp_fit_score"] == round(100 * 1.3 / 1.9)
    assert partial["data_completeness"] == pytest.approx(round(1.3 / 1.9, 4))
    assert partial["icp_reasons"].startswith(
        "+ industry is Manufacturing; ? employees unknown; + country is DE"
    )


def test_numeric_match_decays_smoothly_outside_the_band():
    employees = [200, 2500, 100, 50, 5000, 10_000, 0, 190]
    matches = attribute_matches(frame(industry=["x"] * 8, employees=employees, country=["x"] * 8), PROFILE)
    m = matches["employees"].to_numpy()
    assert m[0] == m[1] == 1.0
    assert m[2] == pytest.approx(0.5) and m[3] == pytest.approx(0.25)  # halves per halving below 200
    assert m[4] == pytest.approx(0.5) and m[5] == pytest.approx(0.25)  # and per doubling above 2,500
    assert m[6] == 0.0  # zero employees sits infinitely far below a log band
    assert 0.9 < m[7] < 1.0
    reasons = score(frame(industry=["x"] * 3, employees=[190, 50, 9000], country=["x"] * 3), PROFILE)
    assert "~ slightly fewer than 200 employees (profile: 200-2,500)" in reasons["icp_reasons"].iloc[0]
    assert "- fewer than 200 employees (profile: 200-2,500)" in reasons["icp_reasons"].iloc[1]
    assert "- more than 2,500 employees (profile: 200-2,500)" in reasons["icp_reasons"].iloc[2]


def test_reasons_are_cut_on_a_whole_reason():
    accounts = frame(industry=["Software"], employees=[5], country=["BR"])
    full = score(accounts, PROFILE)["icp_reasons"].iloc[0]
    first, second, _ = full.split("; ")
    limit = len(f"{first}; {second}; …")
    cut = score(accounts, PROFILE, reasons_max_len=limit)["icp_reasons"].iloc[0]
    assert cut == f"{first}; {second}; …"
    cut = score(accounts, PROFILE, reasons_max_len=limit - 1)["icp_reasons"].iloc[0]
    assert cut == f"{first}; …"
    tiny = score(accounts, PROFILE, reasons_max_len=10)["icp_reasons"].iloc[0]
    assert len(tiny) == 10 and tiny.endswith("…")


def test_tiers():
    tiers = Tiers()
    assert list(tiers.of(np.array([100, 75, 74, 50, 49, 25, 24, 0]))) == [0, 0, 1, 1, 2, 2, 3, 3]
    for bad in [dict(a=50, b=50, c=25), dict(a=101), dict(c=-1), dict(a=20, b=50, c=10)]:
        with pytest.raises(ScoringError, match="tiers"):
            Tiers(**bad)


def test_empty_frame_scores_to_an_empty_frame():
    scored = score(frame(industry=[], employees=[], country=[]), PROFILE)
    assert len(scored) == 0 and list(scored.columns) == list(FIT_COLUMNS)


def test_missing_profile_column_is_named():
    with pytest.raises(ScoringError, match="'country'"):
        score(frame(industry=["x"], employees=[1]), PROFILE)


def test_text_in_a_numeric_attribute_is_a_clear_error():
    accounts = frame(industry=["x"], country=["DE"]).assign(employees=pd.array(["lots"], dtype="string"))
    with pytest.raises(ScoringError, match='"employees" is numeric in the profile'):
        score(accounts, PROFILE)


def test_club_members_land_in_tier_a(book_with_aggs, club, profile):
    scored = score(book_with_aggs, profile)
    report = summarize(scored, club.ids, book_with_aggs["id"])
    assert report["club_members"] == 10
    assert report["club_in_a"] >= 5
    assert sum(report["tiers"].values()) == len(book_with_aggs)


def test_sample_book_equals_the_row_by_row_reference(book_with_aggs, profile):
    scored = score(book_with_aggs, profile)
    expected = naive_score(book_with_aggs, profile)
    got = list(
        zip(
            scored["icp_fit_score"],
            scored["icp_tier"],
            scored["icp_reasons"],
            scored["data_completeness"],
            strict=True,
        )
    )
    assert got == expected


@settings(max_examples=80)
@given(accounts=accounts_frames(), generated=profiles(), max_len=st.integers(1, 400))
def test_any_book_equals_the_row_by_row_reference(accounts, generated, max_len):
    scored = score(accounts, generated, reasons_max_len=max_len)
    expected = naive_score(accounts, generated, max_len=max_len)
    got = [
        (int(s), t, r, float(c))
        for s, t, r, c in zip(
            scored["icp_fit_score"],
            scored["icp_tier"],
            scored["icp_reasons"],
            scored["data_completeness"],
            strict=True,
        )
    ]
    assert got == expected
    assert all(len(r) <= max_len for r in scored["icp_reasons"])


@settings(max_examples=50)
@given(accounts=accounts_frames(), generated=profiles())
def test_scores_are_always_between_0_and_100(accounts, generated):
    scored = score(accounts, generated)
    assert scored["icp_fit_score"].between(0, 100).all()
    assert scored["data_completeness"].between(0, 1).all()
    assert scored["icp_fit_score"].notna().all() and scored["icp_tier"].notna().all()


@settings(max_examples=50)
@given(
    accounts=accounts_frames(min_size=1),
    generated=profiles(),
    cuts=st.tuples(st.integers(0, 100), st.integers(0, 100), st.integers(0, 100)),
)
def test_tiers_are_monotone_in_score(accounts, generated, cuts):
    c, b, a = sorted(cuts)
    assume(a > b > c)
    scored = score(accounts, generated, tiers=Tiers(a, b, c))
    ordered = scored.sort_values("icp_fit_score", kind="stable")
    letters = list(ordered["icp_tier"])
    assert letters == sorted(letters, reverse=True)  # higher score, same or better (earlier) letter
    scores = ordered["icp_fit_score"].to_numpy(int)
    assert all((s >= a) == (t == "A") for s, t in zip(scores, letters, strict=True))


@settings(max_examples=50)
@given(accounts=accounts_frames(), generated=profiles(), size=st.integers(1, 25))
def test_scoring_in_chunks_equals_scoring_whole(accounts, generated, size):
    whole = score(accounts, generated)
    chunks = list(score_chunks(iter_chunks(accounts, size), generated))
    together = pd.concat(chunks) if chunks else whole.iloc[0:0]
    pd.testing.assert_frame_equal(together, whole)


def test_sample_book_in_chunks_equals_whole(book_with_aggs, profile):
    whole = score(book_with_aggs, profile)
    chunked = pd.concat(score_chunks(iter_chunks(book_with_aggs, 777), profile))
    pd.testing.assert_frame_equal(chunked, whole)


def _worse_value(attr: ProfileAttribute, member_value, outside_values: list[str]):
    """A strategy for a value whose match on `attr` is strictly worse than the member's (match > 0)."""
    if attr.kind == "categorical":
        return st.one_of(st.none(), st.sampled_from(outside_values))
    factor = st.floats(1.01, 1e4)
    v = float(member_value)
    if v < attr.low:
        further = factor.map(lambda f: v / f)
    elif v > attr.high:
        further = factor.map(lambda f: v * f)
    else:
        further = st.one_of(factor.map(lambda f: attr.low / f), factor.map(lambda f: attr.high * f))
    return st.one_of(st.none(), further.map(lambda x: max(round(x, 6), 0.0)))


@settings(max_examples=60)
@given(data=st.data())
def test_a_club_member_never_scores_below_a_strictly_worse_non_member(book_with_aggs, club, profile, data):
    members = book_with_aggs[book_with_aggs["id"].isin(club.ids)]
    matches = attribute_matches(members, profile)
    eligible = matches.index[(matches > 0).all(axis=1)]
    assume(len(eligible) > 0)
    member = members.loc[data.draw(st.sampled_from(list(eligible)))]
    row = {"id": "NON-MEMBER"}
    for attr in profile.attributes:
        outside = (
            sorted({v for v in book_with_aggs[attr.name].dropna().astype(str)} - {v for v in attr.values})
            if attr.kind == "categorical"
            else []
        )
        row[attr.name] = data.draw(_worse_value(attr, member[attr.name], outside))
    dtypes = {a.name: "string" if a.kind == "categorical" else "Float64" for a in profile.attributes}
    other = pd.DataFrame([row]).astype(dtypes)
    other_matches = attribute_matches(other, profile).iloc[0]
    assume((other_matches < matches.loc[member.name]).all())
    member_score = score(members.loc[[member.name]], profile)["icp_fit_score"].iloc[0]
    assert score(other, profile)["icp_fit_score"].iloc[0] <= member_score


def test_a_zero_weight_attribute_adds_nothing_and_says_nothing():
    muted = Profile(
        (*PROFILE.attributes, ProfileAttribute("annual_revenue", "numeric", 0.0, low=1e6, high=1e7))
    )
    accounts = frame(industry=["Manufacturing"], employees=[1000], country=["BR"], annual_revenue=[5.0])
    pd.testing.assert_frame_equal(score(accounts, muted), score(accounts, PROFILE))
    assert list(attribute_matches(accounts, muted).columns) == [
        "industry",
        "employees",
        "country",
        "annual_revenue",
    ]


@settings(max_examples=30)
@given(cuts=st.lists(st.integers(0, 3000), max_size=12), max_len=st.sampled_from([12, 60, REASONS_MAX_LEN]))
def test_generated_book_in_awkward_chunks_equals_whole(book_with_aggs, profile, cuts, max_len):
    # Boundaries anywhere: empty chunks, one-row chunks, a chunk whose categorical values are all missing or
    # all one value, so each chunk's factorisation of the text columns differs from the whole book's.
    tiers = Tiers(a=70, b=45, c=20)
    whole = score(book_with_aggs, profile, tiers=tiers, reasons_max_len=max_len)
    bounds = sorted({0, len(book_with_aggs), *cuts, 1, 2, 3})
    parts = [book_with_aggs.iloc[lo:hi] for lo, hi in zip(bounds, bounds[1:], strict=False)]
    parts.insert(1, book_with_aggs.iloc[0:0])
    chunked = pd.concat(list(score_chunks(parts, profile, tiers=tiers, reasons_max_len=max_len)))
    pd.testing.assert_frame_equal(chunked, whole)  # scores, tiers, reasons and completeness, dtypes too
    assert chunked["icp_reasons"].str.len().max() <= max_len


def test_chunked_scoring_of_a_partition_with_only_missing_values_equals_whole(book_with_aggs, profile):
    # The rows with a missing categorical value, scored alone and then in their place: same text.
    names = [a.name for a in profile.attributes if a.kind == "categorical"]
    lonely = book_with_aggs[book_with_aggs[names[0]].isna()]
    assert len(lonely) > 0
    alone = score(lonely, profile)
    pd.testing.assert_frame_equal(alone, score(book_with_aggs, profile).loc[lonely.index])
