"""sync.state on a real SQLite file: the run lock, written/pending values, failures, the cursor helpers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pandas as pd
import pytest

from sync.plan import OWNED_FIELDS
from sync.state import (
    SCHEMA_VERSION,
    State,
    StateLocked,
    StateUnusable,
    Watermark,
    next_watermark,
    pull_since,
)


def values(**rows):
    df = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=list(OWNED_FIELDS))
    return df


def test_a_second_run_cannot_take_the_lock(tmp_path):
    with State.open(tmp_path), pytest.raises(StateLocked, match="another icp run"), State.open(tmp_path):
        pass
    with State.open(tmp_path):  # released on exit
        pass


def test_the_lock_is_held_across_processes(tmp_path):
    code = (
        "import sys; from sync.state import State, StateLocked\n"
        "try:\n    State.open(sys.argv[1]).__enter__()\nexcept StateLocked:\n    sys.exit(7)\n"
    )
    with State.open(tmp_path):
        other = subprocess.run([sys.executable, "-c", code, str(tmp_path)])
        assert other.returncode == 7
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)]).returncode == 0


def test_written_values_round_trip_and_clear_pending_and_failures(tmp_path):
    with State.open(tmp_path) as st:
        run = st.start_run("sandbox", "full", pd.Timestamp.now(tz="UTC"))
        changes = values(
            a={"segment": "SMB", "fit_score": 80, "tier": "A", "reasons": "r", "scored_at": "t", "model": "m"}
        )
        st.mark_pending("sandbox", changes, run)
        assert list(st.pending("sandbox").index) == ["a"]
        st.record_failures("sandbox", pd.DataFrame({"code": ["X"], "message": ["y"]}, index=["a"]), run)
        st.record_failures("sandbox", pd.DataFrame({"code": ["X"], "message": ["y"]}, index=["a"]), run)
        assert st.failures("sandbox").loc["a", "attempts"] == 2
        st.record_written("sandbox", changes, run)
        assert st.pending("sandbox").empty and st.failures("sandbox").empty
        got = st.last_written("sandbox", ["a", "zzz"])
        assert got.loc["a", "fit_score"] == "80" and got.loc["a", "tier"] == "A"
    with State.open(tmp_path) as st:  # it is on disk
        assert list(st.last_written("sandbox").index) == ["a"]
        assert st.last_written("other-crm").empty


def test_adopt_pending_keeps_only_what_the_crm_holds(tmp_path):
    with State.open(tmp_path) as st:
        run = st.start_run("sf", "full", pd.Timestamp.now(tz="UTC"))
        st.mark_pending("sf", values(a={"tier": "A", "fit_score": 90}, b={"tier": "B", "fit_score": 60}), run)
        live = values(a={"tier": "A", "fit_score": "90"}, b={"tier": "D", "fit_score": 10})
        assert st.adopt_pending("sf", live, run) == 1
        assert list(st.last_written("sf").index) == ["a"]
        assert st.pending("sf").empty


def test_runs_and_watermarks_persist(tmp_path):
    with State.open(tmp_path) as st:
        run = st.start_run("sf", "incremental", pd.Timestamp("2026-01-01", tz="UTC"))
        st.set_watermark("sf", Watermark(pd.Timestamp("2026-01-01T10:00:00Z"), "001A", "fp"), run)
        st.finish_run(run, "ok", {"written": 3})
    with State.open(tmp_path) as st:
        mark = st.watermark("sf")
        assert mark.ts == pd.Timestamp("2026-01-01T10:00:00Z") and mark.last_id == "001A"
        assert st.runs()[0]["summary"] == {"written": 3}


def test_pull_since_subtracts_the_lookback_and_none_means_full():
    mark = Watermark(pd.Timestamp("2026-01-01T10:00:00Z"), "x")
    assert pull_since(mark, pd.Timedelta(minutes=5)) == pd.Timestamp("2026-01-01T09:55:00Z")
    assert pull_since(None, pd.Timedelta(minutes=5)) is None


def test_next_watermark_takes_the_highest_pair_capped_and_never_backwards():
    start = pd.Timestamp("2026-01-02T00:00:00Z")
    stamps = pd.Series(["2026-01-01T10:00:00Z", "2026-01-01T10:00:00Z", "2026-01-01T09:00:00Z"])
    ids = pd.Series(["001B", "001C", "001Z"])
    mark = next_watermark(stamps, ids, start, None, "fp")
    assert (mark.ts, mark.last_id) == (pd.Timestamp("2026-01-01T10:00:00Z"), "001C")
    future = next_watermark(pd.Series(["2027-01-01T00:00:00Z"]), pd.Series(["x"]), start, None, "fp")
    assert future.ts == start
    later = Watermark(pd.Timestamp("2026-01-01T11:00:00Z"), "001A")
    assert next_watermark(stamps, ids, start, later, "fp").ts == later.ts
    assert next_watermark(
        pd.Series([], dtype=str), pd.Series([], dtype=str), start, later, "fp"
    ) == Watermark(later.ts, later.last_id, "fp")


# -- how written and pending values are stored (schema version 1) ---------------------------------------------
def book(n: int, *, tier: str = "A", start: int = 0) -> pd.DataFrame:
    """Values typed as the job's `desired` frame: fit_score Int64, the rest strings, one reasons text per id."""
    ids = [f"001A{i:014d}" for i in range(start, start + n)]
    return pd.DataFrame(
        {
            "segment": pd.array([["SMB", "Enterprise", None][i % 3] for i in range(n)], dtype="string"),
            "fit_score": pd.array([i % 101 if i % 7 else None for i in range(n)], dtype="Int64"),
            "tier": pd.array([tier] * n, dtype="string"),
            "reasons": pd.array(
                [f"+ industry Software; - {i % 13} employees" for i in range(n)], dtype="string"
            ),
            "scored_at": pd.array(["2026-03-01T02:00:00Z"] * n, dtype="string"),
            "model": pd.array(["5c90886a9f42"] * n, dtype="string"),
        },
        index=ids,
    )


