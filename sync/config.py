"""Configuration: `icp.toml` for behaviour, the environment (or `.env`) for secrets.

`load_config` reads and validates the whole file before any work starts and reports every problem at once,
each naming its key and what is allowed. Secrets never come from the TOML and are wrapped in `Secret`, whose
repr and str are redacted, so a config object can be logged or printed safely.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from scoring.club import DEFAULT_CRITERIA, Criterion, criteria_from_config
from scoring.errors import ScoringError
from scoring.segments import SegmentRule, rules_from_config

DEFAULT_CONFIG = "icp.toml"
CRM_KINDS = ("csv", "salesforce", "sandbox")  # sandbox = the Salesforce connector against a local sandbox
DEFAULT_ATTRIBUTES = ("industry", "employees", "annual_revenue", "country")
# Everything a CRM login needs comes from the environment or .env; all of it is held as Secret.
SECRET_NAMES = (
    "SF_USERNAME",
    "SF_PASSWORD",
    "SF_SECURITY_TOKEN",
    "SF_DOMAIN",
    "SF_INSTANCE_URL",
    "SF_ACCESS_TOKEN",
    "SF_CONSUMER_KEY",
    "SF_CONSUMER_SECRET",
    "SF_PRIVATE_KEY_FILE",
    "SF_CA_BUNDLE",
    "SF_API_VERSION",
    "SF_LOGIN_URL",
    "HUBSPOT_ACCESS_TOKEN",
    "HUBSPOT_BASE_URL",
)
OWNED_DEFAULTS = {
    "segment": "ICP_Segment__c",
    "fit_score": "ICP_Fit_Score__c",
    "tier": "ICP_Tier__c",
    "reasons": "ICP_Reasons__c",
    "scored_at": "ICP_Scored_At__c",
    "model": "ICP_Model__c",
}


class ConfigError(Exception):
    """The config cannot be used; `problems` lists every reason, each naming its key."""

    def __init__(self, path: str | Path | None, problems: list[str]) -> None:
        self.path = str(path) if path else None
        self.problems = problems
        where = f"{self.path}: " if self.path else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{where}{len(problems)} problem(s) in the configuration:\n{lines}")


class Secret:
    """A secret value from the environment; prints as `Secret('****')` so it never leaks into output."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class CsvSettings:
    accounts: Path
    deals: Path | None
    output: Path
    account_columns: dict[str, str] = field(default_factory=dict)
    deal_columns: dict[str, str] = field(default_factory=dict)
    won_stages: tuple[str, ...] = ("Closed Won", "Won", "closedwon")
    lost_stages: tuple[str, ...] = ("Closed Lost", "Lost", "closedlost")


@dataclass(frozen=True)
class SalesforceConfig:
    api_version: str = "59.0"
    domain: str = "login"
    bulk_threshold: int = 2000
    bulk_query_threshold: int = 200_000
    timeout_s: float = 60.0
    quota_floor: int = 1000
    fields: dict[str, str] = field(default_factory=lambda: dict(OWNED_DEFAULTS))
    account_columns: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SyncPolicy:
    respect_manual_edits: bool = True
    max_change_ratio: float = 0.25
    lookback_minutes: int = 10


@dataclass(frozen=True)
class SandboxConfig:
    db: Path = Path(".icp/sandbox.sqlite")
    accounts: int = 2000
    seed: int = 7
    faults: str | None = None


@dataclass(frozen=True)
class Config:
    path: Path | None
    crm: str = "csv"
    profile_path: Path = Path("icp-profile.toml")
    state_dir: Path = Path(".icp")
    csv: CsvSettings | None = None
    segments: tuple[SegmentRule, ...] = ()  # empty: the default size bands
    club_size: int = 10
    min_criteria: int = 5
    pinned: tuple[str, ...] = ()
    criteria: tuple[Criterion, ...] = DEFAULT_CRITERIA
    referral_sources: tuple[str, ...] = ("referral", "partner")
    attributes: tuple[str, ...] = DEFAULT_ATTRIBUTES
    tiers: tuple[float, float, float] = (75.0, 50.0, 25.0)
    reasons_max_len: int = 1024
    salesforce: SalesforceConfig = field(default_factory=lambda: SalesforceConfig())
    sync: SyncPolicy = field(default_factory=lambda: SyncPolicy())
    sandbox: SandboxConfig = field(default_factory=lambda: SandboxConfig())
    secrets: dict[str, Secret] = field(default_factory=dict, repr=False)

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()


