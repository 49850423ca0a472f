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

from connectors.owned import OWNED_FIELDS
from connectors.salesforce import BULK_UPLOAD_MAX_BYTES, BULK_UPLOAD_MIN_BYTES, SalesforceSettings
from scoring.aggregates import REFERRAL_SOURCES
from scoring.club import CLUB_SIZE, DEFAULT_CRITERIA, MIN_CRITERIA, Criterion, criteria_from_config
from scoring.errors import ScoringError
from scoring.fit import REASONS_MAX_LEN, Tiers
from scoring.profile import DEFAULT_ATTRIBUTES
from scoring.segments import SegmentRule, rules_from_config

DEFAULT_CONFIG = "icp.toml"
CRM_KINDS = ("csv", "salesforce", "sandbox")  # sandbox = the Salesforce connector against a local sandbox
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
    club_size: int = CLUB_SIZE
    min_criteria: int = MIN_CRITERIA
    pinned: tuple[str, ...] = ()
    criteria: tuple[Criterion, ...] = DEFAULT_CRITERIA
    referral_sources: tuple[str, ...] = REFERRAL_SOURCES
    attributes: tuple[str, ...] = DEFAULT_ATTRIBUTES
    tiers: tuple[float, float, float] = (Tiers.a, Tiers.b, Tiers.c)
    reasons_max_len: int = REASONS_MAX_LEN
    salesforce: SalesforceSettings = field(default_factory=lambda: SalesforceSettings())
    sync: SyncPolicy = field(default_factory=lambda: SyncPolicy())
    sandbox: SandboxConfig = field(default_factory=lambda: SandboxConfig())
    secrets: dict[str, Secret] = field(default_factory=dict, repr=False)

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()


SF = SalesforceSettings  # its class attributes are the [salesforce] defaults


@dataclass(frozen=True)
class Key:
    """One scalar key of icp.toml: where it lives, its type and what is allowed. Its default is the one the
    code that uses it declares (scoring, the connector settings, the dataclasses above), read here, never
    written twice. The parser, the validation messages and the example-config test all read this table."""

    path: str  # "salesforce.bulk_threshold"
    type: str  # str | int | float | bool | strings
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    hint: str = ""

    @property
    def section(self) -> str:
        return self.path.rsplit(".", 1)[0] if "." in self.path else ""

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]


KEYS: tuple[Key, ...] = (
    Key("icp.profile", "str", "icp-profile.toml"),
    Key("icp.state_dir", "str", ".icp"),
    Key("crm.kind", "str", "csv", choices=CRM_KINDS),
    Key("csv.output", "str", "icp-scored.csv"),
    Key("club.size", "int", CLUB_SIZE, low=1, high=1000),
    Key("club.min_criteria", "int", MIN_CRITERIA, low=1),
    Key("club.pinned", "strings", ()),
    Key("club.referral_sources", "strings", REFERRAL_SOURCES),
    Key("scoring.attributes", "strings", DEFAULT_ATTRIBUTES),
    Key("scoring.reasons_max_len", "int", REASONS_MAX_LEN, low=40, high=131072),
    Key("scoring.tiers.a", "float", Tiers.a, low=0, high=100),
    Key("scoring.tiers.b", "float", Tiers.b, low=0, high=100),
    Key("scoring.tiers.c", "float", Tiers.c, low=0, high=100),
    Key(
        "salesforce.api_version",
        "str",
        SF.api_version,
        pattern=r"\d{2,3}\.0",
        hint='write it like "59.0" (no leading v)',
    ),
    Key("salesforce.domain", "str", SF.domain),
    Key("salesforce.bulk_threshold", "int", SF.bulk_threshold, low=1),
    Key("salesforce.bulk_query_threshold", "int", SF.bulk_query_threshold, low=1),
    Key(
        "salesforce.bulk_upload_bytes",
        "int",
        SF.bulk_upload_bytes,
        low=BULK_UPLOAD_MIN_BYTES,
        high=BULK_UPLOAD_MAX_BYTES,
    ),
    Key("salesforce.bulk_job_records", "int", SF.bulk_job_records, low=1),
    Key("salesforce.timeout_s", "float", SF.timeout_s, low=1, high=3600),
    Key("salesforce.quota_floor", "int", SF.quota_floor, low=0),
    Key("salesforce.skip_own_writes", "bool", SF.skip_own_writes),
    Key("sync.respect_manual_edits", "bool", SyncPolicy.respect_manual_edits),
    Key("sync.max_change_ratio", "float", SyncPolicy.max_change_ratio, low=0, high=1),
    Key("sync.lookback_minutes", "int", SyncPolicy.lookback_minutes, low=0, high=7 * 24 * 60),
    Key("sandbox.db", "str", str(SandboxConfig.db)),
    Key("sandbox.accounts", "int", SandboxConfig.accounts, low=1, high=2_000_000),
    Key("sandbox.seed", "int", SandboxConfig.seed),
    Key("sandbox.faults", "str", SandboxConfig.faults),
)
KEY = {k.path: k for k in KEYS}
#: Keys that hold tables or lists with a shape of their own, parsed by their own code below.
STRUCTURED: dict[str, set[str]] = {
    "": {"segments"},
    "csv": {"accounts", "deals"},
    "csv.accounts": {"file", "columns"},
    "csv.deals": {"file", "columns", "stages"},
    "csv.deals.stages": {"won", "lost"},
    "club": {"criteria"},
    "scoring": {"tiers"},
    "salesforce": {"fields", "accounts"},
    "salesforce.accounts": {"columns"},
}
SECTIONS = ("icp", "crm", "csv", "segments", "club", "scoring", "salesforce", "sync", "sandbox")