def as_stored(frame: pd.DataFrame) -> pd.DataFrame:
    """What the state hands back: text of each value, missing stays missing, index `record_id`."""
    out = frame.reindex(columns=list(OWNED_FIELDS)).astype("string")
    out.index = pd.Index([str(i) for i in frame.index], name="record_id", dtype=object)
    return out


def same(got: pd.DataFrame, *wanted: pd.DataFrame) -> None:
    want = pd.concat([as_stored(w) for w in wanted])
    pd.testing.assert_frame_equal(got.sort_index(), want.sort_index(), check_index_type=False)


def test_values_come_back_as_the_text_they_were_written_as(tmp_path):
    mixed = pd.DataFrame(  # object and float columns, as `--adopt-live` and older callers pass them
        {
            "segment": ["SMB", None],
            "fit_score": [80.0, float("nan")],
            "tier": ["A", "  B "],
            "reasons": ["", "x"],
        },
        index=["a", "b"],
    )
    with State.open(tmp_path) as st:
        st.mark_pending("sf", mixed, 1)
        same(st.pending("sf"), mixed)
        st.record_written("sf", mixed, 1)
        same(st.last_written("sf"), mixed)
        assert st.last_written("sf").loc["a", "fit_score"] == "80.0" and st.pending("sf").empty
        st.record_written("sf", book(1000), 1)  # over 900 ids: read through a temp table, not IN (...)
        wanted = [*book(1000).index[::3], "a", "not-there"]
        same(st.last_written("sf", wanted), book(1000).iloc[::3], mixed.loc[["a"]])
        assert st.last_written("sf", []).empty and st.last_written("other").empty


