"""The `icp` command line: thin click commands over sync.pipeline, sync.setup, sync.demo and sync.job, one
library call each. A command parses its options, makes the call and prints the result: as text, or with
--json as one JSON object on stdout (the result's `as_dict()` plus `exit_code` and `exit_meaning`, and
`error` when it failed or stopped), printed whatever the outcome and nothing else on stdout.

Exit codes (docs/architecture.md, "Exit codes"): 0 ok, 1 error, 2 usage or configuration, 3 finished with
record-level failures, 4 stopped by quota or safety cap. Expected failures print one clear message, never a
traceback; `common_options` is the one place that maps them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
from pathlib import Path
from typing import Any

import click
import pandas as pd

from connectors.csvfile import BookError
from connectors.retry import CrmError, QuotaExhausted
from sandbox.cli import serve as sandbox_serve
from scoring.errors import ScoringError
from sync import pipeline
from sync.config import CRM_KINDS, ConfigError, SandboxConfig, load_config
from sync.job import JobStopped, PreflightError, StateWithoutHistory
from sync.state import StateLocked, StateUnusable

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_RECORD_FAILURES, EXIT_STOPPED = 0, 1, 2, 3, 4
#: What each exit code means, as `--json` reports it next to `exit_code` (docs/architecture.md, "Exit codes").
EXIT_MEANINGS = {
    EXIT_OK: "ok",
    EXIT_ERROR: "error (CRM, auth, preflight, lock)",
    EXIT_CONFIG: "usage or configuration error",
    EXIT_RECORD_FAILURES: "finished with record-level failures (retried on the next run)",
    EXIT_STOPPED: "stopped by quota or safety cap",
}


class ConfigProblem(click.ClickException):
    exit_code = EXIT_CONFIG


class Stopped(click.ClickException):
    exit_code = EXIT_STOPPED


class Ctx:
    """What the shared options set: which config, which CRM, and how to print."""

    def __init__(self, config: str | None, crm: str | None, as_json: bool, quiet: bool) -> None:
        self.config_path = config
        self.crm = crm
        self.as_json = as_json
        self.quiet = quiet
        self._payload: dict = {}
        self._printed = False

    def config(self):
        config = load_config(self.config_path)
        return dataclasses.replace(config, crm=self.crm) if self.crm else config

    @property
    def progress(self) -> bool:
        return not self.quiet and not self.as_json and sys.stderr.isatty()

    def say(self, text: str = "", **style) -> None:
        if not self.quiet and not self.as_json:
            click.secho(text, **style)

    def warn(self, text: str) -> None:
        if not self.as_json:
            click.secho(f"warning: {text}", fg="yellow", err=True)

    def emit(self, payload: dict) -> None:
        """The command's result for --json; printed once, when the command ends (`finish`)."""
        self._payload = payload

    def finish(self, exit_code: int, error: str | None = None) -> None:
        """With --json, print the one JSON object of this command on stdout: `exit_code`, `exit_meaning`,
        `error` when it failed or stopped, then the result the command emitted (if it got that far)."""
        if not self.as_json or self._printed:
            return
        self._printed = True
        out: dict[str, Any] = {"exit_code": exit_code, "exit_meaning": EXIT_MEANINGS.get(exit_code, "error")}
        if error is not None:
            out["error"] = error
        out.update({k: v for k, v in self._payload.items() if k not in out})
        click.echo(json.dumps(_jsonable(out), ensure_ascii=False))


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
    @click.option(
        "--crm",
        type=click.Choice(CRM_KINDS),
        default=None,
        help="Use this CRM instead of crm.kind from the config.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
    @click.option("--quiet", "-q", is_flag=True, help="Print only warnings and errors.")
    @functools.wraps(func)
    def wrapper(*args, config, crm, as_json, quiet, **kwargs):
        ctx = Ctx(config, crm, as_json, quiet)
        # The one place errors become exit codes and messages; with --json, also the one JSON object on
        # stdout, whatever the outcome (the message goes to stderr as well, as without --json).
        try:
            result = _mapped_errors(func, ctx, *args, **kwargs)
        except click.exceptions.Exit as exc:
            ctx.finish(exc.exit_code)
            raise
        except click.ClickException as exc:
            ctx.finish(exc.exit_code, exc.format_message())
            raise
        except click.Abort:
            ctx.finish(EXIT_ERROR, "aborted")
            raise
        except Exception as exc:  # a bug: still one JSON object, then the traceback on stderr
            ctx.finish(EXIT_ERROR, f"unexpected error: {type(exc).__name__}: {exc}")
            raise
        ctx.finish(EXIT_OK)
        return result

    return wrapper


def _mapped_errors(func, ctx: Ctx, *args, **kwargs):
    """Expected failures as click exceptions carrying their exit code and one message (no traceback)."""
    try:
        return func(ctx, *args, **kwargs)
    except (ConfigError, StateWithoutHistory, StateUnusable) as exc:
        raise ConfigProblem(str(exc)) from None
    except (QuotaExhausted, JobStopped) as exc:
        raise Stopped(str(exc)) from None
    except (BookError, ScoringError, CrmError, PreflightError, StateLocked) as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="icp-sync", prog_name="icp")