def config_path(explicit: str | Path | None) -> Path:
    """`--config`, else `$ICP_CONFIG`, else `icp.toml` in the working directory."""
    return Path(explicit or os.environ.get("ICP_CONFIG") or DEFAULT_CONFIG)


def load_config(path: str | Path | None = None, *, env: dict[str, str] | None = None) -> Config:
    """Read, validate and resolve a config file; raise `ConfigError` listing every problem."""
    path = config_path(path)
    if not path.exists():
        raise ConfigError(
            path,
            [
                f"no config file at {path}; pass --config PATH, set ICP_CONFIG, or run "
                "`icp demo` to see a working example"
            ],
        )
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"not valid TOML: {exc}"]) from None
    except OSError as exc:
        raise ConfigError(path, [f"cannot read the file: {exc.strerror}"]) from None
    return parse_config(raw, path=path.resolve(), env=env)


def parse_config(raw: dict, *, path: Path | None = None, env: dict[str, str] | None = None) -> Config:
    v = _Validator()
    base = path.parent if path else Path.cwd()
    v.only_keys(
        raw, "", {"icp", "crm", "csv", "segments", "club", "scoring", "salesforce", "sync", "sandbox"}
    )

    icp = v.table(raw, "icp")
    v.only_keys(icp, "icp", {"profile", "state_dir"})
    profile_path = base / v.string(icp, "icp.profile", default="icp-profile.toml")
    state_dir = Path(os.environ.get("ICP_STATE_DIR") or base / v.string(icp, "icp.state_dir", default=".icp"))

    crm = v.table(raw, "crm")
    v.only_keys(crm, "crm", {"kind"})
    kind = v.string(crm, "crm.kind", default="csv")
    if kind not in CRM_KINDS:
        v.problem(f"crm.kind = {kind!r}: allowed: {', '.join(CRM_KINDS)}")

    csv_settings = _parse_csv(v, raw, base) if kind == "csv" or "csv" in raw else None

    segments: list[SegmentRule] = []
    raw_segments = raw.get("segments", [])
    try:
        segments = rules_from_config(raw_segments, where="segments")
    except ScoringError as exc:
        v.problems.extend(str(exc).splitlines())

    club = v.table(raw, "club")
    v.only_keys(club, "club", {"size", "min_criteria", "pinned", "criteria", "referral_sources"})
    club_size = v.integer(club, "club.size", default=10, low=1, high=1000)
    criteria: list[Criterion] = list(DEFAULT_CRITERIA)
    if "criteria" in club:
        try:
            criteria = criteria_from_config(club["criteria"], where="club.criteria")
        except ScoringError as exc:
            v.problems.extend(str(exc).splitlines())
    min_criteria = v.integer(club, "club.min_criteria", default=min(5, len(criteria) or 1), low=1)
    if criteria and min_criteria > len(criteria):
        v.problem(f"club.min_criteria = {min_criteria}: there are only {len(criteria)} criteria")
    pinned = tuple(v.strings(club, "club.pinned", default=[]))
    referral_sources = tuple(v.strings(club, "club.referral_sources", default=["referral", "partner"]))

    scoring = v.table(raw, "scoring")
    v.only_keys(scoring, "scoring", {"attributes", "tiers", "reasons_max_len"})
    attributes = tuple(v.strings(scoring, "scoring.attributes", default=list(DEFAULT_ATTRIBUTES)))
    if not attributes:
        v.problem("scoring.attributes: list at least one account attribute to profile")
    tiers_raw = v.table(scoring, "tiers", key="scoring.tiers")
    v.only_keys(tiers_raw, "scoring.tiers", {"a", "b", "c"})
    tiers = (
        v.number(tiers_raw, "scoring.tiers.a", default=75, low=0, high=100),
        v.number(tiers_raw, "scoring.tiers.b", default=50, low=0, high=100),
        v.number(tiers_raw, "scoring.tiers.c", default=25, low=0, high=100),
    )
    if not tiers[0] > tiers[1] > tiers[2]:
        v.problem(f"scoring.tiers: need a > b > c, got a={tiers[0]}, b={tiers[1]}, c={tiers[2]}")
    reasons_max_len = v.integer(scoring, "scoring.reasons_max_len", default=1024, low=40, high=131072)

    salesforce = _parse_salesforce(v, raw)
    sync = _parse_sync(v, raw)
    sandbox = _parse_sandbox(v, raw, base)

    v.raise_if_any(path)
    return Config(
        path=path,
        crm=kind,
        profile_path=profile_path,
        state_dir=state_dir,
        csv=csv_settings,
        segments=tuple(segments),
        club_size=club_size,
        min_criteria=min_criteria,
        pinned=pinned,
        criteria=tuple(criteria),
        referral_sources=referral_sources,
        attributes=attributes,
        tiers=tiers,
        reasons_max_len=reasons_max_len,
        salesforce=salesforce,
        sync=sync,
        sandbox=sandbox,
        secrets=load_secrets(base, env),
    )


