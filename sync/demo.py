"""`icp demo`: the bundled sample book end to end, written out as files a user can read and then copy.

It writes a CRM-style CSV export (vendor headers, dirty cells) and an `icp.toml` that maps it, then runs the
same library calls as `icp profile learn`, `icp score` and `icp backtest`, so the demo doubles as a working
example config; then the nightly job against a local sandbox (`icp fields --apply`, `icp profile learn`,
`icp run` twice). `run_demo` does all of it and returns a `DemoResult` the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sandbox.book import ACCOUNT_HEADERS, DEAL_HEADERS, LOST_STAGES, WON_STAGES, export_csv, generate_book
from scoring.backtest import BacktestResult
from sync import job, pipeline, setup
from sync.config import SandboxConfig, load_config
from sync.crm import open_crm

#: The demo's backtest: learn from deals closed before this date, judge by those closed after it.
BACKTEST_AS_OF, BACKTEST_BOOT = "2025-01-01", 300

DEMO_CONFIG = """\
# icp-sync demo configuration: the sample book written by `icp demo`.
# Copy it beside your own CSV export and change the column names on the right-hand side.

[crm]
kind = "csv"

[csv]
output = "accounts-scored.csv"

[csv.accounts]
file = "accounts.csv"

[csv.accounts.columns]   # canonical name = "header in your file"
{account_columns}

[csv.deals]
file = "deals.csv"

[csv.deals.columns]
{deal_columns}

[csv.deals.stages]
won = {won}
lost = {lost}

# Segments: first match wins; the last one has no conditions, so it catches everyone else.
[[segments]]
name = "Enterprise"
when = [{{ field = "employees", op = ">=", value = 1000 }}]

[[segments]]
name = "Industrial mid-market"
when = [
  {{ field = "industry", op = "in", value = ["Manufacturing", "Logistics", "Construction", "Energy"] }},
  {{ field = "employees", op = "between", value = [50, 999] }},
]

[[segments]]
name = "Tech mid-market"
when = [
  {{ field = "industry", op = "in", value = ["Software", "Telecommunications", "Media"] }},
  {{ field = "employees", op = "between", value = [50, 999] }},
]

[[segments]]
name = "SMB and other"

[club]
size = 10
min_criteria = 5

[scoring]
attributes = ["industry", "employees", "annual_revenue", "country"]
tiers = {{ a = 75, b = 50, c = 25 }}
"""


SANDBOX_CONFIG = """\
# icp-sync demo: the nightly job against a local Salesforce-compatible sandbox (nothing leaves this machine).
# For your org: set kind = "salesforce" and put credentials in the environment or .env (see .env.example).

[crm]
kind = "sandbox"

[sandbox]
db = "sandbox.sqlite"     # the sandbox's state, so runs see each other's writes
accounts = {accounts}
seed = {seed}

[icp]
profile = "icp-profile.toml"
state_dir = ".icp"

[sync]
respect_manual_edits = true
max_change_ratio = 0.25

{segments}"""


@dataclass
class DemoFiles:
    directory: Path
    config: Path
    accounts: Path
    deals: Path


def write_demo(
    directory: str | Path, *, accounts: int = SandboxConfig.accounts, seed: int = SandboxConfig.seed
) -> DemoFiles:
    """Write the sample book and its config into `directory` (created if needed; existing files replaced)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    book = generate_book(accounts, seed=seed)
    acc_path, deal_path = directory / "accounts.csv", directory / "deals.csv"
    export_csv(book, acc_path, deal_path, dirty=True)
    account_columns = "\n".join(f'{k} = "{v}"' for k, v in ACCOUNT_HEADERS.items())
    deal_columns = "\n".join(f'{k} = "{v}"' for k, v in DEAL_HEADERS.items())
    text = DEMO_CONFIG.format(
        account_columns=account_columns,
        deal_columns=deal_columns,
        won=_toml_list(WON_STAGES),
        lost=_toml_list(LOST_STAGES),
    )
    config = directory / "icp.toml"
    config.write_text(text, encoding="utf-8")
    return DemoFiles(directory, config, acc_path, deal_path)


