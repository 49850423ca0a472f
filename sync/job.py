"""The nightly job: preflight, pull, score with the saved profile, plan, apply, report.

Safe to run every night against a production org and safe to kill at any point: only owned fields are
written, a rerun with nothing changed makes no write call, a run that would rewrite too much of the book
stops before writing (unless forced), the watermark advances only after a successful apply, per-record
failures are kept and retried on the next run, and a killed run's half-finished batch is recognised as ours.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from connectors.base import Connector
from connectors.csvfile import write_frame
from connectors.retry import AuthFailed, CrmError, QuotaExhausted, RetryPolicy
from connectors.schema import ParseReport
from scoring.aggregates import AGGREGATE_COLUMNS, with_aggregates
from scoring.profile import Profile, load_profile
from sync import pipeline
from sync.apply import ApplyResult, apply_changes, settle_open_jobs
from sync.config import Config
from sync.crm import crm_key, open_crm, pull_accounts, pull_deals
from sync.plan import OWNED_FIELDS, Plan, plan
from sync.state import State, next_watermark, pull_since


class JobStopped(Exception):
    """The run stopped on purpose before writing (safety cap, quota floor): exit code 4."""

    def __init__(self, message: str, report: RunReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class PreflightError(Exception):
    """Something must be fixed before any write: missing fields, no credentials, no profile."""


class StateWithoutHistory(Exception):
    """The state holds no record of our writes while the CRM already holds owned values (a lost or new state
    on an org written before): the run stops before writing (exit 2) until the user says whose they are."""


@dataclass
class RunOptions:
    dry_run: bool = False
    full: bool = False
    force: bool = False
    ids: list[str] | None = None
    where: str | None = None
    # When the state has no history but the CRM holds owned values: take them as ours (adopt_live), or as
    # people's edits (keep_live: kept and reported, only empty fields filled).
    adopt_live: bool = False
    keep_live: bool = False
    progress: bool = False  # progress bars on stderr (the CLI turns them on for a terminal)


@dataclass
class RunReport:
    run_id: int | None = None
    crm: str = ""
    mode: str = ""
    dry_run: bool = False
    status: str = "running"
    pulled: int = 0
    scored: int = 0
    changed: int = 0
    written: int = 0
    failed: int = 0
    skipped_manual_edits: int = 0
    overwritten_manual_edits: int = 0
    edited_during_run: int = 0  # overwrites skipped: a person changed the record after the pull
    rereads: int = 0  # records re-read right before being overwritten
    reread_calls: int = 0  # API calls those re-reads took (part of api_calls)
    adopted_after_interrupt: int = 0
    # Bulk API jobs a dead run left, settled before the pull: how many, and their records written / rejected /
    # never reached (the last planned again by this run)
    settled_bulk_jobs: int = 0
    settled_written: int = 0
    settled_failed: int = 0
    settled_unprocessed: int = 0
    adopted_live: int = 0  # records whose CRM values --adopt-live took as ours
    # written again: they hold our previous value, a stopped run's newer one was never confirmed (or a rep set
    # the old one back by hand: the two look the same), listed in unconfirmed.csv
    unconfirmed_after_interrupt: int = 0
    # whether this run's incremental pull left out records whose last change is our own write
    # ([salesforce] skip_own_writes; full and targeted runs pull without it)
    skip_own_writes: bool = False
    # records pulled by id because one of our writes may hide a change from that pull: touched between an
    # earlier run's pull and its write, or written by a run that stopped before confirming
    rechecked: int = 0
    # records this run saw touched between its pull and its write: kept for the next run to pull by id
    recheck_next: int = 0
    api_calls: int = 0
    write_calls: int = 0
    retries: int = 0
    api_usage: dict | None = None
    duration_s: float = 0.0
    profile_version: str = ""
    change_ratio: float = 0.0
    message: str = ""
    data_issues: list[str] = field(default_factory=list)  # unreadable CRM values, as for a CSV book
    files: dict[str, str] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list, repr=False)  # per-record errors, written as CSV
    counters_from: tuple[int, int, int] = (0, 0, 0)  # the connector's counters when the run began

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("failures")
        out.pop("counters_from")
        return out


def fingerprint(config: Config, profile: Profile) -> str:
    """What, when it changes, forces a full rescore: the profile and everything that shapes the values."""
    parts = {
        "profile": profile.version,
        "segments": [
            (r.name, [c.to_dict() if hasattr(c, "to_dict") else str(c) for c in r.when])
            for r in config.segments
        ],
        "tiers": config.tiers,
        "reasons_max_len": config.reasons_max_len,
        "fields": config.salesforce.fields,
        "columns": config.salesforce.account_columns,
        # Turning the exclusion back on must not trust writes made while it was off (they were not watched
        # for changes they cover), so toggling it forces one full run. Absent when on: fingerprints of
        # states written before the option existed stay valid.
        **({} if config.salesforce.skip_own_writes else {"skip_own_writes": False}),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def reads_aggregates(config: Config, profile: Profile | None) -> bool:
    """Whether a segment rule or the profile reads a deal aggregate or child_accounts. Those depend on
    other records (deals, subsidiaries) whose changes do not move an account's SystemModstamp, so such
    a config pulls deals and rescores the whole book every run instead of the changed accounts only."""
    used = {a.name for a in profile.attributes} if profile else set()
    for rule in config.segments:
        used |= {c.field for c in rule.when}
    return bool(used & set(AGGREGATE_COLUMNS))


def segment_names(config: Config) -> list[str]:
    from scoring.segments import DEFAULT_SEGMENT_FALLBACK, DEFAULT_SEGMENTS

    if config.segments:
        names = [r.name for r in config.segments]
        return names if any(not r.when for r in config.segments) else [*names, "Other"]
    return [*(r.name for r in DEFAULT_SEGMENTS), DEFAULT_SEGMENT_FALLBACK]


def preflight(config: Config, connector: Connector) -> Profile:
    """Before any write: a profile, the owned fields present and usable, and enough API quota left."""
    try:
        profile = load_profile(config.profile_path)
    except Exception as exc:
        raise PreflightError(str(exc)) from None
    problems = connector.check_fields(segment_names(config)).blockers()
    if problems:
        raise PreflightError("the CRM is not ready:\n" + "\n".join(f"  - {p}" for p in problems))
    return profile


def run(
    config: Config,
    options: RunOptions | None = None,
    *,
    say: Callable[[str], None] = lambda s: None,
    connector_override: Connector | None = None,
    policy: RetryPolicy | None = None,
) -> RunReport:
    """One nightly run (or a targeted rescore when ids / where are given). Returns the report; raises
    JobStopped (exit 4), PreflightError / CrmError (exit 1)."""
    options = options or RunOptions()
    started = pd.Timestamp.now(tz="UTC")
    t0 = time.monotonic()
    report = RunReport(crm=config.crm, dry_run=options.dry_run)
    key = crm_key(config)
    with State.open(config.state_dir) as state, _connector(config, connector_override, policy) as connector:
        report.counters_from = (connector.api_calls, connector.policy.retries, connector.write_calls)
        profile = preflight(config, connector)
        report.profile_version = profile.version
        usage = connector.usage()
        report.api_usage = {"used": usage.used, "limit": usage.limit} if usage else None
        floor = config.salesforce.quota_floor
        if usage and usage.remaining < floor and not options.dry_run:
            raise JobStopped(
                f"only {usage.remaining:,} API calls left today (floor {floor:,}); nothing was pulled or "
                "written. The next run resumes where this one would have started."
            )

        mark = state.watermark(key)
        fp = fingerprint(config, profile)
        targeted = options.ids is not None or options.where is not None
        full = options.full or mark is None or mark.fingerprint != fp or reads_aggregates(config, profile)
        report.mode = "targeted" if targeted else ("full" if full else "incremental")
        run_id = state.start_run(key, report.mode + (" dry-run" if options.dry_run else ""), started)
        report.run_id = run_id
        applied = ApplyResult()
        try:
            if not options.dry_run:
                _settle(connector, state, key, run_id, report, say)
            lookback = pd.Timedelta(minutes=config.sync.lookback_minutes)
            since = None if (full or targeted) else pull_since(mark, lookback)
            # Our writes are watched for changes they would hide whenever the next incremental pull skips
            # them, whatever this run's mode. The CRM's clock now (before the pull), less the lookback the
            # cursor allows for slow commits, bounds from below any change made after the pull.
            watch = config.salesforce.skip_own_writes and not options.dry_run
            clock = connector.server_time
            touched_since = clock - lookback - pd.Timedelta(seconds=1) if clock is not None else None
            report.skip_own_writes = config.salesforce.skip_own_writes and since is not None
            found = ParseReport()
            accounts = pull_accounts(
                connector,
                since=since,
                ids=options.ids,
                where=options.where,
                progress=options.progress,
                report=found,
                skip_own_writes=report.skip_own_writes,
            )
            if not targeted and not full:
                accounts = _with_failed_records(connector, state, key, accounts, found)
                accounts = _with_records_to_recheck(connector, state, key, accounts, found, report)
            report.pulled = len(accounts)
            say(f"pulled {len(accounts):,} accounts ({report.mode})")

            result = _score_and_plan(
                config, connector, state, key, profile, accounts, run_id, report, found, options
            )
            if result is None:
                if not targeted and not options.dry_run:
                    state.finish_recheck(key, run_id)  # nothing came back for them: nothing left to check
                return _finish(state, report, "ok", t0, connector, config)
            the_plan, desired = result

            files = _write_plan_files(config, run_id, the_plan)
            report.files.update(files)
            if options.dry_run:
                report.message = (
                    f"dry run: {len(the_plan.changes):,} records would change; nothing was written"
                )
                return _finish(state, report, "dry-run", t0, connector, config)

            # The cap's base is the book, also for a targeted rescore (one id is not 100% of anything): a
            # full pull holds the book; otherwise the CRM counts it (one call).
            book_total = (
                len(accounts) if full and not targeted else max(connector.count_accounts(), len(accounts))
            )
            ratio = the_plan.updates / book_total if book_total else 0.0
            report.change_ratio = round(ratio, 4)
            if ratio > config.sync.max_change_ratio and not options.force:
                report.message = (
                    f"safety cap: this run would overwrite {the_plan.updates:,} existing values "
                    f"({ratio:.0%} of {book_total:,} accounts), above sync.max_change_ratio = "
                    f"{config.sync.max_change_ratio:.0%}. Nothing was written. Check the plan in "
                    f"{files['plan_csv']}, then rerun with --force if it is what you want."
                )
                _finish(state, report, "stopped: safety cap", t0, connector, config)
                raise JobStopped(report.message, report)

            apply_changes(
                connector,
                state,
                key,
                the_plan.changes,
                run_id,
                live=live_values(accounts),
                pulled=accounts.set_index(accounts["id"].astype(str))["_modstamp"] if watch else None,
                touched_since=touched_since,
                progress=options.progress,
                result=applied,
            )
            _count(report, applied)
            if applied.edited_during_run:
                _add_edits_during_run(the_plan, applied, report)
            if report.failed:
                report.files["errors_csv"] = str(_run_dir(config, run_id) / "errors.csv")
            if not targeted:
                new_mark = next_watermark(
                    accounts["_modstamp"], accounts["id"], started, None if full else mark, fp
                )
                # One transaction: the new watermark, and the ids earlier runs left to recheck (pulled and
                # processed by this run) forgotten; a run that dies before it keeps both as they were.
                state.finish_recheck(key, run_id, new_mark)
            status = "ok" if not report.failed else "ok with record failures"
            return _finish(state, report, status, t0, connector, config)
        except StateWithoutHistory as exc:
            report.message = str(exc)
            _finish(state, report, "stopped: state has no history", t0, connector, config)
            raise
        except QuotaExhausted as exc:
            _count(report, applied)
            report.message = str(exc)
            _finish(state, report, "stopped: quota", t0, connector, config)
            raise JobStopped(str(exc), report) from None
        except (CrmError, AuthFailed) as exc:
            _count(report, applied)
            report.message = str(exc)
            _finish(state, report, "failed", t0, connector, config)
            raise


def _connector(config: Config, override, policy: RetryPolicy | None):
    if override is not None:
        from contextlib import nullcontext

        return nullcontext(override)
    return open_crm(config, policy=policy)


def _settle(connector: Connector, state: State, key: str, run_id: int, report: RunReport, say) -> None:
    """Before pulling: finish the write jobs a dead run left on the CRM (aborted if still running) and book
    their results, so this run's pull and plan see what they really wrote and resend only what they did not."""
    settled = settle_open_jobs(connector, state, key, run_id)
    report.settled_bulk_jobs, report.settled_written = settled.jobs, settled.written
    report.settled_failed, report.settled_unprocessed = settled.failed, settled.unprocessed
    if settled.jobs:
        say(
            f"settled {settled.jobs} Bulk API job(s) left by an earlier run: {settled.written:,} written, "
            f"{settled.failed:,} rejected, {settled.unprocessed:,} not reached"
        )


