"""The scoring pipeline as library calls: load a book, learn the club and profile, score, explain, backtest.

The CLI is a thin layer over these functions and the ones built on them (sync/setup: fields, doctor, pull;
sync/demo); the nightly job (sync/job) reuses them between its pull and its plan. Everything here takes a
validated `Config`; CRM access goes through `connectors/`, maths through `scoring/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from connectors import csvfile
from connectors.schema import ParseReport
from scoring.aggregates import AGGREGATE_COLUMNS, with_aggregates
from scoring.backtest import backtest as backtest_book
from scoring.club import Club, select_club, validate_criteria
from scoring.conditions import TEXT_DTYPE
from scoring.errors import ScoringError
from scoring.fit import Tiers, attribute_matches, score, summarize
from scoring.profile import Profile, format_number, learn_profile, load_profile, save_profile
from scoring.segments import assign_segments, validate_rules
from sync.config import Config, ConfigError

SCORE_COLUMNS = ("icp_segment", "icp_fit_score", "icp_tier", "icp_reasons", "icp_scored_at", "icp_model")


@dataclass
class Book:
    """Accounts (with deal aggregates) and deals, as pulled from the configured source."""

    accounts: pd.DataFrame
    deals: pd.DataFrame | None
    report: ParseReport = field(default_factory=ParseReport)
    source: str = ""


@dataclass
class Learned:
    club: Club
    profile: Profile
    path: Any = None


def load_book(config: Config, *, as_of: Any = None, progress: bool = False) -> Book:
    """Read the configured book (a CSV export, or every account and closed deal in the CRM) and add deal
    aggregates; rules naming unknown fields fail here, all at once."""
    if config.crm in ("salesforce", "sandbox"):
        from sync.crm import open_crm

        with open_crm(config) as connector:
            return book_from_crm(config, connector, as_of=as_of, progress=progress)
    if config.csv is None:
        raise ConfigError(config.path, ['[csv] accounts: required when crm.kind = "csv"'])
    c = config.csv
    raw = csvfile.read_book(
        c.accounts,
        c.deals,
        c.account_columns,
        c.deal_columns if c.deals else None,
        {"won": list(c.won_stages), "lost": list(c.lost_stages)} if c.deals else None,
    )
    accounts = with_aggregates(raw.accounts, raw.deals, as_of, referral_sources=config.referral_sources)
    check_rules(config, accounts.columns)
    return Book(accounts=accounts, deals=raw.deals, report=raw.report, source=str(c.accounts))


def book_from_crm(config: Config, connector, *, as_of: Any = None, progress: bool = False) -> Book:
    """Every account and closed deal the connector can see, with deal aggregates."""
    from sync.crm import pull_accounts, pull_deals

    report = ParseReport()  # unreadable CRM values, reported like a CSV book's
    accounts = pull_accounts(connector, progress=progress, report=report)
    deals = pull_deals(connector, report=report)
    accounts = accounts.drop(
        columns=[c for c in accounts.columns if c.startswith("live_") or c == "_modstamp"]
    )
    if accounts.empty:
        raise ScoringError(f"the {config.crm} org has no accounts to learn from or score")
    accounts = with_aggregates(accounts, deals, as_of, referral_sources=config.referral_sources)
    check_rules(config, accounts.columns)
    return Book(accounts=accounts, deals=deals, report=report, source=config.crm)


def check_rules(config: Config, columns) -> None:
    """Segments, club criteria and profile attributes must name columns the book has."""
    columns = list(columns)
    problems = validate_rules(list(config.segments), columns, "segments")
    problems += validate_criteria(list(config.criteria), columns, "club.criteria")
    for i, name in enumerate(config.attributes):
        if name not in columns:
            known = ", ".join(c for c in columns if c not in AGGREGATE_COLUMNS)
            problems.append(
                f"scoring.attributes[{i}] = {name!r}: the book has no such column; it has: {known}"
            )
    if problems:
        raise ConfigError(config.path, problems)


def learn(config: Config, book: Book, *, as_of: Any = None, save: bool = True) -> Learned:
    """Choose the club, learn the profile from it, and (by default) save it to the config's profile path."""
    club = select_club(
        book.accounts,
        list(config.criteria),
        min_criteria=config.min_criteria,
        club_size=config.club_size,
        pinned=config.pinned,
    )
    profile = learn_profile(
        book.accounts,
        club.ids,
        config.attributes,
        as_of=as_of,
        settings={
            "club_size": config.club_size,
            "min_criteria": config.min_criteria,
            "criteria": [c.name for c in config.criteria],
            "pinned": list(config.pinned),
        },
    )
    path = save_profile(profile, config.profile_path) if save else None
    return Learned(club=club, profile=profile, path=path)


def read_profile(config: Config) -> Profile:
    return load_profile(config.profile_path)


def tiers_of(config: Config) -> Tiers:
    a, b, c = config.tiers
    return Tiers(a=a, b=b, c=c)


