"""The `icp` command line: thin click commands over sync.pipeline, one library call each.

Exit codes (DESIGN section 7): 0 ok, 1 error, 2 usage or configuration, 3 finished with record-level
failures, 4 stopped by quota or safety cap. Expected failures print one clear message, never a traceback.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path
from typing import Any

import click
import pandas as pd

from connectors.csvfile import BookError
from scoring.errors import ScoringError
from sync import pipeline
from sync.config import ConfigError, load_config

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_RECORD_FAILURES, EXIT_STOPPED = 0, 1, 2, 3, 4


class ConfigProblem(click.ClickException):
    exit_code = EXIT_CONFIG


class Ctx:
    """What the shared options set: which config, and how to print."""

    def __init__(self, config: str | None, as_json: bool, quiet: bool) -> None:
        self.config_path = config
        self.as_json = as_json
        self.quiet = quiet

    def config(self):
        return load_config(self.config_path)

    def say(self, text: str = "", **style) -> None:
        if not self.quiet and not self.as_json:
            click.secho(text, **style)

    def warn(self, text: str) -> None:
        if not self.as_json:
            click.secho(f"warning: {text}", fg="yellow", err=True)

    def emit(self, payload: dict) -> None:
        if self.as_json:
            click.echo(json.dumps(_jsonable(payload), ensure_ascii=False))


def common_options(func):
    """--config, --json, --quiet, accepted by every command after its name."""

    @click.option(
        "--config",
        "config",
        type=click.Path(dir_okay=False),
        envvar="ICP_CONFIG",
        show_envvar=True,
        help="Config file [default: icp.toml].",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
    @click.option("--quiet", "-q", is_flag=True, help="Print only warnings and errors.")
    @functools.wraps(func)
    def wrapper(*args, config, as_json, quiet, **kwargs):
        ctx = Ctx(config, as_json, quiet)
        try:
            return func(ctx, *args, **kwargs)
        except ConfigError as exc:
            raise ConfigProblem(str(exc)) from None
        except (BookError, ScoringError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="icp-sync", prog_name="icp")
def main() -> None:
    """icp-sync: segment your CRM accounts and score their fit to your Ideal Customer Profile.

    Start with `icp demo`, then point a config (icp.toml) at your own export: `icp profile learn`,
    `icp score`, `icp explain ID`, `icp backtest --as-of DATE`.
    """


# -------------------------------------------------------------------------------------------------- demo
@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default="icp-demo",
    show_default=True,
    help="Where to write the sample book, its config and the scored output.",
)
@click.option(
    "--accounts",
    type=click.IntRange(50, 2_000_000),
    default=2000,
    show_default=True,
    help="How many accounts the sample book has.",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the sample book.")
@common_options
def demo(ctx: Ctx, directory: str, accounts: int, seed: int) -> None:
    """Run the whole job on a bundled sample book: learn the profile, score, show segments x tiers.

    Writes accounts.csv, deals.csv, icp.toml, icp-profile.toml and accounts-scored.csv into --dir, so
    you can read the config that produced the result and rerun any command with --config DIR/icp.toml.
    """
    from sync.demo import write_demo

    files = write_demo(directory, accounts=accounts, seed=seed)
    config = load_config(files.config)
    book = pipeline.load_book(config)
    learned = pipeline.learn(config, book)
    scored = pipeline.score_book(config, book, learned.profile)
    out, _ = pipeline.write_output(config, scored)
    summary = pipeline.score_summary(scored, learned.profile)
    table = pipeline.segment_tier_table(scored)
    bt = pipeline.run_backtest(config, book, as_of="2025-01-01", n_boot=300)

    ctx.emit(
        {
            "files": {
                "config": files.config,
                "accounts": files.accounts,
                "deals": files.deals,
                "profile": learned.path,
                "output": out,
            },
            "club": learned.club.members,
            "profile_version": learned.profile.version,
            "summary": summary,
            "segment_tier": table,
            "backtest": bt.to_dict(),
        }
    )
    ctx.say(
        f"Sample book: {len(book.accounts):,} accounts and {len(book.deals):,} deals in {files.directory}/",
        bold=True,
    )
    _print_club(ctx, learned.club)
    _print_profile(ctx, learned.profile, learned.path)
    ctx.say("\nAccounts by segment and tier:", bold=True)
    ctx.say(table.to_string())
    ctx.say(f"\nClub members in tier A: {summary.get('club_in_a', 0)} of {summary.get('club_members', 0)}")
    ctx.say(f"\nBacktest as of 2025-01-01: {bt.statement}")
    ctx.say(f"\nScored file: {out}")
    example = scored.sort_values("icp_fit_score", ascending=False).index[0]
    ctx.say("Next: read why an account got its tier, and rescore after editing the config:")
    ctx.say(f"  icp explain {example} --config {files.config}")
    ctx.say(f"  icp score --config {files.config}")


# ----------------------------------------------------------------------------------------------- profile
@main.group()
def profile() -> None:
    """Learn the Ideal Customer Profile from your best customers, or show the saved one."""


@profile.command("learn")
@click.option(
    "--as-of", type=str, default=None, help="Learn only from deals closed before this date (YYYY-MM-DD)."
)
@common_options
def profile_learn(ctx: Ctx, as_of: str | None) -> None:
    """Pick the club of best customers, learn what they share, and save it to icp-profile.toml."""
    config = ctx.config()
    book = pipeline.load_book(config, as_of=_date(as_of))
    learned = pipeline.learn(config, book, as_of=_date(as_of))
    for w in learned.club.warnings:
        ctx.warn(w)
    ctx.emit(
        {
            "profile": learned.path,
            "version": learned.profile.version,
            "club": learned.club.members,
            "warnings": learned.club.warnings,
            "attributes": [a.to_dict() for a in learned.profile.attributes],
            "notes": list(learned.profile.notes),
        }
    )
    _print_club(ctx, learned.club)
    _print_profile(ctx, learned.profile, learned.path)


@profile.command("show")
@common_options
def profile_show(ctx: Ctx) -> None:
    """Print the saved profile: its version, club, and what each attribute expects."""
    config = ctx.config()
    prof = pipeline.read_profile(config)
    ctx.emit(
        {
            "profile": config.profile_path,
            "version": prof.version,
            "club": list(prof.club_ids),
            "learned_at": prof.learned_at,
            "as_of": prof.as_of,
            "attributes": [a.to_dict() for a in prof.attributes],
        }
    )
    _print_profile(ctx, prof, config.profile_path)
    ctx.say(f"Club ({len(prof.club_ids)}): {', '.join(prof.club_ids)}")


# ------------------------------------------------------------------------------------------------- score
@main.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write the scored accounts file [default: csv.output in the config].",
)
@common_options
def score(ctx: Ctx, output: str | None) -> None:
    """Segment and score every account with the saved profile; write the scored file."""
    config = ctx.config()
    book = pipeline.load_book(config)
    prof = pipeline.read_profile(config)
    scored = pipeline.score_book(config, book, prof)
    out, n = pipeline.write_output(config, scored, output)
    summary = pipeline.score_summary(scored, prof)
    summary["data_issues"] = book.report.lines()
    ctx.emit({"output": out, **summary, "segment_tier": pipeline.segment_tier_table(scored)})
    for line in book.report.lines():
        ctx.warn(line)
    ctx.say(f"Scored {n:,} accounts with profile {prof.version} -> {out}", bold=True)
    ctx.say(pipeline.segment_tier_table(scored).to_string())
    if summary.get("club_members"):
        ctx.say(f"Club members in tier A: {summary['club_in_a']} of {summary['club_members']}")


# ----------------------------------------------------------------------------------------------- explain
@main.command()
@click.argument("account_id")
@common_options
def explain(ctx: Ctx, account_id: str) -> None:
    """Show why ACCOUNT_ID got its score and tier, attribute by attribute."""
    config = ctx.config()
    book = pipeline.load_book(config)
    prof = pipeline.read_profile(config)
    info = pipeline.explain(config, book, prof, account_id)
    ctx.emit(info)
    ctx.say(f"{info['name']} ({info['id']})", bold=True)
    ctx.say(
        f"segment {info['segment']} | fit {info['fit_score']} | tier {info['tier']} | "
        f"data completeness {info['data_completeness']:.0%}" + (" | club member" if info["in_club"] else "")
    )
    rows = pd.DataFrame(info["attributes"]).set_index("attribute")
    ctx.say(rows.to_string())
    ctx.say(f"reasons: {info['reasons']}")


# ---------------------------------------------------------------------------------------------- backtest
@main.command()
@click.option(
    "--as-of",
    required=True,
    help="Learn from deals closed before this date (YYYY-MM-DD); judge the tiers by deals closed after it.",
)
@click.option(
    "--boot",
    type=click.IntRange(100, 100_000),
    default=1000,
    show_default=True,
    help="Bootstrap resamples (over accounts) for the intervals.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@common_options
def backtest(ctx: Ctx, as_of: str, boot: int, seed: int) -> None:
    """Would the profile have predicted later wins? Win rate per tier, lift of tier A, AUC."""
    config = ctx.config()
    when = _date(as_of)
    book = pipeline.load_book(config)
    result = pipeline.run_backtest(config, book, as_of=when, n_boot=boot, seed=seed)
    ctx.emit(result.to_dict())
    ctx.say(f"Backtest as of {when.date()}", bold=True)
    ctx.say(f"{result.population:,} accounts with a deal closed since then; {result.outcomes:,} won one")
    ctx.say(result.tiers.to_string(index=False))
    for w in result.warnings:
        ctx.warn(w)
    ctx.say(result.statement)


def _date(value: str | None) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise click.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD", param_hint="--as-of") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


# ----------------------------------------------------------------------------------------------- printing
def _print_club(ctx: Ctx, club) -> None:
    ctx.say(f"\nClub of best customers ({len(club)} of {club.club_size}):", bold=True)
    cols = [c for c in ("id", "name", "n_met", "won_amount", "criteria_met") if c in club.members.columns]
    ctx.say(club.members[cols].to_string(index=False))


def _print_profile(ctx: Ctx, prof, path) -> None:
    ctx.say(f"\nProfile {prof.version} ({path}):", bold=True)
    for attr in prof.attributes:
        ctx.say(f"  {attr.describe()}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, pd.DataFrame):
        return json.loads(
            value.to_json(orient="records" if value.index.name is None else "index", date_format="iso")
        )
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    if value is pd.NA:
        return None
    return value


def _mount_sandbox() -> None:
    try:
        from sandbox.cli import serve
    except ImportError:  # the sandbox CLI is optional while the sandbox is being built
        return

    @main.group()
    def sandbox() -> None:
        """A local Salesforce- and HubSpot-compatible CRM, for rehearsals and tests."""

    sandbox.add_command(serve, "serve")


_mount_sandbox()

if __name__ == "__main__":
    sys.exit(main())