def _with_failed_records(
    connector: Connector, state: State, key: str, accounts: pd.DataFrame, found: ParseReport
) -> pd.DataFrame:
    """Records that failed last time are pulled again even if unchanged, so they are retried. Linear in the
    number of failures; the connector splits the ids into queries that fit the CRM's URL limit."""
    failures = state.failures(key).index
    failed = failures[~failures.isin(accounts["id"])].tolist() if len(accounts) else list(failures)
    if not failed:
        return accounts
    extra = pull_accounts(connector, ids=failed, report=found)
    return pd.concat([accounts, extra], ignore_index=True) if len(accounts) else extra


def _with_records_to_recheck(
    connector: Connector,
    state: State,
    key: str,
    accounts: pd.DataFrame,
    found: ParseReport,
    report: RunReport,
) -> pd.DataFrame:
    """An incremental pull that skips our own writes sees the last writer only, so what a write of ours may
    cover is pulled by id: records an earlier run saw touched between its pull and its write (`recheck`), and,
    when skipping, records a stopped run was writing (`pending`: if that write landed, the pull skips the record
    and the plan could not tell that write ours). Records the pull brought already are not pulled twice."""
    wanted = list(state.recheck_ids(key))
    if report.skip_own_writes:
        wanted += [str(i) for i in state.pending(key).index]
    wanted = list(dict.fromkeys(wanted))
    report.rechecked = len(wanted)
    have = set(accounts["id"].astype(str)) if len(accounts) else set()
    missing = [i for i in wanted if i not in have]
    if not missing:
        return accounts
    extra = pull_accounts(connector, ids=missing, report=found)
    return pd.concat([accounts, extra], ignore_index=True) if len(accounts) else extra


