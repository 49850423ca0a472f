"""The contract between the sync engine and a CRM connector: what the job and the CLI call, and nothing else.

The engine is CRM-agnostic: it asks a connector for pages of canonical accounts (with the live values of the
owned fields under `live_<logical>` and the cursor column `_modstamp`), for closed deals, to check and create
the owned fields, and to write batches of changes, each record's outcome coming back as a `WriteResult`.
Connectors yield pages lazily and convert raw CRM values through `schema.conform`, noting unreadable values in
the caller's `ParseReport`, exactly as the CSV reader does. Every call goes through the connector's one
`RetryPolicy`, and the counters below include retries. See docs/architecture.md, "The connector contract".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import pandas as pd

if TYPE_CHECKING:
    from connectors.retry import RetryPolicy
    from connectors.schema import ParseReport


@dataclass(frozen=True)
class FieldSpec:
    """One owned field as a given CRM should hold it (the owned-field table's row, named for that CRM)."""

    logical: str
    name: str  # the CRM's API name, e.g. ICP_Tier__c / icp_tier
    label: str
    kind: str  # picklist | number | text | longtext | datetime
    length: int | None = None
    values: tuple[str, ...] = ()  # picklist values


@dataclass
class FieldPlan:
    """What `icp fields` would do: create these, add picklist values to those; `ok` are already right;
    `problems` are fields that exist but cannot be used as they are (wrong type, not updateable, a mapped
    read field that does not exist)."""

    create: list[FieldSpec] = field(default_factory=list)
    add_values: dict[str, tuple[str, ...]] = field(default_factory=dict)  # field name -> values to add
    ok: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Nothing to create or add (problems are not fixed by `icp fields --apply`)."""
        return not self.create and not self.add_values

    @property
    def ready(self) -> bool:
        """The CRM can be written: every owned field present, usable, with every picklist value."""
        return self.empty and not self.problems

    def blockers(self) -> list[str]:
        """Why the CRM is not ready, one sentence each, saying what fixes it. The one reading of a field
        check that the job's preflight, `icp fields` and `icp doctor` share."""
        out = list(self.problems)
        if self.create:
            out.append(
                "missing fields: "
                + ", ".join(s.name for s in self.create)
                + " — run `icp fields --apply` to create them"
            )
        if self.add_values:
            out.append(
                "picklist values missing: "
                + "; ".join(f"{name}: {', '.join(v)}" for name, v in self.add_values.items())
                + " — run `icp fields --apply` to add them"
            )
        return out


@dataclass(frozen=True)
class WriteResult:
    record_id: str
    success: bool
    code: str = ""
    message: str = ""


#: The `WriteResult.code` of a record a job never reached (aborted, or failed as a whole): not written, not
#: rejected either; the next plan decides again whether it needs writing.
UNPROCESSED = "UNPROCESSED"


@dataclass(frozen=True)
class Usage:
    used: int
    limit: int

    @property
    def remaining(self) -> int:
        return self.limit - self.used


@runtime_checkable
class Connector(Protocol):
    """A CRM as the sync engine sees it. `SalesforceConnector` implements it in full; a test checks that
    every method here exists there with the same parameters."""

    #: which CRM ("salesforce", "hubspot"); state keys and messages use it
    kind: str
    #: how it authenticated, for `icp doctor` (e.g. "password", "session"); never a secret
    mode: str
    #: every HTTP call made, retries included; `write_calls` only those that change records
    api_calls: int
    write_calls: int
    #: the one retry policy every call goes through; `policy.retries` counts the retries made
    policy: RetryPolicy
    #: the CRM's clock as of its latest answer (e.g. the HTTP Date header), or None if it never said: read
    #: before a pull, it bounds from below the timestamp of any change made after the pull began
    server_time: pd.Timestamp | None

    def usage(self) -> Usage | None:
        """Today's API usage and limit, or None when the CRM does not say."""
        ...

    def check_fields(self, segment_values: Sequence[str]) -> FieldPlan:
        """Compare the owned fields (and the mapped read fields) with the CRM; change nothing."""
        ...

    def apply_fields(self, plan: FieldPlan) -> None:
        """Create the plan's fields and add its picklist values."""
        ...

    def count_accounts(
        self,
        *,
        since: pd.Timestamp | None = None,
        ids: Sequence[str] | None = None,
        where: str | None = None,
        skip_own_writes: bool = False,
    ) -> int:
        """How many accounts `iter_accounts` with the same filters would yield."""
        ...

    def iter_accounts(
        self,
        *,
        since: pd.Timestamp | None = None,
        ids: Sequence[str] | None = None,
        where: str | None = None,
        total: int | None = None,
        report: ParseReport | None = None,
        skip_own_writes: bool = False,
    ) -> Iterator[pd.DataFrame]:
        """Canonical account pages, oldest change first: modified at or after `since` (None: all), or these
        `ids`, or matching `where` (the CRM's own filter syntax). Each page has the canonical columns, any
        mapped custom ones, `live_<logical>` for every owned field and `_modstamp`. `total` (from
        `count_accounts`) lets the connector pick its bulk path. Unreadable values go into `report`.
        `skip_own_writes` leaves out records whose last change was made by the user this connector runs
        as (our own writes); it sees the last writer only, so the engine pulls by id what a write of ours
        may have covered (docs/architecture.md, "Incremental pulls")."""
        ...

    def iter_deals(self, *, report: ParseReport | None = None) -> Iterator[pd.DataFrame]:
        """Closed deals as canonical pages (`DEAL_SCHEMA`), with `is_won` / `is_closed` decided. The connector
        sizes the pull itself (there is no `count_deals`) and picks its bulk path from that, as it does for
        accounts with `total`."""
        ...

    def read_owned(self, ids: Sequence[str], *, with_modstamp: bool = False) -> pd.DataFrame:
        """The owned fields' values the CRM holds now for `ids` (index = record id, logical columns), read
        right before a batch overwrites them; deleted or unknown ids are simply absent. `with_modstamp`
        adds `_modstamp`, the record's change timestamp now (as `iter_accounts` gives it)."""
        ...

    def batch_size(self, n_changes: int) -> int:
        """How many of `n_changes` records one `write` call should get so that each call is one batch as
        the CRM takes it (the engine re-reads each batch's overwrites right before sending it)."""
        ...

    def write(
        self, changes: pd.DataFrame, *, on_job: Callable[[str], None] | None = None
    ) -> Iterator[list[WriteResult]]:
        """Write `changes` (index = record id, logical owned columns) in batches; yield each batch's
        per-record results as soon as the CRM confirms them. A record-level rejection is a failed
        `WriteResult`, never an exception; a call-level failure that outlives the retries raises CrmError.

        A write that goes through a server-side job (Salesforce Bulk API 2.0) calls `on_job(job_id)` right
        after creating the job and before sending it any record, so the caller can keep the id where the
        next run finds it if this one dies (`settle_job`). Such a job's results come as one batch, once the
        job is final: when that batch is yielded, every job reported so far is settled. A transient error
        during a job's steps retries that step on the same job; a job is never created twice for one batch."""
        ...

    def settle_job(self, job_id: str) -> list[WriteResult]:
        """Finish a job a dead run left behind: if it is still open or running, abort it and wait until it
        is final; then its per-record outcomes: successes, rejections with their codes, and the records it
        never reached as failed with code `UNPROCESSED`. A job the CRM no longer knows gives [], no error."""
        ...
