"""Every CSV a run writes (plan.csv, manual-edits.csv, errors.csv) goes through the formula guard of
connectors/csvfile.py: a cell a spreadsheet would run (=, +, -, @ ...) is written as text with a leading `'`;
a plain negative number is kept as it is."""

from __future__ import annotations

import csv
import time
from types import SimpleNamespace

import pandas as pd

from sync import job
from sync.job import RunOptions, RunReport
from sync.plan import Plan
from sync.state import State

from .conftest import N_ACCOUNTS

HYPERLINK = '=HYPERLINK("http://x","y")'


def rows(path) -> list[dict]:
    """The cells exactly as a spreadsheet would get them (no type inference)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_plan_and_manual_edits_csv_neutralise_formulas(config):
    changes = pd.DataFrame(
        {
            "segment": ["+SUM(1,1)", "SMB"],
            "fit_score": pd.array([75, -12], dtype="Int64"),
            "tier": ["@A", "B"],
            "reasons": [HYPERLINK, "- fewer than 10 employees (profile: 50-500)"],
            "scored_at": ["2024-05-01T10:00:00Z", "2024-05-01T10:00:00Z"],
            "model": ["m1", "-1"],
            "kind": ["fill", "update"],
            "changed": ["reasons", "tier"],
        },
        index=pd.Index(["001000000000001AAA", "001000000000002AAA"], name="id"),
    )
    manual = pd.DataFrame(
        {"fields": ["=cmd|' /C calc'!A0"], "action": ["kept"]}, index=pd.Index(["001000000000003AAA"])
    )
    the_plan = Plan(changes=changes, manual_edits=manual, unchanged=0, total=3)
    files = job._write_plan_files(config, 1, the_plan)

    plan = rows(files["plan_csv"])
    assert [r["record_id"] for r in plan] == list(changes.index)
    assert plan[0]["reasons"] == "'" + HYPERLINK
    assert plan[0]["segment"] == "'+SUM(1,1)" and plan[0]["tier"] == "'@A"
    assert plan[1]["reasons"] == "'- fewer than 10 employees (profile: 50-500)"
    assert plan[1]["fit_score"] == "-12" and plan[1]["model"] == "-1"  # plain negative numbers stay numbers
    assert plan[1]["segment"] == "SMB" and plan[0]["fit_score"] == "75"

    edits = rows(files["manual_edits_csv"])
    assert edits == [{"record_id": "001000000000003AAA", "fields": "'=cmd|' /C calc'!A0", "action": "kept"}]


def test_errors_csv_neutralises_formulas(config):
    with State.open(config.state_dir) as state:
        run_id = state.start_run("salesforce", "full", pd.Timestamp.now(tz="UTC"))
        report = RunReport(run_id=run_id)
        report.failures = [
            {
                "record_id": "001000000000001AAA",
                "code": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                "message": HYPERLINK,
            },
            {"record_id": "001000000000002AAA", "code": "@code", "message": "+1 too many"},
            {"record_id": "001000000000003AAA", "code": "X", "message": "-5"},
        ]
        connector = SimpleNamespace(api_calls=0, write_calls=0, policy=SimpleNamespace(retries=0))
        job._finish(state, report, "ok with record failures", time.monotonic(), connector, config)
    errors = rows(config.state_dir / "runs" / str(run_id) / "errors.csv")
    assert [e["message"] for e in errors] == ["'" + HYPERLINK, "'+1 too many", "-5"]
    assert errors[1]["code"] == "'@code"


def test_a_runs_plan_csv_holds_the_reasons_as_text(sb, config):
    # Reasons start with "+ " / "- " ("+ industry is Software"): a spreadsheet would read them as formulas.
    report = job.run(config, RunOptions(dry_run=True))
    plan = rows(report.files["plan_csv"])
    assert len(plan) == N_ACCOUNTS
    assert all(not r["reasons"] or r["reasons"][0] not in "=+-@" for r in plan)
    assert any(r["reasons"].startswith(("'+", "'-")) for r in plan)
    # read back with pandas, every record id and field is there
    frame = pd.read_csv(report.files["plan_csv"], dtype=str)
    assert set(frame["record_id"]) == {r["Id"] for r in sb.sf.records("Account")}
