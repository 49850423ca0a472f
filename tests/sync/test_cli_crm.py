"""The CRM commands through the real CLI: fields, doctor, pull, run, rescore, report, with exit codes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sync.cli import main


def icp(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture
def sandbox_config(tmp_path, learned_profile):
    import shutil

    shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
    path = tmp_path / "icp.toml"
    path.write_text(
        '[crm]\nkind = "sandbox"\n[sandbox]\naccounts = 300\ndb = "sb.sqlite"\n[sync]\nlookback_minutes = 0\n'
    )
    return path


def test_fields_plan_apply_and_idempotent(sandbox_config):
    plan = icp("fields", "--config", sandbox_config, "--json")
    assert plan.exit_code == 0, plan.output
    assert len(json.loads(plan.output)["create"]) == 6
    assert "ICP_Tier__c" in icp("fields", "--config", sandbox_config).output  # still only planned

    applied = icp("fields", "--apply", "--config", sandbox_config, "--json")
    assert json.loads(applied.output)["applied"] is True
    again = icp("fields", "--apply", "--config", sandbox_config)
    assert again.exit_code == 0 and "nothing to do" in again.output


def test_doctor_fails_until_the_fields_exist(sandbox_config):
    before = icp("doctor", "--config", sandbox_config)
    assert before.exit_code == 1 and "icp fields --apply" in before.output
    icp("fields", "--apply", "--config", sandbox_config)
    after = icp("doctor", "--config", sandbox_config, "--json")
    assert after.exit_code == 0, after.output
    assert all(c["ok"] for c in json.loads(after.output)["checks"])


def test_pull_reports_missing_values_of_the_scoring_attributes(sandbox_config):
    sandbox_config.write_text(
        sandbox_config.read_text() + '[scoring]\nattributes = ["country", "industry"]\n'
    )
    result = icp("pull", "--config", sandbox_config)
    assert result.exit_code == 0, result.output
    assert "missing values: country " in result.output and ", industry " in result.output
    assert "employees" not in result.output
    assert list(json.loads(icp("pull", "--config", sandbox_config, "--json").output)["missing"]) == [
        "country",
        "industry",
    ]


def test_run_dry_run_then_run_then_rerun_and_report(sandbox_config):
    icp("fields", "--apply", "--config", sandbox_config)
    dry = icp("run", "--dry-run", "--config", sandbox_config, "--json")
    assert dry.exit_code == 0, dry.output
    dry = json.loads(dry.output)
    assert dry["status"] == "dry-run" and dry["changed"] == 300 and dry["written"] == 0

    first = icp("run", "--config", sandbox_config)
    assert first.exit_code == 0, first.output
    assert "written 300" in first.output
    second = json.loads(icp("run", "--config", sandbox_config, "--json").output)
    assert second["written"] == 0 and second["changed"] == 0

    report = json.loads(icp("report", "--config", sandbox_config, "--json").output)
    assert [r["status"] for r in report["runs"]][:3] == ["ok", "ok", "dry-run"]


def test_rescore_validates_ids_and_targets_only_them(sandbox_config):
    icp("fields", "--apply", "--config", sandbox_config)
    bad = icp("rescore", "001' OR Name != '", "--config", sandbox_config)
    assert bad.exit_code == 2 and "not a Salesforce id" in bad.output
    assert icp("rescore", "--config", sandbox_config).exit_code == 2

    pulled = json.loads(
        icp("pull", "--config", sandbox_config, "--json", "-o", sandbox_config.parent / "pulled.csv").output
    )
    assert pulled["accounts"] == 300
    import pandas as pd

    ids = pd.read_csv(sandbox_config.parent / "pulled.csv")["id"].head(3).tolist()
    result = json.loads(icp("rescore", *ids, "--config", sandbox_config, "--json").output)
    assert result["mode"] == "targeted" and result["pulled"] == 3 and result["written"] == 3

    where = json.loads(
        icp("rescore", "--where", "Industry = 'Retail'", "--config", sandbox_config, "--json").output
    )
    assert where["pulled"] > 0 and where["mode"] == "targeted"


def test_record_failures_exit_3_and_quota_floor_exits_4(sandbox_config, tmp_path):
    icp("fields", "--apply", "--config", sandbox_config)
    text = sandbox_config.read_text()
    sandbox_config.write_text(
        text.replace('db = "sb.sqlite"', 'db = "sb.sqlite"\nfaults = "validation:0.2@sf.composite"')
    )
    failed = icp("run", "--config", sandbox_config)
    assert failed.exit_code == 3, failed.output
    assert "retried on the next run" in failed.output

    sandbox_config.write_text(text + "[salesforce]\nquota_floor = 100000000\n")
    stopped = icp("run", "--config", sandbox_config)
    assert stopped.exit_code == 4 and "API calls left today" in stopped.output


def test_score_from_the_crm_writes_a_csv(sandbox_config):
    result = icp("score", "--config", sandbox_config, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)["output"]
    import pandas as pd

    frame = pd.read_csv(out)
    assert len(frame) == 300 and {"id", "icp_tier", "icp_fit_score"} <= set(frame.columns)


def test_salesforce_secrets_never_reach_output_or_files(tmp_path, learned_profile):
    import shutil

    from sandbox import Sandbox

    shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
    (tmp_path / "icp.toml").write_text('[crm]\nkind = "salesforce"\n')
    with Sandbox(accounts=100, seed=7, with_icp_fields=True) as sb:
        env = {
            "SF_USERNAME": sb.salesforce.username,
            "SF_PASSWORD": sb.salesforce.password,
            "SF_SECURITY_TOKEN": sb.salesforce.security_token,
            "SF_LOGIN_URL": sb.salesforce.login_url,
            "SF_CA_BUNDLE": sb.salesforce.ca_bundle,
        }
        outputs = [
            icp(*cmd, "--config", tmp_path / "icp.toml", env=env)
            for cmd in (("doctor",), ("run",), ("run", "--json"), ("report", "--json"))
        ]
        assert all(o.exit_code == 0 for o in outputs), [o.output for o in outputs]
        text = "".join(o.output for o in outputs)
        for path in (tmp_path / ".icp").rglob("*"):
            if path.is_file():
                text += path.read_bytes().decode("utf-8", "replace")
        for secret in (sb.salesforce.password, sb.salesforce.security_token):
            assert secret not in text