def score_book(
    config: Config, book: Book, profile: Profile, *, scored_at: pd.Timestamp | None = None
) -> pd.DataFrame:
    """One row per account, indexed by account id: the six ICP columns plus `name` and `data_completeness`."""
    accounts = book.accounts
    missing = [a.name for a in profile.attributes if a.name not in accounts.columns]
    if missing:
        raise ScoringError(
            f"the profile at {config.profile_path} scores {', '.join(missing)}, which this book lacks; "
            "relearn it (`icp profile learn`) or map those columns"
        )
    fit = score(accounts, profile, tiers=tiers_of(config), reasons_max_len=config.reasons_max_len)
    scored_at = scored_at or pd.Timestamp.now(tz="UTC").floor("s")
    n = len(accounts)

    def text(values) -> pd.api.extensions.ExtensionArray:
        # Explicitly object-backed text: pandas 3 would otherwise infer `str`, Arrow-backed (a copy of every
        # row's text) when pyarrow is installed (docs/architecture.md, "String dtypes").
        if isinstance(values, pd.Series):
            if values.dtype == TEXT_DTYPE:
                return values.array  # canonical columns already are: no copy
            values = values.to_numpy(dtype=object, na_value=None)
        return pd.array(values, dtype=TEXT_DTYPE)

    out = pd.DataFrame(
        {
            "name": text(accounts["name"]),
            "icp_segment": text(assign_segments(accounts, list(config.segments))),
            "icp_fit_score": fit["icp_fit_score"].array,
            "icp_tier": fit["icp_tier"].array,
            "icp_reasons": fit["icp_reasons"].array,
            "icp_scored_at": text(np.full(n, scored_at.strftime("%Y-%m-%dT%H:%M:%SZ"), dtype=object)),
            "icp_model": text(np.full(n, profile.version, dtype=object)),
            "data_completeness": fit["data_completeness"].array,
        },
        index=pd.Index(text(accounts["id"]), name="id"),
    )
    return out


def write_output(config: Config, scored: pd.DataFrame, out_path=None) -> tuple[Any, int]:
    """Write the accounts file with the ICP columns appended (CSV books); returns (path, rows scored)."""
    if config.crm != "csv" or config.csv is None:
        # From a CRM there is no export to append to: write id, name and the ICP columns (the CRM itself is
        # only ever written by `icp run`).
        path = out_path or config.base_dir / "icp-scored.csv"
        csvfile.write_frame(scored[["name", *SCORE_COLUMNS, "data_completeness"]].reset_index(), path)
        return path, len(scored)
    path = out_path or config.csv.output
    n = csvfile.write_scored(
        config.csv.accounts, path, scored[list(SCORE_COLUMNS)], columns=config.csv.account_columns
    )
    return path, n


def score_summary(scored: pd.DataFrame, profile: Profile) -> dict:
    summary = summarize(scored, profile.club_ids, ids=scored.index.to_series())
    summary["segments"] = {str(k): int(v) for k, v in scored["icp_segment"].value_counts().items()}
    summary["model"] = profile.version
    return summary


def segment_tier_table(scored: pd.DataFrame) -> pd.DataFrame:
    """Accounts per segment (rows) and tier (columns), with totals: what a sales lead reads first."""
    table = pd.crosstab(scored["icp_segment"], scored["icp_tier"], margins=True, margins_name="Total")
    return table.reindex(
        columns=[c for c in ["A", "B", "C", "D", "Total"] if c in table.columns], fill_value=0
    )


def explain(config: Config, book: Book, profile: Profile, account_id: str) -> dict:
    """Why one account got its score: each profile attribute, its value, what the profile wants, the match."""
    ids = book.accounts["id"].astype("string")
    hit = ids == str(account_id)
    if not hit.any():
        close = ids[ids.str.contains(str(account_id), regex=False, na=False)].head(5).tolist()
        hint = f"; ids containing it: {', '.join(close)}" if close else ""
        raise ScoringError(f"no account with id {account_id!r} in {book.source}{hint}")
    row = book.accounts[hit.to_numpy()]
    scored = score_book(config, Book(row, None, source=book.source), profile)
    matches = attribute_matches(row, profile).iloc[0]
    total = sum(a.weight for a in profile.attributes)
    attributes = []
    for attr in profile.attributes:
        value = row[attr.name].iloc[0]
        wants = (
            ", ".join(attr.values)
            if attr.kind == "categorical"
            else f"{format_number(attr.low)}-{format_number(attr.high)}"
        )
        attributes.append(
            {
                "attribute": attr.name,
                "value": None if pd.isna(value) else (value.item() if hasattr(value, "item") else value),
                "profile": wants,
                "match": round(float(matches[attr.name]), 3),
                "weight": attr.weight,
                "points": round(100 * attr.weight * float(matches[attr.name]) / total, 1),
            }
        )
    first = scored.iloc[0]
    return {
        "id": str(account_id),
        "name": None if pd.isna(first["name"]) else str(first["name"]),
        "segment": str(first["icp_segment"]),
        "fit_score": int(first["icp_fit_score"]),
        "tier": str(first["icp_tier"]),
        "data_completeness": float(first["data_completeness"]),
        "reasons": str(first["icp_reasons"]),
        "model": profile.version,
        "in_club": str(account_id) in profile.club_ids,
        "attributes": attributes,
    }


def run_backtest(config: Config, book: Book, *, as_of: Any, n_boot: int = 1000, seed: int = 0):
    """Learn as of `as_of` from deals closed before it, score, and compare with deals closed after it."""
    if book.deals is None:
        raise ScoringError('a backtest needs deals: add a deals file to [csv] (deals = "deals.csv")')
    return backtest_book(
        book.accounts.drop(columns=[c for c in AGGREGATE_COLUMNS if c in book.accounts.columns]),
        book.deals,
        as_of=as_of,
        criteria=list(config.criteria),
        min_criteria=config.min_criteria,
        club_size=config.club_size,
        pinned=config.pinned,
        attributes=config.attributes,
        tiers=tiers_of(config),
        n_boot=n_boot,
        seed=seed,
    )
