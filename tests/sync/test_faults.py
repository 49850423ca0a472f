"""The fault matrix: each fault the sandbox injects, then reruns until the CRM holds exactly the desired
values, asserted record by record, with nothing lost or duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pandas as pd
import pytest

from connectors.retry import AuthFailed, RetryPolicy
from sandbox import Sandbox
from sync import job
from sync.job import JobStopped, RunOptions
from sync.state import State

from .conftest import N_ACCOUNTS, make_config, session_env
from .test_job import assert_crm_holds_desired, writes


def fast() -> RetryPolicy:
    return RetryPolicy(attempts=6, initial_wait=0.01, max_wait=0.05)


def rerun_until_clean(config, sb, max_runs=4):
    """Reruns with the faults cleared until a run has nothing left to do; returns the reports."""
    sb.faults.clear()
    reports = []
    for _ in range(max_runs):
        report = job.run(config, RunOptions(full=True), policy=fast())
        reports.append(report)
        if report.changed == 0:
            break
    assert reports[-1].changed == 0, [r.as_dict() for r in reports]
    assert_crm_holds_desired(sb, config)
    return reports


def state_matches_crm(config, sb):
    """What state says we wrote is what the CRM holds: no write lost from state, none recorded twice."""
    with State.open(config.state_dir, lock=False) as st:
        written = st.last_written("salesforce")
        assert st.pending("salesforce").empty
    crm = {r["Id"]: r for r in sb.sf.records("Account")}
    assert set(written.index) == set(crm)
    for rid, row in written.iterrows():
        assert crm[rid]["ICP_Tier__c"] == row["tier"]
        assert int(crm[rid]["ICP_Fit_Score__c"]) == int(row["fit_score"])


@pytest.mark.parametrize("kind", ["rate_limit", "server_error", "drop"])
def test_transient_request_faults_on_writes_are_retried_within_the_run(sb, config, kind):
    sb.faults.inject(kind, rate=0.5, only="sf.composite")
    report = job.run(config, policy=fast())
    assert report.written == N_ACCOUNTS and report.failed == 0
    assert report.retries > 0
    assert sb.faults.fired[kind] > 0
    rerun_until_clean(config, sb)
    state_matches_crm(config, sb)


@pytest.mark.parametrize("kind", ["rate_limit", "server_error", "drop"])
def test_transient_faults_on_pulls_are_retried(sb, config, kind):
    sb.faults.inject(kind, times=2, only="sf.query")
    report = job.run(config, policy=fast())
    assert report.written == N_ACCOUNTS
    assert sb.faults.fired[kind] == 2
    state_matches_crm(config, sb)


def test_persistent_server_errors_stop_the_run_and_the_next_run_finishes(sb, config):
    sb.faults.inject("server_error", rate=1.0, only="sf.composite")
    with pytest.raises(Exception, match="still failing after 6 attempts"):
        job.run(config, policy=fast())
    assert writes(sb) > 0
    rerun_until_clean(config, sb)
    state_matches_crm(config, sb)


def test_expired_session_is_renewed_with_login_credentials(sb, tmp_path, learned_profile):
    import shutil

    shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
    env = {
        "SF_USERNAME": sb.salesforce.username,
        "SF_PASSWORD": sb.salesforce.password,
        "SF_SECURITY_TOKEN": sb.salesforce.security_token,
        "SF_LOGIN_URL": sb.salesforce.login_url,
        "SF_CA_BUNDLE": sb.salesforce.ca_bundle,
    }
    config = make_config(tmp_path, sb, env=env)
    sb.faults.inject("expire_session", times=2, only="sf.composite")
    report = job.run(config, policy=fast())
    assert report.written == N_ACCOUNTS and report.failed == 0
    assert sb.calls.count("sf.login") >= 2  # the first login, then at least one renewal
    rerun_until_clean(config, sb)
    state_matches_crm(config, sb)


def test_expired_direct_session_stops_with_a_clear_message_and_resumes(sb, config):
    sb.faults.inject("expire_session", times=1, only="sf.composite")
    with pytest.raises(AuthFailed, match="SF_ACCESS_TOKEN"):
        job.run(config, policy=fast())
    sb.sf.reset_sessions()  # a fresh token, as a person would paste one
    rerun_until_clean(config, sb)
    state_matches_crm(config, sb)


@pytest.mark.parametrize("kind", ["validation", "picklist"])
def test_per_record_errors_are_reported_and_retried_next_run(sb, config, kind):
    sb.faults.inject(kind, rate=0.1, only="sf.composite")
    report = job.run(config, policy=fast())
    assert report.failed > 0 and report.written + report.failed == N_ACCOUNTS
    errors = pd.read_csv(report.files["errors_csv"])
    assert len(errors) == report.failed and errors["code"].notna().all() and errors["message"].notna().all()
    with State.open(config.state_dir, lock=False) as st:
        assert set(st.failures("salesforce").index) == set(errors["record_id"])
    sb.faults.clear()
    retry = job.run(config, policy=fast())  # incremental: the failed records are pulled again
    assert retry.written == report.failed and retry.failed == 0
    with State.open(config.state_dir, lock=False) as st:
        assert st.failures("salesforce").empty
    rerun_until_clean(config, sb)
    state_matches_crm(config, sb)


def test_row_locks_are_resent_within_the_run(sb, config):
    sb.faults.inject("record_lock", rate=0.2, only="sf.composite")
    report = job.run(config, policy=fast())
    assert sb.faults.fired["record_lock"] > 0
    assert report.written + report.failed == N_ACCOUNTS
    assert report.failed < sb.faults.fired["record_lock"]  # most were re-sent successfully
    rerun_until_clean(config, sb)
    state_matches_crm(config, sb)


def test_daily_quota_stops_cleanly_and_the_next_run_resumes(sb, config):
    before = sb.calls.count()
    job.run(config, RunOptions(dry_run=True), policy=fast())
    reads = sb.calls.count() - before
    # preflight, pull, the user-id lookup, the check before the first batch and that batch fit; the
    # second batch does not
    sb.faults.set_quota("salesforce", reads + 3)
    with pytest.raises(JobStopped, match="request limit") as stopped:
        job.run(config, policy=fast())
    with State.open(config.state_dir, lock=False) as st:
        assert st.watermark("salesforce") is None  # the watermark did not advance
        partial = len(st.last_written("salesforce"))
    assert 0 < partial < N_ACCOUNTS
    assert stopped.value.report.written == partial and stopped.value.report.status == "stopped: quota"
    reports = rerun_until_clean(config, sb)
    assert reports[0].written == N_ACCOUNTS - partial  # nothing written twice
    state_matches_crm(config, sb)


def test_quota_floor_stops_before_pulling(tmp_path, learned_profile):
    import shutil

    with Sandbox(accounts=50, seed=7, with_icp_fields=True, salesforce_daily_limit=500) as sb:
        shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
        cfg = make_config(tmp_path, sb, extra={"salesforce": {"quota_floor": 1000}})
        with pytest.raises(JobStopped, match="API calls left today"):
            job.run(cfg, policy=fast())
        assert sb.calls.count("sf.query") == 0 and writes(sb) == 0


def test_killed_mid_apply_then_rerun_leaves_the_crm_exact(tmp_path, learned_profile):
    import shutil

    n = 1500
    with Sandbox(accounts=n, seed=7, with_icp_fields=True) as sb:
        # Four write batches land; the fifth is taken by the server and parked unanswered. The run is
        # killed at that known point, not at a moment guessed from the clock.
        sb.faults.hold(only="sf.composite", after=4)
        shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
        (tmp_path / "icp.toml").write_text(
            '[crm]\nkind = "salesforce"\n[salesforce]\nbulk_threshold = 100000\n[sync]\nmax_change_ratio = 1.0\nlookback_minutes = 0\n'
        )
        env = {**os.environ, **session_env(sb)}
        err_file = tmp_path / "killed-run.err"
        with err_file.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sync.cli", "run", "--config", str(tmp_path / "icp.toml")],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
            try:
                while not sb.faults.wait_parked(timeout=0.2):
                    assert proc.poll() is None, (
                        f"the run ended (exit {proc.returncode}) before its fifth write batch:\n"
                        + err_file.read_text()
                    )
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        landed = sum(1 for r in sb.sf.records("Account") if r["ICP_Tier__c"])
        # The parked batch arrived whole before the kill; the server applies it though nobody hears back.
        sb.faults.release()
        assert sb.calls.wait_idle(timeout=60), "a request to the sandbox never finished"
        filled = sum(1 for r in sb.sf.records("Account") if r["ICP_Tier__c"])
        assert 0 < landed < filled < n, (landed, filled)  # killed in the middle of the apply

        from sync.config import load_config

        config = load_config(
            tmp_path / "icp.toml",
            env={k: env[k] for k in ("SF_INSTANCE_URL", "SF_ACCESS_TOKEN", "SF_CA_BUNDLE")},
        )
        first = job.run(config, policy=fast())  # the lock died with the process; this run may start
        assert first.written == n - filled  # what the killed run wrote is not written again
        assert first.skipped_manual_edits == 0  # nor mistaken for a rep's edits
        rerun_until_clean(config, sb)
        state_matches_crm(config, sb)


def test_a_second_run_cannot_start_while_one_holds_the_lock(sb, config):
    from sync.state import StateLocked

    with State.open(config.state_dir), pytest.raises(StateLocked):
        job.run(config, policy=fast())
    assert writes(sb) == 0
