"""The nightly job end to end: the real Salesforce connector (simple-salesforce) against the sandbox."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest

from sync import job, pipeline
from sync.job import JobStopped, PreflightError, RunOptions

from .conftest import N_ACCOUNTS, make_config

OWNED = {
    "ICP_Segment__c": "segment",
    "ICP_Fit_Score__c": "fit_score",
    "ICP_Tier__c": "tier",
    "ICP_Reasons__c": "reasons",
    "ICP_Model__c": "model",
}
SYSTEM = {"LastModifiedDate", "SystemModstamp", "LastModifiedById"}


def accounts(sb) -> dict[str, dict]:
    return {r["Id"]: r for r in sb.sf.records("Account")}


def expected(config) -> pd.DataFrame:
    """What the CRM should hold: the sandbox's current accounts scored with the saved profile."""
    book = pipeline.load_book(config)
    return pipeline.score_book(config, book, pipeline.read_profile(config))


def assert_crm_holds_desired(sb, config):
    want = expected(config)
    have = accounts(sb)
    assert set(have) == set(want.index)
    for rid, row in want.iterrows():
        rec = have[rid]
        assert rec["ICP_Segment__c"] == row["icp_segment"], rid
        assert int(rec["ICP_Fit_Score__c"]) == int(row["icp_fit_score"]), rid
        assert rec["ICP_Tier__c"] == row["icp_tier"], rid
        assert rec["ICP_Reasons__c"] == row["icp_reasons"], rid
        assert rec["ICP_Model__c"] == row["icp_model"], rid
        assert rec["ICP_Scored_At__c"], rid


def writes(sb) -> int:
    return (
        sb.calls.count("sf.composite")
        + sb.calls.count("sf.sobject.patch")
        + sb.calls.count("sf.bulk2.ingest")
    )


def test_first_run_writes_every_account_then_a_rerun_writes_nothing(sb, config):
    report = job.run(config)
    assert report.mode == "full"
    assert report.pulled == report.written == N_ACCOUNTS and report.failed == 0
    assert sb.calls.count("sf.composite.sobjects") == math.ceil(N_ACCOUNTS / 200)
    assert_crm_holds_desired(sb, config)

    before = writes(sb)
    again = job.run(config)
    assert again.mode == "incremental"
    assert again.changed == 0 and again.written == 0
    assert writes(sb) == before


def test_a_change_to_one_account_writes_that_record_only(sb, config):
    job.run(config)
    target = next(r for r in sb.sf.records("Account") if r["ICP_Tier__c"] in ("C", "D"))
    sb.sf.edit(
        "Account",
        target["Id"],
        {
            "Industry": "Logistics",
            "BillingCountry": "DE",
            "NumberOfEmployees": 500,
            "AnnualRevenue": 90_000_000,
        },
    )
    before = writes(sb)
    report = job.run(config)
    assert report.written == 1 and report.changed == 1
    assert writes(sb) == before + 1
    assert accounts(sb)[target["Id"]]["ICP_Tier__c"] in ("A", "B")
    assert_crm_holds_desired(sb, config)


def test_dry_run_writes_nothing_and_leaves_a_plan(sb, config):
    snapshot = accounts(sb)
    report = job.run(config, RunOptions(dry_run=True))
    assert report.status == "dry-run" and report.changed == N_ACCOUNTS
    assert writes(sb) == 0
    assert accounts(sb) == snapshot
    plan = pd.read_csv(report.files["plan_csv"])
    assert len(plan) == N_ACCOUNTS and set(plan["kind"]) == {"fill"}


def test_only_owned_fields_are_written(sb, config):
    before = accounts(sb)
    job.run(config)
    after = accounts(sb)
    for rid, old in before.items():
        new = after[rid]
        for name in set(old) | set(new):
            if name in OWNED or name in SYSTEM or name == "ICP_Scored_At__c":
                continue
            assert old.get(name) == new.get(name), (rid, name)


def test_a_reps_manual_edit_is_kept_and_reported(sb, config):
    job.run(config)
    rid = next(iter(accounts(sb)))
    sb.sf.edit("Account", rid, {"ICP_Tier__c": "A" if accounts(sb)[rid]["ICP_Tier__c"] != "A" else "D"})
    rep_value = accounts(sb)[rid]["ICP_Tier__c"]
    report = job.run(config, RunOptions(full=True))
    assert report.skipped_manual_edits == 1
    assert accounts(sb)[rid]["ICP_Tier__c"] == rep_value
    manual = pd.read_csv(report.files["manual_edits_csv"])
    assert list(manual["record_id"]) == [rid] and manual.loc[0, "fields"] == "tier"

    overwrite = dataclasses.replace(config, sync=dataclasses.replace(config.sync, respect_manual_edits=False))
    report = job.run(overwrite, RunOptions(full=True))
    assert report.overwritten_manual_edits == 1 and report.written == 1
    assert_crm_holds_desired(sb, config)


