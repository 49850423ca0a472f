"""`--json` prints exactly one JSON object on stdout, whatever the outcome: the result (when the command got that
far) with `exit_code` and `exit_meaning`, and `error` on every stop and error. Through click's CliRunner, the
real connector and the sandbox."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from sandbox import Sandbox
from sync.cli import EXIT_MEANINGS, main
from sync.state import State

from .conftest import N_ACCOUNTS, session_env


def icp(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def one_json(result) -> dict:
    """The one JSON object on stdout (and nothing else there)."""
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    out = json.loads(lines[0])
    assert isinstance(out, dict)
    assert out["exit_code"] == result.exit_code
    assert out["exit_meaning"] == EXIT_MEANINGS[result.exit_code]
    return out


CONFIG = '[crm]\nkind = "salesforce"\n[sync]\nlookback_minutes = 0\n'


@pytest.fixture
def setup(tmp_path, sb, learned_profile):
    shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
    path = tmp_path / "icp.toml"
    path.write_text(CONFIG)
    env = session_env(sb)
    return path, env


def test_ok_is_exit_0_with_the_report(setup):
    path, env = setup
    result = icp("run", "--config", path, "--json", env=env)
    assert result.exit_code == 0, result.output
    out = one_json(result)
    assert out["exit_meaning"] == "ok" and "error" not in out
    assert out["status"] == "ok" and out["written"] == N_ACCOUNTS


def test_a_config_error_is_exit_2(setup):
    path, env = setup
    path.write_text(CONFIG.replace("lookback_minutes = 0", "lookback_minutes = 0\nmax_change_ratioo = 0.5"))
    result = icp("run", "--config", path, "--json", env=env)
    assert result.exit_code == 2
    out = one_json(result)
    assert "max_change_ratioo" in out["error"]
    assert out["exit_meaning"] == "usage or configuration error"


def test_a_usage_error_inside_a_command_is_exit_2(setup):
    path, env = setup
    out = one_json(icp("rescore", "--config", path, "--json", env=env))
    assert out["exit_code"] == 2 and "account ids" in out["error"]


def test_a_lock_refusal_is_exit_1(setup, sb):
    path, env = setup
    with State.open(path.parent / ".icp"):
        result = icp("run", "--config", path, "--json", env=env)
    assert result.exit_code == 1
    assert "holds the lock" in one_json(result)["error"]
    assert sb.calls.count() == 0


def test_the_quota_floor_is_exit_4(setup, sb):
    path, env = setup
    path.write_text(CONFIG + "[salesforce]\nquota_floor = 100000000\n")
    result = icp("run", "--config", path, "--json", env=env)
    assert result.exit_code == 4
    out = one_json(result)
    assert "API calls left today" in out["error"] and out["exit_meaning"] == "stopped by quota or safety cap"


def test_a_daily_quota_spent_mid_run_is_exit_4_with_the_report(setup, sb, monkeypatch):
    from connectors import salesforce
    from connectors.retry import RetryPolicy

    # Our own retry policy, quicker (the CLI builds the default one): the SDK is untouched.
    monkeypatch.setattr(
        salesforce, "RetryPolicy", lambda: RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.02)
    )
    path, env = setup
    sb.faults.inject("rate_limit", rate=1.0, only="sf.composite")
    result = icp("run", "--config", path, "--json", env=env)
    assert result.exit_code == 4
    out = one_json(result)
    assert "REQUEST_LIMIT_EXCEEDED" in out["error"] and out["status"] == "stopped: quota"


def test_the_safety_cap_is_exit_4_with_the_report(setup, sb):
    path, env = setup
    assert icp("run", "--config", path, env=env).exit_code == 0
    for rec in sb.sf.records("Account")[:200]:
        sb.sf.edit(
            "Account", rec["Id"], {"Industry": "Logistics", "BillingCountry": "DE", "NumberOfEmployees": 600}
        )
    result = icp("run", "--config", path, "--json", env=env)
    assert result.exit_code == 4
    out = one_json(result)
    assert "safety cap" in out["error"] and out["status"] == "stopped: safety cap"
    assert out["written"] == 0 and out["files"]["plan_csv"]


def test_a_refused_login_is_exit_1_with_salesforces_message_and_no_secret(setup, sb):
    path, _ = setup
    env = {
        "SF_USERNAME": sb.salesforce.username,
        "SF_PASSWORD": "Wr0ng-Passw0rd-77",
        "SF_SECURITY_TOKEN": sb.salesforce.security_token,
        "SF_LOGIN_URL": sb.salesforce.login_url,
        "SF_CA_BUNDLE": sb.salesforce.ca_bundle,
    }
    result = icp("run", "--config", path, "--json", env=env)
    assert result.exit_code == 1
    out = one_json(result)
    assert out["error"] == (
        "Salesforce refused the login (password): INVALID_LOGIN: Invalid username, password, security token; "
        "or user locked out."
    )
    for secret in ("Wr0ng-Passw0rd-77", sb.salesforce.security_token):
        assert secret not in result.output


def test_a_crm_error_is_exit_1(setup):
    path, env = setup
    result = icp("rescore", "--where", "No_Such_Field__c = 'x'", "--config", path, "--json", env=env)
    assert result.exit_code == 1
    assert "INVALID_FIELD" in one_json(result)["error"]


def test_record_failures_are_exit_3_with_the_report(setup, sb):
    path, env = setup
    sb.faults.inject("validation", rate=0.2, only="sf.composite")
    result = icp("run", "--config", path, "--json", env=env)
    assert result.exit_code == 3
    out = one_json(result)
    assert out["failed"] > 0 and out["failed"] + out["written"] == N_ACCOUNTS
    assert out["exit_meaning"] == "finished with record-level failures (retried on the next run)"
    assert "error" not in out


def test_a_command_that_fails_after_emitting_its_result_still_prints_one_object(tmp_path, learned_profile):
    shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
    (tmp_path / "icp.toml").write_text(CONFIG)
    with Sandbox(accounts=20, seed=7) as bare:  # no ICP fields yet: doctor fails
        env = {
            "SF_INSTANCE_URL": bare.salesforce.instance_url,
            "SF_ACCESS_TOKEN": bare.salesforce.access_token,
            "SF_CA_BUNDLE": bare.salesforce.ca_bundle,
        }
        result = icp("doctor", "--config", tmp_path / "icp.toml", "--json", env=env)
    assert result.exit_code == 1
    out = one_json(result)
    assert not all(check["ok"] for check in out["checks"])


def test_without_json_errors_go_to_stderr_and_stdout_has_no_json(setup):
    path, env = setup
    path.write_text(CONFIG + "[salesforce]\nquota_floor = 100000000\n")
    result = icp("run", "--config", path, env=env)
    assert result.exit_code == 4
    assert "API calls left today" in result.stderr and "{" not in result.stdout
