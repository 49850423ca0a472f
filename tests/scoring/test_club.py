"""The club of best customers: defaults, ranking, pinned ids, shortfall warnings and the clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoring.aggregates import with_aggregates
from scoring.club import (
    DEFAULT_CRITERIA,
    ClubError,
    Criterion,
    criteria_from_config,
    evaluate_criteria,
    select_club,
)
from scoring.errors import ScoringError


def test_default_criteria_are_designs_seven():
    assert [c.name for c in DEFAULT_CRITERIA] == [
        "has_bought",
        "lifetime_value",
        "loyal",
        "cheap_to_acquire",
        "expansion",
        "referral",
        "financial_capacity",
    ]


def test_club_members_qualify_and_are_ranked(club, book_with_aggs):
    members = club.members
    assert len(members) == 10 and not club.warnings
    assert list(members.columns) == ["id", "name", "criteria_met", "n_met", "won_amount", "pinned"]
    assert (members["n_met"] >= 5).all()
    assert len(set(club.ids)) == 10 and set(club.ids) <= set(book_with_aggs["id"])
    # Ranked by criteria met, then won_amount.
    keys = list(zip(-members["n_met"].astype(int), -members["won_amount"].astype(float), strict=True))
    assert keys == sorted(keys)
    # No non-member outranks the weakest member on (n_met, won_amount).
    met, _ = evaluate_criteria(book_with_aggs, DEFAULT_CRITERIA)
    n_met = met.sum(axis=1).to_numpy()
    won = book_with_aggs["won_amount"].to_numpy(dtype=float)
    outside = ~book_with_aggs["id"].isin(club.ids).to_numpy()
    weakest = (members["n_met"].iloc[-1], members["won_amount"].iloc[-1])
    assert not any((n, w) > weakest for n, w in zip(n_met[outside], won[outside], strict=True))


def test_criteria_met_agrees_with_the_rules(club, book_with_aggs):
    book = book_with_aggs.set_index("id")
    buyers = book[book["won_deals"] >= 1]
    p75 = np.quantile(buyers["won_amount"].astype(float), 0.75)
    for row in club.members.itertuples():
        met = set(row.criteria_met.split(", "))
        account = book.loc[row.id]
        assert ("lifetime_value" in met) == bool(account["won_deals"] >= 1 and account["won_amount"] >= p75)
        loyal = account["won_deals"] >= 2 or (account["won_span_days"] or 0) >= 365
        assert ("loyal" in met) == bool(loyal)
        assert ("referral" in met) == bool(account["referral_deals"] >= 1)
    table = club.criteria.set_index("criterion")
    assert "p75" in table.loc["lifetime_value", "rule"]
    assert table.loc["has_bought", "share_of_buyers"] == 1.0


def test_pinned_ids_are_always_in(book_with_aggs, club):
    outsider = book_with_aggs.loc[book_with_aggs["won_deals"] == 0, "id"].iloc[0]
    pinned_club = select_club(book_with_aggs, pinned=[outsider])
    assert outsider in pinned_club.ids and len(pinned_club) == 10
    assert pinned_club.members.set_index("id").loc[outsider, "pinned"]
    assert pinned_club.members["pinned"].sum() == 1


def test_unknown_pinned_ids_are_named(book_with_aggs):
    with pytest.raises(ClubError, match="NOPE1, NOPE2"):
        select_club(book_with_aggs, pinned=["NOPE2", "NOPE1", book_with_aggs["id"].iloc[0]])


def test_fewer_qualifiers_than_club_size_is_a_warning(book_with_aggs):
    club = select_club(book_with_aggs, min_criteria=7, club_size=50)
    assert 0 < len(club) == club.qualified < 50
    (warning,) = club.warnings
    assert f"only {club.qualified} accounts meet at least 7 of the 7 criteria" in warning
    assert f"{50 - len(club)} short of club_size 50" in warning
    hardest = club.criteria.sort_values("share_of_buyers")["criterion"].head(3)
    assert all(name in warning for name in hardest)


def test_no_deals_is_a_clear_error(book):
    accounts_only = with_aggregates(book.accounts, None)
    with pytest.raises(ClubError, match=r"deals file.*\[club\] pinned"):
        select_club(accounts_only)
    # Pinned ids alone are enough.
    pinned = list(book.accounts["id"].iloc[:3])
    assert sorted(select_club(accounts_only, pinned=pinned).ids) == sorted(pinned)


def test_deals_without_a_win_is_a_clear_error(book):
    lost_only = book.deals.assign(is_won=pd.array([False] * len(book.deals), dtype="boolean"))
    with pytest.raises(ClubError, match="no account has a won deal"):
        select_club(with_aggregates(book.accounts, lost_only))


def test_empty_book_is_a_clear_error(book_with_aggs):
    with pytest.raises(ScoringError, match="the book is empty"):
        select_club(book_with_aggs.iloc[0:0])


def test_bad_settings(book_with_aggs):
    with pytest.raises(ClubError, match="min_criteria"):
        select_club(book_with_aggs, min_criteria=8)
    with pytest.raises(ClubError, match="club_size"):
        select_club(book_with_aggs, club_size=0)


def test_custom_criteria_from_config(book_with_aggs):
    criteria = criteria_from_config(
        [
            "has_bought",
            {"name": "big", "when": [{"field": "employees", "op": ">=", "value": 1000}]},
            {
                "name": "europe_or_referral",
                "any": [
                    [{"field": "country", "op": "in", "value": ["DE", "FR"]}],
                    [{"field": "referral_deals", "op": ">=", "value": 1}],
                ],
            },
        ]
    )
    club = select_club(book_with_aggs, criteria, min_criteria=3, club_size=5)
    book = book_with_aggs.set_index("id")
    for account_id in club.ids:
        account = book.loc[account_id]
        assert account["won_deals"] >= 1 and account["employees"] >= 1000
        assert account["country"] in ("DE", "FR") or account["referral_deals"] >= 1


def test_criteria_config_errors_are_listed():
    with pytest.raises(ClubError) as err:
        criteria_from_config(
            [
                "loyl",
                {"name": "x"},
                {"name": "y", "when": [{"field": "a", "op": "~"}]},
                {"name": "z", "when": [], "colour": "red"},
            ]
        )
    message = str(err.value)
    assert 'club.criteria[0]: unknown criterion "loyl"' in message
    assert "club.criteria[1]: give exactly one of" in message
    assert 'club.criteria[2].when[0]: unknown operator "~"' in message
    assert 'club.criteria[3]: unknown key "colour"' in message


def test_criteria_with_unknown_fields_are_rejected_against_the_book(book_with_aggs):
    bad = [Criterion.when("nps", [{"field": "nps_score", "op": ">=", "value": 9}])]
    with pytest.raises(ClubError, match='club.criteria\\[0\\].when\\[0\\]: unknown field "nps_score"'):
        select_club(book_with_aggs, bad, min_criteria=1)
