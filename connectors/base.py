"""The contract between the sync engine and a CRM connector, and the owned-field names per CRM.

The engine is CRM-agnostic: it asks a connector for pages of canonical accounts (with the live values of the
owned fields under their logical names), for deals, to check and create the owned fields, and to write
batches of changes, each record's outcome coming back as a `WriteResult`. Connectors yield pages lazily.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd

LOGICAL_FIELDS = ("segment", "fit_score", "tier", "reasons", "scored_at", "model")
#: Modstamp and id columns every pulled account page carries, for the incremental cursor.
CURSOR_COLUMNS = ("_modstamp", "id")


@dataclass(frozen=True)
class FieldSpec:
    """One owned field as the CRM should hold it."""

    logical: str
    name: str  # the CRM's API name, e.g. ICP_Tier__c / icp_tier
    label: str
    kind: str  # picklist | number | text | longtext | datetime
    length: int | None = None
    values: tuple[str, ...] = ()  # picklist values


@dataclass
class FieldPlan:
    """What `icp fields` would do: create these, add picklist values to those; `ok` are already right."""

    create: list[FieldSpec] = field(default_factory=list)
    add_values: dict[str, tuple[str, ...]] = field(default_factory=dict)  # field name -> values to add
    ok: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # a field exists with an unusable type, etc.

    @property
    def empty(self) -> bool:
        return not self.create and not self.add_values


@dataclass(frozen=True)
class WriteResult:
    record_id: str
    success: bool
    code: str = ""
    message: str = ""


@dataclass(frozen=True)
class Usage:
    used: int
    limit: int

    @property
    def remaining(self) -> int:
        return self.limit - self.used


class Connector(Protocol):
    kind: str
    api_calls: int

    def check_fields(self, specs: list[FieldSpec], mapped: Mapping[str, str]) -> FieldPlan: ...

    def apply_fields(self, plan: FieldPlan) -> None: ...

    def iter_accounts(
        self, *, since: pd.Timestamp | None = None, ids: list[str] | None = None, where: str | None = None
    ) -> Iterator[pd.DataFrame]: ...

    def iter_deals(self) -> Iterator[pd.DataFrame]: ...

    def write(self, changes: pd.DataFrame) -> Iterator[list[WriteResult]]: ...

    def usage(self) -> Usage | None: ...