def allowed_keys(section: str) -> set[str]:
    """Every key icp.toml may hold in `section` ("" is the top level)."""
    if not section:
        return set(SECTIONS)
    subtables = {
        k.section.split(".")[len(section.split(".")) :][0]
        for k in KEYS
        if k.section.startswith(section + ".")
    }
    return {k.name for k in KEYS if k.section == section} | STRUCTURED.get(section, set()) | subtables


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
    tables = {section: v.section(raw, section) for section in SECTIONS if section != "segments"}
    v.only_keys(raw, "")

    profile_path = base / v.read(tables["icp"], "icp.profile")
    state_dir = Path(os.environ.get("ICP_STATE_DIR") or base / v.read(tables["icp"], "icp.state_dir"))
    kind = v.read(tables["crm"], "crm.kind")
    csv_settings = _parse_csv(v, tables["csv"], base) if kind == "csv" or "csv" in raw else None

    segments: list[SegmentRule] = []
    try:
        segments = rules_from_config(raw.get("segments", []), where="segments")
    except ScoringError as exc:
        v.problems.extend(str(exc).splitlines())

    club = tables["club"]
    criteria: list[Criterion] = list(DEFAULT_CRITERIA)
    if "criteria" in club:
        try:
            criteria = criteria_from_config(club["criteria"], where="club.criteria")
        except ScoringError as exc:
            v.problems.extend(str(exc).splitlines())
    min_criteria = v.read(club, "club.min_criteria", default=min(MIN_CRITERIA, len(criteria) or 1))
    if criteria and min_criteria > len(criteria):
        v.problem(f"club.min_criteria = {min_criteria}: there are only {len(criteria)} criteria")

    scoring = tables["scoring"]
    attributes = tuple(v.read(scoring, "scoring.attributes"))
    if not attributes:
        v.problem("scoring.attributes: list at least one account attribute to profile")
    tiers_raw = v.section(scoring, "scoring.tiers")
    tiers = tuple(v.read(tiers_raw, f"scoring.tiers.{t}") for t in "abc")
    if not tiers[0] > tiers[1] > tiers[2]:
        v.problem(f"scoring.tiers: need a > b > c, got a={tiers[0]}, b={tiers[1]}, c={tiers[2]}")

    salesforce = _parse_salesforce(v, tables["salesforce"])
    sync = SyncPolicy(**v.read_section(tables["sync"], "sync"))
    sandbox = v.read_section(tables["sandbox"], "sandbox")
    sandbox = SandboxConfig(**{**sandbox, "db": base / sandbox["db"]})

    club_size = v.read(club, "club.size")
    pinned = tuple(v.read(club, "club.pinned"))
    referral_sources = tuple(v.read(club, "club.referral_sources"))
    reasons_max_len = v.read(scoring, "scoring.reasons_max_len")
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


