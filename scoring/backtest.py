"""Backtest (docs/architecture.md, "Scoring"): would the profile, learned on the past, have pointed at later winners?

Runs the whole scoring pipeline as of a date, then compares tiers with what happened after it:

- learning sees only deals closed before `as_of` (club and profile), and today's firmographics, which is all a
  CRM keeps (so a company that grew since then is judged on its current size: a mild optimism to keep in
  mind);
- population: accounts with at least one deal closed on or after `as_of`; outcome: at least one of those
  deals was won. Win rate = accounts with an outcome / accounts, per tier and overall. This asks "when we
  get to a decision with an account, does its tier predict a win?", independent of how often reps called;
- lift_a = win rate of tier A / win rate of the whole population; AUC = the chance a random winner scores
  above a random loser (ties count half), computed from score counts (Mann-Whitney, no per-row Python);
- intervals: percentile bootstrap over accounts (one account's deals are not independent). Since every
  statistic depends only on the (score, outcome) counts, resampling N accounts with replacement is the same
  as one multinomial draw of those 101 x 2 counts, so 1,000 resamples cost one small matrix;
- significant: the interval of lift_a lies above 1 *and* the interval of AUC lies above 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scoring.aggregates import to_utc, with_aggregates
from scoring.club import CLUB_SIZE, MIN_CRITERIA, Criterion, select_club
from scoring.errors import ScoringError, check_not_empty, require_columns
from scoring.fit import TIER_NAMES, Tiers, score
from scoring.profile import DEFAULT_ATTRIBUTES, Profile, learn_profile

__all__ = ["BacktestResult", "backtest", "lift_metrics"]

_MIN_POPULATION = 30
_MIN_OUTCOMES = 5


@dataclass
class BacktestResult:
    """What a backtest found. `tiers` has one row per tier: tier, accounts, outcomes, win_rate, lift."""

    as_of: pd.Timestamp
    population: int
    outcomes: int
    base_rate: float
    tiers: pd.DataFrame
    lift_a: float
    lift_a_ci: tuple[float, float]
    auc: float
    auc_ci: tuple[float, float]
    significant: bool
    statement: str
    n_boot: int
    ci_level: float
    club_ids: list[str] = field(default_factory=list)
    club_in_a: int = 0
    profile: Profile | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes null)."""
        return {
            "as_of": self.as_of.isoformat(),
            "population": self.population,
            "outcomes": self.outcomes,
            "base_rate": _num(self.base_rate),
            "tiers": [
                {k: (_num(v) if isinstance(v, float) else v) for k, v in row.items()}
                for row in self.tiers.to_dict("records")
            ],
            "lift_a": _num(self.lift_a),
            "lift_a_ci": [_num(v) for v in self.lift_a_ci],
            "auc": _num(self.auc),
            "auc_ci": [_num(v) for v in self.auc_ci],
            "significant": self.significant,
            "statement": self.statement,
            "n_boot": self.n_boot,
            "ci_level": self.ci_level,
            "club_ids": list(self.club_ids),
            "club_in_a": self.club_in_a,
            "profile_version": self.profile.version if self.profile is not None else None,
            "warnings": list(self.warnings),
        }