def test_incremental_pull_misses_nothing_at_equal_timestamps(sb, config):
    from sandbox.salesforce.store import WriteItem

    job.run(config)
    ids = list(accounts(sb))[:5]
    # One UI save of several records: they share one SystemModstamp, to the millisecond.
    sb.sf.store.update(
        "Account",
        [
            WriteItem(
                "Account", i, {"Industry": "Logistics", "BillingCountry": "DE", "NumberOfEmployees": 400}
            )
            for i in ids
        ],
        user_id="005000000000001AAA",
    )
    stamps = {accounts(sb)[i]["SystemModstamp"] for i in ids}
    assert len(stamps) == 1
    report = job.run(config)
    assert report.mode == "incremental"
    assert report.pulled >= 5
    assert_crm_holds_desired(sb, config)


def test_missing_fields_stop_the_run_before_anything_is_pulled(tmp_path, learned_profile):
    import shutil

    from sandbox import Sandbox

    with Sandbox(accounts=50, seed=3) as bare:
        shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
        cfg = make_config(tmp_path, bare)
        with pytest.raises(PreflightError, match="icp fields --apply"):
            job.run(cfg)
        assert bare.calls.count("sf.query") == 0 and writes(bare) == 0


def test_a_new_segment_gets_its_picklist_value_before_records_use_it(sb, config, tmp_path):
    from sync.crm import open_crm

    segments = [
        {
            "name": "Industrial",
            "when": [{"field": "industry", "op": "in", "value": ["Manufacturing", "Logistics"]}],
        },
        {"name": "Other"},
    ]
    cfg = make_config(tmp_path, sb, extra={"segments": segments})
    with pytest.raises(PreflightError, match="Industrial"):
        job.run(cfg)
    with open_crm(cfg) as connector:
        plan = connector.check_fields(job.segment_names(cfg))
        assert plan.add_values == {"ICP_Segment__c": ("Industrial", "Other")}
        connector.apply_fields(plan)
        assert connector.check_fields(job.segment_names(cfg)).empty
    report = job.run(cfg)
    assert report.failed == 0 and report.written == N_ACCOUNTS
    assert {r["ICP_Segment__c"] for r in sb.sf.records("Account")} == {"Industrial", "Other"}


def test_safety_cap_stops_a_mass_rewrite_unless_forced(sb, config):
    job.run(config)
    for rec in list(accounts(sb).values())[:200]:
        sb.sf.edit(
            "Account", rec["Id"], {"Industry": "Logistics", "BillingCountry": "DE", "NumberOfEmployees": 600}
        )
    before = writes(sb)
    with pytest.raises(JobStopped, match="safety cap"):
        job.run(config)
    assert writes(sb) == before
    report = job.run(config, RunOptions(force=True))
    assert report.written > 0
    assert_crm_holds_desired(sb, config)


def test_a_targeted_rescore_is_capped_against_the_book_not_the_selection(sb, config):
    job.run(config)
    rid = next(iter(accounts(sb)))
    sb.sf.edit("Account", rid, {"Industry": "Logistics", "BillingCountry": "DE", "NumberOfEmployees": 600})
    report = job.run(config, RunOptions(ids=[rid]))  # 1 of the book, not 1 of 1 (= 100%)
    assert report.mode == "targeted" and report.pulled == 1 and report.written == 1
    assert report.change_ratio == round(1 / N_ACCOUNTS, 4)
    assert_crm_holds_desired(sb, config)


def test_bulk_api_writes_take_a_constant_number_of_calls(sb, config):
    cfg = dataclasses.replace(config, salesforce=dataclasses.replace(config.salesforce, bulk_threshold=50))
    report = job.run(cfg)
    assert report.written == N_ACCOUNTS
    assert sb.calls.count("sf.composite") == 0
    ingest = sb.calls.count("sf.bulk2.ingest")
    assert 0 < ingest <= 8  # create, upload, close, poll(s), results: independent of N
    assert_crm_holds_desired(sb, config)


def test_a_changed_config_forces_a_full_rescore(sb, config):
    job.run(config)
    assert job.run(config).mode == "incremental"
    stricter = dataclasses.replace(config, tiers=(80.0, 50.0, 25.0))
    assert job.run(stricter).mode == "full"
    assert job.run(stricter).mode == "incremental"


def test_rules_on_deal_aggregates_pull_deals_and_rescore_the_whole_book(sb, tmp_path, learned_profile):
    import shutil

    shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
    segments = [
        {"name": "Customers", "when": [{"field": "won_deals", "op": ">=", "value": 1}]},
        {"name": "Prospects"},
    ]
    from sync.crm import open_crm

    cfg = make_config(tmp_path, sb, extra={"segments": segments})
    with open_crm(cfg) as connector:
        connector.apply_fields(connector.check_fields(job.segment_names(cfg)))
    first = job.run(cfg)
    assert first.mode == "full" and sb.calls.count("sf.query") >= 2  # accounts and opportunities
    buyers = {o["AccountId"] for o in sb.sf.records("Opportunity") if o["IsWon"]}
    for rec in sb.sf.records("Account"):
        assert rec["ICP_Segment__c"] == ("Customers" if rec["Id"] in buyers else "Prospects")
    assert job.run(cfg).mode == "full"  # a new won deal does not touch the account's modstamp