def _parse_csv(v: _Validator, raw: dict, base: Path) -> CsvSettings | None:
    # TOML cannot hold both `[csv] accounts = "a.csv"` and a `[csv.accounts.columns]` table, so each of
    # `csv.accounts` / `csv.deals` is either the file name (a string) or a table with `file` (+ columns).
    csv_raw = v.table(raw, "csv")
    v.only_keys(csv_raw, "csv", {"accounts", "deals", "output"})
    if "accounts" not in csv_raw:
        v.problem(
            'csv.accounts: required: the accounts file, `accounts = "accounts.csv"` under [csv], '
            'or `file = "accounts.csv"` under [csv.accounts]'
        )
        return None
    accounts, acc_tbl = _file_or_table(v, csv_raw, "accounts", {"file", "columns"})
    deals, deal_tbl = _file_or_table(v, csv_raw, "deals", {"file", "columns", "stages"})
    output = v.string(csv_raw, "csv.output", default="icp-scored.csv")
    account_columns = v.mapping(acc_tbl.get("columns", {}), "csv.accounts.columns")
    deal_columns = v.mapping(deal_tbl.get("columns", {}), "csv.deals.columns")
    stages = v.table(deal_tbl, "stages", key="csv.deals.stages")
    v.only_keys(stages, "csv.deals.stages", {"won", "lost"})
    won = v.strings(stages, "csv.deals.stages.won", default=list(CsvSettings.won_stages))
    lost = v.strings(stages, "csv.deals.stages.lost", default=list(CsvSettings.lost_stages))
    overlap = {s.strip().lower() for s in won} & {s.strip().lower() for s in lost}
    if overlap:
        v.problem(f"csv.deals.stages: {', '.join(sorted(overlap))} listed as both won and lost")
    if (deal_columns or "stages" in deal_tbl) and not deals:
        v.problem('csv.deals: columns are mapped but no deals file is given (`file = "deals.csv"`)')
    if accounts is None:
        return None
    return CsvSettings(
        accounts=base / accounts,
        deals=(base / deals) if deals else None,
        output=base / output,
        account_columns=account_columns,
        deal_columns=deal_columns,
        won_stages=tuple(won),
        lost_stages=tuple(lost),
    )


def _file_or_table(v: _Validator, csv_raw: dict, name: str, allowed: set[str]) -> tuple[str | None, dict]:
    value = csv_raw.get(name)
    if value is None:
        return None, {}
    if isinstance(value, str):
        return v.string(csv_raw, f"csv.{name}"), {}
    if isinstance(value, dict):
        v.only_keys(value, f"csv.{name}", allowed)
        return v.string(value, f"csv.{name}.file", required=True), value
    v.problem(f"csv.{name}: must be a file name or a table with `file` and `columns`, got {value!r}")
    return None, {}


def _parse_salesforce(v: _Validator, raw: dict) -> SalesforceConfig:
    t = v.table(raw, "salesforce")
    v.only_keys(
        t,
        "salesforce",
        {
            "api_version",
            "domain",
            "bulk_threshold",
            "bulk_query_threshold",
            "timeout_s",
            "quota_floor",
            "fields",
            "accounts",
        },
    )
    version = v.string(t, "salesforce.api_version", default="59.0")
    if not re.fullmatch(r"\d{2,3}\.0", version):
        v.problem(f'salesforce.api_version = {version!r}: write it like "59.0" (no leading v)')
    fields = v.mapping(t.get("fields", {}), "salesforce.fields")
    for key in fields:
        if key not in OWNED_DEFAULTS:
            v.problem(f"salesforce.fields.{key}: unknown field; allowed: {', '.join(OWNED_DEFAULTS)}")
    accounts = v.table(t, "accounts", key="salesforce.accounts")
    v.only_keys(accounts, "salesforce.accounts", {"columns"})
    return SalesforceConfig(
        api_version=version,
        domain=v.string(t, "salesforce.domain", default="login"),
        bulk_threshold=v.integer(t, "salesforce.bulk_threshold", default=2000, low=1),
        bulk_query_threshold=v.integer(t, "salesforce.bulk_query_threshold", default=200_000, low=1),
        timeout_s=v.number(t, "salesforce.timeout_s", default=60, low=1, high=3600),
        quota_floor=v.integer(t, "salesforce.quota_floor", default=1000, low=0),
        fields={**OWNED_DEFAULTS, **fields},
        account_columns=v.mapping(accounts.get("columns", {}), "salesforce.accounts.columns"),
    )