def test_pending_moves_to_written_as_before(tmp_path):
    marked = book(1200)
    ok, rejected = marked.index[:-5], marked.index[-5:]
    with State.open(tmp_path) as st:
        st.record_failures("sf", pd.DataFrame({"code": "X", "message": "y"}, index=marked.index[:3]), 1)
        st.mark_pending("sf", marked, 2)
        st.record_written("sf", marked.loc[ok], 2)  # what apply books: the confirmed part of the chunk
        st.record_failures("sf", pd.DataFrame({"code": "LOCK", "message": "z"}, index=rejected), 2)
        same(st.last_written("sf"), marked.loc[ok])
        same(st.pending("sf"), marked.loc[rejected])  # a rejected record stays pending until the next run
        assert list(st.failures("sf").index) == sorted(rejected)  # the first three were written after all
        run_ids = {r for (r,) in st.conn.execute("SELECT DISTINCT run_id FROM written")}
        assert run_ids == {2}


def test_record_written_books_the_values_given_not_those_pending(tmp_path):
    marked, other = book(50), book(50, tier="D")
    with State.open(tmp_path) as st:
        st.mark_pending("sf", marked, 1)
        st.record_written("sf", other.iloc[:20], 1)  # not what was marked: encoded afresh
        same(st.last_written("sf"), other.iloc[:20])
        st.record_written("sf", marked.iloc[10:], 1)  # partly gone from pending (booked above)
        same(st.last_written("sf"), other.iloc[:10], marked.iloc[10:])
        assert st.pending("sf").empty
        st.mark_pending("sf", marked, 2)
        st.mark_pending("hubspot", other, 2)  # another CRM's values never stand in for these
        st.record_written("sf", marked.iloc[:5], 2)
        same(st.last_written("sf").iloc[:5], marked.iloc[:5])
        same(st.pending("hubspot"), other)


def test_settling_a_job_books_the_pending_values(tmp_path):
    marked = book(30)
    with State.open(tmp_path) as st:
        st.mark_pending("sf", marked, 1)
    with State.open(tmp_path) as st:  # the next run, as sync/apply.settle_open_jobs does it
        values = st.pending("sf", list(marked.index[:20]))
        st.record_written("sf", values, 2)
        st.drop_pending("sf", marked.index[20:25])
        same(st.last_written("sf"), marked.iloc[:20])
        same(st.pending("sf"), marked.iloc[25:])


def test_a_run_killed_after_marking_pending_is_recognised_by_the_next(tmp_path):
    code = (
        "import os, signal, sys\n"
        "import pandas as pd\n"
        "from sync.state import State\n"
        "opened = State.open(sys.argv[1])\n"
        "st = opened.__enter__()\n"
        "changes = pd.DataFrame({'tier': pd.array(['A', 'B'], dtype='string'), "
        "'fit_score': pd.array([90, 60], dtype='Int64')}, index=['a', 'b'])\n"
        "st.mark_pending('sf', changes, 1)\n"
        "os.kill(os.getpid(), signal.SIGKILL)  # the batch is on its way; nothing else gets booked\n"
    )
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)]).returncode == -9
    with State.open(tmp_path) as st:  # the lock died with the process
        assert st.has_history("sf")
        pend = st.pending("sf")
        assert pend.loc["a", "tier"] == "A" and pend.loc["b", "fit_score"] == "60"
        live = values(a={"tier": "A", "fit_score": "90"}, b={"tier": "C", "fit_score": 60})  # b: a rep's
        assert st.adopt_pending("sf", live, 2) == 1
        assert list(st.last_written("sf").index) == ["a"] and st.pending("sf").empty


def test_each_distinct_value_is_stored_once(tmp_path):
    with State.open(tmp_path) as st:
        st.mark_pending("sf", book(300), 1)
        st.record_written("sf", book(300), 1)
        stored = st.conn.execute("SELECT count(*) FROM owned_values").fetchone()[0]
    distinct = sum(book(300)[f].dropna().nunique() for f in OWNED_FIELDS)
    assert stored <= distinct  # "SMB" as a segment and as a reasons text would share one row


