"""The `icp` CLI through click's CliRunner: exit codes, output, and every bad input's message."""

from __future__ import annotations

import json
import shutil

import click
import pandas as pd
import pytest
from click.testing import CliRunner

from sync.cli import main


def run(*args, env=None):
    result = CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("demo")
    result = run("demo", "--dir", directory, "--accounts", 1500)
    assert result.exit_code == 0, result.output
    return directory / "csv"


@pytest.fixture
def book_dir(demo_dir, tmp_path):
    """A private copy of the demo's files, free to break."""
    for name in ("accounts.csv", "deals.csv", "icp.toml", "icp-profile.toml"):
        shutil.copy(demo_dir / name, tmp_path / name)
    return tmp_path


def all_commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, (*prefix, name))


@pytest.mark.parametrize("path", [p for p, _ in all_commands(main)], ids=" ".join)
def test_every_command_has_help(path):
    result = run(*path, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output
    cmd = main
    for part in path:
        cmd = cmd.commands[part]
    assert cmd.help and len(cmd.help.strip()) > 20


def test_demo_writes_files_and_shows_club_segments_and_backtest(demo_dir):
    for name in ("accounts.csv", "deals.csv", "icp.toml", "icp-profile.toml", "accounts-scored.csv"):
        assert (demo_dir / name).exists(), name
    scored = pd.read_csv(demo_dir / "accounts-scored.csv", dtype=str, keep_default_na=False)
    assert len(scored) == 1500
    assert set(scored["icp_tier"]) <= {"A", "B", "C", "D"}
    assert scored["icp_fit_score"].astype(int).between(0, 100).all()
    assert scored["icp_model"].nunique() == 1


def test_demo_json_reports_club_in_tier_a_lift_and_two_crm_runs(tmp_path):
    result = run("demo", "--dir", tmp_path, "--accounts", 1500, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    csv_part, crm = payload["csv"], payload["crm"]
    assert csv_part["summary"]["club_members"] == 10
    assert csv_part["summary"]["club_in_a"] >= 8
    assert csv_part["backtest"]["lift_a"] > 1
    assert len(csv_part["club"]) == 10
    assert len(crm["fields_created"]) == 6
    first, second = crm["runs"]
    assert first["written"] == 1500 and first["failed"] == 0
    assert second["changed"] == 0 and second["written"] == 0


def test_demo_defaults_are_the_sandbox_config_defaults():
    from sync.config import SandboxConfig

    defaults = {p.name: p.default for p in main.commands["demo"].params}
    assert defaults["accounts"] == SandboxConfig.accounts and defaults["seed"] == SandboxConfig.seed


def test_learn_score_explain_backtest_chain(book_dir):
    cfg = book_dir / "icp.toml"
    learned = run("profile", "learn", "--config", cfg, "--json")
    assert learned.exit_code == 0, learned.output
    learned = json.loads(learned.output)
    assert len(learned["version"]) == 12 and len(learned["club"]) == 10

    shown = json.loads(run("profile", "show", "--config", cfg, "--json").output)
    assert shown["version"] == learned["version"]

    scored = run("score", "--config", cfg, "--json", "-o", book_dir / "out.csv")
    assert scored.exit_code == 0, scored.output
    summary = json.loads(scored.output)
    assert summary["accounts"] == 1500 and sum(summary["tiers"].values()) == 1500
    assert summary["model"] == learned["version"]

    member = learned["club"][0]["id"]
    explained = json.loads(run("explain", member, "--config", cfg, "--json").output)
    assert explained["in_club"] is True
    assert explained["tier"] in "AB"
    assert abs(sum(a["points"] for a in explained["attributes"]) - explained["fit_score"]) <= 1.5

    bt = run("backtest", "--as-of", "2025-01-01", "--config", cfg, "--json", "--boot", 200)
    assert bt.exit_code == 0, bt.output
    bt = json.loads(bt.output)
    assert {"auc", "auc_ci", "lift_a", "significant"} <= set(bt)
    assert len(bt["auc_ci"]) == 2 and bt["auc_ci"][0] <= bt["auc"] <= bt["auc_ci"][1]


def test_human_output_of_score_has_the_segment_tier_table(book_dir):
    result = run("score", "--config", book_dir / "icp.toml")
    assert result.exit_code == 0, result.output
    assert "Scored 1,500 accounts" in result.output
    assert "Industrial mid-market" in result.output and "Total" in result.output


# ---------------------------------------------------------------------------------------- bad inputs
def test_missing_config_exits_2(tmp_path):
    result = run("score", "--config", tmp_path / "none.toml")
    assert result.exit_code == 2
    assert "no config file" in result.output and "Traceback" not in result.output


def test_missing_accounts_file_names_it(book_dir):
    (book_dir / "accounts.csv").unlink()
    result = run("score", "--config", book_dir / "icp.toml")
    assert result.exit_code == 1
    assert "accounts.csv" in result.output and "Traceback" not in result.output


def test_unknown_header_in_mapping_lists_the_headers(book_dir):
    cfg = book_dir / "icp.toml"
    cfg.write_text(cfg.read_text().replace('industry = "Industry"', 'industry = "Sector"'))
    result = run("profile", "learn", "--config", cfg)
    assert result.exit_code == 1
    assert "Sector" in result.output and "Industry" in result.output


def test_unmapped_required_id(book_dir):
    cfg = book_dir / "icp.toml"
    cfg.write_text(cfg.read_text().replace('id = "Account ID"\n', "", 1))
    result = run("profile", "learn", "--config", cfg)
    assert result.exit_code == 1
    assert "id" in result.output and "Account ID" in result.output


def test_unknown_field_in_a_segment_rule_exits_2(book_dir):
    cfg = book_dir / "icp.toml"
    cfg.write_text(cfg.read_text().replace('field = "industry", op = "in"', 'field = "sector", op = "in"', 1))
    result = run("score", "--config", cfg)
    assert result.exit_code == 2
    assert "segments[1].when[0]" in result.output and 'unknown field "sector"' in result.output


def test_unknown_operator_exits_2(book_dir):
    cfg = book_dir / "icp.toml"
    cfg.write_text(cfg.read_text().replace('op = ">="', 'op = "=>"', 1))
    result = run("score", "--config", cfg)
    assert result.exit_code == 2
    assert 'unknown operator "=>"' in result.output


def test_score_without_a_profile_says_to_learn(book_dir):
    (book_dir / "icp-profile.toml").unlink()
    result = run("score", "--config", book_dir / "icp.toml")
    assert result.exit_code == 1
    assert "icp profile learn" in result.output


def test_empty_book(book_dir):
    acc = book_dir / "accounts.csv"
    acc.write_text(acc.read_text().splitlines()[0] + "\n")
    result = run("profile", "learn", "--config", book_dir / "icp.toml")
    assert result.exit_code == 1
    assert "no rows" in result.output.lower() or "empty" in result.output.lower()


def test_duplicate_ids_name_the_rows(book_dir):
    acc = book_dir / "accounts.csv"
    lines = acc.read_text().splitlines()
    acc.write_text("\n".join([*lines, lines[1]]) + "\n")
    result = run("score", "--config", book_dir / "icp.toml")
    assert result.exit_code == 1
    first_id = lines[1].split(",")[0]
    assert first_id in result.output and "row" in result.output.lower()


def no_deals_config(book_dir, extra: str = "") -> str:
    text = (book_dir / "icp.toml").read_text()
    start = text.index("[csv.deals]")
    end = text.index("# Segments")
    return text[:start] + text[end:] + extra


def test_no_deals_file_and_nothing_pinned_says_what_is_missing(book_dir):
    cfg = book_dir / "icp.toml"
    cfg.write_text(no_deals_config(book_dir))
    result = run("profile", "learn", "--config", cfg)
    assert result.exit_code == 1
    assert "pinned" in result.output and "deals" in result.output


def test_no_deals_file_with_pinned_ids_learns_from_them(book_dir):
    cfg = book_dir / "icp.toml"
    text = no_deals_config(book_dir).replace(
        "min_criteria = 5", 'min_criteria = 1\npinned = ["ACC0000001", "ACC0000002", "ACC0000003"]'
    )
    cfg.write_text(text)
    result = run("profile", "learn", "--config", cfg, "--json")
    assert result.exit_code == 0, result.output
    assert {m["id"] for m in json.loads(result.output)["club"]} >= {"ACC0000001", "ACC0000002", "ACC0000003"}


def test_fewer_qualifiers_than_club_size_warns_and_goes_on(book_dir):
    cfg = book_dir / "icp.toml"
    cfg.write_text(cfg.read_text().replace("size = 10", "size = 400"))
    result = run("profile", "learn", "--config", cfg)
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "short of" in result.output


def test_bad_as_of_is_a_usage_error(book_dir):
    result = run("backtest", "--as-of", "last tuesday", "--config", book_dir / "icp.toml")
    assert result.exit_code == 2
    assert "not a date" in result.output


def test_secrets_never_reach_output(book_dir):
    env = {"SF_PASSWORD": "hunter2-very-secret", "HUBSPOT_ACCESS_TOKEN": "pat-na1-super-secret"}
    for args in (("profile", "learn"), ("score",), ("profile", "show")):
        for fmt in ((), ("--json",)):
            result = run(*args, "--config", book_dir / "icp.toml", *fmt, env=env)
            assert result.exit_code == 0, result.output
            assert "hunter2" not in result.output and "super-secret" not in result.output
