"""The club of best customers (docs/architecture.md, "Scoring"): the ~10 accounts the profile is learned from.

Sits between the deal aggregates and the profile: each criterion is a named boolean rule over accounts +
aggregates (the condition language, with OR between alternatives), a member meets at least `min_criteria`
of them, members rank by criteria met then won_amount, and pinned ids are always in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scoring.aggregates import AGGREGATE_COLUMNS
from scoring.conditions import (
    TEXT_DTYPE,
    Condition,
    describe_conditions,
    evaluate,
    resolve_conditions,
    validate_conditions,
)
from scoring.errors import ClubError, check_not_empty, require_columns

__all__ = [
    "DEFAULT_CRITERIA",
    "Club",
    "ClubError",
    "Criterion",
    "criteria_from_config",
    "evaluate_criteria",
    "select_club",
    "validate_criteria",
]


@dataclass(frozen=True)
class Criterion:
    """A named test an account passes when it meets *any* of `any_of`, each a list of conditions (AND).

    Most criteria have a single alternative; `Criterion.when(name, [...])` builds one.
    """

    name: str
    any_of: tuple[tuple[Condition, ...], ...]
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "any_of", tuple(tuple(Condition.from_item(c) for c in alt) for alt in self.any_of)
        )

    @classmethod
    def when(
        cls, name: str, conditions: Sequence[Condition | Mapping[str, Any]], description: str = ""
    ) -> Criterion:
        return cls(name, (tuple(conditions),), description)

    @property
    def fields(self) -> set[str]:
        return {c.field for alt in self.any_of for c in alt}


def _c(field_: str, op: str, value: Any = None) -> dict[str, Any]:
    return {"field": field_, "op": op, "value": value}


_BUYER = _c("won_deals", ">=", 1)

#: How many best customers the profile is learned from, and how many criteria each must meet
#: (`[club] size`, `[club] min_criteria`).
CLUB_SIZE = 10
MIN_CRITERIA = 5

#: The default criteria: what standard CRM data can measure. Quantiles are taken among the rows that
#: meet the alternative's other conditions (buyers, for lifetime_value).
DEFAULT_CRITERIA = (
    Criterion.when("has_bought", [_BUYER], "has at least one won deal"),
    Criterion.when(
        "lifetime_value", [_BUYER, _c("won_amount", ">=", "p75")], "top quartile of won_amount among buyers"
    ),
    Criterion(
        "loyal",
        ((_c("won_deals", ">=", 2),), (_c("won_span_days", ">=", 365),)),
        ">= 2 won deals, or >= 12 months between first and last win",
    ),
    Criterion.when(
        "cheap_to_acquire",
        [_c("avg_cycle_days", "<", "median")],
        "average sales cycle of won deals below the median among buyers",
    ),
    Criterion(
        "expansion",
        ((_c("child_accounts", ">=", 1),), (_c("parent_id", "is_missing", False),)),
        "has subsidiaries in the book, or is one",
    ),
    Criterion.when("referral", [_c("referral_deals", ">=", 1)], "won a deal through a referral or partner"),
    Criterion.when(
        "financial_capacity", [_c("annual_revenue", ">", "median")], "annual revenue above the book's median"
    ),
)
_DEFAULTS_BY_NAME = {c.name: c for c in DEFAULT_CRITERIA}


@dataclass
class Club:
    """The chosen best customers and how they were chosen.

    `members` has one row per member, best first: id, name, criteria_met (comma-separated names), n_met,
    won_amount, pinned. `criteria` has one row per criterion: the rule with quantiles resolved, how many
    accounts meet it and what share of buyers does
    (of all accounts when nobody has bought, e.g. a club of pinned ids). `warnings` explain shortfalls in plain words.
    """

    members: pd.DataFrame
    criteria: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    min_criteria: int = MIN_CRITERIA
    club_size: int = CLUB_SIZE
    qualified: int = 0

    @property
    def ids(self) -> list[str]:
        return [str(i) for i in self.members["id"]]

    def __len__(self) -> int:
        return len(self.members)


def validate_criteria(
    criteria: Sequence[Criterion], columns: Iterable[str], where: str = "club.criteria"
) -> list[str]:
    """Every problem in the criteria's conditions against the book's columns, each naming its location."""
    columns = list(columns)
    problems: list[str] = []
    seen: set[str] = set()
    for i, crit in enumerate(criteria):
        if crit.name in seen:
            problems.append(f'{where}[{i}]: criterion "{crit.name}" is defined twice')
        seen.add(crit.name)
        for j, alt in enumerate(crit.any_of):
            loc = f"{where}[{i}].{'when' if len(crit.any_of) == 1 else f'any[{j}]'}"
            problems += validate_conditions(list(alt), columns, loc)
    return problems


def criteria_from_config(items: Any, where: str = "club.criteria") -> list[Criterion]:
    """Parse `[club] criteria`: a default's name ("loyal") or a table `{name, when = [...]}` or
    `{name, any = [[...], [...]]}`, with an optional `description`. A custom criterion with a default's name
    replaces it. Raises `ClubError` listing every shape problem; fields are checked later against the book.
    """
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise ClubError(f"{where}: must be a list of criterion names or tables {{name, when}}")
    problems: list[str] = []
    out: list[Criterion] = []
    for i, item in enumerate(items):
        loc = f"{where}[{i}]"
        if isinstance(item, str):
            if item not in _DEFAULTS_BY_NAME:
                problems.append(
                    f'{loc}: unknown criterion "{item}"; built in: {", ".join(_DEFAULTS_BY_NAME)}'
                )
            else:
                out.append(_DEFAULTS_BY_NAME[item])
            continue
        if not isinstance(item, Mapping):
            problems.append(f"{loc}: must be a criterion name or a table {{name, when}}, got {item!r}")
            continue
        extra = sorted(set(item) - {"name", "when", "any", "description"})
        if extra:
            problems.append(f'{loc}: unknown key "{extra[0]}"; allowed: name, when, any, description')
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(f'{loc}: missing "name"')
        if ("when" in item) == ("any" in item):
            problems.append(
                f'{loc}: give exactly one of "when" (conditions that must all hold) or "any" '
                "(a list of such lists, any of which may hold)"
            )
            continue
        alternatives = [item["when"]] if "when" in item else item["any"]
        if not isinstance(alternatives, Sequence) or isinstance(alternatives, str) or not alternatives:
            problems.append(f"{loc}.any: must be a non-empty list of condition lists")
            continue
        shape_ok = True
        for j, alt in enumerate(alternatives):
            alt_loc = f"{loc}.when" if "when" in item else f"{loc}.any[{j}]"
            fields = [c.get("field") for c in alt if isinstance(c, Mapping)] if isinstance(alt, list) else []
            alt_problems = validate_conditions(alt, [f for f in fields if isinstance(f, str)], alt_loc)
            problems += alt_problems
            shape_ok = shape_ok and not alt_problems
        if shape_ok and isinstance(name, str) and name.strip():
            out.append(
                Criterion(name, tuple(tuple(a) for a in alternatives), str(item.get("description", "")))
            )
    if problems:
        raise ClubError("\n".join(problems))
    return out


def evaluate_criteria(
    book: pd.DataFrame, criteria: Sequence[Criterion]
) -> tuple[pd.DataFrame, dict[str, str]]:
    """A boolean frame (rows = accounts, columns = criterion names) and each criterion's rule in plain words,
    quantiles resolved against this book (e.g. `won_deals >= 1 and won_amount >= 41,300 (p75)`)."""
    met = {}
    rules = {}
    for i, crit in enumerate(criteria):
        mask = np.zeros(len(book), dtype=bool)
        texts = []
        for j, alt in enumerate(crit.any_of):
            where = f"club.criteria[{i}]" + (".when" if len(crit.any_of) == 1 else f".any[{j}]")
            resolved = resolve_conditions(book, alt, where=where)
            mask |= evaluate(book, resolved, where=where).to_numpy()
            texts.append(describe_conditions(resolved))
        met[crit.name] = mask
        rules[crit.name] = " or ".join(f"({t})" if len(texts) > 1 else t for t in texts)
    return pd.DataFrame(met, index=book.index), rules


def select_club(
    book_with_aggs: pd.DataFrame,
    criteria: Sequence[Criterion] | None = None,
    *,
    min_criteria: int = MIN_CRITERIA,
    club_size: int = CLUB_SIZE,
    pinned: Iterable[str] = (),
) -> Club:
    """Pick the club from a book that carries the deal aggregates (see `with_aggregates`).

    Raises `ClubError` for an empty book, unknown pinned ids, invalid criteria, a book without deal data and
    nothing pinned, or no qualifier at all; fewer qualifiers than `club_size` is only a warning.
    """
    book = book_with_aggs
    check_not_empty(book)
    require_columns(book, ["id"], "the book")
    criteria = list(DEFAULT_CRITERIA if criteria is None else criteria)
    if not criteria:
        raise ClubError(
            "club.criteria is empty: give at least one criterion (or leave it out for the defaults)"
        )
    if not 1 <= min_criteria <= len(criteria):
        raise ClubError(
            f"club.min_criteria must be between 1 and the {len(criteria)} criteria, got {min_criteria}"
        )
    if club_size < 1:
        raise ClubError(f"club.club_size must be at least 1, got {club_size}")

    pinned = list(dict.fromkeys(str(p) for p in pinned))
    ids = book["id"].astype(TEXT_DTYPE)
    unknown = sorted(set(pinned) - set(ids[ids.isin(pinned)].tolist())) if pinned else []
    if unknown:
        raise ClubError(f"club.pinned ids not in the book: {', '.join(unknown)}")

    _check_deal_data(book, criteria, bool(pinned))
    problems = validate_criteria(criteria, book.columns)
    if problems:
        raise ClubError("\n".join(problems))

    met, rules = evaluate_criteria(book, criteria)
    met_arr = met.to_numpy()
    n_met = met_arr.sum(axis=1)
    won_amount = (
        book["won_amount"].to_numpy(dtype="float64", na_value=np.nan)
        if "won_amount" in book.columns
        else np.full(len(book), np.nan)
    )
    is_pinned = ids.isin(pinned).to_numpy(dtype=bool) if pinned else np.zeros(len(book), dtype=bool)
    qualifies = n_met >= min_criteria
    n_qualified = int(qualifies.sum())

    buyers = _buyers(book)
    share_base = buyers if buyers.any() else np.ones(len(book), dtype=bool)
    criteria_table = pd.DataFrame(
        {
            "criterion": [c.name for c in criteria],
            "rule": [rules[c.name] for c in criteria],
            "description": [c.description for c in criteria],
            "accounts": met_arr.sum(axis=0).astype(np.int64),
            "share_of_buyers": met_arr[share_base].mean(axis=0),
        }
    )

    # Rank the qualifiers (not the whole book) by criteria met, then won_amount, then id for determinism.
    cand = np.flatnonzero(qualifies & ~is_pinned)
    order = np.lexsort(
        (ids.to_numpy(dtype=object)[cand], -np.nan_to_num(won_amount[cand], nan=-np.inf), -n_met[cand])
    )
    fill = max(club_size - int(is_pinned.sum()), 0)
    chosen = np.concatenate([np.flatnonzero(is_pinned), cand[order[:fill]]])
    if chosen.size == 0:
        raise ClubError(
            f"no account meets at least {min_criteria} of the {len(criteria)} club criteria. "
            + _hardest(criteria_table, buyers.any())
            + " Lower [club] min_criteria or pin known best customers with [club] pinned."
        )

    members = pd.DataFrame(
        {
            "id": ids.to_numpy(dtype=object)[chosen],
            "name": book["name"].to_numpy(dtype=object)[chosen] if "name" in book.columns else pd.NA,
            "criteria_met": [", ".join(met.columns[met_arr[i]]) for i in chosen],
            "n_met": n_met[chosen].astype(np.int64),
            "won_amount": won_amount[chosen],
            "pinned": is_pinned[chosen],
        }
    )
    rank = np.lexsort(
        (
            members["id"].to_numpy(dtype=object),
            -np.nan_to_num(members["won_amount"].to_numpy(), nan=-np.inf),
            -members["n_met"].to_numpy(),
        )
    )
    members = members.iloc[rank].reset_index(drop=True)
    members = members.astype(
        {
            "id": TEXT_DTYPE,
            "name": TEXT_DTYPE,
            "criteria_met": TEXT_DTYPE,
            "n_met": "Int64",
            "won_amount": "Float64",
        }
    )

    warnings = []
    n_pinned = int(is_pinned.sum())
    if n_pinned > club_size:
        warnings.append(
            f"{n_pinned} ids are pinned, more than club_size {club_size}: the club holds all of them"
        )
    elif len(chosen) < club_size:
        short = club_size - len(chosen)
        warnings.append(
            f"only {n_qualified} account{'s' if n_qualified != 1 else ''} meet at least {min_criteria} of the "
            f"{len(criteria)} criteria"
            + (f" (plus {n_pinned} pinned)" if n_pinned else "")
            + f", so the club has {len(chosen)} member{'s' if len(chosen) != 1 else ''}, {short} short of "
            f"club_size {club_size}. "
            + _hardest(criteria_table, buyers.any())
            + " A small club gives a rougher profile; lower [club] min_criteria or pin known best customers."
        )
    return Club(
        members=members,
        criteria=criteria_table,
        warnings=warnings,
        min_criteria=min_criteria,
        club_size=club_size,
        qualified=n_qualified,
    )


def _buyers(book: pd.DataFrame) -> np.ndarray:
    if "won_deals" not in book.columns:
        return np.zeros(len(book), dtype=bool)
    return book["won_deals"].to_numpy(dtype="float64", na_value=0.0) >= 1


def _hardest(table: pd.DataFrame, among_buyers: bool) -> str:
    hardest = table.sort_values(["share_of_buyers", "criterion"]).head(3)
    base = "of buyers" if among_buyers else "of accounts"
    parts = [f"{r.criterion} ({r.share_of_buyers:.0%} {base})" for r in hardest.itertuples()]
    return f"The hardest criteria to meet: {', '.join(parts)}."


def _check_deal_data(book: pd.DataFrame, criteria: Sequence[Criterion], has_pinned: bool) -> None:
    if has_pinned:
        return
    deal_fields = {f for c in criteria for f in c.fields} & set(AGGREGATE_COLUMNS) - {"child_accounts"}
    if not deal_fields:
        return  # custom criteria over firmographics alone need no deals
    present = [f for f in deal_fields if f in book.columns and book[f].notna().any()]
    if not present:
        raise ClubError(
            "no deal data: the club of best customers is picked from won deals, so a deals file (or a CRM "
            "with opportunities/deals) or `[club] pinned` account ids are needed"
        )
    if "won_deals" in book.columns and not _buyers(book).any():
        raise ClubError(
            "no account has a won deal in the deals data (before as_of, if given): a deals file with won "
            "deals or `[club] pinned` account ids are needed to pick the club"
        )