def test_a_digest_shared_by_two_values_is_refused_and_nothing_is_booked(tmp_path, monkeypatch):
    import sync.state

    with State.open(tmp_path) as st:
        st.record_written("sf", values(a={"tier": "A"}), 1)
        monkeypatch.setattr(sync.state, "_digest", lambda text: 42)
        st.record_written("sf", values(b={"tier": "A"}), 1)  # one value: no clash
        with pytest.raises(sqlite3.IntegrityError, match="same digest"):
            st.record_written("sf", values(c={"tier": "A", "segment": "SMB"}), 1)
        assert sorted(st.last_written("sf").index) == ["a", "b"]


# A state file as icp-sync wrote it before the schema had a version (user_version 0): kept here as the DDL of
# that time, so the test builds it instead of keeping a binary.
SCHEMA_V0 = """
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, crm TEXT NOT NULL, mode TEXT NOT NULL,
    started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL DEFAULT 'running', summary TEXT);
CREATE TABLE watermarks (crm TEXT NOT NULL, object TEXT NOT NULL, ts TEXT NOT NULL, last_id TEXT NOT NULL DEFAULT '',
    fingerprint TEXT NOT NULL DEFAULT '', run_id INTEGER, PRIMARY KEY (crm, object));
CREATE TABLE written (crm TEXT NOT NULL, record_id TEXT NOT NULL, segment TEXT, fit_score TEXT, tier TEXT,
    reasons TEXT, scored_at TEXT, model TEXT, run_id INTEGER, written_at TEXT NOT NULL, PRIMARY KEY (crm, record_id));
CREATE TABLE pending (crm TEXT NOT NULL, record_id TEXT NOT NULL, segment TEXT, fit_score TEXT, tier TEXT,
    reasons TEXT, scored_at TEXT, model TEXT, run_id INTEGER, PRIMARY KEY (crm, record_id));
CREATE TABLE failures (crm TEXT NOT NULL, record_id TEXT NOT NULL, code TEXT NOT NULL, message TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1, first_failed_at TEXT NOT NULL, last_failed_at TEXT NOT NULL,
    run_id INTEGER, PRIMARY KEY (crm, record_id));
CREATE TABLE bulk_jobs (crm TEXT NOT NULL, job_id TEXT NOT NULL, run_id INTEGER, started_at TEXT NOT NULL,
    PRIMARY KEY (crm, job_id));
"""


def old_state_file(directory) -> None:
    directory.mkdir(exist_ok=True)
    conn = sqlite3.connect(directory / "state.sqlite")
    conn.executescript(SCHEMA_V0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("INSERT INTO runs (crm, mode, started_at, status) VALUES ('sf', 'full', '2026-01-01', 'ok')")
    conn.execute(
        "INSERT INTO watermarks VALUES ('sf', 'accounts', '2026-01-01T10:00:00+00:00', '001A', 'fp', 1)"
    )
    conn.executemany(
        "INSERT INTO written VALUES ('sf', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                "a",
                "SMB",
                "80",
                "A",
                "+ industry Software",
                "2026-01-01T02:00:00Z",
                "m1",
                1,
                "2026-01-01T03:00:00+00:00",
            ),
            ("b", None, "12", "D", None, "2026-01-01T02:00:00Z", "m1", 1, "2026-01-01T03:00:01+00:00"),
            (
                "c",
                "SMB",
                "80",
                "A",
                "+ industry Software",
                "2026-01-01T02:00:00Z",
                "m1",
                None,
                "2026-01-01T03:00:02",
            ),
        ],
    )
    conn.execute("INSERT INTO written VALUES ('hubspot', 'a', 'Ent', '55', 'B', 'r', NULL, 'm1', 1, 'x')")
    conn.execute(
        "INSERT INTO pending VALUES ('sf', 'd', 'SMB', '70', 'B', 'r2', '2026-01-02T02:00:00Z', 'm1', 2)"
    )
    conn.execute("INSERT INTO failures VALUES ('sf', 'e', 'X', 'y', 2, 't1', 't2', 1)")
    conn.execute("INSERT INTO bulk_jobs VALUES ('sf', '750A', 2, 't')")
    conn.commit()
    conn.close()


