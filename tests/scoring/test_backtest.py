"""Backtest: real lift on the planted book, none on shuffled outcomes, and the statistics themselves."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.book import generate_book
from scoring.backtest import backtest, lift_metrics
from scoring.errors import ScoringError
from scoring.fit import Tiers

AS_OF = "2025-01-01"


@pytest.fixture(scope="module")
def book5000():
    return generate_book(5000, seed=7)


@pytest.fixture(scope="module")
def result(book5000):
    return backtest(book5000.accounts, book5000.deals, as_of=AS_OF, n_boot=1000, seed=0)


def shuffle_later_outcomes(deals: pd.DataFrame, as_of: str, seed: int) -> pd.DataFrame:
    """Hand each account's later deals to another account of the same population, at random: outcomes stay
    whole per account (so the population is unchanged) but no longer belong to the account's profile."""
    later = (deals["closed_at"] >= pd.Timestamp(as_of, tz="UTC")).fillna(False).to_numpy()
    population = deals.loc[later, "account_id"].unique()
    shuffled = dict(zip(population, np.random.default_rng(seed).permutation(population), strict=True))
    out = deals.copy()
    out.loc[later, "account_id"] = out.loc[later, "account_id"].map(shuffled)
    return out


def test_the_planted_icp_shows_significant_lift(result):
    assert result.significant
    assert result.lift_a > 1 and result.lift_a_ci[0] > 1
    assert result.auc > 0.5 and result.auc_ci[0] > 0.5
    assert result.lift_a_ci[0] <= result.lift_a <= result.lift_a_ci[1]
    assert result.auc_ci[0] <= result.auc <= result.auc_ci[1]
    assert result.statement.startswith("Significant lift")
    win_rates = result.tiers.set_index("tier")["win_rate"]
    assert win_rates["A"] > win_rates["D"]


def test_tier_table_adds_up(result):
    table = result.tiers
    assert list(table["tier"]) == ["A", "B", "C", "D"]
    assert table["accounts"].sum() == result.population
    assert table["outcomes"].sum() == result.outcomes
    a = table.iloc[0]
    assert result.lift_a == pytest.approx(
        (a["outcomes"] / a["accounts"]) / (result.outcomes / result.population)
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_shuffled_outcomes_show_no_significant_lift(book5000, seed):
    deals = shuffle_later_outcomes(book5000.deals, AS_OF, seed)
    shuffled = backtest(book5000.accounts, deals, as_of=AS_OF, n_boot=1000, seed=seed)
    assert not shuffled.significant
    assert shuffled.auc_ci[0] < 0.5 < shuffled.auc_ci[1] or shuffled.lift_a_ci[0] <= 1
    assert shuffled.statement.startswith("No significant lift")
    assert "Do not rely on these tiers" in shuffled.statement


def test_to_dict_is_json(result):
    data = json.loads(json.dumps(result.to_dict()))
    assert {"auc", "auc_ci", "lift_a", "lift_a_ci", "significant", "statement", "tiers"} <= set(data)
    assert len(data["auc_ci"]) == 2 and data["auc_ci"][0] <= data["auc"] <= data["auc_ci"][1]
    assert data["profile_version"] == result.profile.version
    assert data["as_of"].startswith("2025-01-01")


def test_learning_sees_only_the_past(book5000, result):
    # Every club member must have won before as_of: later wins are what the backtest predicts.
    deals = book5000.deals
    past_wins = deals[(deals["closed_at"] < pd.Timestamp(AS_OF, tz="UTC")) & deals["is_won"].fillna(False)]
    assert set(result.club_ids) <= set(past_wins["account_id"])
    assert result.profile.as_of == pd.Timestamp(AS_OF, tz="UTC")


def test_backtest_is_deterministic_for_a_seed(book5000, result):
    again = backtest(book5000.accounts, book5000.deals, as_of=AS_OF, n_boot=1000, seed=0)
    assert again.to_dict() == result.to_dict()


def test_clear_errors(book5000):
    with pytest.raises(ScoringError, match="nothing to compare"):
        backtest(book5000.accounts, book5000.deals, as_of="2030-01-01")
    with pytest.raises(ScoringError, match="needs deals"):
        backtest(book5000.accounts, None, as_of=AS_OF)
    with pytest.raises(ScoringError, match="the book is empty"):
        backtest(book5000.accounts.iloc[0:0], book5000.deals, as_of=AS_OF)


def brute_force_auc(scores: np.ndarray, outcomes: np.ndarray) -> float:
    pos, neg = scores[outcomes], scores[~outcomes]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


@settings(max_examples=40)
@given(pairs=st.lists(st.tuples(st.integers(0, 100), st.booleans()), min_size=2, max_size=80))
def test_auc_equals_the_pairwise_definition(pairs):
    scores = np.array([p[0] for p in pairs])
    outcomes = np.array([p[1] for p in pairs])
    metrics = lift_metrics(scores, outcomes, n_boot=20)
    if outcomes.all() or not outcomes.any():
        assert np.isnan(metrics["auc"])
    else:
        assert metrics["auc"] == pytest.approx(brute_force_auc(scores, outcomes))


def test_perfect_ranking_and_pure_noise():
    rng = np.random.default_rng(3)
    outcomes = rng.random(2000) < 0.3
    perfect = np.where(outcomes, 90, 10)
    m = lift_metrics(perfect, outcomes, n_boot=500, seed=1)
    assert m["auc"] == 1.0 and m["significant"]
    assert m["lift_a"] == pytest.approx(1 / outcomes.mean())
    noise = rng.integers(0, 101, 2000)
    m = lift_metrics(noise, outcomes, n_boot=500, seed=1)
    assert m["auc_ci"][0] < 0.5 < m["auc_ci"][1]
    assert not m["significant"]


def test_bootstrap_interval_matches_resampling_accounts_directly():
    # The multinomial shortcut must agree with the slow, literal bootstrap over accounts.
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 101, 400)
    outcomes = rng.random(400) < scores / 150
    fast = lift_metrics(scores, outcomes, n_boot=2000, seed=7)
    slow = []
    for _ in range(2000):
        pick = rng.integers(0, 400, 400)
        slow.append(brute_force_auc(scores[pick], outcomes[pick]))
    low, high = np.percentile(slow, [2.5, 97.5])
    assert fast["auc_ci"][0] == pytest.approx(low, abs=0.02)
    assert fast["auc_ci"][1] == pytest.approx(high, abs=0.02)


def test_too_small_a_population_is_never_significant():
    m = lift_metrics(np.array([90, 80, 10]), np.array([True, True, False]), n_boot=100, tiers=Tiers())
    assert not m["significant"]
