"""CRM pages go through the same conforming step as CSV books: an unreadable value is left missing and
reported, naming the record, by `icp score` / `icp pull` on a CRM and in the nightly run's summary."""

from __future__ import annotations

import pandas as pd

from sync import job, pipeline


def _spoil(sb) -> str:
    target = sorted(r["Id"] for r in sb.sf.records("Account"))[5]
    sb.sf.edit("Account", target, {"Website": "acme dot com"})
    return target


def test_a_crm_book_reports_unreadable_values_like_a_csv_book(config, sb):
    target = _spoil(sb)
    book = pipeline.load_book(config)
    assert pd.isna(book.accounts.set_index("id").loc[target, "domain"])  # missing, never a guess
    [line] = [x for x in book.report.lines() if x.startswith("accounts.domain")]
    assert (
        line == f'accounts.domain: 1 unreadable value(s) left missing (e.g. record {target}: "acme dot com")'
    )
    assert book.report.rows["accounts"] == len(book.accounts)
    assert book.report.to_dict()["unparseable"]["accounts.domain"]["examples"] == [
        {"record": target, "value": "acme dot com"}
    ]


def test_the_nightly_run_summary_lists_them(config, sb):
    target = _spoil(sb)
    report = job.run(config, job.RunOptions(full=True))
    assert any(f"record {target}" in line for line in report.data_issues)
    assert "data_issues" in report.as_dict()