def _score_and_plan(
    config, connector, state, key, profile, accounts, run_id, report, found: ParseReport, options: RunOptions
):
    if accounts.empty:
        report.message = "no account changed since the last run"
        return None
    deals = pull_deals(connector, report=found) if reads_aggregates(config, profile) else None
    report.data_issues = found.lines()
    base = accounts.drop(columns=[c for c in accounts.columns if c.startswith("live_")])
    book = pipeline.Book(
        with_aggregates(base, deals, referral_sources=config.referral_sources), deals, source=config.crm
    )
    scored = pipeline.score_book(config, book, profile)
    report.scored = len(scored)
    desired = scored.rename(columns={f"icp_{f}": f for f in OWNED_FIELDS})[list(OWNED_FIELDS)]
    live = live_values(accounts)
    last = state.last_written(key, list(desired.index))
    pending = state.pending(key, list(desired.index))
    if last.empty and pending.empty and not state.has_history(key):
        last = _without_history(state, key, live, last, run_id, options, report)
    # Pending values tell our own interrupted writes from people's edits: the plan reads them before the
    # pending rows the CRM confirms are booked as written and the rest dropped.
    the_plan = plan(
        desired, live, last, pending=pending, respect_manual_edits=config.sync.respect_manual_edits
    )
    if not options.dry_run:
        report.adopted_after_interrupt = state.adopt_pending(key, live, run_id)
    report.changed = len(the_plan.changes)
    report.unconfirmed_after_interrupt = len(the_plan.unconfirmed)
    kept = the_plan.manual_edits["action"] == "kept" if len(the_plan.manual_edits) else pd.Series(dtype=bool)
    report.skipped_manual_edits = int(kept.sum())
    report.overwritten_manual_edits = int(len(the_plan.manual_edits) - kept.sum())
    return the_plan, desired


