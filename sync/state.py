"""State: one SQLite file under `state_dir` holding runs, watermarks, what we wrote, and per-record failures.

The nightly job is the only writer. A run holds an exclusive lock (flock on `state_dir/lock`, released by the
kernel if the process dies, even under SIGKILL), so two runs never overlap. Writes to the CRM are bracketed:
values go to `pending` before a batch is sent and move to `written` once the CRM confirms them, so a run
killed in between can tell its own half-finished writes from a person's edits on the next run.

Cursor helpers at the bottom are pure: `>=` on (timestamp, id) with a lookback, capped at the run's start.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from connectors.owned import OWNED_FIELDS

#: One TEXT column per owned field (from the owned-field table), in `written` and `pending`.
_VALUE_COLUMNS = ", ".join(f"{name} TEXT" for name in OWNED_FIELDS)

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
CREATE TABLE IF NOT EXISTS written (
    crm TEXT NOT NULL,
    record_id TEXT NOT NULL,
    {_VALUE_COLUMNS},
    run_id INTEGER,
    written_at TEXT NOT NULL,
    PRIMARY KEY (crm, record_id)
);
CREATE TABLE IF NOT EXISTS pending (
    crm TEXT NOT NULL,
    record_id TEXT NOT NULL,
    {_VALUE_COLUMNS},
    run_id INTEGER,
    PRIMARY KEY (crm, record_id)
);
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
"""


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
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")  # a confirmed CRM write must survive a crash
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
        return self._values("pending", crm, ids)

    def _values(self, table: str, crm: str, ids: Iterable[str] | None) -> pd.DataFrame:
        cols = ", ".join(OWNED_FIELDS)
        frames = []
        if ids is None:
            frames.append(
                pd.read_sql_query(
                    f"SELECT record_id, {cols} FROM {table} WHERE crm = ?", self.conn, params=(crm,)
                )
            )
        else:
            ids = list(ids)
            for start in range(0, len(ids), 900):  # SQLite's bound-parameter limit
                chunk = ids[start : start + 900]
                marks = ",".join("?" * len(chunk))
                frames.append(
                    pd.read_sql_query(
                        f"SELECT record_id, {cols} FROM {table} WHERE crm = ? AND record_id IN ({marks})",
                        self.conn,
                        params=(crm, *chunk),
                    )
                )
        frames = [f for f in frames if len(f)] or frames[:1]
        out = (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(columns=["record_id", *OWNED_FIELDS])
        )
        return out.set_index("record_id").astype("string")

    def mark_pending(self, crm: str, changes: pd.DataFrame, run_id: int) -> None:
        rows = _rows(crm, changes, run_id)
        with self._tx():
            self.conn.executemany(
                f"INSERT OR REPLACE INTO pending (crm, record_id, {', '.join(OWNED_FIELDS)}, run_id) "
                f"VALUES (?, ?, {', '.join('?' * len(OWNED_FIELDS))}, ?)",
                rows,
            )

    def record_written(self, crm: str, changes: pd.DataFrame, run_id: int) -> None:
        """The CRM confirmed these records: they become ours; their pending entries and failures go."""
        now = _iso(pd.Timestamp.now(tz="UTC"))
        rows = [(*r, now) for r in _rows(crm, changes, run_id)]
        ids = [(crm, str(i)) for i in changes.index]
        with self._tx():
            self.conn.executemany(
                f"INSERT OR REPLACE INTO written (crm, record_id, {', '.join(OWNED_FIELDS)}, run_id, written_at) "
                f"VALUES (?, ?, {', '.join('?' * len(OWNED_FIELDS))}, ?, ?)",
                rows,
            )
            self.conn.executemany("DELETE FROM pending WHERE crm = ? AND record_id = ?", ids)
            self.conn.executemany("DELETE FROM failures WHERE crm = ? AND record_id = ?", ids)

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

    # -- failures -----------------------------------------------------------------------------------------
    def record_failures(self, crm: str, failures: pd.DataFrame, run_id: int) -> None:
        """`failures`: index record id, columns code, message. Kept until a later write succeeds."""
        now = _iso(pd.Timestamp.now(tz="UTC"))
        rows = [(crm, str(i), str(r.code), str(r.message), now, now, run_id) for i, r in failures.iterrows()]
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
            self.conn.executemany(
                "DELETE FROM pending WHERE crm = ? AND record_id = ?", [(crm, str(i)) for i in ids]
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


def _rows(crm: str, changes: pd.DataFrame, run_id: int) -> list[tuple]:
    values = changes.reindex(columns=list(OWNED_FIELDS)).astype("string").astype(object)
    values = values.where(values.notna(), None)
    return [
        (crm, str(i), *row, run_id)
        for i, row in zip(values.index, values.itertuples(index=False), strict=True)
    ]


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
