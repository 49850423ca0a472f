"""`icp demo`: the bundled sample book end to end, written out as files a user can read and then copy.

It writes a CRM-style CSV export (vendor headers, dirty cells) and an `icp.toml` that maps it, then runs the
same library calls as `icp profile learn` and `icp score`, so the demo doubles as a working example config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sandbox.book import ACCOUNT_HEADERS, DEAL_HEADERS, LOST_STAGES, WON_STAGES, export_csv, generate_book

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


def write_demo(directory: str | Path, *, accounts: int = 2000, seed: int = 7) -> DemoFiles:
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


def write_sandbox_demo(directory: str | Path, *, accounts: int = 2000, seed: int = 7) -> Path:
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


def _toml_list(items) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"
