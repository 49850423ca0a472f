"""Fit (docs/architecture.md, "Scoring"): every account's 0-100 score, tier A-D and reasons against a `Profile`.

Last step of the pipeline before the CRM write-back. Fully vectorised: per attribute one pass gives a match
degree (0-1) and a small status code (which category value; or inside / near / outside the band / missing).
A row's reasons depend only on its status codes, so the codes are combined into one integer per row, the
text is built once per distinct combination (a few thousand at most in practice, whatever the book size),
and `take` hands it to every row. Rows never interact, so scoring chunk by chunk equals scoring whole.

- match: categorical 1 if the value is one of the profile's values (case/spaces ignored), else 0; numeric 1
  inside the band, else 0.5 ** (distance / half_life), the distance measured from the nearest band edge in
  log10 units on a log scale (so half_life 2.0 halves the match per doubling). Missing: 0.
- icp_fit_score = round(100 * sum(weight * match) / sum(weight)); missing values count as no match.
- data_completeness = sum(weight of attributes with a value) / sum(weight).
- reasons: attributes by weight, most important first; "+" matches, "~" near the band (match >= 0.5),
  "-" does not match, "?" unknown. Cut on a whole reason with "…" to fit `reasons_max_len`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from scoring.conditions import TEXT_DTYPE, normalise_text, text_codes
from scoring.errors import ProfileError, ScoringError
from scoring.profile import Profile, ProfileAttribute, format_number

__all__ = [
    "FIT_COLUMNS",
    "Tiers",
    "attribute_matches",
    "iter_chunks",
    "score",
    "score_chunks",
    "summarize",
]

FIT_COLUMNS = ("icp_fit_score", "icp_tier", "icp_reasons", "data_completeness")
TIER_NAMES = ("A", "B", "C", "D")
_ELLIPSIS = "…"
_MAX_VALUES_SHOWN = 4
#: Longest reasons text (`[scoring] reasons_max_len`); also the length the CRM field is created with.
REASONS_MAX_LEN = 1024


@dataclass(frozen=True)
class Tiers:
    """Score thresholds: A >= a, B >= b, C >= c, else D (100 >= a > b > c >= 0)."""

    a: float = 75
    b: float = 50
    c: float = 25

    def __post_init__(self) -> None:
        for name in ("a", "b", "c"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise ScoringError(f"tiers.{name} must be a number, got {value!r}")
        if not 100 >= self.a > self.b > self.c >= 0:
            raise ScoringError(
                f"tiers must descend within 0-100 (100 >= a > b > c >= 0), got a={self.a}, b={self.b}, c={self.c}"
            )

    def of(self, scores: np.ndarray) -> np.ndarray:
        """Tier index per score: 0 = A ... 3 = D."""
        return 3 - (
            (scores >= self.c).astype(np.int8)
            + (scores >= self.b).astype(np.int8)
            + (scores >= self.a).astype(np.int8)
        )


class _CompiledAttribute:
    """A profile attribute turned into what the hot loop needs: normalised sets, log bands, reason texts."""

    def __init__(self, attr: ProfileAttribute):
        self.attr = attr
        self.name = attr.name
        self.weight = attr.weight
        self.label = attr.name.replace("_", " ")
        if attr.kind == "categorical":
            self.wanted = {normalise_text(v): v for v in attr.values}
            shown = list(attr.values[:_MAX_VALUES_SHOWN]) + (
                ["…"] if len(attr.values) > _MAX_VALUES_SHOWN else []
            )
            self.profile_text = ", ".join(shown)
        else:
            self.log = attr.log
            if attr.log:
                self.lo, self.hi = math.log10(attr.low), math.log10(attr.high)
                self.unit = math.log10(attr.half_life)
            else:
                self.lo, self.hi, self.unit = attr.low, attr.high, attr.half_life
            band = f"{format_number(attr.low)}-{format_number(attr.high)}"
            low, high = format_number(attr.low), format_number(attr.high)
            # "employees" reads best after the number ("200-2,500 employees"); other names before it.
            if attr.name == "employees":
                inside = f"{band} employees"
                below, above = f"fewer than {low} employees", f"more than {high} employees"
            else:
                inside = f"{self.label} {band}"
                below, above = f"{self.label} below {low}", f"{self.label} above {high}"
            near_below = (
                f"slightly {below}" if attr.name == "employees" else f"{self.label} slightly below {low}"
            )
            near_above = (
                f"slightly {above}" if attr.name == "employees" else f"{self.label} slightly above {high}"
            )
            # Status codes: 0 missing, 1 inside, 2 near below, 3 below, 4 near above, 5 above.
            self.numeric_texts = [
                f"? {self.label} unknown",
                f"+ {inside}",
                f"~ {near_below} (profile: {band})",
                f"- {below} (profile: {band})",
                f"~ {near_above} (profile: {band})",
                f"- {above} (profile: {band})",
            ]

    def evaluate(self, column: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """Match degree, present flag, status code and the text for each status code."""
        if self.attr.kind == "categorical":
            codes, uniques, shown = text_codes(column, merge=False, display=True)
            hit = np.array([u in self.wanted for u in uniques] + [False], dtype=bool)
            texts = [f"? {self.label} unknown"]
            for u, s in zip(uniques, shown, strict=True):
                if u in self.wanted:
                    texts.append(f"+ {self.label} is {self.wanted[u]}")
                else:
                    texts.append(f"- {self.label} {s} (profile: {self.profile_text})")
            return hit[codes].astype(np.float64), codes >= 0, codes + 1, texts
        try:
            raw = column.to_numpy(dtype="float64", na_value=np.nan)
        except (TypeError, ValueError):
            raise ScoringError(
                f'"{self.name}" is numeric in the profile, but the accounts hold {column.dtype} values that are not '
                "all numbers; map it to a numeric column (or make the attribute categorical)"
            ) from None
        present = ~np.isnan(raw)
        if self.log:
            with np.errstate(divide="ignore", invalid="ignore"):
                # Zero or negative counts sit infinitely far below any log band: present, no match.
                x = np.where(raw > 0, np.log10(np.where(raw > 0, raw, 1.0)), -np.inf)
            x[~present] = np.nan
        else:
            x = raw
        with np.errstate(invalid="ignore"):
            below_d = self.lo - x
            above_d = x - self.hi
            distance = np.fmax(np.fmax(below_d, above_d), 0.0)  # fmax: NaN (missing) gives 0, masked below
            match = np.exp2(-distance / self.unit)
            match[~present] = 0.0
            near = match >= 0.5
            status = np.where(
                ~present,
                0,
                np.where(below_d > 0, np.where(near, 2, 3), np.where(above_d > 0, np.where(near, 4, 5), 1)),
            )
        return match, present, status, self.numeric_texts


class _CompiledProfile:
    def __init__(self, profile: Profile):
        if not isinstance(profile, Profile):
            raise ProfileError(f"expected a Profile, got {type(profile).__name__}")
        # Reasons list the heaviest attributes first, so a cut drops the least important ones.
        active = sorted((a for a in profile.attributes if a.weight > 0), key=lambda a: (-a.weight, a.name))
        self.attributes = [_CompiledAttribute(a) for a in active]
        self.total_weight = float(sum(a.weight for a in active))

    def check_columns(self, accounts: pd.DataFrame) -> None:
        missing = [a.name for a in self.attributes if a.name not in accounts.columns]
        if missing:
            raise ScoringError(
                f"the profile scores {', '.join(repr(m) for m in missing)}, which the accounts lack; "
                f"they have: {', '.join(map(str, accounts.columns))}"
            )


def score(
    accounts: pd.DataFrame,
    profile: Profile,
    *,
    tiers: Tiers = Tiers(),  # noqa: B008 - frozen, so a shared default is safe
    reasons_max_len: int = REASONS_MAX_LEN,
) -> pd.DataFrame:
    """Score every account against `profile`: a frame indexed like `accounts` with `icp_fit_score` (Int64,
    0-100), `icp_tier` (A-D), `icp_reasons` and `data_completeness` (Float64, 0-1).

    An empty frame gives an empty result (an incremental run may have nothing to score). Rows never
    interact, so this is also the function to map over partitions (see `score_chunks`).
    """
    return _score(accounts, _CompiledProfile(profile), tiers, reasons_max_len)


def score_chunks(
    frames: Iterable[pd.DataFrame],
    profile: Profile,
    *,
    tiers: Tiers = Tiers(),  # noqa: B008
    reasons_max_len: int = REASONS_MAX_LEN,
) -> Iterator[pd.DataFrame]:
    """Score an iterable of account frames lazily, one result per frame, so memory stays bounded by a chunk.

    Equal to `score` on the concatenation, reasons and tiers included: a row's result depends only on that
    row and the profile (tests/scoring/test_fit.py cuts a book anywhere to hold this). This is the one chunked
    path: a chunk is scored by `score`'s own per-frame function, so a partitioned engine maps `score` itself
    over its partitions (Dask: `ddf.map_partitions(score, profile, tiers=..., reasons_max_len=...)`) and
    gets the same rows as this generator. Learn the profile on the whole book first; scoring needs nothing
    else from it.
    """
    compiled = _CompiledProfile(profile)
    for frame in frames:
        yield _score(frame, compiled, tiers, reasons_max_len)


def iter_chunks(accounts: pd.DataFrame, size: int = 200_000) -> Iterator[pd.DataFrame]:
    """Slices of `accounts` of at most `size` rows (views, not copies), for `score_chunks`."""
    if size < 1:
        raise ScoringError(f"chunk size must be at least 1, got {size}")
    for start in range(0, len(accounts), size):
        yield accounts.iloc[start : start + size]


def attribute_matches(accounts: pd.DataFrame, profile: Profile) -> pd.DataFrame:
    """Each account's match degree (0-1, 0 when missing) per profile attribute, in the profile's order:
    what `score` weighs (an attribute with weight 0 is listed too, though it adds nothing)."""
    attributes = [_CompiledAttribute(a) for a in profile.attributes]
    missing = [a.name for a in attributes if a.name not in accounts.columns]
    if missing:
        raise ScoringError(
            f"the profile scores {', '.join(repr(m) for m in missing)}, which the accounts lack"
        )
    return pd.DataFrame({a.name: a.evaluate(accounts[a.name])[0] for a in attributes}, index=accounts.index)


def _score(
    accounts: pd.DataFrame, compiled: _CompiledProfile, tiers: Tiers, reasons_max_len: int
) -> pd.DataFrame:
    if not isinstance(reasons_max_len, int) or reasons_max_len < 1:
        raise ScoringError(f"reasons_max_len must be a positive integer, got {reasons_max_len!r}")
    compiled.check_columns(accounts)
    n = len(accounts)
    weighted = np.zeros(n)
    known = np.zeros(n)
    combo = np.zeros(n, dtype=np.int64)
    table = np.zeros((1, 0), dtype=np.int64)  # one row per distinct status combination seen so far
    all_texts: list[list[str]] = []
    for attr in compiled.attributes:
        match, present, status, texts = attr.evaluate(accounts[attr.name])
        weighted += attr.weight * match
        known += attr.weight * present
        # Fold this attribute's status into the combination code and re-number densely at once, so the
        # code never overflows however many attributes or values there are.
        width = len(texts)
        combo, uniques = pd.factorize(combo * width + status, sort=False)
        table = np.column_stack([table[uniques // width], uniques % width])
        all_texts.append(texts)
    fit = weighted / compiled.total_weight
    scores = np.clip(np.floor(fit * 100.0 + 0.5), 0, 100).astype(np.int64)
    tier_names = np.array(TIER_NAMES, dtype=object)[tiers.of(scores)]
    reason_texts = np.array(
        [
            _join_reasons([all_texts[j][s] for j, s in enumerate(row)], reasons_max_len)
            for row in table.tolist()
        ]
        or [""],
        dtype=object,
    )
    return pd.DataFrame(
        {
            "icp_fit_score": pd.array(scores, dtype="Int64"),
            "icp_tier": pd.array(tier_names, dtype=TEXT_DTYPE),
            "icp_reasons": pd.array(
                reason_texts[combo] if n else np.array([], dtype=object), dtype=TEXT_DTYPE
            ),
            "data_completeness": pd.array(np.round(known / compiled.total_weight, 4), dtype="Float64"),
        },
        index=accounts.index,
    )


def _join_reasons(parts: Sequence[str], max_len: int) -> str:
    text = "; ".join(parts)
    if len(text) <= max_len:
        return text
    kept: list[str] = []
    for part in parts:
        candidate = "; ".join([*kept, part, _ELLIPSIS])
        if len(candidate) > max_len:
            break
        kept.append(part)
    if not kept:
        # Not even the first reason fits: cut it mid-way rather than write nothing.
        return parts[0][: max_len - 1] + _ELLIPSIS if max_len > 1 else _ELLIPSIS
    return "; ".join([*kept, _ELLIPSIS])


def summarize(
    scored: pd.DataFrame, club_ids: Iterable[str] = (), ids: pd.Series | None = None
) -> dict[str, Any]:
    """Counts for the run report: accounts per tier, mean completeness, and how many club members are in A.

    `ids` are the account ids aligned to `scored` (needed to find the club members).
    """
    tiers = scored["icp_tier"].value_counts().reindex(list(TIER_NAMES), fill_value=0)
    out: dict[str, Any] = {
        "accounts": len(scored),
        "tiers": {k: int(v) for k, v in tiers.items()},
        "mean_completeness": float(scored["data_completeness"].mean()) if len(scored) else None,
    }
    club_ids = list(club_ids)
    if club_ids and ids is not None:
        in_club = ids.isin(club_ids).to_numpy(dtype=bool)
        club_tiers = scored["icp_tier"].to_numpy(dtype=object)[in_club]
        out["club_members"] = int(in_club.sum())
        out["club_in_a"] = int((club_tiers == "A").sum())
    return out
