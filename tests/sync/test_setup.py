"""sync.setup (fields, doctor, pull) and sync.demo.run_demo as library calls, against the real sandbox."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from sandbox.book import ACCOUNT_HEADERS
from sync import job, setup
from sync.config import load_config
from sync.crm import open_crm
from sync.demo import BACKTEST_AS_OF, DemoResult, run_demo

SANDBOX_TOML = (
    '[crm]\nkind = "sandbox"\n[sandbox]\naccounts = 300\ndb = "sb.sqlite"\n[sync]\nlookback_minutes = 0\n'
)
# Once the fields exist: a segment the picklist lacks (add_values), a mapped field Account lacks (problem).
NOT_READY_TOML = (
    '[[segments]]\nname = "Retail"\nwhen = [{ field = "industry", op = "==", value = "Retail" }]\n'
    '[salesforce.accounts.columns]\nwebsite = "Nope__c"\n'
)


@pytest.fixture
def sandbox_toml(tmp_path, learned_profile):
    shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
    path = tmp_path / "icp.toml"
    path.write_text(SANDBOX_TOML)
    return path


def test_fields_plans_then_applies_then_has_nothing_to_do(sandbox_toml):
    config = load_config(sandbox_toml)
    planned = setup.fields(config, apply=False)
    assert [s.logical for s in planned.plan.create] == [
        "segment",
        "fit_score",
        "tier",
        "reasons",
        "scored_at",
        "model",
    ]
    assert not planned.applied and not planned.complete and planned.ok
    assert set(planned.as_dict()) == {"create", "add_values", "ok", "problems", "applied"}

    applied = setup.fields(config, apply=True)
    assert applied.applied and applied.complete and applied.remaining.ready
    assert applied.as_dict()["remaining"] == {"create": [], "add_values": []}

    again = setup.fields(config, apply=True)
    assert again.plan.ready and not again.applied and again.complete
    assert len(again.as_dict()["ok"]) == 6 and "remaining" not in again.as_dict()


def test_fields_reuses_an_open_connector(sandbox_toml):
    config = load_config(sandbox_toml)
    with open_crm(config) as connector:
        result = setup.fields(config, apply=True, connector=connector)
        assert result.complete
        assert setup.check_fields(config, connector).ready


def test_doctor_fails_on_missing_fields_then_passes(sandbox_toml):
    config = load_config(sandbox_toml)
    before = setup.doctor(config)
    assert [c.name for c in before.checks] == [
        "config",
        "profile",
        "credentials",
        "api quota",
        "fields",
        "state",
    ]
    assert not before.ok
    failed = [c for c in before.checks if not c.ok]
    assert [c.name for c in failed] == ["fields"]
    assert "icp fields --apply" in failed[0].detail

    setup.fields(config, apply=True)
    after = setup.doctor(config)
    assert after.ok
    assert after.as_dict()["checks"][4] == {"check": "fields", "ok": True, "detail": "all present"}


def test_doctor_preflight_and_fields_read_a_field_check_the_same_way(sandbox_toml):
    setup.fields(load_config(sandbox_toml), apply=True)
    sandbox_toml.write_text(SANDBOX_TOML + NOT_READY_TOML)
    config = load_config(sandbox_toml)
    with open_crm(config) as connector:
        plan = setup.check_fields(config, connector)
        assert plan.add_values == {"ICP_Segment__c": ("Retail", "Other")} and len(plan.problems) == 1
        with pytest.raises(job.PreflightError) as raised:
            job.preflight(config, connector)
    blockers = plan.blockers()
    assert str(raised.value) == "the CRM is not ready:\n" + "\n".join(f"  - {b}" for b in blockers)

    fields_check = next(c for c in setup.doctor(config).checks if c.name == "fields")
    assert not fields_check.ok and fields_check.detail == "; ".join(blockers)

    result = setup.fields(config, apply=False)
    assert not result.ok and result.plan.problems == plan.problems


def test_doctor_on_a_csv_book_checks_the_file_and_a_missing_profile(tmp_path):
    (tmp_path / "accounts.csv").write_text("id,name\n1,a\n")
    (tmp_path / "icp.toml").write_text('[crm]\nkind = "csv"\n[csv]\naccounts = "accounts.csv"\n')
    result = setup.doctor(load_config(tmp_path / "icp.toml"))
    assert [(c.name, c.ok) for c in result.checks] == [
        ("config", True),
        ("profile", False),
        ("book", True),
        ("state", True),
    ]
    assert not result.ok


def test_pull_counts_missing_values_of_the_scoring_attributes(sandbox_toml, tmp_path):
    sandbox_toml.write_text(SANDBOX_TOML + '[scoring]\nattributes = ["country", "industry"]\n')
    config = load_config(sandbox_toml)
    summary = setup.pull(config)
    assert summary.accounts == 300 and 0 < summary.won_deals <= summary.deals
    assert list(summary.missing) == ["country", "industry"]
    assert "output" not in summary.as_dict()

    out = tmp_path / "pulled.csv"
    written = setup.pull(config, output=out)
    assert written.as_dict()["output"] == out
    frame = pd.read_csv(out)
    assert len(frame) == 300
    assert written.missing["industry"] == frame["industry"].isna().sum()


def test_run_demo_returns_everything_the_demo_prints(tmp_path):
    result = run_demo(tmp_path / "demo", accounts=300, seed=7)
    assert isinstance(result, DemoResult)
    assert result.accounts == 300 and result.deals > 0
    assert result.files.config.exists() and result.output.exists() and result.crm_config.exists()
    assert result.backtest_as_of == BACKTEST_AS_OF
    assert len(result.fields_created) == 6
    first, second = result.runs
    assert first.written == 300 and second.written == 0 and second.changed == 0
    scored = pd.read_csv(result.output, dtype=str)
    assert result.example_id in set(scored[ACCOUNT_HEADERS["id"]])

    payload = result.as_dict()
    assert set(payload) == {"csv", "crm"}
    assert set(payload["csv"]) == {"files", "club", "profile_version", "summary", "segment_tier", "backtest"}
    assert set(payload["crm"]) == {"config", "fields_created", "profile_version", "runs"}
    assert payload["crm"]["runs"][1]["written"] == 0