def main() -> None:
    """icp-sync: segment your CRM accounts and score their fit to your Ideal Customer Profile.

    Start with `icp demo`. On a CSV export: `icp profile learn`, `icp score`, `icp explain ID`,
    `icp backtest --as-of DATE`. On Salesforce (or the local sandbox): `icp doctor`,
    `icp fields --apply`, `icp profile learn`, `icp run --dry-run`, then `icp run` every night.
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
    default=SandboxConfig.accounts,
    show_default=True,
    help="How many accounts the sample book has.",
)
@click.option(
    "--seed", type=int, default=SandboxConfig.seed, show_default=True, help="Seed of the sample book."
)
@common_options
def demo(ctx: Ctx, directory: str, accounts: int, seed: int) -> None:
    """Run everything on a bundled sample book: first as a CSV export, then as the nightly job
    against a local Salesforce-compatible sandbox, twice (the second run writes nothing).

    Writes into --dir: csv/ (accounts.csv, deals.csv, icp.toml, icp-profile.toml, accounts-scored.csv)
    and crm/ (icp.toml, the sandbox's state, run reports), so you can read the configs that produced
    the result and rerun any command with --config.
    """
    from sync.demo import run_demo

    result = run_demo(directory, accounts=accounts, seed=seed)
    ctx.say(
        f"1. A CSV export: {result.accounts:,} accounts and {result.deals:,} deals in "
        f"{result.files.directory}/",
        bold=True,
    )
    _print_club(ctx, result.learned.club)
    _print_profile(ctx, result.learned.profile, result.learned.path)
    ctx.say("\nAccounts by segment and tier:", bold=True)
    ctx.say(result.segment_tier.to_string())
    summary = result.summary
    ctx.say(f"\nClub members in tier A: {summary.get('club_in_a', 0)} of {summary.get('club_members', 0)}")
    ctx.say(f"Backtest as of {result.backtest_as_of}: {result.backtest.statement}")
    ctx.say(f"Scored file: {result.output}")

    ctx.say(
        f"\n2. The nightly job against a local Salesforce sandbox ({result.crm_config.parent}/)", bold=True
    )
    ctx.say(
        f"created {len(result.fields_created)} custom fields on Account; learned profile "
        f"{result.crm_profile_version} from the CRM's own accounts and opportunities"
    )
    for run_report in result.runs:
        _print_report(ctx, run_report)
    ctx.emit(result.as_dict())
    ctx.say("\nNext: why an account got its tier, the run history, a dry run:")
    ctx.say(f"  icp explain {result.example_id} --config {result.files.config}")
    ctx.say(f"  icp report --config {result.crm_config}")
    ctx.say(f"  icp run --dry-run --full --config {result.crm_config}")


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


# ------------------------------------------------------------------------------------- the CRM sync
def _run_job(ctx: Ctx, options) -> None:
    from sync import job

    config = ctx.config()
    options.progress = ctx.progress
    try:
        report = job.run(config, options, say=lambda text: ctx.say(text))
    except JobStopped as exc:
        if exc.report is not None:
            ctx.emit(exc.report.as_dict())
        raise
    ctx.emit(report.as_dict())
    _print_report(ctx, report)
    if report.failed:
        raise click.exceptions.Exit(EXIT_RECORD_FAILURES)


def live_values_options(func):
    """--adopt-live / --keep-live: whose are the values a CRM holds when the state has no history of them."""

    @click.option(
        "--adopt-live",
        is_flag=True,
        help="The state has no history (new, lost or damaged) but the CRM holds ICP values: take them as "
        "written by icp-sync, so reps' later edits are detected.",
    )
    @click.option(
        "--keep-live",
        is_flag=True,
        help="The same case: treat those values as reps' edits (kept and reported; only empty fields filled).",
    )
    @functools.wraps(func)
    def wrapper(*args, adopt_live: bool, keep_live: bool, **kwargs):
        if adopt_live and keep_live:
            raise click.UsageError("--adopt-live and --keep-live exclude each other; pick one")
        return func(*args, live_choice={"adopt_live": adopt_live, "keep_live": keep_live}, **kwargs)

    return wrapper


@main.command("run")
@click.option(
    "--dry-run", is_flag=True, help="Pull, score and plan; write the plan to files, nothing to the CRM."
)
@click.option("--full", is_flag=True, help="Rescore every account, ignoring the incremental watermark.")
@click.option("--force", is_flag=True, help="Write even when the plan exceeds sync.max_change_ratio.")
@live_values_options
@common_options
def run_cmd(ctx: Ctx, dry_run: bool, full: bool, force: bool, live_choice: dict) -> None:
    """The nightly job: pull changed accounts, score them, write what changed into the CRM fields.

    Exit codes: 0 ok, 1 error, 2 configuration, 3 some records failed (retried next run), 4 stopped
    by the quota floor or the safety cap before writing.
    """
    from sync.job import RunOptions

    _run_job(ctx, RunOptions(dry_run=dry_run, full=full, force=force, **live_choice))


@main.command()
@click.argument("ids", nargs=-1)
@click.option(
    "--where", default=None, help="A SOQL condition selecting accounts, e.g. \"Industry = 'Retail'\"."
)
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option("--force", is_flag=True, help="Write even when the plan exceeds sync.max_change_ratio.")
@live_values_options
@common_options
def rescore(
    ctx: Ctx, ids: tuple[str, ...], where: str | None, dry_run: bool, force: bool, live_choice: dict
) -> None:
    """Rescore chosen accounts now: by Salesforce id (15 or 18 characters) or a --where condition."""
    from connectors.salesforce import check_ids
    from sync.job import RunOptions

    if not ids and not where:
        raise click.UsageError('give account ids, or --where "SOQL condition"')
    if ids:
        try:
            check_ids(list(ids))
        except CrmError as exc:
            raise click.BadParameter(str(exc), param_hint="IDS") from None
    _run_job(ctx, RunOptions(dry_run=dry_run, force=force, ids=list(ids) or None, where=where, **live_choice))


@main.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the pulled accounts (canonical columns) to this CSV file.",
)
@common_options
def pull(ctx: Ctx, output: str | None) -> None:
    """Pull every account and closed deal from the CRM and summarise them; writes nothing to the CRM."""
    from sync import setup

    summary = setup.pull(ctx.config(), output=output, progress=ctx.progress)
    ctx.emit(summary.as_dict())
    ctx.say(f"{summary.accounts:,} accounts, {summary.deals:,} closed deals ({summary.won_deals:,} won)")
    ctx.say("missing values: " + ", ".join(f"{k} {v:,}" for k, v in summary.missing.items()))


@main.command()
@click.option("--apply", "apply_", is_flag=True, help="Create the missing fields and picklist values.")
@common_options
def fields(ctx: Ctx, apply_: bool) -> None:
    """Plan (and with --apply, create) the ICP custom fields and every segment's picklist value.

    Idempotent: a second --apply plans nothing.
    """
    from sync import setup

    result = setup.fields(ctx.config(), apply=apply_)
    plan = result.plan
    for spec in plan.create:
        ctx.say(
            f"create {spec.name} ({spec.kind}{', values ' + ', '.join(spec.values) if spec.values else ''})"
        )
    for name, values in plan.add_values.items():
        ctx.say(f"add to {name}: {', '.join(values)}")
    for problem in plan.problems:
        ctx.warn(problem)
    if plan.empty:
        ctx.say("all ICP fields are in place; nothing to do")
    elif result.applied:
        ctx.say(
            "applied" if result.complete else "applied, but some changes did not take: rerun `icp fields`"
        )
    else:
        ctx.say("dry run: rerun with --apply to make these changes")
    ctx.emit(result.as_dict())
    if not result.ok:
        raise click.ClickException("some fields cannot be used as they are (see the warnings above)")


@main.command()
@common_options
def doctor(ctx: Ctx) -> None:
    """Check the set-up: config, credentials, API access and quota, fields, profile, state."""
    from sync import setup

    result = setup.doctor(ctx.config())
    ctx.emit(result.as_dict())
    for check in result.checks:
        ctx.say(
            f"{'ok ' if check.ok else 'FAIL'} {check.name:12} {check.detail}", fg=None if check.ok else "red"
        )
    if not result.ok:
        raise click.exceptions.Exit(EXIT_ERROR)


@main.command()
@click.option("--last", type=click.IntRange(1, 1000), default=5, show_default=True, help="How many runs.")
@common_options
def report(ctx: Ctx, last: int) -> None:
    """Show the summaries of the last runs (from the state directory)."""
    from sync.job import iter_reports

    config = ctx.config()
    runs = list(iter_reports(config, last))
    ctx.emit({"runs": runs})
    if not runs:
        ctx.say(f"no runs yet in {config.state_dir}")
    for r in runs:
        s = r["summary"] or {}
        ctx.say(
            f"#{r['id']} {r['started_at'][:19]} {r['mode']:<22} {r['status']:<24} pulled {s.get('pulled', 0):,}"
            f" changed {s.get('changed', 0):,} written {s.get('written', 0):,} failed {s.get('failed', 0):,}"
            f" api calls {s.get('api_calls', 0):,}"
        )


def _print_report(ctx: Ctx, report) -> None:
    ctx.say(
        f"run #{report.run_id} ({report.mode}{', dry run' if report.dry_run else ''}): {report.status}",
        bold=True,
    )
    ctx.say(
        f"  pulled {report.pulled:,} | scored {report.scored:,} | changed {report.changed:,} | "
        f"written {report.written:,} | failed {report.failed:,} | manual edits kept "
        f"{report.skipped_manual_edits:,} | API calls {report.api_calls:,} | {report.duration_s:.1f} s"
    )
    if report.message:
        ctx.say(f"  {report.message}")
    if report.edited_during_run:
        ctx.say(
            f"  {report.edited_during_run:,} records edited by someone during the run were left as they are"
        )
    if report.unconfirmed_after_interrupt:
        ctx.say(
            f"  {report.unconfirmed_after_interrupt:,} records a stopped run was writing held our previous values "
            f"and were written again (if a rep had set one back by hand, see {report.files.get('unconfirmed_csv')})"
        )
    if report.adopted_live:
        ctx.say(f"  {report.adopted_live:,} records' CRM values adopted as icp-sync's (--adopt-live)")
    if report.settled_bulk_jobs:
        ctx.say(
            f"  settled {report.settled_bulk_jobs} Bulk job(s) a stopped run left: {report.settled_written:,} "
            f"written, {report.settled_unprocessed:,} not reached (planned again)"
        )
    if "manual_edits_csv" in report.files and report.skipped_manual_edits:
        ctx.say(f"  manual edits kept: {report.files['manual_edits_csv']}")
    for line in report.data_issues:
        ctx.warn(line)
    if "plan_csv" in report.files:
        ctx.say(f"  plan: {report.files['plan_csv']}")
    if report.failed:
        ctx.warn(
            f"{report.failed:,} records failed; they are listed in {report.files.get('errors_csv')} and "
            "retried on the next run"
        )


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


@main.group()
def sandbox() -> None:
    """A local Salesforce- and HubSpot-compatible CRM, for rehearsals and tests."""


sandbox.add_command(sandbox_serve, "serve")

if __name__ == "__main__":
    sys.exit(main())