def _num(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def backtest(
    accounts: pd.DataFrame,
    deals: pd.DataFrame,
    *,
    as_of: Any,
    criteria: Sequence[Criterion] | None = None,
    min_criteria: int = MIN_CRITERIA,
    club_size: int = CLUB_SIZE,
    pinned: Iterable[str] = (),
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
    learn_options: Mapping[str, Any] | None = None,
    tiers: Tiers = Tiers(),  # noqa: B008 - frozen
    n_boot: int = 1000,
    seed: int = 0,
    ci_level: float = 0.95,
) -> BacktestResult:
    """Learn the club and profile from deals closed before `as_of`, score every account, and measure how
    tiers predicted wins among accounts with a deal closed on or after `as_of` (see the module docstring).
    `learn_options` go to `learn_profile` (coverage, band, ...)."""
    check_not_empty(accounts)
    if deals is None or len(deals) == 0:
        raise ScoringError("a backtest needs deals: there is nothing to learn from or to compare against")
    require_columns(deals, ["account_id", "is_won", "closed_at"], "the deals")
    as_of = to_utc(as_of)

    book = with_aggregates(accounts, deals, as_of=as_of)
    club = select_club(book, criteria, min_criteria=min_criteria, club_size=club_size, pinned=pinned)
    profile = learn_profile(
        book,
        club.ids,
        attributes,
        as_of=as_of,
        settings={"club_size": club_size, "min_criteria": min_criteria},
        **dict(learn_options or {}),
    )
    scored = score(accounts, profile, tiers=tiers)
    scores = scored["icp_fit_score"].to_numpy(dtype=np.int64)

    in_population, won = _later_outcomes(accounts, deals, as_of)
    if not in_population.any():
        raise ScoringError(
            f"no deal closed on or after {as_of.date()}: there is nothing to compare the tiers with; "
            "pick an earlier as_of"
        )
    metrics = lift_metrics(
        scores[in_population], won[in_population], tiers=tiers, n_boot=n_boot, seed=seed, ci_level=ci_level
    )
    in_club = accounts["id"].isin(club.ids).to_numpy(dtype=bool)
    club_in_a = int((scores[in_club] >= tiers.a).sum())
    statement = _statement(metrics, as_of, ci_level)
    return BacktestResult(
        as_of=as_of,
        profile=profile,
        club_ids=club.ids,
        club_in_a=club_in_a,
        statement=statement,
        warnings=list(club.warnings),
        **metrics,
    )


def _later_outcomes(
    accounts: pd.DataFrame, deals: pd.DataFrame, as_of: pd.Timestamp
) -> tuple[np.ndarray, np.ndarray]:
    """Per account: had a deal closed on/after `as_of` (the population), and won one of them (the outcome)."""
    n = len(accounts)
    closed_at = deals["closed_at"]
    if not pd.api.types.is_datetime64_any_dtype(closed_at.dtype):
        closed_at = pd.to_datetime(closed_at, utc=True, errors="coerce")
    elif closed_at.dt.tz is None:
        closed_at = closed_at.dt.tz_localize("UTC")
    later = (closed_at >= as_of).to_numpy(dtype=bool, na_value=False, copy=True)
    if "is_closed" in deals.columns:
        later &= deals["is_closed"].to_numpy(dtype=bool, na_value=False)
    rows = np.flatnonzero(later)
    pos = pd.Index(accounts["id"]).get_indexer(deals["account_id"].take(rows))
    known = pos >= 0
    rows, pos = rows[known], pos[known]
    won_flag = deals["is_won"].to_numpy(dtype=bool, na_value=False)[rows]
    return np.bincount(pos, minlength=n) > 0, np.bincount(pos[won_flag], minlength=n) > 0


def lift_metrics(
    scores: np.ndarray,
    outcomes: np.ndarray,
    *,
    tiers: Tiers = Tiers(),  # noqa: B008
    n_boot: int = 1000,
    seed: int = 0,
    ci_level: float = 0.95,
) -> dict[str, Any]:
    """Win rate by tier, lift of A, AUC, and bootstrap intervals over accounts, from 0-100 integer scores and
    a boolean outcome per account. Deterministic for a given `seed`."""
    scores = np.asarray(scores, dtype=np.int64)
    outcomes = np.asarray(outcomes, dtype=bool)
    if scores.shape != outcomes.shape:
        raise ScoringError("scores and outcomes must be the same length")
    if scores.size == 0:
        raise ScoringError("the backtest population is empty: no account to measure")
    if scores.min() < 0 or scores.max() > 100:
        raise ScoringError("scores must lie in 0-100")
    if n_boot < 1 or not 0 < ci_level < 1:
        raise ScoringError("n_boot must be >= 1 and ci_level in (0, 1)")
    counts = np.zeros((101, 2), dtype=np.int64)
    np.add.at(counts, (scores, outcomes.astype(np.int64)), 1)
    tier_of_score = tiers.of(np.arange(101))

    point = _statistics(counts[None], tier_of_score)
    rng = np.random.default_rng(seed)
    n = int(counts.sum())
    boot_counts = rng.multinomial(n, counts.ravel() / n, size=n_boot).reshape(n_boot, 101, 2)
    boot = _statistics(boot_counts, tier_of_score)
    tail = (1 - ci_level) / 2 * 100

    def interval(values: np.ndarray) -> tuple[float, float]:
        finite = values[np.isfinite(values)]
        if finite.size < n_boot / 2:  # mostly undefined (e.g. tier A often empty): no honest interval
            return (float("nan"), float("nan"))
        low, high = np.percentile(finite, [tail, 100 - tail])
        return (float(low), float(high))

    tier_rows = []
    by_tier = np.zeros((4, 2), dtype=np.int64)
    np.add.at(by_tier, tier_of_score, counts)
    base_rate = float(counts[:, 1].sum() / n)
    for t, name in enumerate(TIER_NAMES):
        accounts_t = int(by_tier[t].sum())
        wins_t = int(by_tier[t, 1])
        rate = wins_t / accounts_t if accounts_t else float("nan")
        tier_rows.append(
            {
                "tier": name,
                "accounts": accounts_t,
                "outcomes": wins_t,
                "win_rate": rate,
                "lift": rate / base_rate if accounts_t and base_rate > 0 else float("nan"),
            }
        )
    lift_a, auc = float(point["lift_a"][0]), float(point["auc"][0])
    lift_ci, auc_ci = interval(boot["lift_a"]), interval(boot["auc"])
    enough = n >= _MIN_POPULATION and _MIN_OUTCOMES <= counts[:, 1].sum() <= n - _MIN_OUTCOMES
    significant = bool(enough and lift_ci[0] > 1 and auc_ci[0] > 0.5)
    return {
        "population": n,
        "outcomes": int(counts[:, 1].sum()),
        "base_rate": base_rate,
        "tiers": pd.DataFrame(tier_rows),
        "lift_a": lift_a,
        "lift_a_ci": lift_ci,
        "auc": auc,
        "auc_ci": auc_ci,
        "significant": significant,
        "n_boot": n_boot,
        "ci_level": ci_level,
    }


def _statistics(counts: np.ndarray, tier_of_score: np.ndarray) -> dict[str, np.ndarray]:
    """lift_a and AUC for a stack of (score x outcome) count tables, shape (k, 101, 2), all at once."""
    neg, pos = counts[..., 0].astype(np.float64), counts[..., 1].astype(np.float64)
    n_pos, n_neg = pos.sum(-1), neg.sum(-1)
    neg_below = np.cumsum(neg, axis=-1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (neg_below + 0.5 * neg)).sum(-1) / (n_pos * n_neg)
        in_a = tier_of_score == 0
        wins_a, accounts_a = pos[..., in_a].sum(-1), (pos + neg)[..., in_a].sum(-1)
        rate_all = n_pos / (n_pos + n_neg)
        lift_a = (wins_a / accounts_a) / rate_all
    return {"auc": auc, "lift_a": lift_a}


def _statement(m: Mapping[str, Any], as_of: pd.Timestamp, ci_level: float) -> str:
    day = as_of.date().isoformat()
    level = f"{ci_level:.0%}"
    population = (
        f"{m['population']:,} accounts had a deal closed on or after {day}; {m['outcomes']:,} of them won "
        f"({m['base_rate']:.0%})."
    )
    tier_a = m["tiers"].iloc[0]
    lift, (lift_lo, lift_hi) = m["lift_a"], m["lift_a_ci"]
    auc, (auc_lo, auc_hi) = m["auc"], m["auc_ci"]
    auc_text = (
        f"AUC {auc:.2f}, {level} interval {auc_lo:.2f}-{auc_hi:.2f}"
        if math.isfinite(auc_lo)
        else f"AUC {auc:.2f}"
    )
    if (
        m["population"] < _MIN_POPULATION
        or not _MIN_OUTCOMES <= m["outcomes"] <= m["population"] - _MIN_OUTCOMES
    ):
        return (
            f"Too little to judge: {population} At least {_MIN_POPULATION} accounts and {_MIN_OUTCOMES} wins and "
            "losses are needed; no lift can be claimed. Pick an earlier as_of or wait for more deals."
        )
    if tier_a["accounts"] == 0:
        return (
            f"No significant lift: no account with a later deal landed in tier A, so tier A cannot be judged. "
            f"{population} {auc_text}."
        )
    lift_text = f"tier A accounts won {tier_a['win_rate']:.0%} of the time, {lift:.1f}x the average" + (
        f" ({level} interval {lift_lo:.1f}x-{lift_hi:.1f}x)" if math.isfinite(lift_lo) else ""
    )
    if m["significant"]:
        return (
            f"Significant lift: {lift_text}. The score ranks a winner above a loser {auc:.0%} of the time "
            f"({auc_text}). {population}"
        )
    if math.isfinite(auc_lo) and auc_lo > 0.5:
        why = f"the interval for tier A includes 1x, although the score ranks accounts better than chance ({auc_text})"
    elif math.isfinite(lift_lo) and lift_lo > 1:
        why = f"the score's ranking is not distinguishable from chance ({auc_text})"
    else:
        why = f"the interval includes 1x (no lift) and the ranking is no better than chance ({auc_text})"
    return (
        f"No significant lift: {lift_text}, but {why}. Do not rely on these tiers to prioritise accounts. "
        f"{population}"
    )
