"""Setting up and checking a CRM: `icp fields`, `icp doctor` and `icp pull` as one library call each.

Each function takes a validated `Config` and returns a result dataclass: the CLI prints it as text, and its
`as_dict()` is what `--json` prints. What a field check means (is the CRM ready to be written, and if not,
why) is read in one place, `FieldPlan.ready` / `FieldPlan.blockers()`, shared with the job's preflight.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from connectors.base import FieldPlan
from connectors.retry import CrmError
from scoring.errors import ScoringError
from sync import pipeline
from sync.config import Config
from sync.crm import open_crm
from sync.job import segment_names


def check_fields(config: Config, connector) -> FieldPlan:
    """The connector's field check for this config's owned fields and segment picklist values."""
    return connector.check_fields(segment_names(config))


# ------------------------------------------------------------------------------------------------ fields
@dataclass
class FieldsResult:
    """What `icp fields` found and did. `plan` is the check before any change; with `applied`, `remaining`
    is the check made after applying (empty when every change took)."""

    plan: FieldPlan
    applied: bool = False
    remaining: FieldPlan | None = None

    @property
    def complete(self) -> bool:
        """Nothing is left to create or add (after applying, if it applied)."""
        return (self.remaining if self.applied and self.remaining is not None else self.plan).empty

    @property
    def ok(self) -> bool:
        """No field is unusable as it is (problems that `--apply` cannot fix)."""
        return not self.plan.problems

    def as_dict(self) -> dict:
        out: dict = {
            "create": [s.name for s in self.plan.create],
            "add_values": {k: list(v) for k, v in self.plan.add_values.items()},
            "ok": list(self.plan.ok),
            "problems": list(self.plan.problems),
            "applied": self.applied,
        }
        if self.applied and self.remaining is not None:
            out["remaining"] = {
                "create": [s.name for s in self.remaining.create],
                "add_values": list(self.remaining.add_values),
            }
        return out


def fields(config: Config, *, apply: bool, connector=None) -> FieldsResult:
    """Check the owned fields and segment picklist values; with `apply`, create what is missing and check
    again. Idempotent: once applied, the plan is empty. Pass `connector` to reuse an open one."""
    with _open(config, connector) as crm:
        plan = check_fields(config, crm)
        if plan.empty or not apply:
            return FieldsResult(plan)
        crm.apply_fields(plan)
        return FieldsResult(plan, applied=True, remaining=check_fields(config, crm))


# ------------------------------------------------------------------------------------------------ doctor
@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class DoctorResult:
    """The set-up checks in order: config, profile, then credentials, API quota and fields (a CRM) or the
    book (a CSV export), then the state directory."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))

    def as_dict(self) -> dict:
        return {"checks": [c.as_dict() for c in self.checks]}


def doctor(config: Config) -> DoctorResult:
    """Check the set-up: config, credentials, API access and quota, fields, profile, state. Never raises
    for a failed check; each one says what is wrong."""
    result = DoctorResult()
    result.add("config", True, str(config.path))
    try:
        prof = pipeline.read_profile(config)
        result.add("profile", True, f"{config.profile_path} (version {prof.version})")
    except ScoringError as exc:
        result.add("profile", False, str(exc))
    if config.crm in ("salesforce", "sandbox"):
        try:
            with open_crm(config) as connector:
                usage = connector.usage()
                result.add("credentials", True, f"logged in ({connector.mode})")
                if usage:
                    floor = config.salesforce.quota_floor
                    result.add(
                        "api quota",
                        usage.remaining >= floor,
                        f"{usage.used:,} of {usage.limit:,} used today; floor {floor:,}",
                    )
                plan = check_fields(config, connector)
                result.add("fields", plan.ready, "all present" if plan.ready else "; ".join(plan.blockers()))
        except CrmError as exc:
            result.add("credentials", False, str(exc))
    else:
        result.add(
            "book",
            config.csv is not None and config.csv.accounts.exists(),
            str(config.csv.accounts) if config.csv else "no [csv] accounts",
        )
    try:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        result.add("state", True, str(config.state_dir))
    except OSError as exc:
        result.add("state", False, f"{config.state_dir}: {exc.strerror}")
    return result


# -------------------------------------------------------------------------------------------------- pull
@dataclass
class PullSummary:
    """What `icp pull` read: accounts, closed and won deals, and how many accounts lack each scoring
    attribute (`missing`, in `scoring.attributes` order). `output` is where the accounts were written."""

    accounts: int
    deals: int
    won_deals: int
    missing: dict[str, int]
    output: str | Path | None = None

    def as_dict(self) -> dict:
        out: dict = {
            "accounts": self.accounts,
            "deals": self.deals,
            "won_deals": self.won_deals,
            "missing": dict(self.missing),
        }
        if self.output is not None:
            out["output"] = self.output
        return out


def pull(config: Config, *, output: str | Path | None = None, progress: bool = False) -> PullSummary:
    """Read every account and closed deal from the configured source (nothing is written to the CRM);
    with `output`, also write the accounts (canonical columns) to that CSV file."""
    book = pipeline.load_book(config, progress=progress)
    deals = book.deals
    summary = PullSummary(
        accounts=len(book.accounts),
        deals=0 if deals is None else len(deals),
        won_deals=0 if deals is None else int(deals["is_won"].sum()),
        missing={a: int(book.accounts[a].isna().sum()) for a in config.attributes},
    )
    if output:
        from connectors.csvfile import write_frame

        write_frame(book.accounts, output)
        summary.output = output
    return summary


def _open(config: Config, connector):
    return nullcontext(connector) if connector is not None else open_crm(config)
