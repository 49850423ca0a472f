"""The sandbox org's data: one SQLite table per sObject, its field set (standard + custom), seeding from the
book, and the one write path every API shares (REST PATCH, sObject Collections, Bulk API 2.0, UI edits), so
validation, record faults and timestamps behave the same whichever door a write comes through.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sandbox.salesforce.fields import (
    SETUP_FIELDS,
    STAGES,
    STANDARD_FIELDS,
    Field,
    FieldError,
    PicklistValue,
    format_ms,
)
from sandbox.salesforce.ids import KEY_PREFIXES, make_id, make_ids, normalize_id

ORG_ID = make_id(KEY_PREFIXES["Organization"], 1)
API_USER_ID = make_id(KEY_PREFIXES["User"], 1)  # the integration user every API session runs as
REP_USER_ID = make_id(KEY_PREFIXES["User"], 2)  # a sales rep editing records in the UI
REP_USERNAME = "sales.rep@sandbox.icp"

LABELS = {
    "Account": ("Account", "Accounts"),
    "Opportunity": ("Opportunity", "Opportunities"),
    "User": ("User", "Users"),
}


class RecordError(ValueError):
    """A direct edit (`SalesforceApp.edit`) that Salesforce would refuse; `errors` as the API reports them."""

    def __init__(self, errors: list[dict]) -> None:
        super().__init__("; ".join(f"{e['statusCode']}: {e['message']}" for e in errors))
        self.errors = errors


class Clock:
    """Milliseconds since the epoch that never go backwards; two writes may share a millisecond, as on Salesforce."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            self._last = max(self._last, time.time_ns() // 1_000_000)
            return self._last


class SObjectType:
    """One sObject's field set; field names resolve case-insensitively, as everywhere in the Salesforce APIs."""

    def __init__(self, name: str, fields: Iterable[Field]) -> None:
        self.name = name
        self.label, self.label_plural = LABELS[name]
        self.key_prefix = KEY_PREFIXES[name]
        self.table = f"sf_{name}"
        self.fields: dict[str, Field] = {}
        self._lower: dict[str, Field] = {}
        for f in fields:
            self.add(f)

    def field(self, name: str) -> Field | None:
        return self._lower.get(name.lower())

    def add(self, f: Field) -> None:
        # Copy-on-write, so a describe iterating the old field set never sees it change under it.
        fields, lower = dict(self.fields), dict(self._lower)
        fields[f.name], lower[f.name.lower()] = f, f
        self.fields, self._lower = fields, lower

    def remove(self, name: str) -> None:
        fields, lower = dict(self.fields), dict(self._lower)
        f = fields.pop(name)
        del lower[f.name.lower()]
        self.fields, self._lower = fields, lower

    def describe(self, version: str) -> dict:
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            **self.global_entry(version),
            "childRelationships": [],
            "fields": [f.describe() for f in self.fields.values()],
            "recordTypeInfos": [],
            "supportedScopes": [{"label": "All", "name": "everything"}],
            "urls": {
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
                "sobject": base,
            },
        }

    def global_entry(self, version: str) -> dict:
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "activateable": False,
            "createable": True,
            "custom": False,
            "customSetting": False,
            "deletable": True,
            "deprecatedAndHidden": False,
            "feedEnabled": False,
            "keyPrefix": self.key_prefix,
            "label": self.label,
            "labelPlural": self.label_plural,
            "layoutable": True,
            "mergeable": self.name == "Account",
            "name": self.name,
            "queryable": True,
            "replicateable": True,
            "retrieveable": True,
            "searchable": True,
            "triggerable": True,
            "undeletable": True,
            "updateable": True,
            "urls": {"describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}", "sobject": base},
        }


@dataclass
class WriteItem:
    """One record to update: its declared type (None = the caller's object), id and raw field values."""

    sobject: str | None
    record_id: object
    values: dict[str, object]
    csv_row: list[str] | None = None  # for Bulk API results: the original CSV cells


@dataclass
class WriteResult:
    id: str | None
    errors: list[dict] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.errors


