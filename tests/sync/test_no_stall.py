"""No failure stalls the job: thousands of failed records are re-pulled and written by the next ordinary run; a
lost query cursor, a transient failure while renewing an expired session, and a spent daily quota at login end
as they should (retried, retried, exit 4), all through the real CLI or job, the sandbox and the unmodified SDK."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from connectors import salesforce
from connectors.retry import QuotaExhausted, RetryPolicy
from sandbox import Sandbox
from sync import job
from sync.cli import main
from sync.config import load_config
from sync.state import State

from .conftest import N_ACCOUNTS, make_config, session_env
from .test_job import assert_crm_holds_desired


def fast() -> RetryPolicy:
    return RetryPolicy(attempts=6, initial_wait=0.01, max_wait=0.05)


def icp(*args, env):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def password_env(sb: Sandbox) -> dict[str, str]:
    return {
        "SF_USERNAME": sb.salesforce.username,
        "SF_PASSWORD": sb.salesforce.password,
        "SF_SECURITY_TOKEN": sb.salesforce.security_token,
        "SF_LOGIN_URL": sb.salesforce.login_url,
        "SF_CA_BUNDLE": sb.salesforce.ca_bundle,
    }


def exact(sb: Sandbox, label: str) -> int:
    return sb.calls.snapshot().get(label, 0)


# -- thousands of failed records ------------------------------------------------------------------------------
def test_5000_failed_records_are_written_by_the_next_ordinary_run(tmp_path, learned_profile):
    n = 5_000
    with Sandbox(accounts=n, seed=7, with_icp_fields=True) as sb:
        shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
        path = tmp_path / "icp.toml"
        path.write_text(
            '[crm]\nkind = "salesforce"\n[salesforce]\nbulk_threshold = 100000\n'
            "[sync]\nlookback_minutes = 0\nmax_change_ratio = 1.0\n"
        )
        env = session_env(sb)

        # Night 1: a validation rule refuses every record: exit 3, every record kept as a failure.
        sb.faults.inject("validation", rate=1.0, only="sf.composite")
        first = icp("run", "--config", path, "--json", env=env)
        assert first.exit_code == 3, first.output
        assert json.loads(first.stdout)["failed"] == n
        with State.open(tmp_path / ".icp", lock=False) as st:
            assert len(st.failures("salesforce")) == n

        # Night 2, rule fixed: an incremental run like any other re-pulls the 5,000 in queries that fit.
        sb.faults.clear()
        sb.calls.reset()
        second = icp("run", "--config", path, "--json", env=env)
        assert second.exit_code == 0, second.output
        report = json.loads(second.stdout)
        assert report["mode"] == "incremental" and report["exit_code"] == 0
        assert report["pulled"] == n and report["written"] == n and report["failed"] == 0
        # what the sandbox received: the chunked COUNT and page queries (a few hundred ids each, none
        # refused), one check per batch of first fills for records others changed since the pull (they
        # would hide behind our write otherwise), then the 25 Collections calls of 200 records
        queries = exact(sb, "sf.query")
        assert 2 * (n // 500) + n // 200 <= queries <= 2 * (n // 300) + n // 200 + 4, sb.calls.snapshot()
        assert exact(sb, "sf.composite.sobjects") == n // 200
        config = load_config(path, env=env)
        assert_crm_holds_desired(sb, config)
        with State.open(tmp_path / ".icp", lock=False) as st:
            assert st.failures("salesforce").empty

        third = icp("run", "--config", path, "--json", env=env)
        assert third.exit_code == 0 and json.loads(third.stdout)["written"] == 0


# -- a lost query cursor ------------------------------------------------------------------------------------
def test_a_pull_whose_last_page_is_lost_with_its_cursor_still_finishes(tmp_path, learned_profile):
    with Sandbox(accounts=N_ACCOUNTS, seed=7, with_icp_fields=True, page_size=100) as sb:
        shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
        config = make_config(tmp_path, sb)
        # the last queryMore is answered (the cursor is then gone) but the connection drops on the way back
        sb.faults.inject("drop", times=1, only="sf.query_more", after=1)
        report = job.run(config, policy=fast())
        assert sb.faults.fired["drop"] == 1
        assert report.pulled == report.written == N_ACCOUNTS and report.failed == 0
        assert_crm_holds_desired(sb, config)


# -- logins ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["server_error", "rate_limit", "drop"])
def test_a_transient_failure_while_renewing_an_expired_session_is_retried(tmp_path, learned_profile, kind):
    with Sandbox(accounts=N_ACCOUNTS, seed=7, with_icp_fields=True) as sb:
        shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
        config = make_config(tmp_path, sb, env=password_env(sb))
        # The session expires mid-apply; the two logins that follow the first one fail.
        sb.faults.inject("expire_session", times=1, only="sf.composite")
        sb.faults.inject(kind, times=2, only="sf.login", after=1)
        report = job.run(config, policy=fast())
        assert report.written == N_ACCOUNTS and report.failed == 0 and report.retries >= 2
        assert sb.faults.fired[kind] == 2 and sb.calls.count("sf.login") == 1 + 3
        assert_crm_holds_desired(sb, config)


def test_a_spent_quota_at_a_password_login_stops_with_exit_4(tmp_path, learned_profile, monkeypatch):
    # Our own retry policy, quicker (the CLI builds the default one): the SDK is untouched.
    monkeypatch.setattr(salesforce, "RetryPolicy", fast)
    with Sandbox(accounts=50, seed=7, with_icp_fields=True) as sb:
        shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
        path = tmp_path / "icp.toml"
        path.write_text('[crm]\nkind = "salesforce"\n')
        sb.faults.set_quota("salesforce", 0)
        with pytest.raises(QuotaExhausted):
            job.run(load_config(path, env=password_env(sb)), policy=fast())

        result = icp("run", "--config", path, "--json", env=password_env(sb))
        assert result.exit_code == 4, result.output
        out = json.loads(result.stdout)
        assert out["exit_code"] == 4 and out["exit_meaning"] == "stopped by quota or safety cap"
        assert "REQUEST_LIMIT_EXCEEDED" in out["error"]
        assert sb.salesforce.password not in result.output
