"""A quiet night costs a handful of calls: incremental pulls leave out records whose last change is our own
write, and what one of our writes may cover (a rep's change between our pull and our write, a write a
stopped run never confirmed) is pulled by id on the next run. The real connector against the sandbox."""

from __future__ import annotations

import pandas as pd
import pytest

from connectors.retry import CrmError
from connectors.salesforce import SalesforceConnector
from sandbox.salesforce.store import API_USER_ID, REP_USER_ID
from sync import job
from sync.state import State
from tests.connectors.test_salesforce import (  # noqa: F401  (private_key_file is a fixture)
    DOMAIN,
    MODES,
    fast_policy,
    login_secrets,
    private_key_file,
    settings_for,
)

from .conftest import N_ACCOUNTS, in_background, make_config
from .test_faults import fast
from .test_job import assert_crm_holds_desired, expected, writes

USER_LOOKUPS = ("sf.oauth.userinfo", "sf.query")


def records(sb) -> dict[str, dict]:
    return {r["Id"]: r for r in sb.sf.records("Account")}


def requests_made(sb) -> int:
    return sum(sb.calls.snapshot().values())


#: A rep's change to an account's inputs that moves a high-tier account's score (each test checks it does).
RESCORING_EDIT = {"Industry": "Nonprofit", "NumberOfEmployees": 3, "AnnualRevenue": 1000}


def run_parked(sb, config, *, only: str, after: int, while_parked) -> job.RunReport:
    """Run the job in a thread, park its request number `after + 1` labelled `only`, call `while_parked()`,
    let the request go on and return the run's report."""
    sb.faults.hold(only=only, after=after)
    with in_background(sb, lambda: job.run(config, policy=fast())) as done:
        assert sb.faults.wait_parked(timeout=120), f"the run never sent request {after + 1} of {only}"
        while_parked()
    return done["value"]


def recheck(config) -> list[str]:
    with State.open(config.state_dir, lock=False) as state:
        return state.recheck_ids(config.crm)


# -- a quiet night ----------------------------------------------------------------------------------------
def test_a_no_op_rerun_pulls_nothing_in_a_handful_of_calls(sb, config):
    first = job.run(config)
    assert first.written == N_ACCOUNTS and not first.skip_own_writes  # a full run pulls everything
    assert all(r["LastModifiedById"] == API_USER_ID for r in records(sb).values())

    sb.calls.reset()
    again = job.run(config)
    assert again.mode == "incremental" and again.skip_own_writes
    assert again.pulled == 0 and again.changed == 0 and again.written == 0 and again.rechecked == 0
    assert writes(sb) == 0
    made = requests_made(sb)
    assert made <= 10 and again.api_calls <= 10, sb.calls.snapshot()
    assert sb.calls.count("sf.oauth.userinfo") == 1  # the user id: once per run


def test_a_rerun_after_reps_edits_pulls_and_writes_those_only(sb, config):
    job.run(config)
    before = expected(config)
    # Reps change the inputs of high-tier accounts: these must be pulled, rescored and written.
    edited = list(before.index[before["icp_tier"].isin(["A", "B"])][:5])
    assert len(edited) == 5
    for rid in edited:
        sb.sf.edit("Account", rid, RESCORING_EDIT)
    after = expected(config)
    moved = [rid for rid in edited if after.loc[rid, "icp_fit_score"] != before.loc[rid, "icp_fit_score"]]
    assert moved, "the edits were meant to change scores"

    report = job.run(config)
    assert report.mode == "incremental" and report.skip_own_writes
    assert report.pulled == len(edited)
    planned = pd.read_csv(report.files["plan_csv"], dtype=str)
    assert set(planned["record_id"]) <= set(edited) and set(moved) <= set(planned["record_id"])
    assert report.written == len(planned)
    assert_crm_holds_desired(sb, config)
    assert job.run(config).pulled == 0  # our writes of those five are skipped in turn


def test_a_reps_edit_after_our_write_is_pulled_and_kept(sb, config):
    job.run(config)
    rid = next(iter(records(sb)))
    current = records(sb)[rid]["ICP_Tier__c"]
    theirs = "D" if current != "D" else "A"
    sb.sf.edit("Account", rid, {"ICP_Tier__c": theirs})  # a record changed by us, then by a rep

    report = job.run(config)
    assert report.pulled == 1 and report.skipped_manual_edits == 1 and report.written == 0
    assert records(sb)[rid]["ICP_Tier__c"] == theirs