def live_values(accounts: pd.DataFrame) -> pd.DataFrame:
    """The owned fields' values as pulled (index = record id, logical names)."""
    live = accounts.set_index(accounts["id"].astype("string"))[[f"live_{f}" for f in OWNED_FIELDS]]
    live.columns = list(OWNED_FIELDS)
    return live


def _without_history(state, key, live, last, run_id, options, report) -> pd.DataFrame:
    """A state with no record of our writes, on a CRM that holds owned values: stop, unless told whose they
    are. Returns what counts as last written for the plan."""
    held = live[live.notna().any(axis=1)]
    if held.empty or options.keep_live:
        return last
    if not options.adopt_live:
        example = ", ".join(map(str, held.index[:3]))
        raise StateWithoutHistory(
            f"the state in {state.directory} has no record of what icp-sync wrote, but {len(held):,} accounts "
            f"already hold values in the ICP fields (e.g. {example}). This happens when the state file was "
            "lost, damaged or moved, or when the fields were filled by someone else. Nothing was written. "
            "Rerun with --adopt-live to take the CRM's current values as written by icp-sync (reps' later "
            "edits are then detected), or with --keep-live to treat them as reps' edits (kept and reported; "
            "only empty fields are filled)."
        )
    report.adopted_live = len(held)
    if not options.dry_run:
        state.record_written(key, held, run_id)
    return held