def _parse_sync(v: _Validator, raw: dict) -> SyncPolicy:
    t = v.table(raw, "sync")
    v.only_keys(t, "sync", {"respect_manual_edits", "max_change_ratio", "lookback_minutes"})
    respect = t.get("respect_manual_edits", True)
    if not isinstance(respect, bool):
        v.problem(f"sync.respect_manual_edits: must be true or false, got {respect!r}")
        respect = True
    return SyncPolicy(
        respect_manual_edits=respect,
        max_change_ratio=v.number(t, "sync.max_change_ratio", default=0.25, low=0, high=1),
        lookback_minutes=v.integer(t, "sync.lookback_minutes", default=10, low=0, high=7 * 24 * 60),
    )


def _parse_sandbox(v: _Validator, raw: dict, base: Path) -> SandboxConfig:
    t = v.table(raw, "sandbox")
    v.only_keys(t, "sandbox", {"db", "accounts", "seed", "faults"})
    return SandboxConfig(
        db=base / v.string(t, "sandbox.db", default=".icp/sandbox.sqlite"),
        accounts=v.integer(t, "sandbox.accounts", default=2000, low=1, high=2_000_000),
        seed=v.integer(t, "sandbox.seed", default=7),
        faults=v.string(t, "sandbox.faults", default=None),
    )


def load_secrets(base: Path, env: dict[str, str] | None = None) -> dict[str, Secret]:
    """Secrets from the process environment, then a `.env` beside the config (the environment wins)."""
    values: dict[str, str] = {}
    dotenv = base / ".env"
    if dotenv.exists():
        values.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
    values.update(os.environ if env is None else env)
    return {name: Secret(values[name]) for name in SECRET_NAMES if values.get(name)}


class _Validator:
    """Collects problems instead of stopping at the first, so a user fixes the whole file in one pass."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def raise_if_any(self, path: Path | None) -> None:
        if self.problems:
            raise ConfigError(path, self.problems)

    def only_keys(self, table: dict, where: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                name = f"{where}.{key}" if where else key
                self.problem(f"{name}: unknown key; allowed here: {', '.join(sorted(allowed))}")

    def table(self, parent: dict, name: str, *, key: str | None = None) -> dict:
        value = parent.get(name, {})
        if not isinstance(value, dict):
            self.problem(f"{key or name}: must be a table ([{key or name}]), got {type(value).__name__}")
            return {}
        return value

    def string(self, table: dict, key: str, *, default: Any = None, required: bool = False) -> Any:
        name = key.rsplit(".", 1)[-1]
        if name not in table:
            if required:
                self.problem(f"{key}: required")
            return default
        value = table[name]
        if not isinstance(value, str) or not value.strip():
            self.problem(f"{key}: must be a non-empty string, got {value!r}")
            return default
        return value

    def strings(self, table: dict, key: str, *, default: list[str]) -> list[str]:
        name = key.rsplit(".", 1)[-1]
        value = table.get(name, default)
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            self.problem(f"{key}: must be a list of strings, got {value!r}")
            return default
        return value

    def integer(
        self, table: dict, key: str, *, default: int, low: int | None = None, high: int | None = None
    ) -> int:
        name = key.rsplit(".", 1)[-1]
        value = table.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(f"{key}: must be a whole number, got {value!r}")
            return default
        if (low is not None and value < low) or (high is not None and value > high):
            self.problem(f"{key} = {value}: allowed range is {low} to {high if high is not None else 'any'}")
            return default
        return value

    def number(self, table: dict, key: str, *, default: float, low: float, high: float) -> float:
        name = key.rsplit(".", 1)[-1]
        value = table.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(f"{key}: must be a number, got {value!r}")
            return float(default)
        if not low <= value <= high:
            self.problem(f"{key} = {value}: allowed range is {low} to {high}")
            return float(default)
        return float(value)

    def mapping(self, value: Any, key: str) -> dict[str, str]:
        if not isinstance(value, dict):
            self.problem(f'{key}: must be a table of canonical_name = "CSV header"')
            return {}
        out = {}
        for k, header in value.items():
            if not isinstance(header, str) or not header:
                self.problem(f"{key}.{k}: must be the CSV header text, got {header!r}")
            else:
                out[k] = header
        return out
