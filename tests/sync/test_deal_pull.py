"""`profile learn` on a CRM pulls its deals by Bulk API 2.0 query above `bulk_query_threshold`, as it does accounts,
and learns exactly what the REST pages would have given it."""

from __future__ import annotations

import pandas as pd

from sync import pipeline

from .conftest import make_config


def test_learning_from_a_book_pulled_by_bulk_query_equals_learning_from_rest_pages(tmp_path, sb):
    rest_config = make_config(tmp_path / "rest", sb)
    sb.calls.reset()
    rest_book = pipeline.load_book(rest_config)
    assert sb.calls.count("sf.bulk2.query.create") == 0

    bulk_config = make_config(tmp_path / "bulk", sb, extra={"salesforce": {"bulk_query_threshold": 1}})
    sb.calls.reset()
    bulk_book = pipeline.load_book(bulk_config)
    assert sb.calls.count("sf.bulk2.query.create") == 2  # the accounts' job and the deals'
    assert sb.calls.count("sf.query_more") == 0

    def by_id(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.sort_values("id", ignore_index=True)

    pd.testing.assert_frame_equal(by_id(bulk_book.deals), by_id(rest_book.deals))
    pd.testing.assert_frame_equal(by_id(bulk_book.accounts), by_id(rest_book.accounts))  # aggregates too
    rest = pipeline.learn(rest_config, rest_book, save=False)
    bulk = pipeline.learn(bulk_config, bulk_book, save=False)
    assert list(bulk.club.ids) == list(rest.club.ids)
    assert bulk.profile.version == rest.profile.version
