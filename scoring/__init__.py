"""icp-sync's scoring core: pure pandas/numpy, no I/O except the profile file.

Pipeline: `with_aggregates` (deals -> per-account aggregates) -> `assign_segments` -> `select_club` (the best
customers) -> `learn_profile` (what they share; `save_profile`/`load_profile` for icp-profile.toml) ->
`score` / `score_chunks` (fit 0-100, tier, reasons) and `backtest` (does the profile predict later wins?).
"""

from __future__ import annotations

from scoring.aggregates import AGGREGATE_COLUMNS, deal_aggregates, with_aggregates
from scoring.backtest import BacktestResult, backtest, lift_metrics
from scoring.club import (
    DEFAULT_CRITERIA,
    Club,
    Criterion,
    criteria_from_config,
    select_club,
    validate_criteria,
)
from scoring.conditions import OPERATORS, Condition, evaluate, validate_conditions
from scoring.errors import ClubError, ConditionError, ProfileError, ScoringError
from scoring.fit import FIT_COLUMNS, Tiers, attribute_matches, iter_chunks, score, score_chunks, summarize
from scoring.profile import (
    DEFAULT_ATTRIBUTES,
    Profile,
    ProfileAttribute,
    learn_profile,
    load_profile,
    profile_from_dict,
    save_profile,
)
from scoring.segments import DEFAULT_SEGMENTS, SegmentRule, assign_segments, rules_from_config, validate_rules

__all__ = [
    "AGGREGATE_COLUMNS",
    "DEFAULT_ATTRIBUTES",
    "DEFAULT_CRITERIA",
    "DEFAULT_SEGMENTS",
    "FIT_COLUMNS",
    "OPERATORS",
    "BacktestResult",
    "Club",
    "ClubError",
    "Condition",
    "ConditionError",
    "Criterion",
    "Profile",
    "ProfileAttribute",
    "ProfileError",
    "ScoringError",
    "SegmentRule",
    "Tiers",
    "assign_segments",
    "attribute_matches",
    "backtest",
    "criteria_from_config",
    "deal_aggregates",
    "evaluate",
    "iter_chunks",
    "learn_profile",
    "lift_metrics",
    "load_profile",
    "profile_from_dict",
    "rules_from_config",
    "save_profile",
    "score",
    "score_chunks",
    "select_club",
    "summarize",
    "validate_conditions",
    "validate_criteria",
    "validate_rules",
    "with_aggregates",
]
