"""State: one SQLite file under `state_dir` holding runs, watermarks, what we wrote, and per-record failures.

The nightly job is the only writer. A run holds an exclusive lock (flock on `state_dir/lock`, released by the
kernel if the process dies, even under SIGKILL), so two runs never overlap. Writes to the CRM are bracketed:
values go to `pending` before a batch is sent and move to `written` once the CRM confirms them, so a run
killed in between can tell its own half-finished writes from a person's edits on the next run.

Cursor helpers at the bottom are pure: `>=` on (timestamp, id) with a lookback, capped at the run's start.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np
import pandas as pd

from connectors.owned import OWNED_FIELDS

#: The layout this code reads and writes (`PRAGMA user_version`); an older file is migrated when opened.
#: 0: owned values as text in every `written` and `pending` row (rowid tables). 1: each distinct value once, in
#: `owned_values`, referred to by id from WITHOUT ROWID `written` and `pending` tables.
SCHEMA_VERSION = 1

#: One column per owned field (from the owned-field table), in `written` and `pending`: the id of the value in
#: `owned_values`, NULL for none. A nightly run writes a few thousand distinct values on a million records (the
#: reasons are one text per combination of attribute outcomes), so a `written` row takes ~96 bytes instead of
#: ~330 with the text in it (docs/architecture.md, "State", has the measurements).
_VALUE_COLUMNS = ", ".join(f"{name} INTEGER" for name in OWNED_FIELDS)

#: `owned_values` is found by `digest`, a 64-bit hash of the text, so its index holds 16 bytes a value, not the
#: text again; a value is always compared with the text stored under its digest (`_value_ids`), never assumed.
_VALUE_TABLES = f"""
CREATE TABLE IF NOT EXISTS owned_values (
    id INTEGER PRIMARY KEY,
    digest INTEGER NOT NULL UNIQUE,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS written (
    crm TEXT NOT NULL,
    record_id TEXT NOT NULL,
    {_VALUE_COLUMNS},
    run_id INTEGER,
    written_at TEXT NOT NULL,
    PRIMARY KEY (crm, record_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    crm TEXT NOT NULL,
    record_id TEXT NOT NULL,
    {_VALUE_COLUMNS},
    run_id INTEGER,
    PRIMARY KEY (crm, record_id)
) WITHOUT ROWID;
"""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    crm TEXT NOT NULL,
    mode TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL DEFAULT 'running',
    summary TEXT
);
CREATE TABLE IF NOT EXISTS watermarks (
    crm TEXT NOT NULL,
    object TEXT NOT NULL,
    ts TEXT NOT NULL,
    last_id TEXT NOT NULL DEFAULT '',
    fingerprint TEXT NOT NULL DEFAULT '',
    run_id INTEGER,
    PRIMARY KEY (crm, object)
);
{_VALUE_TABLES}
CREATE TABLE IF NOT EXISTS failures (
    crm TEXT NOT NULL,
    record_id TEXT NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    first_failed_at TEXT NOT NULL,
    last_failed_at TEXT NOT NULL,
    run_id INTEGER,
    PRIMARY KEY (crm, record_id)
);
CREATE TABLE IF NOT EXISTS bulk_jobs (
    crm TEXT NOT NULL,
    job_id TEXT NOT NULL,
    run_id INTEGER,
    started_at TEXT NOT NULL,
    PRIMARY KEY (crm, job_id)
);
CREATE TABLE IF NOT EXISTS recheck (
    crm TEXT NOT NULL,
    record_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    PRIMARY KEY (crm, record_id)
);
"""

#: Rows a multi-row INSERT sends at once: 128 x 7 parameters stay under SQLite's oldest limit of 999.
_ROWS_PER_INSERT = 128

#: Per connection: the record ids and the new values one set-based statement works on.
_TEMP_TABLES = f"""
CREATE TEMP TABLE IF NOT EXISTS record_ids (id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS record_values (id TEXT PRIMARY KEY, {_VALUE_COLUMNS}) WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS new_values (pos INTEGER PRIMARY KEY, digest INTEGER NOT NULL, value TEXT NOT NULL);
"""


@dataclass
class _Marked:
    """Values `pending` holds for `crm` (see `State._still_pending`), and their ids in key order, once known."""

    crm: str
    values: pd.DataFrame
    sorted_ids: np.ndarray | None = None
    order: np.ndarray | None = None

    def sorted_subset(self, where: np.ndarray) -> list[str]:
        """The ids at positions `where` of `values`, in key order, without sorting them again."""
        if self.sorted_ids is None:
            ids, self.order = _sorted_ids(self.values.index)
            self.sorted_ids = np.asarray(ids, dtype=object)
        chosen = np.zeros(len(self.values), dtype=bool)
        chosen[where] = True
        return self.sorted_ids[chosen[self.order]].tolist()


class StateLocked(Exception):
    """Another run holds the lock on this state directory."""


class StateUnusable(Exception):
    """The state file cannot be read or written (damaged, read-only, a directory in its place ...)."""


@dataclass(frozen=True)
class Watermark:
    ts: pd.Timestamp
    last_id: str = ""
    fingerprint: str = ""


class State:
    """The state database of one config; use `with State.open(dir) as state:` to hold the run lock."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / "state.sqlite"
        self._lock_fd: int | None = None
        self._marked: _Marked | None = None  # see `_still_pending`
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")  # a confirmed CRM write must survive a crash
            self.conn.execute("PRAGMA temp_store=MEMORY")  # the id lists of set-based statements
            # A whole book is booked in one transaction: room for its B-trees beside SQLite's default 2 MB
            # page cache, and a WAL cut back to 64 MB once checkpointed, not left at the size of the largest
            # transaction (a 1M first run: 316 MB of database and WAL while open, 227 MB with the limit).
            self.conn.execute("PRAGMA cache_size=-65536")
            self.conn.execute("PRAGMA temp.cache_size=-262144")
            self.conn.execute("PRAGMA journal_size_limit=67108864")
            self.conn.executescript(_TEMP_TABLES)
            self._migrate()
            self.conn.executescript(SCHEMA)
            self.conn.execute(
                "SELECT count(*) FROM runs"
            ).fetchone()  # reads a page: a damaged file fails here
        except (sqlite3.Error, OSError) as exc:
            raise StateUnusable(_unusable(self.path, exc)) from None

    @classmethod
    @contextmanager
    def open(cls, directory: str | Path, *, lock: bool = True):
        state = cls(directory)
        try:
            if lock:
                state.acquire()
            yield state
        except sqlite3.Error as exc:  # e.g. a file that turned read-only or was damaged while in use
            raise StateUnusable(_unusable(state.path, exc)) from None
        finally:
            state.close()

    # -- lock ---------------------------------------------------------------------------------------------
    def acquire(self) -> None:
        try:
            fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateUnusable(_unusable(self.directory / "lock", exc)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateLocked(
                f"another icp run holds the lock on {self.directory} (pid in {self.directory / 'lock'}); "
                "wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
        self._marked = None
        self.conn.close()

    # -- runs ---------------------------------------------------------------------------------------------
    def start_run(self, crm: str, mode: str, started_at: pd.Timestamp) -> int:
        cur = self.conn.execute(
            "INSERT INTO runs (crm, mode, started_at) VALUES (?, ?, ?)", (crm, mode, _iso(started_at))
        )
        return int(cur.lastrowid)

    def finish_run(self, run_id: int, status: str, summary: dict) -> None:
        self.conn.execute(
            "UPDATE runs SET finished_at = ?, status = ?, summary = ? WHERE id = ?",
            (_iso(pd.Timestamp.now(tz="UTC")), status, json.dumps(summary, default=str), run_id),
        )

    def runs(self, limit: int = 20) -> list[dict]:
        rows = self.conn.execute(
            "SELECT id, crm, mode, started_at, finished_at, status, summary FROM runs ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        keys = ("id", "crm", "mode", "started_at", "finished_at", "status", "summary")
        out = []
        for row in rows:
            item = dict(zip(keys, row, strict=True))
            item["summary"] = json.loads(item["summary"]) if item["summary"] else None
            out.append(item)
        return out

    # -- watermarks ---------------------------------------------------------------------------------------
    def watermark(self, crm: str, obj: str = "accounts") -> Watermark | None:
        row = self.conn.execute(
            "SELECT ts, last_id, fingerprint FROM watermarks WHERE crm = ? AND object = ?", (crm, obj)
        ).fetchone()
        return Watermark(pd.Timestamp(row[0]), row[1], row[2]) if row else None

    def set_watermark(self, crm: str, mark: Watermark, run_id: int, obj: str = "accounts") -> None:
        self.conn.execute(
            "INSERT INTO watermarks (crm, object, ts, last_id, fingerprint, run_id) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (crm, object) DO UPDATE SET ts = excluded.ts, last_id = excluded.last_id, "
            "fingerprint = excluded.fingerprint, run_id = excluded.run_id",
            (crm, obj, _iso(mark.ts), mark.last_id, mark.fingerprint, run_id),
        )

    # -- what we wrote ------------------------------------------------------------------------------------
    def has_history(self, crm: str) -> bool:
        """Whether this state knows anything of its writes to `crm`: a watermark, a written or pending value.
        A new, lost or truncated state file knows none."""
        return any(
            self.conn.execute(f"SELECT 1 FROM {table} WHERE crm = ? LIMIT 1", (crm,)).fetchone()
            for table in ("watermarks", "written", "pending")
        )

    def last_written(self, crm: str, ids: Iterable[str] | None = None) -> pd.DataFrame:
        return self._values("written", crm, ids)

    def pending(self, crm: str, ids: Iterable[str] | None = None) -> pd.DataFrame:
        values = self._values("pending", crm, ids)
        self._marked = _Marked(crm, values.copy())  # what `pending` holds: settling a job books exactly these
        return values

    def _values(self, table: str, crm: str, ids: Iterable[str] | None) -> pd.DataFrame:
        # One JSON array per column, not a Python tuple per row: a 1M-record read in 3.9 s instead of 6.4 s.
        cols = ", ".join(f"json_group_array(t.{name})" for name in ("record_id", *OWNED_FIELDS))
        if ids is None:
            row = self.conn.execute(f"SELECT {cols} FROM {table} t WHERE t.crm = ?", (crm,)).fetchone()
        else:
            ids = list(ids)
            if len(ids) <= 900:  # SQLite's bound-parameter limit; a Collections batch, a small settle
                marks = ",".join("?" * len(ids))
                sql = f"SELECT {cols} FROM {table} t WHERE t.crm = ? AND t.record_id IN ({marks})"
                row = self.conn.execute(sql, (crm, *(str(i) for i in ids))).fetchone()
            else:  # the whole book's ids: one join instead of a query per 900
                with self._savepoint():
                    self._load_ids(ids)
                    row = self.conn.execute(
                        f"SELECT {cols} FROM temp.record_ids i JOIN {table} t ON t.crm = ? AND t.record_id = i.id",
                        (crm,),
                    ).fetchone()
        return self._decode([json.loads(column) for column in row])

    def mark_pending(self, crm: str, changes: pd.DataFrame, run_id: int) -> None:
        """These values are about to be sent (committed before the batch leaves): a run killed before their
        outcome is booked leaves them for the next run to recognise as its own."""
        self._marked = None
        with self._tx():
            ids, order = self._store("pending", crm, changes, run_id)
        # a copy: the caller's frame may change before its outcome is booked, `pending` does not
        self._marked = _Marked(crm, changes.copy(), np.asarray(ids, dtype=object), order)

    def record_written(self, crm: str, changes: pd.DataFrame, run_id: int) -> None:
        """The CRM confirmed these records: they become ours; their pending entries and failures go.

        Most often they are what was just marked pending (or read from it, when settling a dead run's job):
        then their rows are copied from `pending` in SQLite instead of being encoded and sent again (1M
        records: 6.3 s -> 4.2 s in benchmarks/state_bench.py)."""
        fields = ", ".join(OWNED_FIELDS)
        written_at = _iso(pd.Timestamp.now(tz="UTC"))
        with self._tx():
            ids = "temp.record_ids"
            copied = False
            where = self._still_pending(crm, changes)
            if where is not None:
                self._load_sorted_ids(self._marked.sorted_subset(where))
                copied = self.conn.execute(
                    f"INSERT OR REPLACE INTO written (crm, record_id, {fields}, run_id, written_at) "
                    f"SELECT p.crm, p.record_id, {', '.join(f'p.{f}' for f in OWNED_FIELDS)}, ?, ? "
                    "FROM temp.record_ids i JOIN pending p ON p.crm = ? AND p.record_id = i.id",
                    (run_id, written_at, crm),
                ).rowcount == len(changes)  # not if a record's pending row went meanwhile
            if not copied:
                self._store("written", crm, changes, run_id, written_at=written_at)
                ids = "temp.record_values"  # holds the ids `_store` just wrote
            for table in ("pending", "failures"):
                self.conn.execute(
                    f"DELETE FROM {table} WHERE crm = ? AND record_id IN (SELECT id FROM {ids})", (crm,)
                )

    def _still_pending(self, crm: str, changes: pd.DataFrame) -> np.ndarray | None:
        """Whether `pending` holds exactly `changes` (as text), known without reading it back: they are the
        values of the last `mark_pending` or `pending` call, and nothing has written `pending` since, only
        deleted from it (which the copy's row count catches). Only for string and integer columns, whose
        equal values are equal text; anything else is encoded afresh. Returns the positions of `changes`'
        records in those values, or None."""
        if self._marked is None or self._marked.crm != crm or not len(changes):
            return None
        marked = self._marked.values
        fields = [f for f in OWNED_FIELDS if f in changes.columns]
        if fields != [f for f in OWNED_FIELDS if f in marked.columns]:
            return None
        if not (changes.index.is_unique and marked.index.is_unique):
            return None
        where = marked.index.get_indexer(changes.index)
        if (where < 0).any():
            return None
        for name in fields:
            dtype = changes[name].dtype
            exact = not pd.api.types.is_object_dtype(dtype) and (
                pd.api.types.is_string_dtype(dtype) or pd.api.types.is_integer_dtype(dtype)
            )
            there = pd.Series(marked[name].array.take(where), index=changes.index)
            if not exact or not changes[name].equals(there):
                return None
        return where

    def adopt_pending(self, crm: str, live: pd.DataFrame, run_id: int) -> int:
        """Pending writes the CRM holds (a run stopped after the CRM accepted them) become written; the rest go."""
        from sync.plan import COMPARED_FIELDS, normalise

        pend = self.pending(crm)
        if pend.empty:
            return 0
        live = live.reindex(pend.index)
        same = ~(normalise(pend).fillna("\0") != normalise(live).fillna("\0"))[list(COMPARED_FIELDS)].any(
            axis=1
        )
        confirmed = pend[same.to_numpy()]
        if len(confirmed):
            self.record_written(crm, confirmed, run_id)
        with self._tx():
            self.conn.execute("DELETE FROM pending WHERE crm = ?", (crm,))
        return len(confirmed)

    # -- how values are stored -----------------------------------------------------------------------------
    def _migrate(self) -> None:
        """Bring a file of an older layout (`SCHEMA_VERSION`) to this one, in one transaction: a failure or a
        kill leaves it as it was, to be migrated on the next open. Then the file is compacted (the old tables'
        pages, ~700 MB for 1M records, are free): a VACUUM killed halfway leaves it migrated, only larger."""
        if self.conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        self._migrate_tables()
        if self.conn.execute("PRAGMA freelist_count").fetchone()[0]:
            self.conn.execute("VACUUM")

    def _migrate_tables(self) -> None:
        with self._tx():
            if self.conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return  # another process migrated it while we waited for the write lock
            tables = {
                name
                for (name,) in self.conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('written', 'pending')"
                )
            }
            for name in tables:  # version 0: values as text
                self.conn.execute(f"ALTER TABLE {name} RENAME TO {name}_v0")
            for statement in _VALUE_TABLES.split(";"):
                if statement.strip():
                    self.conn.execute(statement)
            fields = ", ".join(OWNED_FIELDS)
            for name in sorted(tables):
                extra = ["run_id", "written_at"] if name == "written" else ["run_id"]
                for (crm,) in self.conn.execute(f"SELECT DISTINCT crm FROM {name}_v0").fetchall():
                    rows = self.conn.execute(
                        f"SELECT record_id, {fields} FROM {name}_v0 WHERE crm = ?", (crm,)
                    ).fetchall()
                    values = pd.DataFrame(
                        [r[1:] for r in rows],
                        index=[r[0] for r in rows],
                        columns=list(OWNED_FIELDS),
                        dtype="string",
                    )
                    self._load_values(values)
                    kept = ", ".join(f"o.{c}" for c in extra)
                    self.conn.execute(
                        f"INSERT INTO {name} (crm, record_id, {fields}, {', '.join(extra)}) "
                        f"SELECT o.crm, r.id, {', '.join(f'r.{f}' for f in OWNED_FIELDS)}, {kept} "
                        f"FROM temp.record_values r JOIN {name}_v0 o ON o.crm = ? AND o.record_id = r.id",
                        (crm,),
                    )
                self.conn.execute(f"DROP TABLE {name}_v0")
            self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _store(
        self, table: str, crm: str, values: pd.DataFrame, run_id: int, written_at: str | None = None
    ) -> tuple[list[str], np.ndarray]:
        """INSERT OR REPLACE `values` (index record id, the owned fields) into `table`, by value id, through
        temp.record_values (which then holds these ids). Inside a transaction. Returns `_sorted_ids`."""
        ids, order = self._load_values(values)
        fields = ", ".join(OWNED_FIELDS)
        extra, params = (
            (", written_at", (crm, run_id, written_at)) if table == "written" else ("", (crm, run_id))
        )
        self.conn.execute(
            f"INSERT OR REPLACE INTO {table} (crm, record_id, {fields}, run_id{extra}) "
            f"SELECT ?, id, {fields}, ?{', ?' if extra else ''} FROM temp.record_values",
            params,
        )
        return ids, order

    def _load_values(self, values: pd.DataFrame) -> tuple[list[str], np.ndarray]:
        """Fill temp.record_values with `values` as value ids, built column by column, sorted by id: a B-tree
        filled in key order appends to full pages, in random order it splits them (measured on 1M ids: 3x
        slower), and the tables it is copied into are then filled in key order too."""
        self.conn.execute("DELETE FROM temp.record_values")
        ids, order = _sorted_ids(values.index)
        if not len(values):
            return ids, order
        # The parameters of all rows in one flat array, sent _ROWS_PER_INSERT rows a statement: measured twice
        # as fast as a statement per row (executemany's cost is per execution, not per parameter).
        width = 1 + len(OWNED_FIELDS)
        flat = np.empty(len(ids) * width, dtype=object)
        flat[0::width] = ids
        for i, name in enumerate(OWNED_FIELDS, start=1):
            flat[i::width] = self._value_ids(values[name])[order] if name in values.columns else None
        insert = f"INSERT OR REPLACE INTO temp.record_values (id, {', '.join(OWNED_FIELDS)}) VALUES "
        row = f"({', '.join('?' * width)})"
        step = _ROWS_PER_INSERT * width
        full = len(flat) // step * step
        self.conn.executemany(
            insert + ", ".join([row] * _ROWS_PER_INSERT),
            (flat[start : start + step].tolist() for start in range(0, full, step)),
        )
        if full < len(flat):
            self.conn.execute(insert + ", ".join([row] * ((len(flat) - full) // width)), flat[full:].tolist())
        return ids, order

    def _value_ids(self, column: pd.Series) -> np.ndarray:
        """The id in `owned_values` of each value of `column` (None where missing), adding the new ones.
        Values are kept as text, as they always were ("80" for a fit score of 80)."""
        codes, texts = _factorize(column)
        self.conn.execute("DELETE FROM temp.new_values")
        self.conn.executemany(
            "INSERT INTO temp.new_values (pos, digest, value) VALUES (?, ?, ?)",
            ((pos, _digest(text), text) for pos, text in enumerate(texts)),
        )
        self.conn.execute(
            "INSERT OR IGNORE INTO owned_values (digest, value) SELECT digest, value FROM temp.new_values"
        )
        found = self.conn.execute(
            "SELECT n.pos, v.id, v.value = n.value FROM temp.new_values n JOIN owned_values v ON v.digest = n.digest"
        ).fetchall()
        if not all(same for _, _, same in found):  # two texts, one 64-bit digest: refuse, never swap them
            raise sqlite3.IntegrityError("two owned values have the same digest")
        ids = np.empty(len(texts) + 1, dtype=object)  # the last one, None, for code -1 (missing)
        for pos, value_id, _ in found:
            ids[pos] = value_id
        return ids[codes]

    def _decode(self, columns: list[list]) -> pd.DataFrame:
        """[record ids, value ids per owned field] -> values frame (index record_id, string columns)."""
        record_ids, *value_ids = columns
        codes = [np.array(col, dtype=np.float64) for col in value_ids]  # None -> NaN; ids are far below 2**53
        wanted = np.unique(np.concatenate([c[~np.isnan(c)] for c in codes] or [np.array([])]))
        if len(wanted) <= 900:
            marks = ",".join("?" * len(wanted))
            known = self.conn.execute(
                f"SELECT id, value FROM owned_values WHERE id IN ({marks})", [int(w) for w in wanted]
            ).fetchall()
        else:
            known = self.conn.execute("SELECT id, value FROM owned_values").fetchall()
        keys = pd.Index(np.array([k for k, _ in known], dtype=np.int64))
        texts = np.array([v for _, v in known] + [None], dtype=object)  # position -1: missing
        out = {}
        for name, col in zip(OWNED_FIELDS, codes, strict=True):
            missing = np.isnan(col)
            pos = keys.get_indexer(np.where(missing, 0, col).astype(np.int64))
            pos[missing] = -1
            out[name] = pd.array(texts[pos], dtype="string")
        return pd.DataFrame(out, index=pd.Index(record_ids, name="record_id", dtype=object))

    def _load_ids(self, ids: Iterable) -> None:
        """Fill temp.record_ids with `ids` for one set-based statement (inside a transaction or savepoint)."""
        self._load_sorted_ids(_sorted_ids(ids)[0])

    def _load_sorted_ids(self, ids: list[str]) -> None:
        self.conn.execute("DELETE FROM temp.record_ids")
        self.conn.execute(  # one JSON array, not a bound row per id: measured 4x faster than executemany
            "INSERT OR IGNORE INTO temp.record_ids (id) SELECT value FROM json_each(?)", (json.dumps(ids),)
        )

    @contextmanager
    def _savepoint(self):
        """A transaction that also nests in one (`_tx`): for the temp tables a read fills."""
        self.conn.execute("SAVEPOINT reading")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK TO reading")
            self.conn.execute("RELEASE reading")
            raise
        self.conn.execute("RELEASE reading")

    # -- failures -----------------------------------------------------------------------------------------
    def record_failures(self, crm: str, failures: pd.DataFrame, run_id: int) -> None:
        """`failures`: index record id, columns code, message. Kept until a later write succeeds."""
        now = _iso(pd.Timestamp.now(tz="UTC"))
        rows = zip(
            repeat(crm),
            [str(i) for i in failures.index],
            [str(c) for c in failures["code"]],
            [str(m) for m in failures["message"]],
            repeat(now),
            repeat(now),
            repeat(run_id),
            strict=False,  # the constant columns repeat without end
        )
        with self._tx():
            self.conn.executemany(
                "INSERT INTO failures (crm, record_id, code, message, first_failed_at, last_failed_at, run_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (crm, record_id) DO UPDATE SET code = excluded.code, "
                "message = excluded.message, attempts = attempts + 1, last_failed_at = excluded.last_failed_at, "
                "run_id = excluded.run_id",
                rows,
            )

    def failures(self, crm: str) -> pd.DataFrame:
        return pd.read_sql_query(
            "SELECT record_id, code, message, attempts, first_failed_at, last_failed_at FROM failures "
            "WHERE crm = ? ORDER BY record_id",
            self.conn,
            params=(crm,),
        ).set_index("record_id")

    # -- server-side write jobs (Bulk API 2.0) ------------------------------------------------------------
    def record_bulk_job(self, crm: str, job_id: str, run_id: int) -> None:
        """A write job was created and is about to get its records: kept (committed) before the upload, so
        a run that dies while the job runs on leaves its id for the next run to settle."""
        self.conn.execute(
            "INSERT OR REPLACE INTO bulk_jobs (crm, job_id, run_id, started_at) VALUES (?, ?, ?, ?)",
            (crm, job_id, run_id, _iso(pd.Timestamp.now(tz="UTC"))),
        )

    def open_bulk_jobs(self, crm: str) -> list[str]:
        """Jobs whose results are not booked yet, oldest first (at a run's start: those a dead run left)."""
        rows = self.conn.execute(
            "SELECT job_id FROM bulk_jobs WHERE crm = ? ORDER BY started_at, rowid", (crm,)
        ).fetchall()
        return [r[0] for r in rows]

    def forget_bulk_job(self, crm: str, job_id: str) -> None:
        """The job's results are booked."""
        self.conn.execute("DELETE FROM bulk_jobs WHERE crm = ? AND job_id = ?", (crm, job_id))

    def drop_pending(self, crm: str, ids: Iterable[str]) -> None:
        """These records are not being written after all (a job never reached them, or rejected them)."""
        with self._tx():
            self._load_ids(ids)
            self.conn.execute(
                "DELETE FROM pending WHERE crm = ? AND record_id IN (SELECT id FROM temp.record_ids)", (crm,)
            )

    @contextmanager
    def _tx(self):
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- records to pull again by id (incremental pulls that skip our own writes) ---------------------------
    # An incremental pull that leaves out records whose last change is ours sees the last writer only: a
    # person's change that one of our writes then covered would hide behind it. A run that sees such a record
    # (someone touched it between our pull and our write) keeps its id here before writing; the next
    # incremental run pulls these by id and forgets them in the transaction that advances its watermark, so
    # a run that dies keeps them (docs/architecture.md, "Incremental pulls").
    def add_recheck(self, crm: str, ids: Iterable[str], run_id: int, reason: str) -> int:
        """Keep `ids` (committed) for the next incremental run to pull by id; returns how many."""
        rows = [(crm, str(i), reason, run_id) for i in dict.fromkeys(ids)]
        if rows:
            with self._tx():
                self.conn.executemany(
                    "INSERT INTO recheck (crm, record_id, reason, run_id) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (crm, record_id) DO UPDATE SET reason = excluded.reason, run_id = excluded.run_id",
                    rows,
                )
        return len(rows)

    def recheck_ids(self, crm: str) -> list[str]:
        """The ids earlier runs left to pull by id, in id order."""
        rows = self.conn.execute(
            "SELECT record_id FROM recheck WHERE crm = ? ORDER BY record_id", (crm,)
        ).fetchall()
        return [r[0] for r in rows]

    def finish_recheck(self, crm: str, run_id: int, mark: Watermark | None = None) -> None:
        """Run `run_id` pulled and processed every id earlier runs left: they go, in one transaction with
        its new watermark (if any). Ids this run added itself stay for the next run."""
        with self._tx():
            if mark is not None:
                self.set_watermark(crm, mark, run_id)
            self.conn.execute("DELETE FROM recheck WHERE crm = ? AND run_id < ?", (crm, run_id))


def _unusable(path: Path, exc: BaseException) -> str:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in reason or "malformed" in reason:
        advice = (
            "it is damaged. Move it aside (keep it for support) and rerun: the run then stops and asks "
            "whether the values in the CRM are icp-sync's (--adopt-live) or reps' edits (--keep-live)"
        )
    elif "readonly" in reason.replace("-", "").replace(" ", "") or "permission" in reason.lower():
        advice = (
            "it is read-only for this user: give the user running icp write access to the file and its folder"
        )
    else:
        advice = "check the path, the disk and the permissions ([icp] state_dir or ICP_STATE_DIR)"
    return f"cannot use the state file {path} ({reason}): {advice}"


def _sorted_ids(index: Iterable) -> tuple[list[str], np.ndarray]:
    """Record ids as text in SQLite's order (code point order, which UTF-8 bytes keep), and the positions that
    sort them. NumPy sorts fixed-width text faster than Python sorts str objects; the order only makes the
    B-tree inserts cheaper, a different one would still be correct."""
    ids = (
        pd.Index(list(index) if not isinstance(index, pd.Index) else index).astype(str).to_numpy(dtype=object)
    )
    try:  # bytes compare as SQLite does (memcmp) and sort faster than 4-byte code points
        keys = np.array(ids.tolist(), dtype="S")
    except UnicodeEncodeError:
        keys = np.array(ids.tolist(), dtype="U")
    order = np.argsort(keys, kind="stable")
    return ids[order].tolist(), order


def _factorize(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes (-1 for missing) and the distinct values as text, in order of appearance. A dict of the values
    themselves, not pandas' factorize: that hashes each long text anew, a Python str keeps its hash, and
    the scorer's reasons are a few thousand str objects repeated (measured 2-3x faster on 1M reasons)."""
    values = column.to_numpy(dtype=object)
    missing = np.asarray(column.isna())
    if missing.any():
        values = values.copy()
        values[missing] = None
    distinct = dict.fromkeys(values)
    distinct.pop(None, None)
    position = {value: i for i, value in enumerate(distinct)}
    position[None] = -1
    codes = np.fromiter(map(position.__getitem__, values), dtype=np.int64, count=len(values))
    return codes, [str(value) for value in distinct]


def _digest(text: str) -> int:
    """`owned_values.digest` of a value: a signed 64-bit hash of its text."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


def _iso(ts: pd.Timestamp) -> str:
    ts = pd.Timestamp(ts)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.isoformat()


# ---------------------------------------------------------------------------------------------------------
# Cursor logic (pure).


def pull_since(mark: Watermark | None, lookback: pd.Timedelta) -> pd.Timestamp | None:
    """Where an incremental pull starts: the watermark minus the lookback, compared with `>=` (never `>`,
    which drops records sharing the watermark's timestamp). None means a full pull."""
    return None if mark is None else mark.ts - lookback


def next_watermark(
    modstamps: pd.Series,
    ids: pd.Series,
    run_started_at: pd.Timestamp,
    previous: Watermark | None,
    fingerprint: str,
) -> Watermark:
    """The highest (modstamp, id) pulled, capped at the run's start (a clock ahead of ours, or a record
    written while we pulled, must not push the cursor past what we have seen); never moves backwards."""
    cap = pd.Timestamp(run_started_at)
    if len(modstamps):
        ts = pd.to_datetime(modstamps, utc=True)
        order = pd.DataFrame({"ts": ts.to_numpy(), "id": ids.astype(str).to_numpy()}).sort_values(
            ["ts", "id"]
        )
        top_ts, top_id = order.iloc[-1]["ts"], order.iloc[-1]["id"]
        top_ts = pd.Timestamp(top_ts)
        if top_ts > cap:
            top_ts, top_id = cap, ""
    else:
        top_ts, top_id = (previous.ts, previous.last_id) if previous else (cap, "")
    if previous is not None and (previous.ts, previous.last_id) > (top_ts, top_id):
        top_ts, top_id = previous.ts, previous.last_id
    return Watermark(pd.Timestamp(top_ts), str(top_id), fingerprint)
