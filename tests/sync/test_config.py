"""sync.config: every problem reported at once with its key; secrets only from the environment, never shown."""

from __future__ import annotations

import pytest

from sync.config import ConfigError, Secret, load_config, parse_config


def write(tmp_path, text: str):
    path = tmp_path / "icp.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_csv_config_resolves_paths_beside_the_file(tmp_path):
    cfg = load_config(write(tmp_path, '[csv]\naccounts = "a.csv"\n'), env={})
    assert cfg.crm == "csv"
    assert cfg.csv.accounts == tmp_path / "a.csv"
    assert cfg.csv.deals is None
    assert cfg.profile_path == tmp_path / "icp-profile.toml"
    assert cfg.tiers == (75.0, 50.0, 25.0)
    assert cfg.club_size == 10 and cfg.min_criteria == 5


def test_table_form_carries_file_columns_and_stages(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            """
[icp]
profile = "profiles/p.toml"
[csv]
output = "out.csv"
[csv.accounts]
file = "acc.csv"
[csv.accounts.columns]
id = "Account ID"
industry = "Sector"
[csv.deals]
file = "deals.csv"
[csv.deals.columns]
account_id = "Account ID"
stage = "Stage"
[csv.deals.stages]
won = ["Won it"]
lost = ["Lost it"]
""",
        ),
        env={},
    )
    assert cfg.csv.account_columns == {"id": "Account ID", "industry": "Sector"}
    assert cfg.csv.deals == tmp_path / "deals.csv"
    assert cfg.csv.won_stages == ("Won it",) and cfg.csv.lost_stages == ("Lost it",)
    assert cfg.profile_path == tmp_path / "profiles" / "p.toml"


def test_every_problem_is_listed_at_once_with_its_key(tmp_path):
    path = write(
        tmp_path,
        """
bogus = 1
[crm]
kind = "oracle"
[csv]
accounts = "a.csv"
extra = true
[[segments]]
name = "X"
when = [{ field = "industry", op = "=~", value = "a" }]
[club]
size = 0
criteria = ["loyal", "rich"]
[scoring.tiers]
a = 20
b = 50
""",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    problems = "\n".join(info.value.problems)
    for expected in (
        "bogus: unknown key",
        "crm.kind = 'oracle'",
        "csv.extra: unknown key",
        'segments[0].when[0]: unknown operator "=~"',
        "club.size = 0",
        'club.criteria[1]: unknown criterion "rich"',
        "scoring.tiers: need a > b > c",
    ):
        assert expected in problems
    assert str(path) in str(info.value)


def test_missing_file_and_bad_toml_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no config file"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[csv\n"))


def test_config_path_comes_from_icp_config(tmp_path, monkeypatch):
    path = write(tmp_path, '[csv]\naccounts = "from-env.csv"\n')
    monkeypatch.setenv("ICP_CONFIG", str(path))
    assert load_config(None, env={}).csv.accounts.name == "from-env.csv"


def test_secrets_come_from_env_then_dotenv_and_are_redacted(tmp_path):
    (tmp_path / ".env").write_text("SF_PASSWORD=from-dotenv-123\nHUBSPOT_ACCESS_TOKEN=pat-from-dotenv\n")
    cfg = load_config(write(tmp_path, '[csv]\naccounts = "a.csv"\n'), env={"SF_PASSWORD": "from-env-456"})
    assert cfg.secrets["SF_PASSWORD"].reveal() == "from-env-456"  # the environment wins
    assert cfg.secrets["HUBSPOT_ACCESS_TOKEN"].reveal() == "pat-from-dotenv"
    shown = repr(cfg) + str(cfg.secrets) + repr(cfg.secrets)
    assert "from-env-456" not in shown and "pat-from-dotenv" not in shown
    assert repr(Secret("x")) == "Secret('****')"


def test_secrets_in_the_toml_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({"csv": {"accounts": "a.csv"}, "salesforce": {"password": "x"}})


def test_deal_columns_without_a_deals_file_is_an_error():
    with pytest.raises(ConfigError, match="no deals file"):
        parse_config({"csv": {"accounts": "a.csv", "deals": {"columns": {"stage": "S"}, "file": ""}}})


def test_bulk_limits_out_of_range_name_the_key_and_what_is_allowed(tmp_path):
    path = write(
        tmp_path,
        """
[crm]
kind = "salesforce"
[salesforce]
bulk_upload_bytes = 150000000
bulk_job_records = 0
""",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    problems = "\n".join(info.value.problems)
    assert "salesforce.bulk_upload_bytes = 150000000" in problems and "100000000" in problems
    assert "salesforce.bulk_job_records = 0" in problems