ROLLED_BACK = {
    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
    "fields": [],
}
RECORD_FAULT_ERRORS = {
    "record_lock": (
        "UNABLE_TO_LOCK_ROW",
        "unable to obtain exclusive access to this record or 1 records: {id}",
    ),
    "validation": (
        "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        "The sandbox validation rule ICP_Sandbox_Check rejected this record",
    ),
    "picklist": (
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "{label}: bad value for restricted picklist field: {value}",
    ),
}


@dataclass(frozen=True)
class JournalEntry:
    """One applied update: the fields it set, with their values before and after."""

    sobject: str
    record_id: str
    user_id: str
    before: dict
    after: dict


class Store:
    """The org's records and field definitions, on the sandbox's shared SQLite connection."""

    OBJECTS = ("Account", "Opportunity")

    def __init__(self, db, *, seed: int = 7, api_username: str = "integration@sandbox.icp") -> None:
        self.db = db
        self.seed_value = seed
        self.api_username = api_username  # the User record every API session runs as (API_USER_ID)
        self.clock = Clock()
        self.types = {name: SObjectType(name, STANDARD_FIELDS[name]()) for name in self.OBJECTS}
        # Setup objects (User): queryable by SOQL and describable, never seeded from the book, not in
        # describe global's list (which the sandbox keeps to the data objects it serves).
        self.setup_types = {name: SObjectType(name, make()) for name, make in SETUP_FIELDS.items()}
        #: With `start_journal()`, every applied update as `JournalEntry`s, in order: who changed which
        #: record's fields from what to what. Off by default (it reads each record before writing it).
        self.journal: list[JournalEntry] | None = None
        self._ensure_schema()

    def start_journal(self) -> list[JournalEntry]:
        """Record every update from now on (a test's or a soak's view of what reached the org)."""
        self.journal = []
        return self.journal

    # -- schema ---------------------------------------------------------------------------------------------
    def type(self, name: str) -> SObjectType | None:
        for sobject in (*self.types.values(), *self.setup_types.values()):
            if sobject.name.lower() == name.lower():
                return sobject
        return None

    def _sobject(self, name: str) -> SObjectType:
        return self.types.get(name) or self.setup_types[name]

    def _ensure_schema(self) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS sf_custom_fields "
                "(sobject TEXT NOT NULL, name TEXT NOT NULL, definition TEXT NOT NULL, PRIMARY KEY (sobject, name))"
            )
            for sobject in (*self.types.values(), *self.setup_types.values()):
                columns = ", ".join(f'"{f.name}" {f.sql_type}' for f in sobject.fields.values())
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {sobject.table} (_row INTEGER PRIMARY KEY, {columns})"
                )
            self._ensure_users(conn)
            # A --db file may hold fields created through the Metadata API in an earlier run.
            for row in conn.execute("SELECT sobject, definition FROM sf_custom_fields ORDER BY rowid"):
                self.types[row["sobject"]].add(field_from_json(json.loads(row["definition"])))
            for sobject in self.types.values():
                present = {r["name"] for r in conn.execute(f"PRAGMA table_info({sobject.table})")}
                for f in sobject.fields.values():
                    if f.name not in present:
                        conn.execute(f'ALTER TABLE {sobject.table} ADD COLUMN "{f.name}" {f.sql_type}')
        if not self.is_empty():
            self._ensure_indexes()

    def _ensure_users(self, conn) -> None:
        """The org's two users: the integration user API sessions run as, and the rep `edit` acts as."""
        conn.execute('CREATE UNIQUE INDEX IF NOT EXISTS sf_User_id ON sf_User ("Id")')
        stamp = format_ms(self.clock.now_ms() - 86_400_000)
        for user_id, username, name in (
            (API_USER_ID, self.api_username, "Integration User"),
            (REP_USER_ID, REP_USERNAME, "Sam Rep"),
        ):
            conn.execute(
                'INSERT OR IGNORE INTO sf_User ("Id", "IsDeleted", "Username", "Name", "Email", "IsActive", '
                '"CreatedDate", "CreatedById", "LastModifiedDate", "LastModifiedById", "SystemModstamp") '
                "VALUES (?, 0, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
                (user_id, username, name, username, stamp, API_USER_ID, stamp, API_USER_ID, stamp),
            )

    def _ensure_indexes(self) -> None:
        # Id for lookups by id; SystemModstamp/LastModifiedDate (+ Id, the tie-break) for incremental pulls.
        # The incremental pull that skips our own writes (`SystemModstamp >= t AND LastModifiedById != us`)
        # walks the SystemModstamp range and tests the rest from sf_Account_modstamp_by alone, never
        # visiting the rows it leaves out (a no-op rerun after a 1M-record write skips 1M of them).
        statements = [
            'CREATE UNIQUE INDEX IF NOT EXISTS sf_Account_id ON sf_Account ("Id")',
            'CREATE INDEX IF NOT EXISTS sf_Account_modstamp ON sf_Account ("SystemModstamp", "Id")',
            "CREATE INDEX IF NOT EXISTS sf_Account_modstamp_by ON sf_Account "
            '("SystemModstamp", "Id", "LastModifiedById", "IsDeleted")',
            'CREATE INDEX IF NOT EXISTS sf_Account_lastmod ON sf_Account ("LastModifiedDate", "Id")',
            'CREATE UNIQUE INDEX IF NOT EXISTS sf_Opportunity_id ON sf_Opportunity ("Id")',
            'CREATE INDEX IF NOT EXISTS sf_Opportunity_modstamp ON sf_Opportunity ("SystemModstamp", "Id")',
            'CREATE INDEX IF NOT EXISTS sf_Opportunity_account ON sf_Opportunity ("AccountId")',
        ]
        with self.db.transaction() as conn:
            for sql in statements:
                conn.execute(sql)

    def add_field(self, sobject: str, f: Field) -> None:
        sobject_type = self.types[sobject]
        with self.db.transaction() as conn:
            conn.execute(f'ALTER TABLE {sobject_type.table} ADD COLUMN "{f.name}" {f.sql_type}')
            conn.execute(
                "INSERT INTO sf_custom_fields (sobject, name, definition) VALUES (?, ?, ?)",
                (sobject, f.name, json.dumps(field_to_json(f))),
            )
            sobject_type.add(f)

    def replace_field(self, sobject: str, f: Field) -> None:
        sobject_type = self.types[sobject]
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE sf_custom_fields SET definition = ? WHERE sobject = ? AND name = ?",
                (json.dumps(field_to_json(f)), sobject, f.name),
            )
            sobject_type.add(f)

    def remove_field(self, sobject: str, name: str) -> None:
        sobject_type = self.types[sobject]
        with self.db.transaction() as conn:
            conn.execute(f'ALTER TABLE {sobject_type.table} DROP COLUMN "{name}"')
            conn.execute("DELETE FROM sf_custom_fields WHERE sobject = ? AND name = ?", (sobject, name))
            sobject_type.remove(name)

    # -- seeding --------------------------------------------------------------------------------------------
    def is_empty(self) -> bool:
        with self.db.reading() as conn:
            return conn.execute("SELECT 1 FROM sf_Account LIMIT 1").fetchone() is None

    def seed(self, book) -> None:
        """Load the book: accounts as Account, deals as Opportunity, with some dirty-but-valid values.

        Built column by column with numpy/pandas and inserted with one executemany per object, so a
        1,000,000-account book loads in seconds. Seeded timestamps stay at least a second in the past so
        any later write is strictly newer.
        """
        rng = np.random.default_rng([self.seed_value, 0x5F])
        ceiling = pd.Timestamp(self.clock.now_ms() - 1000, unit="ms", tz="UTC")
        accounts = book.accounts
        n = len(accounts)
        account_ids = make_ids(KEY_PREFIXES["Account"], 1, n)
        id_map = pd.Series(account_ids, index=accounts["id"].astype(str).to_numpy())

        created = _business_hours(accounts["created_at"], rng).clip(upper=ceiling)
        modified = _business_hours(accounts["modified_at"], rng).clip(upper=ceiling)
        modified = modified.where(modified >= created, created)
        modified_text = _stamps(modified)
        columns = {
            "Id": account_ids,
            "IsDeleted": np.zeros(n, dtype=np.int64),
            "Name": _objects(accounts["name"]),
            "Type": _objects(accounts["account_type"]),
            "ParentId": _objects(accounts["parent_id"].map(id_map)),
            "BillingCity": _objects(accounts["city"]),
            "BillingState": _objects(accounts["state"]),
            "BillingCountry": _objects(accounts["country"]),
            "Website": _dirty_websites(accounts["domain"], rng),
            "Industry": _dirty_industries(accounts["industry"], rng),
            "AnnualRevenue": _objects(accounts["annual_revenue"]),
            "NumberOfEmployees": _objects(accounts["employees"]),
            "CreatedDate": _stamps(created),
            "CreatedById": np.full(n, REP_USER_ID, dtype=object),
            "LastModifiedDate": modified_text,
            "LastModifiedById": np.full(n, REP_USER_ID, dtype=object),
            "SystemModstamp": modified_text,
        }
        self._insert("Account", columns, n)

        deals = book.deals
        m = len(deals)
        opp_created = _business_hours(deals["created_at"], rng).clip(upper=ceiling)
        closed_at = pd.to_datetime(deals["closed_at"], utc=True)
        # Salesforce requires a CloseDate; an open deal carries its expected close date instead.
        expected = deals["created_at"] + pd.to_timedelta(rng.integers(30, 150, m), unit="D")
        close_date = closed_at.where(closed_at.notna(), expected)
        opp_modified = _business_hours(closed_at.where(closed_at.notna(), deals["created_at"]), rng)
        opp_modified = opp_modified.clip(upper=ceiling)
        opp_modified = opp_modified.where(opp_modified >= opp_created, opp_created)
        opp_modified_text = _stamps(opp_modified)
        opp_columns = {
            "Id": make_ids(KEY_PREFIXES["Opportunity"], 1, m),
            "IsDeleted": np.zeros(m, dtype=np.int64),
            "AccountId": _objects(deals["account_id"].map(id_map)),
            "Name": _objects(deals["name"]),
            "Amount": _objects(deals["amount"]),
            "StageName": _objects(deals["stage"]),
            "IsClosed": deals["is_closed"].astype(bool).astype(np.int64).to_numpy(),
            "IsWon": deals["is_won"].astype(bool).astype(np.int64).to_numpy(),
            "CloseDate": _dates(close_date),
            "LeadSource": _objects(deals["lead_source"]),
            "CreatedDate": _stamps(opp_created),
            "CreatedById": np.full(m, REP_USER_ID, dtype=object),
            "LastModifiedDate": opp_modified_text,
            "LastModifiedById": np.full(m, REP_USER_ID, dtype=object),
            "SystemModstamp": opp_modified_text,
        }
        self._insert("Opportunity", opp_columns, m)
        self._ensure_indexes()

    def _insert(self, sobject: str, columns: dict[str, np.ndarray], n: int) -> None:
        if n == 0:
            return
        table = self.types[sobject].table
        names = list(columns)
        quoted = ", ".join(f'"{c}"' for c in names)
        sql = f"INSERT INTO {table} ({quoted}) VALUES ({', '.join('?' * len(names))})"
        arrays = [_python_values(columns[c]) for c in names]
        with self.db.transaction() as conn:
            conn.executemany(sql, zip(*arrays, strict=True))

    # -- reading --------------------------------------------------------------------------------------------
    def rowids(self, sql: str, params: Sequence) -> np.ndarray:
        with self.db.reading() as conn:
            rows = conn.execute(sql, params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def count(self, sql: str, params: Sequence) -> int:
        with self.db.reading() as conn:
            return conn.execute(sql, params).fetchone()[0]

    def fetch(self, sobject: str, rowids: Sequence[int], expressions: list[str]) -> list[tuple]:
        """Rows for `rowids`, in that order, each a tuple of the SQL `expressions` (quoted columns or more)."""
        table = self._sobject(sobject).table
        sql = (
            f"SELECT {', '.join(expressions)} FROM json_each(?) AS j "
            f"JOIN {table} AS t ON t._row = j.value ORDER BY j.key"
        )
        payload = json.dumps([int(r) for r in rowids])
        with self.db.reading() as conn:
            return conn.execute(sql, (payload,)).fetchall()

    def records(self, sobject: str, include_deleted: bool = False) -> list[dict]:
        sobject_type = self._sobject(sobject)
        names = list(sobject_type.fields)
        where = "" if include_deleted else 'WHERE "IsDeleted" = 0'
        cols = ", ".join(f'"{n}"' for n in names)
        with self.db.reading() as conn:
            rows = conn.execute(f"SELECT {cols} FROM {sobject_type.table} {where} ORDER BY _row").fetchall()
        fields = [sobject_type.fields[n] for n in names]
        return [{f.name: f.render(v) for f, v in zip(fields, row, strict=True)} for row in rows]

    def record(self, sobject: str, record_id: str) -> dict | None:
        sobject_type = self._sobject(sobject)
        names = list(sobject_type.fields)
        cols = ", ".join(f'"{n}"' for n in names)
        with self.db.reading() as conn:
            row = conn.execute(
                f'SELECT {cols} FROM {sobject_type.table} WHERE "Id" = ?', (record_id,)
            ).fetchone()
        if row is None:
            return None
        return {n: sobject_type.fields[n].render(row[n]) for n in names}

    # -- writing --------------------------------------------------------------------------------------------
    def update(
        self,
        default_sobject: str | None,
        items: list[WriteItem],
        *,
        user_id: str,
        all_or_none: bool = False,
        faults=None,
        fault_label: str | None = None,
        from_csv: bool = False,
        reject_duplicates: bool = True,
    ) -> list[WriteResult]:
        """Validate and apply updates; one result per item, in order. All writes of a call share one timestamp."""
        with self.db.transaction() as conn:
            prepared = [self._check(conn, item, default_sobject, from_csv) for item in items]
            self._check_existence(conn, prepared)
            if reject_duplicates:
                seen: set[str] = set()
                for p in prepared:
                    if p.ok and p.id in seen:
                        p.fail("DUPLICATE_VALUE", f"Duplicate id in list: {p.id}", [])
                    elif p.ok:
                        seen.add(p.id)
            if faults is not None and fault_label:
                for p in prepared:
                    if p.ok:
                        kind = faults.record_fault(fault_label)
                        if kind:
                            p.fail(*_record_fault_error(kind, p))
            failed = any(not p.ok for p in prepared)
            if all_or_none and failed:
                return [
                    WriteResult(p.id if p.id_known else None, p.errors or [dict(ROLLED_BACK)])
                    for p in prepared
                ]
            stamp = format_ms(self.clock.now_ms())
            if self.journal is not None:
                self._journal(conn, [p for p in prepared if p.ok], user_id)
            groups: dict[tuple[str, tuple[str, ...]], list[tuple]] = {}
            for p in prepared:
                if not p.ok:
                    continue
                values = dict(p.values)
                if p.sobject.name == "Opportunity" and "StageName" in values:
                    closed, won = STAGES.get(values["StageName"], (False, False))
                    values["IsClosed"], values["IsWon"] = int(closed), int(won)
                key = (p.sobject.name, tuple(values))
                groups.setdefault(key, []).append((*values.values(), stamp, stamp, user_id, p.row))
            for (sobject, names), rows in groups.items():
                assignments = ", ".join(f'"{n}" = ?' for n in names)
                if assignments:
                    assignments += ", "
                conn.executemany(
                    f'UPDATE {self._sobject(sobject).table} SET {assignments}"LastModifiedDate" = ?, '
                    f'"SystemModstamp" = ?, "LastModifiedById" = ? WHERE _row = ?',
                    rows,
                )
            return [WriteResult(p.id if p.id_known else None, p.errors) for p in prepared]

    def _journal(self, conn, applied: list, user_id: str) -> None:
        for p in applied:
            names = list(p.values)
            cols = ", ".join(f'"{n}"' for n in names)
            row = conn.execute(f"SELECT {cols} FROM {p.sobject.table} WHERE _row = ?", (p.row,)).fetchone()
            before = {n: p.sobject.fields[n].render(row[n]) for n in names}
            after = {n: p.sobject.fields[n].render(v) for n, v in p.values.items()}
            self.journal.append(JournalEntry(p.sobject.name, p.id, user_id, before, after))

    def delete(self, sobject: str, record_id: str, user_id: str) -> bool:
        """Soft-delete (to the recycle bin): IsDeleted true, timestamps bumped; False if there is no such live record."""
        table = self._sobject(sobject).table
        stamp = format_ms(self.clock.now_ms())
        with self.db.transaction() as conn:
            cursor = conn.execute(
                f'UPDATE {table} SET "IsDeleted" = 1, "LastModifiedDate" = ?, "SystemModstamp" = ?, '
                f'"LastModifiedById" = ? WHERE "Id" = ? AND "IsDeleted" = 0',
                (stamp, stamp, user_id, record_id),
            )
            return cursor.rowcount == 1

    def _check(self, conn: sqlite3.Connection, item: WriteItem, default_sobject: str | None, from_csv: bool):
        p = _Prepared()
        type_name = item.sobject or default_sobject
        if not type_name:
            return p.fail("INVALID_TYPE", "Must specify a type in the attributes of each record", [])
        sobject = self.type(type_name) if isinstance(type_name, str) else None
        if sobject is None:
            return p.fail("INVALID_TYPE", f"sObject type '{type_name}' is not supported.", [])
        p.sobject = sobject
        if item.record_id in (None, ""):
            return p.fail("MISSING_ARGUMENT", "Id not specified in an update call", [])
        record_id = normalize_id(item.record_id)
        if record_id is None:
            return p.fail("MALFORMED_ID", f"malformed id {item.record_id}", [])
        if not record_id.startswith(sobject.key_prefix):
            return p.fail(
                "MALFORMED_ID", f"{sobject.label} ID: id value of incorrect type: {item.record_id}", ["Id"]
            )
        p.id, p.id_known = record_id, True
        for name, raw in item.values.items():
            if from_csv:
                if raw == "":
                    continue  # an empty Bulk API cell leaves the field unchanged
                if raw == "#N/A":
                    raw = None
            fld = sobject.field(name)
            if fld is None:
                p.fail("INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject.name}", [name])
                continue
            if not fld.updateable:
                p.fail(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {fld.name}. Please check the security settings of this "
                    "field and verify that it is read/write for your profile or permission set.",
                    [fld.name],
                )
                continue
            try:
                p.values[fld.name] = fld.coerce(raw, from_csv=from_csv)
            except FieldError as exc:
                p.errors.append(exc.as_dict())
            else:
                if fld.type == "reference" and p.values[fld.name] is not None:
                    p.references.append(fld)
        return p

    def _check_existence(self, conn: sqlite3.Connection, prepared: list[_Prepared]) -> None:
        wanted: dict[str, set[str]] = {}
        for p in prepared:
            if p.id_known:
                wanted.setdefault(p.sobject.name, set()).add(p.id)
            for fld in p.references:
                target = fld.reference_to[0]
                ref = p.values[fld.name]
                if not ref.startswith(self._sobject(target).key_prefix):
                    p.fail(
                        "FIELD_INTEGRITY_EXCEPTION",
                        f"{fld.label}: id value of incorrect type: {ref}",
                        [fld.name],
                    )
                    p.values.pop(fld.name)
                else:
                    wanted.setdefault(target, set()).add(ref)
        found: dict[str, tuple[int, int]] = {}
        for sobject, ids in wanted.items():
            rows = conn.execute(
                f'SELECT "Id", _row, "IsDeleted" FROM {self._sobject(sobject).table} '
                'WHERE "Id" IN (SELECT value FROM json_each(?))',
                (json.dumps(sorted(ids)),),
            )
            found.update({r[0]: (r[1], r[2]) for r in rows})
        for p in prepared:
            if p.id_known:
                hit = found.get(p.id)
                if hit is None:
                    p.errors.insert(
                        0, _error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
                    )
                elif hit[1]:
                    p.errors.insert(0, _error("ENTITY_IS_DELETED", "entity is deleted", []))
                else:
                    p.row = hit[0]
            for fld in p.references:
                ref = p.values.get(fld.name)
                if ref is None:
                    continue
                hit = found.get(ref)
                if hit is None or hit[1]:
                    p.fail(
                        "INVALID_CROSS_REFERENCE_KEY" if hit is None else "ENTITY_IS_DELETED",
                        f"{fld.label}: id value of incorrect type: {ref}"
                        if hit is None
                        else f"{fld.label}: entity is deleted",
                        [fld.name],
                    )


@dataclass
class _Prepared:
    sobject: SObjectType | None = None
    id: str | None = None
    id_known: bool = False
    row: int | None = None
    values: dict[str, object] = field(default_factory=dict)
    references: list[Field] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def fail(self, code: str, message: str, fields: list[str]) -> _Prepared:
        self.errors.append(_error(code, message, fields))
        return self


def _error(code: str, message: str, fields: list[str]) -> dict:
    return {"statusCode": code, "message": message, "fields": fields}


def _record_fault_error(kind: str, p: _Prepared) -> tuple[str, str, list[str]]:
    code, template = RECORD_FAULT_ERRORS[kind]
    if kind != "picklist":
        return code, template.format(id=p.id), []
    picklists = [p.sobject.fields[n] for n in p.values if p.sobject.fields[n].type == "picklist"]
    target = next((f for f in picklists if f.restricted), picklists[0] if picklists else None)
    if target is None:
        return code, "bad value for restricted picklist field", []
    return code, template.format(label=target.label, value=p.values[target.name]), [target.name]


# -- custom field persistence -----------------------------------------------------------------------------------
def field_to_json(f: Field) -> dict:
    data = {k: v for k, v in f.__dict__.items() if k != "picklist"}
    data["picklist"] = [p.__dict__ for p in f.picklist]
    return data


def field_from_json(data: dict) -> Field:
    data = dict(data)
    data["picklist"] = [PicklistValue(**p) for p in data.get("picklist", [])]
    return Field(**data)


# -- seed helpers -----------------------------------------------------------------------------------------------
def _objects(series: pd.Series) -> np.ndarray:
    """A column as an object array with None for missing, Python ints/floats for numbers."""
    values = series.astype(object).to_numpy(copy=True)
    mask = pd.isna(series).to_numpy()
    values[mask] = None
    return values


def _python_values(values: np.ndarray) -> list:
    # Every column is built from Python-native values (or numeric numpy dtypes), so tolist() is enough.
    return values.tolist()


def _business_hours(stamps: pd.Series, rng: np.random.Generator) -> pd.Series:
    """Day-resolution book timestamps moved to a plausible time of day (08:00-18:00 UTC, to the millisecond)."""
    stamps = pd.to_datetime(stamps, utc=True)
    offset_ms = rng.integers(8 * 3_600_000, 18 * 3_600_000, len(stamps))
    return stamps.dt.floor("D") + pd.to_timedelta(offset_ms, unit="ms")


def _stamps(stamps: pd.Series) -> np.ndarray:
    """UTC timestamps as Salesforce datetime strings, built as fixed-width bytes (no per-value Python)."""
    values = pd.to_datetime(stamps, utc=True).dt.tz_localize(None).to_numpy().astype("datetime64[ms]")
    text = np.datetime_as_string(values, unit="ms").astype("S23")
    out = np.empty(len(text), dtype="S28")
    grid = out.view(np.uint8).reshape(len(text), 28)
    grid[:, :23] = text.view(np.uint8).reshape(len(text), 23)
    grid[:, 23:] = np.frombuffer(b"+0000", dtype=np.uint8)
    return out.astype("U28").astype(object)


def _dates(stamps: pd.Series) -> np.ndarray:
    values = pd.to_datetime(stamps, utc=True).dt.tz_localize(None).to_numpy().astype("datetime64[D]")
    return np.datetime_as_string(values, unit="D").astype(object)


def _dirty_websites(domains: pd.Series, rng: np.random.Generator) -> np.ndarray:
    """Websites as reps type them: bare domains mostly, some with scheme, `www.` or a trailing slash."""
    values = _objects(domains)
    draw = rng.random(len(values))
    present = np.array([v is not None for v in values])
    styles = [(0.20, "https://www.{}"), (0.28, "http://{}/"), (0.33, "www.{}"), (0.36, "https://{}/")]
    lower = 0.0
    for upper, template in styles:
        pick = present & (draw >= lower) & (draw < upper)
        values[pick] = [template.format(v) for v in values[pick]]
        lower = upper
    return values


def _dirty_industries(industries: pd.Series, rng: np.random.Generator) -> np.ndarray:
    """Industry is an unrestricted picklist, so imports leave odd casings behind (`manufacturing`, `RETAIL`)."""
    values = _objects(industries)
    draw = rng.random(len(values))
    present = np.array([v is not None for v in values])
    low = present & (draw < 0.04)
    up = present & (draw >= 0.04) & (draw < 0.06)
    values[low] = [v.lower() for v in values[low]]
    values[up] = [v.upper() for v in values[up]]
    return values
