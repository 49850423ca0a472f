"""Deal aggregates per account (docs/architecture.md, "Data model"): the measurable part of "a best customer".

First step of the scoring pipeline: accounts + deals -> accounts + won_amount, won_deals, ... which the club
criteria read. Everything is a handful of array reductions (`bincount`, `minimum.at`) over the deals, keyed by
the account's position, an integer code found once per deal (`account_positions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from scoring.conditions import normalise_text, text_codes
from scoring.errors import ScoringError, require_columns

__all__ = ["AGGREGATE_COLUMNS", "AccountIndex", "deal_aggregates", "to_utc", "with_aggregates"]

#: Lead-source words that make a won deal a referral (`[club] referral_sources`).
REFERRAL_SOURCES: tuple[str, ...] = ("referral", "partner")

#: Columns `deal_aggregates` adds. `won_span_days` (days from first to last win) is beyond the data model's list: it
#: lets the default `loyal` criterion ("12 months between first and last win") be written as a condition.
AGGREGATE_COLUMNS = (
    "won_amount",
    "won_deals",
    "lost_deals",
    "first_won_at",
    "last_won_at",
    "won_span_days",
    "avg_cycle_days",
    "referral_deals",
    "child_accounts",
)
_NS_PER_DAY = 86_400 * 10**9
_NAT = np.iinfo(np.int64).min


def to_utc(value: Any) -> pd.Timestamp:
    """A date-like value as a UTC timestamp (naive values are taken to be UTC)."""
    ts = pd.Timestamp(value)
    if ts is pd.NaT:
        raise ScoringError(f"not a date: {value!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def deal_aggregates(
    accounts: pd.DataFrame,
    deals: pd.DataFrame | None,
    *,
    as_of: Any = None,
    referral_sources: Sequence[str] = REFERRAL_SOURCES,
) -> pd.DataFrame:
    """Per-account deal aggregates, aligned to `accounts` (same index and order).

    - `won_amount` sums the amounts of won deals: 0 for an account with no won deal is an observed sum, not a
      filler; a won deal with no amount adds nothing. With `deals=None` every deal column is NA (unknown).
    - `won_deals`, `lost_deals`, `referral_deals` count closed deals (a won deal counts as referral when its
      `lead_source` contains one of `referral_sources`, ignoring case).
    - `first_won_at`, `last_won_at` (UTC), `won_span_days` (last minus first win) and `avg_cycle_days`
      (created to closed, won deals with both dates) are NA without a won deal.
    - `child_accounts` counts accounts whose `parent_id` is this account's id (needs no deals).
    - `as_of` keeps only deals closed strictly before it, so a backtest learns from the past alone.
    Deals whose `account_id` is not in `accounts` are ignored.
    """
    require_columns(accounts, ["id"], "the accounts")
    n = len(accounts)
    index = AccountIndex(accounts["id"])

    out = pd.DataFrame(index=accounts.index)
    if deals is None:
        out["won_amount"] = pd.array([pd.NA] * n, dtype="Float64")
        for col in ("won_deals", "lost_deals", "referral_deals"):
            out[col] = pd.array([pd.NA] * n, dtype="Int64")
        for col in ("first_won_at", "last_won_at"):
            out[col] = pd.Series(pd.NaT, index=accounts.index, dtype="datetime64[ns, UTC]")
        for col in ("won_span_days", "avg_cycle_days"):
            out[col] = pd.array([pd.NA] * n, dtype="Float64")
    else:
        _add_deal_columns(out, index, deals, as_of, referral_sources)
    out["child_accounts"] = pd.array(_child_counts(accounts, index), dtype="Int64")
    return out[list(AGGREGATE_COLUMNS)]


def with_aggregates(
    accounts: pd.DataFrame,
    deals: pd.DataFrame | None,
    as_of: Any = None,
    *,
    referral_sources: Sequence[str] = REFERRAL_SOURCES,
) -> pd.DataFrame:
    """`accounts` plus the aggregate columns (computed ones replace same-named columns).

    With `deals=None`, aggregate columns the accounts already carry (a CRM roll-up, say) are kept rather than
    blanked: they are the only deal knowledge there is.
    """
    aggs = deal_aggregates(accounts, deals, as_of=as_of, referral_sources=referral_sources)
    keep = [
        c for c in aggs.columns if not (deals is None and c in accounts.columns and c != "child_accounts")
    ]
    # assign is shallow under copy-on-write: the account columns are not copied.
    return accounts.assign(**{c: aggs[c] for c in keep})


class AccountIndex:
    """Integer codes of ids against the accounts' ids: each id's account position, -1 when it is none of them.

    Text ids are matched by their Python hash (int64), so the lookups run in an integer hash table, and
    every match is then checked by comparing the strings, so a hash collision falls back to the exact string
    lookup and is never a wrong match. Hashing Python strings in an object table is what made deal
    aggregates slower than linear at millions of deals: each probe reads two strings scattered in memory.
    """

    def __init__(self, ids: pd.Series) -> None:
        self._values = _plain_text(ids)
        self._index: pd.Index | None = None
        self._hashes: pd.Index | None = None
        if self._values is not None:
            hashes = pd.Index(_hashes(self._values))
            if hashes.is_unique:
                self._hashes = hashes
        if self._hashes is None:
            self._exact(ids)
        self._n = len(ids)

    def __len__(self) -> int:
        return self._n

    def _exact(self, ids: pd.Series | None = None) -> pd.Index:
        if self._index is None:
            index = pd.Index(ids if ids is not None else self._values)
            if not index.is_unique:
                dupes = index[index.duplicated()].unique()[:5]
                raise ScoringError(f"account ids must be unique; duplicated: {', '.join(map(str, dupes))}")
            self._index = index
        return self._index

    def positions(self, keys: pd.Series) -> np.ndarray:
        """The account position of each key (-1 for a key that is no account's id, or missing)."""
        values = _plain_text(keys, allow_missing=True) if self._hashes is not None else None
        if values is None:
            return np.asarray(self._exact().get_indexer(keys), dtype=np.int64)
        missing = pd.isna(values) if None in values else None
        if missing is None:  # every key a str: the usual case, no masking
            found = self._hashes.get_indexer(_hashes(values))
            hit = found >= 0
            if (self._values[found[hit]] == values[hit]).all():
                return np.asarray(found, dtype=np.int64)
            return np.asarray(self._exact().get_indexer(keys), dtype=np.int64)  # a hash collision
        present = np.flatnonzero(~missing)
        pos = np.full(len(values), -1, dtype=np.int64)
        found = self._hashes.get_indexer(_hashes(values[present]))
        hit = found >= 0
        if not (self._values[found[hit]] == values[present][hit]).all():
            return np.asarray(self._exact().get_indexer(keys), dtype=np.int64)  # a hash collision
        pos[present] = found
        return pos


def _plain_text(column: pd.Series, *, allow_missing: bool = False) -> np.ndarray | None:
    """The column as an object array of str (None where missing, if allowed); None when it holds anything
    else (numbers, categories, ...), which then go through the exact lookup."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return None
    values = column.to_numpy(dtype=object)
    kind = pd.api.types.infer_dtype(values, skipna=False)
    if kind == "string" or not allow_missing:
        return values if kind == "string" else None
    values = column.to_numpy(dtype=object, na_value=None)
    kind = pd.api.types.infer_dtype(values, skipna=True)
    return values if kind in ("string", "empty") else None


def _hashes(values: np.ndarray) -> np.ndarray:
    return np.fromiter(map(hash, values.tolist()), dtype=np.int64, count=len(values))


def _add_deal_columns(
    out: pd.DataFrame,
    index: AccountIndex,
    deals: pd.DataFrame,
    as_of: Any,
    referral_sources: Sequence[str],
) -> None:
    require_columns(deals, ["account_id", "is_won"], "the deals")
    n = len(index)
    won_flag = deals["is_won"].to_numpy(dtype="float64", na_value=np.nan)
    closed_at = _ns(deals["closed_at"]) if "closed_at" in deals.columns else None
    if "is_closed" in deals.columns:
        closed = deals["is_closed"].to_numpy(dtype=bool, na_value=False)
    else:
        closed = ~np.isnan(won_flag) if closed_at is None else closed_at != _NAT
    if as_of is not None:
        if closed_at is None:
            raise ScoringError("as_of needs the deals' closed_at column to tell past from future deals")
        closed = closed & (closed_at != _NAT) & (closed_at < to_utc(as_of).as_unit("ns")._value)
    # Only closed deals matter: look up positions for those alone (hashing ids is the costly step).
    keep = np.flatnonzero(closed)
    pos = index.positions(deals["account_id"].take(keep))
    known = pos >= 0
    keep, pos = keep[known], pos[known]
    won = won_flag[keep] == 1.0
    lost = won_flag[keep] == 0.0
    wpos, wrows = pos[won], keep[won]

    won_deals = np.bincount(wpos, minlength=n)
    if "amount" in deals.columns:
        amount = deals["amount"].to_numpy(dtype="float64", na_value=np.nan)[wrows]
        won_amount = np.bincount(wpos, weights=np.nan_to_num(amount, nan=0.0), minlength=n)
    else:
        won_amount = np.full(n, np.nan)
    out["won_amount"] = pd.array(won_amount, dtype="Float64")
    out["won_deals"] = pd.array(won_deals, dtype="Int64")
    out["lost_deals"] = pd.array(np.bincount(pos[lost], minlength=n), dtype="Int64")

    if closed_at is not None:
        t = closed_at[wrows]
        ok = t != _NAT
        first = np.full(n, np.iinfo(np.int64).max)
        last = np.full(n, _NAT)
        np.minimum.at(first, wpos[ok], t[ok])
        np.maximum.at(last, wpos[ok], t[ok])
        dated = last != _NAT
        first[~dated] = _NAT
        out["first_won_at"] = pd.to_datetime(first, utc=True)
        out["last_won_at"] = pd.to_datetime(last, utc=True)
        span = np.where(dated, (last - first) / _NS_PER_DAY, np.nan)
        out["won_span_days"] = pd.array(span, dtype="Float64")
    else:
        out["first_won_at"] = pd.Series(pd.NaT, index=out.index, dtype="datetime64[ns, UTC]")
        out["last_won_at"] = out["first_won_at"]
        out["won_span_days"] = pd.array(np.full(n, np.nan), dtype="Float64")

    if closed_at is not None and "created_at" in deals.columns:
        created = _ns(deals["created_at"])[wrows]
        t = closed_at[wrows]
        ok = (created != _NAT) & (t != _NAT)
        days = (t[ok] - created[ok]) / _NS_PER_DAY
        total = np.bincount(wpos[ok], weights=days, minlength=n)
        count = np.bincount(wpos[ok], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            cycle = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    else:
        cycle = np.full(n, np.nan)
    out["avg_cycle_days"] = pd.array(cycle, dtype="Float64")

    if "lead_source" in deals.columns:
        codes, uniques = text_codes(deals["lead_source"].take(wrows))
        needles = [normalise_text(s) for s in referral_sources]
        lookup = np.array([*(any(nd in u for nd in needles) for u in uniques), False], dtype=bool)
        referral = np.bincount(wpos[lookup[codes]], minlength=n)
        out["referral_deals"] = pd.array(referral, dtype="Int64")
    else:
        out["referral_deals"] = pd.array([pd.NA] * n, dtype="Int64")


def _child_counts(accounts: pd.DataFrame, index: AccountIndex) -> np.ndarray:
    n = len(index)
    if "parent_id" not in accounts.columns:
        return np.zeros(n, dtype=np.int64)
    parent = accounts["parent_id"]
    present = parent.notna().to_numpy(dtype=bool)
    pos = index.positions(parent[present])
    return np.bincount(pos[pos >= 0], minlength=n)


def _ns(series: pd.Series) -> np.ndarray:
    """UTC nanoseconds as int64 (NaT as int64 min); naive datetimes and ISO strings are taken to be UTC."""
    if not pd.api.types.is_datetime64_any_dtype(series.dtype):
        series = pd.to_datetime(series, utc=True, errors="coerce")
    return series.to_numpy(dtype="datetime64[ns]").view(np.int64)