def write_sandbox_demo(
    directory: str | Path, *, accounts: int = SandboxConfig.accounts, seed: int = SandboxConfig.seed
) -> Path:
    """A config for the nightly job against a fresh sandbox in `directory` (any earlier state removed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in ("sandbox.sqlite", "sandbox.sqlite-wal", "sandbox.sqlite-shm", "icp-profile.toml"):
        (directory / stale).unlink(missing_ok=True)
    state = directory / ".icp"
    if state.exists():
        import shutil

        shutil.rmtree(state)
    segments = (
        DEMO_CONFIG[DEMO_CONFIG.index("# Segments") : DEMO_CONFIG.index("[club]")]
        .replace("{{", "{")
        .replace("}}", "}")
    )
    config = directory / "icp.toml"
    config.write_text(
        SANDBOX_CONFIG.format(accounts=accounts, seed=seed, segments=segments), encoding="utf-8"
    )
    return config


@dataclass
class DemoResult:
    """Everything `icp demo` did: the CSV book learned, scored and backtested, then the nightly job against
    the sandbox (fields created, profile learned from the CRM, two runs, the second writing nothing)."""

    files: DemoFiles
    accounts: int  # in the CSV book
    deals: int
    learned: pipeline.Learned
    output: Path  # the scored accounts file
    summary: dict
    segment_tier: pd.DataFrame
    backtest: BacktestResult
    backtest_as_of: str
    crm_config: Path
    fields_created: list[str]
    crm_profile_version: str
    runs: list  # the two RunReports
    example_id: str  # the best-scored account, for `icp explain`

    def as_dict(self) -> dict:
        return {
            "csv": {
                "files": {
                    "config": self.files.config,
                    "accounts": self.files.accounts,
                    "deals": self.files.deals,
                    "profile": self.learned.path,
                    "output": self.output,
                },
                "club": self.learned.club.members,
                "profile_version": self.learned.profile.version,
                "summary": self.summary,
                "segment_tier": self.segment_tier,
                "backtest": self.backtest.to_dict(),
            },
            "crm": {
                "config": self.crm_config,
                "fields_created": self.fields_created,
                "profile_version": self.crm_profile_version,
                "runs": [r.as_dict() for r in self.runs],
            },
        }


def run_demo(
    directory: str | Path, *, accounts: int = SandboxConfig.accounts, seed: int = SandboxConfig.seed
) -> DemoResult:
    """Write the sample book into `directory`/csv and learn, score and backtest it; then write a sandbox
    config into `directory`/crm, create the ICP fields, learn from the CRM and run the nightly job twice."""
    root = Path(directory)
    # 1. The CSV book: learn, score, backtest.
    files = write_demo(root / "csv", accounts=accounts, seed=seed)
    config = load_config(files.config)
    book = pipeline.load_book(config)
    learned = pipeline.learn(config, book)
    scored = pipeline.score_book(config, book, learned.profile)
    out, _ = pipeline.write_output(config, scored)
    bt = pipeline.run_backtest(config, book, as_of=BACKTEST_AS_OF, n_boot=BACKTEST_BOOT)

    # 2. The nightly job against the sandbox: fields, learn from the CRM, run, run again.
    crm_config = load_config(write_sandbox_demo(root / "crm", accounts=accounts, seed=seed))
    with open_crm(crm_config) as connector:
        made = setup.fields(crm_config, apply=True, connector=connector)
        crm_learned = pipeline.learn(crm_config, pipeline.book_from_crm(crm_config, connector))
        runs = [job.run(crm_config, job.RunOptions(), connector_override=connector) for _ in range(2)]
    return DemoResult(
        files=files,
        accounts=len(book.accounts),
        deals=len(book.deals),
        learned=learned,
        output=out,
        summary=pipeline.score_summary(scored, learned.profile),
        segment_tier=pipeline.segment_tier_table(scored),
        backtest=bt,
        backtest_as_of=BACKTEST_AS_OF,
        crm_config=crm_config.path,
        fields_created=[s.name for s in made.plan.create],
        crm_profile_version=crm_learned.profile.version,
        runs=runs,
        example_id=str(scored.sort_values("icp_fit_score", ascending=False).index[0]),
    )


def _toml_list(items) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"
