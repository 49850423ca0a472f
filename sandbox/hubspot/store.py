"""SQLite storage behind the HubSpot sandbox: one wide table per object type, property definitions, groups and
deal-company associations, all in the sandbox's shared `Database` under `hs_` table names.

A property is a column (`p_<name>`), so search filters become indexed SQL and a new property is one
`ALTER TABLE ADD COLUMN`; `hs_object_id`, `createdate` and `hs_lastmodifieddate` live in the row's own id and
timestamp columns. Every value reaching SQL is a bound parameter; column names come only from validated
property names.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sandbox.hubspot.properties import (
    CLOSED_STAGES,
    COMPANY_TYPE_VALUES,
    DEAL_STAGE_VALUES,
    ICP_GROUP,
    INDUSTRY_VALUES,
    OBJECT_TYPES,
    VIRTUAL_COLUMNS,
    WON_STAGES,
    PropertyDef,
    icp_properties,
    iso_ms,
    native_groups,
    native_properties,
    render,
)

if TYPE_CHECKING:
    from sandbox.book import Book
    from sandbox.server import Database

# HubSpot ids are large numbers; separate ranges keep a company id from being mistaken for a deal id.
COMPANY_ID_BASE = 20_000_000_000
DEAL_ID_BASE = 40_000_000_000
ID_BASE = {"companies": COMPANY_ID_BASE, "deals": DEAL_ID_BASE}
BASE_COLUMNS = "id, created_ms, updated_ms, archived, archived_ms"


def table(object_type: str) -> str:
    if object_type not in OBJECT_TYPES:
        raise ValueError(f"unknown object type {object_type!r}")
    return f"hs_{object_type}"


def column(name: str) -> str:
    """The SQL expression holding a property; the name was validated against NAME_RE before it got here."""
    if name in VIRTUAL_COLUMNS:
        return VIRTUAL_COLUMNS[name]
    return f'"p_{name}"'


def _affinity(defn: PropertyDef) -> str:
    # NUMERIC turns "1200" into 1200 so comparisons and sorts are numeric; dates are epoch milliseconds.
    return {"number": "NUMERIC", "date": "INTEGER", "datetime": "INTEGER"}.get(defn.type, "TEXT")


class Store:
    """Records and property definitions of both HubSpot object types."""

    def __init__(self, db: Database, *, with_icp_fields: bool = False) -> None:
        self.db = db
        self.defs: dict[str, dict[str, PropertyDef]] = {}
        with db.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS hs_properties (object_type TEXT NOT NULL, name TEXT NOT NULL,"
                " definition TEXT NOT NULL, PRIMARY KEY (object_type, name))"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS hs_property_groups (object_type TEXT NOT NULL, name TEXT NOT NULL,"
                " label TEXT NOT NULL, display_order INTEGER NOT NULL, archived INTEGER NOT NULL DEFAULT 0,"
                " PRIMARY KEY (object_type, name))"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS hs_deal_company (deal_id INTEGER NOT NULL, company_id INTEGER NOT NULL,"
                " PRIMARY KEY (deal_id, company_id)) WITHOUT ROWID"
            )
            conn.execute(
                "CREATE INDEX IF NOT EXISTS hs_deal_company_company ON hs_deal_company (company_id, deal_id)"
            )
            for object_type in OBJECT_TYPES:
                fresh = not conn.execute(
                    "SELECT 1 FROM hs_properties WHERE object_type = ? LIMIT 1", (object_type,)
                ).fetchone()
                if fresh:
                    for name, label, order in native_groups(object_type):
                        self._insert_group(conn, object_type, name, label, order)
                    for defn in native_properties(object_type):
                        self._insert_def(conn, object_type, defn)
                self.defs[object_type] = {
                    row["name"]: PropertyDef.from_json(json.loads(row["definition"]))
                    for row in conn.execute(
                        "SELECT name, definition FROM hs_properties WHERE object_type = ?", (object_type,)
                    )
                }
                cols = ", ".join(
                    f"{column(d.name)} {_affinity(d)}"
                    for d in self.defs[object_type].values()
                    if d.name not in VIRTUAL_COLUMNS
                )
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {table(object_type)} (id INTEGER PRIMARY KEY,"
                    f" created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,"
                    f" archived INTEGER NOT NULL DEFAULT 0, archived_ms INTEGER, {cols})"
                )
                self._ensure_columns(conn, object_type)
            if with_icp_fields and "icp_tier" not in self.defs["companies"]:
                name, label, order = ICP_GROUP
                if not self.group("companies", name):
                    self._insert_group(conn, "companies", name, label, order)
                for defn in icp_properties():
                    if defn.name not in self.defs["companies"]:
                        self._add_def(conn, "companies", defn)

    # -- property definitions -----------------------------------------------------------------------------
    def _insert_def(self, conn, object_type: str, defn: PropertyDef) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO hs_properties (object_type, name, definition) VALUES (?, ?, ?)",
            (object_type, defn.name, json.dumps(defn.to_json())),
        )

    def _insert_group(self, conn, object_type: str, name: str, label: str, order: int) -> None:
        conn.execute(
            "INSERT INTO hs_property_groups (object_type, name, label, display_order) VALUES (?, ?, ?, ?)",
            (object_type, name, label, order),
        )

    def _ensure_columns(self, conn, object_type: str) -> None:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table(object_type)})")}
        for defn in self.defs[object_type].values():
            if defn.name not in VIRTUAL_COLUMNS and f"p_{defn.name}" not in present:
                conn.execute(
                    f"ALTER TABLE {table(object_type)} ADD COLUMN {column(defn.name)} {_affinity(defn)}"
                )

    def _add_def(self, conn, object_type: str, defn: PropertyDef) -> None:
        self._insert_def(conn, object_type, defn)
        # Copy-on-write so request threads reading the old dict never see it change under them.
        self.defs[object_type] = {**self.defs[object_type], defn.name: defn}
        self._ensure_columns(conn, object_type)

    def add_property(self, object_type: str, defn: PropertyDef) -> None:
        with self.db.transaction() as conn:
            self._add_def(conn, object_type, defn)

    def save_property(self, object_type: str, defn: PropertyDef) -> None:
        with self.db.transaction() as conn:
            self._insert_def(conn, object_type, defn)
            self.defs[object_type] = {**self.defs[object_type], defn.name: defn}

    def groups(self, object_type: str, *, archived: bool = False) -> list[dict]:
        with self.db.reading() as conn:
            rows = conn.execute(
                "SELECT name, label, display_order, archived FROM hs_property_groups"
                " WHERE object_type = ? AND archived = ? ORDER BY display_order, name",
                (object_type, int(archived)),
            ).fetchall()
        return [_group_wire(r) for r in rows]

    def group(self, object_type: str, name: str) -> dict | None:
        with self.db.reading() as conn:
            row = conn.execute(
                "SELECT name, label, display_order, archived FROM hs_property_groups"
                " WHERE object_type = ? AND name = ?",
                (object_type, name),
            ).fetchone()
        return _group_wire(row) if row else None

    def save_group(self, object_type: str, name: str, label: str, order: int, *, create: bool) -> None:
        with self.db.transaction() as conn:
            if create:
                self._insert_group(conn, object_type, name, label, order)
            else:
                conn.execute(
                    "UPDATE hs_property_groups SET label = ?, display_order = ? WHERE object_type = ? AND name = ?",
                    (label, order, object_type, name),
                )

    # -- reading records ----------------------------------------------------------------------------------
    def is_empty(self) -> bool:
        with self.db.reading() as conn:
            return conn.execute("SELECT 1 FROM hs_companies LIMIT 1").fetchone() is None

    def select_list(self, names: Iterable[str]) -> str:
        cols = [column(n) for n in names if n not in VIRTUAL_COLUMNS]
        return ", ".join([BASE_COLUMNS, *cols])

    def page(self, object_type: str, names: Sequence[str], *, after: int, limit: int, archived: bool) -> list:
        """`limit` + 1 rows from id `after` on, in id order: the extra row says where the next page starts."""
        sql = (
            f"SELECT {self.select_list(names)} FROM {table(object_type)}"
            " WHERE archived = ? AND id >= ? ORDER BY id LIMIT ?"
        )
        with self.db.reading() as conn:
            return conn.execute(sql, (int(archived), after, limit + 1)).fetchall()

    def fetch(
        self, object_type: str, ids: Sequence[int], names: Sequence[str], *, archived: bool
    ) -> dict[int, object]:
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        sql = f"SELECT {self.select_list(names)} FROM {table(object_type)} WHERE archived = ? AND id IN ({marks})"
        with self.db.reading() as conn:
            return {row["id"]: row for row in conn.execute(sql, (int(archived), *ids))}

    def search(
        self,
        object_type: str,
        names: Sequence[str],
        where: str,
        params: Sequence,
        order: str,
        *,
        limit: int,
        offset: int,
    ) -> tuple[int, list]:
        # `where` and `order` come from sandbox.hubspot.search: column names from the property catalogue,
        # every value a `?` in `params`.
        base = f"FROM {table(object_type)} WHERE archived = 0 AND ({where})"
        with self.db.reading() as conn:
            total = conn.execute(f"SELECT COUNT(*) {base}", params).fetchone()[0]
            rows = conn.execute(
                f"SELECT {self.select_list(names)} {base} ORDER BY {order} LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
        return total, rows

    def to_wire(self, object_type: str, row, names: Sequence[str]) -> dict:
        """A stored row as HubSpot's SimplePublicObject JSON; requested properties without a value are null."""
        defs = self.defs[object_type]
        props = {}
        for name in names:
            key = VIRTUAL_COLUMNS.get(name, f"p_{name}")
            props[name] = render(defs[name].type, row[key])
        body = {
            "id": str(row["id"]),
            "properties": props,
            "createdAt": iso_ms(row["created_ms"]),
            "updatedAt": iso_ms(row["updated_ms"]),
            "archived": bool(row["archived"]),
        }
        if row["archived_ms"] is not None:
            body["archivedAt"] = iso_ms(row["archived_ms"])
        return body

    def associations(self, from_type: str, to_type: str, ids: Sequence[int]) -> dict[int, list[int]]:
        """Live (not archived) associated ids per `from` id, in id order."""
        found: dict[int, list[int]] = {i: [] for i in ids}
        if not ids:
            return found
        src, dst = ("deal_id", "company_id") if from_type == "deals" else ("company_id", "deal_id")
        marks = ", ".join("?" * len(ids))
        sql = (
            f"SELECT a.{src}, a.{dst} FROM hs_deal_company a JOIN {table(to_type)} t ON t.id = a.{dst}"
            f" WHERE t.archived = 0 AND a.{src} IN ({marks}) ORDER BY a.{src}, a.{dst}"
        )
        with self.db.reading() as conn:
            for source, target in conn.execute(sql, tuple(ids)):
                found[source].append(target)
        return found

    # -- writing records ----------------------------------------------------------------------------------
    def update(self, object_type: str, changes: Sequence[tuple[int, dict]], now_ms: int) -> None:
        """Apply validated, stored-form values; every record of one call gets the same `updated_ms`."""
        with self.db.transaction() as conn:
            for record_id, values in changes:
                sets = [f"{column(name)} = ?" for name in values]
                conn.execute(
                    f"UPDATE {table(object_type)} SET {', '.join([*sets, 'updated_ms = ?'])} WHERE id = ?",
                    (*values.values(), now_ms, record_id),
                )

    def archive(self, object_type: str, record_id: int, now_ms: int) -> bool:
        with self.db.transaction() as conn:
            cur = conn.execute(
                f"UPDATE {table(object_type)} SET archived = 1, archived_ms = ?, updated_ms = ?"
                " WHERE id = ? AND archived = 0",
                (now_ms, now_ms, record_id),
            )
            return cur.rowcount == 1

    # -- seeding ------------------------------------------------------------------------------------------
    def seed(self, book: Book) -> None:
        """Load the book: accounts become companies, deals become deals associated with their company."""
        acc, deals = book.accounts, book.deals
        # Book ids become HubSpot ids by position; parent and deal links are looked up, not parsed.
        book_ids = pd.Index(acc["id"].astype(object))
        company_ids = COMPANY_ID_BASE + 1 + np.arange(len(acc), dtype=np.int64)
        parents = book_ids.get_indexer(acc["parent_id"].astype(object))
        companies = {
            "id": company_ids,
            "created_ms": _epoch_ms(acc["created_at"]),
            "updated_ms": _epoch_ms(acc["modified_at"]),
            "name": acc["name"],
            "domain": acc["domain"],
            "industry": acc["industry"].map({k: v for k, (v, _) in INDUSTRY_VALUES.items()}),
            "numberofemployees": acc["employees"],
            "annualrevenue": acc["annual_revenue"].round().astype("Int64"),
            "country": acc["country"],
            "state": acc["state"],
            "city": acc["city"],
            "hs_parent_company_id": np.where(parents >= 0, parents + COMPANY_ID_BASE + 1, np.nan),
            "type": acc["account_type"].map(COMPANY_TYPE_VALUES),
        }
        stage = deals["stage"].map(DEAL_STAGE_VALUES)
        created = _epoch_ms(deals["created_at"])
        closed = _epoch_ms(deals["closed_at"])
        deal_rows = {
            "id": DEAL_ID_BASE + 1 + np.arange(len(deals), dtype=np.int64),
            "created_ms": created,
            "updated_ms": np.where(pd.isna(closed), created, np.fmax(created, closed)).astype(np.int64),
            "dealname": deals["name"],
            "amount": deals["amount"].round().astype("Int64"),
            "dealstage": stage,
            "pipeline": np.full(len(deals), "default", dtype=object),
            "closedate": closed,
            "hs_is_closed_won": np.where(stage.isin(WON_STAGES), "true", "false"),
            "hs_is_closed": np.where(stage.isin(CLOSED_STAGES), "true", "false"),
            "lead_source": deals["lead_source"],
        }
        owners = book_ids.get_indexer(deals["account_id"].astype(object))
        keep = owners >= 0
        links = np.column_stack([deal_rows["id"][keep], COMPANY_ID_BASE + 1 + owners[keep]]).tolist()
        with self.db.transaction() as conn:
            for object_type, data in (("companies", companies), ("deals", deal_rows)):
                conn.execute(f"DROP INDEX IF EXISTS {table(object_type)}_modified")
                names = list(data)
                cols = ", ".join(c if c in ("id", "created_ms", "updated_ms") else column(c) for c in names)
                marks = ", ".join("?" * len(names))
                conn.executemany(
                    f"INSERT INTO {table(object_type)} ({cols}) VALUES ({marks})",
                    zip(*(_python_values(v) for v in data.values()), strict=True),
                )
            conn.executemany(
                "INSERT OR IGNORE INTO hs_deal_company (deal_id, company_id) VALUES (?, ?)", links
            )
            self._ensure_indexes(conn)

    def _ensure_indexes(self, conn) -> None:
        # Incremental pulls search `hs_lastmodifieddate >= ?` sorted by it and then id: one index range scan.
        # `archived` stays out of the index: with it leading, SQLite would answer every other search by
        # walking the index and fetching each row by id, ten times slower than scanning the table.
        for object_type in OBJECT_TYPES:
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {table(object_type)}_modified ON {table(object_type)} (updated_ms, id)"
            )


def _group_wire(row) -> dict:
    return {
        "name": row["name"],
        "label": row["label"],
        "displayOrder": row["display_order"],
        "archived": bool(row["archived"]),
    }


def _epoch_ms(values: pd.Series) -> np.ndarray:
    """UTC timestamps as epoch ms in a float array (NaN for NaT), so missing dates survive to None."""
    as_ms = values.to_numpy(dtype="datetime64[ms]")
    out = as_ms.astype(np.int64).astype(np.float64)
    out[np.isnat(as_ms)] = np.nan
    return out


def _python_values(values) -> list:
    """A column as plain Python values with None for missing: what sqlite3 binds fastest."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        # Epoch milliseconds and ids carried as floats only so that NaN can mark "missing".
        mask = np.isnan(values)
        out = np.nan_to_num(values, nan=0.0).astype(np.int64).astype(object)
        out[mask] = None
        return out.tolist()
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return values.tolist()
    series = pd.Series(values)
    return series.astype(object).where(series.notna(), None).tolist()