def _parse_csv(v: _Validator, csv_raw: dict, base: Path) -> CsvSettings | None:
    # TOML cannot hold both `[csv] accounts = "a.csv"` and a `[csv.accounts.columns]` table, so each of
    # `csv.accounts` / `csv.deals` is either the file name (a string) or a table with `file` (+ columns).
    if "accounts" not in csv_raw:
        v.problem(
            'csv.accounts: required: the accounts file, `accounts = "accounts.csv"` under [csv], '
            'or `file = "accounts.csv"` under [csv.accounts]'
        )
        return None
    accounts, acc_tbl = _file_or_table(v, csv_raw, "accounts")
    deals, deal_tbl = _file_or_table(v, csv_raw, "deals")
    output = v.read(csv_raw, "csv.output")
    account_columns = v.mapping(acc_tbl.get("columns", {}), "csv.accounts.columns")
    deal_columns = v.mapping(deal_tbl.get("columns", {}), "csv.deals.columns")
    stages = v.section(deal_tbl, "csv.deals.stages")
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


def _file_or_table(v: _Validator, csv_raw: dict, name: str) -> tuple[str | None, dict]:
    value = csv_raw.get(name)
    if value is None:
        return None, {}
    if isinstance(value, str):
        return v.string(csv_raw, f"csv.{name}"), {}
    if isinstance(value, dict):
        v.only_keys(value, f"csv.{name}")
        return v.string(value, f"csv.{name}.file", required=True), value
    v.problem(f"csv.{name}: must be a file name or a table with `file` and `columns`, got {value!r}")
    return None, {}


def _parse_salesforce(v: _Validator, t: dict) -> SalesforceSettings:
    fields = v.mapping(t.get("fields", {}), "salesforce.fields")
    for key in fields:
        if key not in OWNED_FIELDS:
            v.problem(f"salesforce.fields.{key}: unknown field; allowed: {', '.join(OWNED_FIELDS)}")
    accounts = v.section(t, "salesforce.accounts")
    return SalesforceSettings(
        **v.read_section(t, "salesforce"),
        fields={**SF().fields, **fields},
        account_columns=v.mapping(accounts.get("columns", {}), "salesforce.accounts.columns"),
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

    def only_keys(self, table: dict, where: str) -> None:
        allowed = allowed_keys(where)
        for key in table:
            if key not in allowed:
                name = f"{where}.{key}" if where else key
                self.problem(f"{name}: unknown key; allowed here: {', '.join(sorted(allowed))}")

    def section(self, parent: dict, where: str) -> dict:
        """The table at `where` (empty when absent), its unknown keys reported."""
        name = where.rsplit(".", 1)[-1]
        value = parent.get(name, {})
        if not isinstance(value, dict):
            self.problem(f"{where}: must be a table ([{where}]), got {type(value).__name__}")
            return {}
        self.only_keys(value, where)
        return value

    def read_section(self, table: dict, section: str) -> dict[str, Any]:
        """Every scalar key of `section`, validated, by name (defaults where absent)."""
        return {k.name: self.read(table, k.path) for k in KEYS if k.section == section}

    def read(self, table: dict, path: str, *, default: Any = None) -> Any:
        """One key of the table, checked against its `Key`; the default when absent or not allowed."""
        key = KEY[path]
        default = key.default if default is None else default
        if key.name not in table:
            return default
        value = table[key.name]
        if key.type == "str":
            if not isinstance(value, str) or not value.strip():
                self.problem(f"{path}: must be a non-empty string, got {value!r}")
            elif key.choices and value not in key.choices:
                self.problem(f"{path} = {value!r}: allowed: {', '.join(key.choices)}")
            elif key.pattern and not re.fullmatch(key.pattern, value):
                self.problem(f"{path} = {value!r}: {key.hint}")
            else:
                return value
        elif key.type == "bool":
            if isinstance(value, bool):
                return value
            self.problem(f"{path}: must be true or false, got {value!r}")
        elif key.type == "strings":
            if isinstance(value, list) and all(isinstance(x, str) for x in value):
                return value
            self.problem(f"{path}: must be a list of strings, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int if key.type == "int" else int | float):
            kind = "a whole number" if key.type == "int" else "a number"
            self.problem(f"{path}: must be {kind}, got {value!r}")
        elif (key.low is not None and value < key.low) or (key.high is not None and value > key.high):
            high = key.high if key.high is not None else "any"
            self.problem(f"{path} = {value}: allowed range is {_num(key.low)} to {_num(high)}")
        else:
            return float(value) if key.type == "float" else value
        return default

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


def _num(value: Any) -> Any:
    """A bound as people write it: 1, not 1.0."""
    return int(value) if isinstance(value, float) and value.is_integer() else value