def _count(report: RunReport, applied: ApplyResult) -> None:
    report.written, report.failed, report.failures = applied.written, applied.failed, applied.failures
    report.edited_during_run = len(applied.edited_during_run)
    report.rereads, report.reread_calls = applied.rereads, applied.reread_calls
    report.recheck_next = applied.recheck


def _run_dir(config: Config, run_id: int) -> Path:
    path = config.state_dir / "runs" / str(run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_plan_files(config: Config, run_id: int, the_plan: Plan) -> dict[str, str]:
    directory = _run_dir(config, run_id)
    # Every CSV we write goes through the formula guard: a reasons cell "=HYPERLINK(...)" stays text.
    plan_csv = write_frame(the_plan.changes.rename_axis("record_id").reset_index(), directory / "plan.csv")
    manual_csv = write_frame(
        the_plan.manual_edits.rename_axis("record_id").reset_index(), directory / "manual-edits.csv"
    )
    (directory / "plan.json").write_text(json.dumps(the_plan.summary(), indent=2))
    extra = {}
    if len(the_plan.unconfirmed):
        extra["unconfirmed_csv"] = str(
            write_frame(
                the_plan.unconfirmed.rename_axis("record_id").reset_index(), directory / "unconfirmed.csv"
            )
        )
    return {
        **extra,
        "plan_csv": str(plan_csv),
        "plan_json": str(directory / "plan.json"),
        "manual_edits_csv": str(manual_csv),
    }


def _add_edits_during_run(the_plan: Plan, applied: ApplyResult, report: RunReport) -> None:
    """Overwrites the pre-write re-read skipped join the plan's manual edits in manual-edits.csv."""
    during = pd.DataFrame(applied.edited_during_run).set_index("record_id")
    during["action"] = "kept (edited during the run)"
    both = pd.concat([the_plan.manual_edits, during])
    write_frame(both.rename_axis("record_id").reset_index(), report.files["manual_edits_csv"])
    report.skipped_manual_edits += len(during)


def _finish(state: State, report: RunReport, status: str, t0: float, connector, config: Config) -> RunReport:
    report.status = status
    report.duration_s = round(time.monotonic() - t0, 3)
    calls_before, retries_before, writes_before = report.counters_from
    report.api_calls = connector.api_calls - calls_before
    report.retries = connector.policy.retries - retries_before
    report.write_calls = connector.write_calls - writes_before
    if report.run_id is not None:
        directory = _run_dir(config, report.run_id)
        if report.failures:
            write_frame(pd.DataFrame(report.failures), directory / "errors.csv")
        (directory / "summary.json").write_text(json.dumps(report.as_dict(), indent=2, default=str))
        report.files["summary_json"] = str(directory / "summary.json")
        state.finish_run(report.run_id, status, report.as_dict())
    return report


def iter_reports(config: Config, limit: int = 10) -> Iterator[dict]:
    with State.open(config.state_dir, lock=False) as state:
        yield from state.runs(limit)


__all__ = ["JobStopped", "PreflightError", "RunOptions", "RunReport", "run"]
