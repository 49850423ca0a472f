"""Deal aggregates: hand-checked sums and dates, as_of, missing deals, and agreement with a groupby."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoring.aggregates import AGGREGATE_COLUMNS, deal_aggregates, with_aggregates
from scoring.errors import ScoringError


def ts(day: str | None):
    return pd.Timestamp(day, tz="UTC") if day else pd.NaT


@pytest.fixture
def accounts() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": pd.array(["A", "B", "C", "D"], dtype="string"),
            "name": pd.array(["a", "b", "c", "d"], dtype="string"),
            "parent_id": pd.array([None, "A", "A", "ZZZ"], dtype="string"),
        },
        index=[10, 11, 12, 13],  # a non-default index must be kept
    )


@pytest.fixture
def deals() -> pd.DataFrame:
    rows = [
        # id, account, amount, won, closed, created, closed_at, source
        ("d1", "A", 100.0, True, True, "2023-01-01", "2023-01-31", "Referral"),
        ("d2", "A", 50.0, True, True, "2024-01-01", "2024-03-01", "web"),
        ("d3", "A", 70.0, False, True, "2024-01-01", "2024-02-01", None),
        ("d4", "B", None, True, True, "2024-05-01", "2024-05-11", "  PARTNER program"),
        ("d5", "B", 999.0, False, False, "2024-05-01", None, "Referral"),  # open: ignored
        ("d6", "C", 10.0, False, True, "2024-01-01", "2024-01-02", "Referral"),  # lost referral: not counted
        ("d7", "nobody", 5.0, True, True, "2024-01-01", "2024-01-02", "web"),  # unknown account: ignored
        ("d8", "A", 30.0, True, True, "2025-06-01", "2025-07-01", "web"),
    ]
    frame = pd.DataFrame(
        rows,
        columns=[
            "id",
            "account_id",
            "amount",
            "is_won",
            "is_closed",
            "created_at",
            "closed_at",
            "lead_source",
        ],
    )
    return frame.assign(
        id=frame["id"].astype("string"),
        account_id=frame["account_id"].astype("string"),
        amount=frame["amount"].astype("Float64"),
        is_won=frame["is_won"].astype("boolean"),
        is_closed=frame["is_closed"].astype("boolean"),
        created_at=pd.to_datetime(frame["created_at"], utc=True),
        closed_at=pd.to_datetime(frame["closed_at"], utc=True),
        lead_source=frame["lead_source"].astype("string"),
    )


def test_aggregates_by_hand(accounts, deals):
    agg = deal_aggregates(accounts, deals)
    assert list(agg.columns) == list(AGGREGATE_COLUMNS)
    assert list(agg.index) == [10, 11, 12, 13]
    a, b, c, d = (agg.loc[i] for i in [10, 11, 12, 13])
    assert a["won_amount"] == 180.0 and a["won_deals"] == 3 and a["lost_deals"] == 1
    assert a["first_won_at"] == ts("2023-01-31") and a["last_won_at"] == ts("2025-07-01")
    assert a["won_span_days"] == (ts("2025-07-01") - ts("2023-01-31")).days
    assert a["avg_cycle_days"] == pytest.approx((30 + 60 + 30) / 3)
    assert a["referral_deals"] == 1
    assert a["child_accounts"] == 2
    # B: a won deal with no amount adds nothing (but counts), and "PARTNER program" is a referral source.
    assert b["won_amount"] == 0.0 and b["won_deals"] == 1 and b["referral_deals"] == 1
    assert b["avg_cycle_days"] == 10
    # C: only a lost deal: zero won, no dates.
    assert (
        c["won_amount"] == 0.0 and c["won_deals"] == 0 and c["lost_deals"] == 1 and c["referral_deals"] == 0
    )
    assert pd.isna(c["first_won_at"]) and pd.isna(c["avg_cycle_days"]) and pd.isna(c["won_span_days"])
    # D: nothing at all; a parent id that is not in the book is simply not counted.
    assert d["won_deals"] == 0 and d["child_accounts"] == 0


def test_dtypes(accounts, deals):
    agg = deal_aggregates(accounts, deals)
    assert str(agg["won_amount"].dtype) == "Float64"
    for col in ("won_deals", "lost_deals", "referral_deals", "child_accounts"):
        assert str(agg[col].dtype) == "Int64"
    assert str(agg["first_won_at"].dtype).startswith("datetime64") and agg["first_won_at"].dt.tz is not None


def test_as_of_keeps_only_deals_closed_before_it(accounts, deals):
    agg = deal_aggregates(accounts, deals, as_of="2024-02-15")
    a = agg.loc[10]
    assert a["won_deals"] == 1 and a["won_amount"] == 100.0 and a["lost_deals"] == 1
    assert agg.loc[11, "won_deals"] == 0


def test_no_deals_means_unknown_not_zero(accounts):
    agg = deal_aggregates(accounts, None)
    deal_columns = [c for c in AGGREGATE_COLUMNS if c != "child_accounts"]
    assert agg[deal_columns].isna().all().all()
    assert list(agg["child_accounts"]) == [2, 0, 0, 0]


def test_empty_deals_means_observed_zero(accounts, deals):
    agg = deal_aggregates(accounts, deals.iloc[0:0])
    assert (agg["won_deals"] == 0).all() and (agg["won_amount"] == 0).all()


def test_custom_referral_sources(accounts, deals):
    agg = deal_aggregates(accounts, deals, referral_sources=("web",))
    assert agg.loc[10, "referral_deals"] == 2


def test_duplicate_ids_are_an_error(accounts, deals):
    dup = pd.concat([accounts, accounts.iloc[[0]]])
    with pytest.raises(ScoringError, match="unique"):
        deal_aggregates(dup, deals)


def test_missing_required_deal_column(accounts, deals):
    with pytest.raises(ScoringError, match="is_won"):
        deal_aggregates(accounts, deals.drop(columns=["is_won"]))


def test_with_aggregates_keeps_account_columns_and_rollups_without_deals(accounts, deals):
    out = with_aggregates(accounts, deals)
    assert list(out.columns[:3]) == ["id", "name", "parent_id"] and "won_amount" in out
    rolled = accounts.assign(won_amount=pd.array([5.0, 6.0, 7.0, 8.0], dtype="Float64"))
    kept = with_aggregates(rolled, None)
    assert list(kept["won_amount"]) == [5.0, 6.0, 7.0, 8.0]
    replaced = with_aggregates(rolled, deals)
    assert replaced.loc[10, "won_amount"] == 180.0


def test_agrees_with_a_plain_groupby_on_the_sample_book(book, book_with_aggs):
    deals = book.deals
    closed = deals[deals["is_closed"].fillna(False)]
    won = closed[closed["is_won"].fillna(False)]
    by_account = won.groupby("account_id")
    expected_amount = by_account["amount"].sum().reindex(book.accounts["id"], fill_value=0).to_numpy(float)
    expected_count = by_account.size().reindex(book.accounts["id"], fill_value=0).to_numpy()
    expected_last = by_account["closed_at"].max().reindex(book.accounts["id"])
    got = book_with_aggs
    np.testing.assert_allclose(got["won_amount"].to_numpy(float), expected_amount)
    np.testing.assert_array_equal(got["won_deals"].to_numpy(int), expected_count)
    np.testing.assert_array_equal(
        got["last_won_at"].to_numpy(dtype="datetime64[ns]"), expected_last.to_numpy(dtype="datetime64[ns]")
    )
    children = book.accounts["parent_id"].value_counts().reindex(book.accounts["id"], fill_value=0)
    np.testing.assert_array_equal(got["child_accounts"].to_numpy(int), children.to_numpy())