def test_a_state_file_of_the_old_layout_is_migrated_when_opened(tmp_path):
    old_state_file(tmp_path)
    with State.open(tmp_path) as st:
        written = st.last_written("sf")
        assert written.loc["a"].tolist() == [
            "SMB",
            "80",
            "A",
            "+ industry Software",
            "2026-01-01T02:00:00Z",
            "m1",
        ]
        assert written.loc["b", "segment"] is pd.NA and written.loc["b", "fit_score"] == "12"
        assert list(written.index) == ["a", "b", "c"]
        assert st.last_written("hubspot").loc["a", "segment"] == "Ent"
        assert st.pending("sf").loc["d", "fit_score"] == "70"
        rows = st.conn.execute(
            "SELECT record_id, run_id, written_at FROM written WHERE crm = 'sf' ORDER BY 1"
        )
        assert rows.fetchall() == [
            ("a", 1, "2026-01-01T03:00:00+00:00"),
            ("b", 1, "2026-01-01T03:00:01+00:00"),
            ("c", None, "2026-01-01T03:00:02"),
        ]
        assert st.failures("sf").loc["e", "attempts"] == 2 and st.open_bulk_jobs("sf") == ["750A"]
        assert st.watermark("sf").last_id == "001A" and st.runs()[0]["status"] == "ok"
        assert st.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = dict(st.conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
        assert "WITHOUT ROWID" in tables["written"] and "WITHOUT ROWID" in tables["pending"]
        assert not [name for name in tables if name.endswith("_v0")]
        assert st.conn.execute("PRAGMA freelist_count").fetchone()[0] == 0  # the old tables' pages given back
        # and it goes on as a new file would: the pending value adopted, a new write booked
        assert (
            st.adopt_pending(
                "sf",
                values(d={"segment": "SMB", "fit_score": 70, "tier": "B", "reasons": "r2", "model": "m1"}),
                3,
            )
            == 1
        )
        st.record_written("sf", values(a={"tier": "B"}), 3)
        assert (
            st.last_written("sf").loc["a", "tier"] == "B" and st.last_written("sf").loc["d", "model"] == "m1"
        )
    with State.open(tmp_path) as st:  # opened again: nothing left to migrate
        assert len(st.last_written("sf")) == 4


def test_a_migration_that_fails_leaves_the_old_file_as_it_was(tmp_path, monkeypatch):
    old_state_file(tmp_path)

    def broken(self, values):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(State, "_load_values", broken)
    with pytest.raises(StateUnusable, match="disk I/O error"):
        State(tmp_path)
    conn = sqlite3.connect(tmp_path / "state.sqlite")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM written").fetchone()[0] == 4
    assert (
        "WITHOUT ROWID"
        not in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'written'").fetchone()[0]
    )
    conn.close()
    monkeypatch.undo()
    with State.open(tmp_path) as st:
        assert len(st.last_written("sf")) == 3 and len(st.pending("sf")) == 1


def test_a_frame_changed_after_marking_is_booked_as_changed(tmp_path):
    marked = book(10)
    with State.open(tmp_path) as st:
        st.mark_pending("sf", marked, 1)
        marked.loc[marked.index[0], "tier"] = "C"  # the caller's frame moved on; `pending` did not
        st.record_written("sf", marked, 1)
        assert st.last_written("sf").loc[marked.index[0], "tier"] == "C"
        read = st.pending("sf")
        assert read.empty
        st.mark_pending("sf", book(4), 2)
        read = st.pending("sf")
        read.loc[read.index[1], "reasons"] = "edited"
        st.record_written("sf", read, 2)
        assert st.last_written("sf").loc[read.index[1], "reasons"] == "edited"
