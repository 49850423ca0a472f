"""Deals above `bulk_query_threshold` come through one Bulk API 2.0 query job, as accounts do: the same canonical
frames as the REST pages, in a number of calls that does not grow with the deals (one results page per 50,000).

The unmodified simple-salesforce against the sandbox over HTTPS.
"""

from __future__ import annotations

import pandas as pd
import pytest

from connectors.schema import ParseReport
from sandbox import Sandbox
from tests.connectors.test_salesforce import connect


@pytest.fixture(scope="module")
def book():
    """A read-only org whose REST queries answer 50 records a batch, so a REST deal pull takes many calls."""
    with Sandbox(accounts=300, seed=7, page_size=50) as sb:
        yield sb


@pytest.fixture
def org(book):
    book.faults.clear()
    book.calls.reset()
    yield book
    book.faults.clear()


def closed_deals(sb: Sandbox) -> set[str]:
    return {r["Id"] for r in sb.sf.records("Opportunity") if r["IsClosed"] and r["AccountId"]}


def pull(sb: Sandbox, **settings) -> tuple[pd.DataFrame, dict[str, int], ParseReport]:
    """Every deal the connector yields, sorted by id; the calls it made; its parse report."""
    sb.calls.reset()
    report = ParseReport()
    pages = list(connect(sb, **settings).iter_deals(report=report))
    deals = pd.concat(pages, ignore_index=True).sort_values("id", ignore_index=True)
    return deals, sb.calls.snapshot(), report


def test_deals_above_the_threshold_come_by_bulk_query_the_same_as_by_rest(org):
    n = len(closed_deals(org))
    rest, rest_calls, rest_report = pull(org)  # the default threshold: 200,000
    bulk, bulk_calls, bulk_report = pull(org, bulk_query_threshold=n - 1)
    assert set(bulk["id"]) == closed_deals(org) and len(bulk) == n
    pd.testing.assert_frame_equal(bulk, rest)  # same values, same dtypes
    assert (bulk_report.rows, bulk_report.lines()) == (rest_report.rows, rest_report.lines())

    # REST: the count, then one call per 50 deals; Bulk: the count, then one job whatever the deals
    assert rest_calls == {"sf.query": 2, "sf.query_more": -(-n // 50) - 1}
    assert "sf.bulk2.query.create" not in rest_calls
    assert bulk_calls["sf.query"] == 1 and "sf.query_more" not in bulk_calls
    assert (bulk_calls["sf.bulk2.query.create"], bulk_calls["sf.bulk2.query.results"]) == (1, 1)
    assert sum(bulk_calls.values()) <= 5  # the count, create, a poll or two, one page of results


def test_a_pull_of_exactly_the_threshold_stays_on_rest(org):
    n = len(closed_deals(org))
    _, calls, _ = pull(org, bulk_query_threshold=n)
    assert "sf.bulk2.query.create" not in calls and calls["sf.query"] == 2