# -- a rep's change between our pull and our write --------------------------------------------------------
def test_a_change_made_while_the_first_run_fills_is_pulled_next_run(sb, config):
    before = expected(config)
    rid = before.index[before["icp_tier"].isin(["A", "B"])][0]

    def rep_edits():
        # Parked: the check that runs right before the first batch is sent (after the count and the pull).
        assert sb.calls.count("sf.composite") == 0 and sb.calls.count("sf.query") == 3
        sb.sf.edit("Account", rid, RESCORING_EDIT)

    sb.calls.reset()
    first = run_parked(sb, config, only="sf.query", after=2, while_parked=rep_edits)
    assert first.written == N_ACCOUNTS and first.recheck_next == 1
    assert recheck(config) == [rid]
    stored = records(sb)[rid]
    # Our write landed after the rep's: it covers the change from a pull that skips our own writes.
    assert stored["LastModifiedById"] == API_USER_ID and stored["Industry"] == "Nonprofit"
    assert expected(config).loc[rid, "icp_fit_score"] != int(stored["ICP_Fit_Score__c"])

    second = job.run(config)
    assert second.rechecked == 1 and second.pulled == 1 and second.written == 1
    assert_crm_holds_desired(sb, config)
    assert recheck(config) == []  # processed: forgotten with the watermark
    third = job.run(config)
    assert third.pulled == 0 and third.rechecked == 0


def test_a_field_a_rep_fills_while_the_first_run_fills_it_is_kept(sb, config):
    before = expected(config)
    rid = before.index[before["icp_tier"].isin(["B", "C"])][0]

    def rep_fills():
        # Parked: the check right before the first batch is sent; the rep sets the tier by hand meanwhile.
        assert sb.calls.count("sf.composite") == 0 and sb.calls.count("sf.query") == 3
        sb.sf.edit("Account", rid, {"ICP_Tier__c": "A"})

    sb.calls.reset()
    first = run_parked(sb, config, only="sf.query", after=2, while_parked=rep_fills)
    assert first.edited_during_run == 1 and first.written == N_ACCOUNTS - 1
    stored = records(sb)[rid]
    assert stored["ICP_Tier__c"] == "A" and stored["LastModifiedById"] == REP_USER_ID
    assert stored["ICP_Fit_Score__c"] in (None, "")  # nothing of ours was written over the rep's fill

    second = job.run(config)
    assert second.pulled == 1 and second.skipped_manual_edits == 1
    assert records(sb)[rid]["ICP_Tier__c"] == "A"  # still the rep's


def test_a_change_made_while_a_rerun_overwrites_is_pulled_next_run(sb, config):
    job.run(config)
    before = expected(config)
    rid = before.index[before["icp_tier"].isin(["A", "B"])][0]
    sb.sf.edit("Account", rid, RESCORING_EDIT)

    def rep_edits_again():
        # Parked: the re-read before the overwrite (after the count, the pull and the book's size).
        assert sb.calls.count("sf.composite") == 0 and sb.calls.count("sf.query") == 4
        sb.sf.edit("Account", rid, {"BillingCity": "Leipzig", "NumberOfEmployees": 40000})

    sb.calls.reset()
    second = run_parked(sb, config, only="sf.query", after=3, while_parked=rep_edits_again)
    assert second.pulled == 1 and second.written == 1 and second.recheck_next == 1
    assert records(sb)[rid]["LastModifiedById"] == API_USER_ID  # our write covers the rep's second edit

    third = job.run(config)
    assert third.rechecked == 1 and third.pulled == 1 and third.written == 1
    assert_crm_holds_desired(sb, config)
    assert recheck(config) == []


def test_a_run_that_dies_keeps_the_records_to_recheck(sb, config):
    """The ids are committed before the batch goes, and forgotten only with the next watermark."""
    before = expected(config)
    rid = before.index[0]
    sb.faults.inject("server_error", times=100, only="sf.composite")
    with pytest.raises(CrmError):
        run_parked(
            sb,
            config,
            only="sf.query",
            after=2,
            while_parked=lambda: sb.sf.edit("Account", rid, {"BillingCity": "Graz"}),
        )
    sb.faults.clear()
    assert recheck(config) == [rid]
    job.run(config, policy=fast())  # a full run again (no watermark yet): processes it
    assert recheck(config) == []


def test_a_write_a_stopped_run_never_confirmed_is_pulled_and_adopted(sb, config):
    """A write that landed while its run stopped before booking it: the pull skips the record (its last
    writer is us), so it is pulled by id, and its pending value is booked as ours, not taken for a rep's."""
    job.run(config)
    rid = next(iter(records(sb)))
    held = records(sb)[rid]
    stray = "D" if held["ICP_Tier__c"] != "D" else "A"
    values = pd.DataFrame(
        {
            "segment": [held["ICP_Segment__c"]],
            "fit_score": [held["ICP_Fit_Score__c"]],
            "tier": [stray],
            "reasons": [held["ICP_Reasons__c"]],
            "scored_at": [held["ICP_Scored_At__c"]],
            "model": [held["ICP_Model__c"]],
        },
        index=[rid],
    )
    with State.open(config.state_dir) as state:
        state.mark_pending(config.crm, values, 999)
    connector = SalesforceConnector(
        settings_for(sb),
        {"SF_INSTANCE_URL": sb.salesforce.instance_url, "SF_ACCESS_TOKEN": sb.salesforce.access_token},
    )
    assert all(r.success for batch in connector.write(values) for r in batch)  # landed, never booked

    report = job.run(config)
    assert report.rechecked == 1 and report.pulled == 1
    assert report.adopted_after_interrupt == 1 and report.skipped_manual_edits == 0
    assert report.written == 1  # our stray value replaced by the desired one
    assert_crm_holds_desired(sb, config)


