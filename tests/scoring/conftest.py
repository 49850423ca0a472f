"""Shared fixtures: one deterministic sample book (planted ICP), its aggregates, club and profile."""

from __future__ import annotations

import pandas as pd
import pytest

from sandbox.book import generate_book
from scoring.aggregates import with_aggregates
from scoring.club import select_club
from scoring.profile import learn_profile


@pytest.fixture(scope="session")
def book():
    return generate_book(3000, seed=7)


@pytest.fixture(scope="session")
def book_with_aggs(book) -> pd.DataFrame:
    return with_aggregates(book.accounts, book.deals)


@pytest.fixture(scope="session")
def club(book_with_aggs):
    return select_club(book_with_aggs)


@pytest.fixture(scope="session")
def profile(book_with_aggs, club):
    return learn_profile(book_with_aggs, club.ids, learned_at="2026-01-01")
