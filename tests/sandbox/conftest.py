"""Sandbox fixtures: one seeded sandbox per module for read-only tests, a fresh one for tests that write."""

from __future__ import annotations

import pytest

from sandbox import Sandbox


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(accounts=300, seed=7) as sb:
        yield sb


@pytest.fixture(autouse=False)
def clean(sandbox):
    """The module's sandbox with faults cleared and call counters reset before the test."""
    sandbox.faults.clear()
    sandbox.calls.reset()
    yield sandbox
    sandbox.faults.clear()


@pytest.fixture
def fresh_sandbox():
    with Sandbox(accounts=300, seed=7) as sb:
        yield sb