# -- the option ---------------------------------------------------------------------------------------------
def test_skip_own_writes_false_pulls_our_writes_as_before(tmp_path, sb, learned_profile):
    import shutil

    shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
    config = make_config(tmp_path, sb, extra={"salesforce": {"skip_own_writes": False}})
    assert job.run(config).written == N_ACCOUNTS
    again = job.run(config)
    assert again.mode == "incremental" and not again.skip_own_writes
    assert again.pulled == N_ACCOUNTS and again.written == 0  # every record we wrote comes back
    assert sb.calls.count("sf.oauth.userinfo") == 0 and recheck(config) == []


def test_turning_skip_own_writes_back_on_forces_one_full_run(tmp_path, sb, learned_profile):
    import shutil

    shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
    off = make_config(tmp_path, sb, extra={"salesforce": {"skip_own_writes": False}})
    job.run(off)
    on = make_config(tmp_path, sb)
    assert job.run(on).mode == "full"  # writes made while off were not watched for changes they cover
    assert job.run(on).mode == "incremental"


# -- learning who we are ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_the_integration_users_id_is_learned_once_for_each_login_flow(sb, mode, private_key_file):  # noqa: F811
    connector = SalesforceConnector(
        settings_for(sb, domain=DOMAIN[mode]), login_secrets(sb, mode, private_key_file), policy=fast_policy()
    )
    connector.usage()  # logged in (or the session adopted) and talking
    sb.calls.reset()
    calls = connector.api_calls
    assert connector.own_user_id() == API_USER_ID
    assert connector.api_calls - calls == 1
    # username/password: SOQL on User by Username; OAuth flows and a given token: the userinfo endpoint
    used = {label: sb.calls.count(label) for label in USER_LOOKUPS}
    assert used == (
        {"sf.oauth.userinfo": 0, "sf.query": 1}
        if mode == "password"
        else {"sf.oauth.userinfo": 1, "sf.query": 0}
    )
    assert connector.own_user_id() == API_USER_ID and connector.api_calls - calls == 1  # kept
    # and the exclusion it feeds: every seeded account was last changed by the rep
    assert connector.count_accounts(skip_own_writes=True) == N_ACCOUNTS


def test_without_userinfo_the_username_is_asked(sb, private_key_file):  # noqa: F811
    connector = SalesforceConnector(
        settings_for(sb), login_secrets(sb, "jwt", private_key_file), policy=fast_policy()
    )
    connector.usage()
    sb.faults.inject("server_error", times=fast_policy().attempts, only="sf.oauth.userinfo")
    assert connector.own_user_id() == API_USER_ID
    assert sb.calls.count("sf.query") >= 1


def test_without_userinfo_or_a_username_the_run_says_what_to_set(sb, private_key_file):  # noqa: F811
    connector = SalesforceConnector(
        settings_for(sb, domain="acme.my"),
        login_secrets(sb, "client_credentials", private_key_file),
        policy=fast_policy(),
    )
    sb.faults.inject("server_error", times=fast_policy().attempts, only="sf.oauth.userinfo")
    with pytest.raises(CrmError, match="skip_own_writes = false"):
        connector.own_user_id()


def test_the_sandbox_filters_on_the_last_modifier(sb):
    connector = SalesforceConnector(
        settings_for(sb),
        {"SF_INSTANCE_URL": sb.salesforce.instance_url, "SF_ACCESS_TOKEN": sb.salesforce.access_token},
    )
    ids = list(records(sb))[:3]
    since = pd.Timestamp("2000-01-01", tz="UTC")
    assert connector.count_accounts(since=since, skip_own_writes=True) == N_ACCOUNTS
    changes = pd.DataFrame({"tier": ["A", "B", "C"]}, index=ids)
    assert all(r.success for batch in connector.write(changes) for r in batch)
    assert connector.count_accounts(since=since, skip_own_writes=True) == N_ACCOUNTS - 3
    sb.sf.edit("Account", ids[0], {"BillingCity": "Oslo"})
    assert records(sb)[ids[0]]["LastModifiedById"] == REP_USER_ID
    pulled = pd.concat(connector.iter_accounts(since=since, skip_own_writes=True))
    assert len(pulled) == N_ACCOUNTS - 2 and ids[0] in set(pulled["id"]) and ids[1] not in set(pulled["id"])
