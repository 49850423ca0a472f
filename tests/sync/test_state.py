"""sync.state on a real SQLite file: the run lock, written/pending values, failures, the cursor helpers."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from sync.plan import OWNED_FIELDS
from sync.state import State, StateLocked, Watermark, next_watermark, pull_since


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
