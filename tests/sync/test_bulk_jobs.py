"""A dead run's Bulk API 2.0 job is finished, not repeated.

The job id is in the state before the upload; the next run first settles it (aborts it if it still runs,
reads its results into the state) and only then pulls and plans, so it writes only what is still needed and
a rep's edit made after the kill is kept. A transient error during a Bulk write resumes the same job.

Deterministic: the sandbox processes ingest jobs chunk by chunk in the background, and `faults.hold` on
`sf.bulk2.ingest.chunk` keeps a job in flight at a known chunk; tests wait on the sandbox, never on the clock.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from connectors.retry import RetryPolicy
from sandbox import Sandbox
from sync import job
from sync.config import load_config
from sync.job import RunOptions
from sync.state import State

from .conftest import N_ACCOUNTS, in_background, session_env
from .test_job import assert_crm_holds_desired

ROOT = Path(__file__).resolve().parents[2]
CHUNK = "sf.bulk2.ingest.chunk"
KEY = "salesforce"


def fast() -> RetryPolicy:
    return RetryPolicy(attempts=6, initial_wait=0.01, max_wait=0.05)


def processed(sb: Sandbox) -> Counter:
    """How many times the org's ingest jobs went through each record (written or rejected), over all jobs."""
    return Counter(rid for j in sb.sf.bulk2.ingest_jobs() for rid in j["processed"])


def bulk(config, threshold: int = 1):
    return dataclasses.replace(
        config, salesforce=dataclasses.replace(config.salesforce, bulk_threshold=threshold)
    )


def open_jobs(config) -> list[str]:
    with State.open(config.state_dir, lock=False) as st:
        return st.open_bulk_jobs(KEY)


@contextmanager
def run_process(config_path: Path, secrets: dict, log_path: Path) -> Iterator[subprocess.Popen]:
    """The nightly job (`job.run`) in a child process of its own, so a test can SIGKILL it; output to log_path."""
    code = "import sys; from sync import job; from sync.config import load_config; job.run(load_config(sys.argv[1]))"
    with log_path.open("wb") as log:
        yield subprocess.Popen(
            [sys.executable, "-c", code, str(config_path)],
            cwd=ROOT,
            env={**os.environ, **secrets},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


# -- (a) a run killed while its job is in flight --------------------------------------------------------------
def test_a_killed_runs_job_is_settled_first_and_nothing_is_written_twice(tmp_path, learned_profile):
    n = 1200  # six chunks of 200
    with Sandbox(accounts=n, seed=7, with_icp_fields=True) as sb:
        shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
        path = tmp_path / "icp.toml"
        path.write_text(
            '[crm]\nkind = "salesforce"\n[salesforce]\nbulk_threshold = 1\n'
            "[sync]\nmax_change_ratio = 1.0\nlookback_minutes = 0\n"
        )
        secrets = session_env(sb)
        config = load_config(path, env=secrets)

        # The first run: its job writes two chunks, then the sandbox holds it there, running, while the
        # run polls it. Then the run is killed.
        sb.faults.hold(only=CHUNK, after=2)
        with run_process(path, secrets, tmp_path / "killed-run.log") as proc:
            try:
                assert sb.faults.wait_parked(1, timeout=180), (tmp_path / "killed-run.log").read_text()
                [dead] = sb.sf.bulk2.ingest_jobs()
                assert dead["state"] == "InProgress" and len(dead["processed"]) == 400
                assert open_jobs(config) == [dead["id"]]  # kept before the upload
                assert proc.poll() is None  # still polling its job
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        reached = set(dead["processed"])
        records = {r["Id"]: r for r in sb.sf.records("Account")}
        assert {rid for rid, r in records.items() if r["ICP_Tier__c"]} == reached

        # After the kill, a rep edits a record the job never reached, and one it wrote.
        unreached_edit = next(rid for rid in records if rid not in reached)
        reached_edit = next(iter(dead["processed"]))
        sb.sf.edit("Account", unreached_edit, {"ICP_Tier__c": "D", "ICP_Model__c": "rep"})
        rep_tier = "A" if records[reached_edit]["ICP_Tier__c"] != "A" else "B"
        sb.sf.edit("Account", reached_edit, {"ICP_Tier__c": rep_tier})

        # The rerun aborts the dead job before its next chunk (the job stays held until the abort has
        # landed, then the hold is lifted so the rerun's own job can run).
        with in_background(sb, lambda: job.run(config, policy=fast())) as outcome:
            assert sb.sf.bulk2.wait_for_state(dead["id"], ("Aborted",), timeout=180)
        report = outcome["value"]

        assert report.settled_bulk_jobs == 1
        assert (report.settled_written, report.settled_failed, report.settled_unprocessed) == (400, 0, 800)
        assert report.skipped_manual_edits == 2  # both reps' edits kept and reported
        manual = pd.read_csv(report.files["manual_edits_csv"])
        assert set(manual["record_id"]) == {unreached_edit, reached_edit}
        assert report.written == n - 400 - 1 and report.failed == 0

        # No record written twice: the dead job's 400, then the rest, except the rep's unreached record.
        jobs = sb.sf.bulk2.ingest_jobs()
        assert [j["state"] for j in jobs] == ["Aborted", "JobComplete"]
        assert len(jobs[0]["processed"]) == 400  # the aborted job did not go on once released
        counts = processed(sb)
        assert max(counts.values()) == 1
        assert set(counts) == set(records) - {unreached_edit}
        assert sb.calls.count("sf.composite") == 0

        now = {r["Id"]: r for r in sb.sf.records("Account")}
        assert (now[unreached_edit]["ICP_Tier__c"], now[unreached_edit]["ICP_Model__c"]) == ("D", "rep")
        assert now[reached_edit]["ICP_Tier__c"] == rep_tier
        with State.open(config.state_dir, lock=False) as st:
            assert st.open_bulk_jobs(KEY) == [] and st.pending(KEY).empty
            assert set(st.last_written(KEY).index) == set(records) - {unreached_edit}

        again = job.run(config, policy=fast())
        assert again.settled_bulk_jobs == 0 and again.written == 0 and again.changed == 0
        now = {r["Id"]: r for r in sb.sf.records("Account")}
        assert (now[unreached_edit]["ICP_Tier__c"], now[reached_edit]["ICP_Tier__c"]) == ("D", rep_tier)


# -- (b) transient errors during a Bulk write ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "endpoint"),
    [
        ("server_error", "sf.bulk2.ingest.get"),
        ("drop", "sf.bulk2.ingest.get"),
        ("server_error", "sf.bulk2.ingest.results"),
        ("drop", "sf.bulk2.ingest.results"),
        ("drop", "sf.bulk2.ingest.state"),
    ],
)
def test_a_transient_error_during_a_bulk_write_resumes_the_same_job(sb, config, kind, endpoint):
    sb.faults.inject(kind, times=2, only=endpoint)
    report = job.run(bulk(config), policy=fast())
    assert report.written == N_ACCOUNTS and report.failed == 0
    assert sb.faults.fired[kind] >= 1 and report.retries >= 1  # a lost close is seen by its retry
    assert sb.calls.count("sf.bulk2.ingest.create") == 1
    counts = processed(sb)
    assert len(counts) == N_ACCOUNTS and set(counts.values()) == {1}  # every record written once
    assert open_jobs(config) == []
    assert_crm_holds_desired(sb, config)


def test_a_run_that_loses_its_job_leaves_it_to_the_next_run_which_books_it_without_resending(sb, config):
    cfg = bulk(config)
    sb.faults.inject("server_error", rate=1.0, only="sf.bulk2.ingest.get")
    with pytest.raises(Exception, match="still failing after 6 attempts"):
        job.run(cfg, policy=fast())
    [job_id] = open_jobs(config)
    assert sb.sf.bulk2.wait_for_state(job_id, ("JobComplete",), timeout=60)  # it ran on without its run
    sb.faults.clear()
    report = job.run(cfg, policy=fast())
    assert report.settled_bulk_jobs == 1 and report.settled_written == N_ACCOUNTS
    assert report.written == 0 and report.changed == 0 and report.skipped_manual_edits == 0
    assert sb.calls.count("sf.bulk2.ingest.create") == 1 and set(processed(sb).values()) == {1}
    assert open_jobs(config) == []
    with State.open(config.state_dir, lock=False) as st:
        assert len(st.last_written(KEY)) == N_ACCOUNTS and st.pending(KEY).empty
    assert_crm_holds_desired(sb, config)


# -- (c) settling jobs the CRM no longer knows, and the state table -----------------------------------------------
def test_a_job_the_crm_no_longer_knows_is_forgotten_and_the_run_goes_on(sb, config):
    from sandbox.salesforce.ids import KEY_PREFIXES, make_id

    with State.open(config.state_dir) as st:
        st.record_bulk_job(KEY, make_id(KEY_PREFIXES["BulkJob"], 999), run_id=0)
    report = job.run(config, policy=fast())
    assert report.settled_bulk_jobs == 1 and report.settled_written == 0
    assert report.written == N_ACCOUNTS
    assert open_jobs(config) == []


def test_a_dry_run_settles_nothing(sb, config):
    with State.open(config.state_dir) as st:
        st.record_bulk_job(KEY, "750000000000001AAA", run_id=0)
    report = job.run(config, RunOptions(dry_run=True), policy=fast())
    assert report.settled_bulk_jobs == 0 and sb.calls.count("sf.bulk2") == 0
    assert open_jobs(config) == ["750000000000001AAA"]


def test_a_state_file_from_before_bulk_jobs_gets_the_table(tmp_path):
    with State.open(tmp_path) as st:
        st.conn.execute("DROP TABLE bulk_jobs")
    conn = sqlite3.connect(tmp_path / "state.sqlite")
    assert not conn.execute("SELECT name FROM sqlite_master WHERE name = 'bulk_jobs'").fetchall()
    conn.close()
    with State.open(tmp_path) as st:
        st.record_bulk_job(KEY, "750A", run_id=1)
        st.record_bulk_job(KEY, "750B", run_id=1)
        st.record_bulk_job("hubspot", "750C", run_id=1)
        assert st.open_bulk_jobs(KEY) == ["750A", "750B"]
        st.forget_bulk_job(KEY, "750A")
        assert st.open_bulk_jobs(KEY) == ["750B"]


# -- (d) a write cut into several jobs: each job's id is in the state before its upload ------------------------
UPLOAD = "sf.bulk2.ingest.upload"


def test_a_run_killed_after_the_first_of_several_jobs_is_settled_by_the_next(tmp_path, learned_profile):
    n, limit = 600, 20_000  # the sandbox refuses bigger uploads, and the connector is told the same limit
    with Sandbox(accounts=n, seed=7, with_icp_fields=True, salesforce_bulk_upload_bytes=limit) as sb:
        shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
        path = tmp_path / "icp.toml"
        path.write_text(
            f'[crm]\nkind = "salesforce"\n[salesforce]\nbulk_threshold = 1\nbulk_upload_bytes = {limit}\n'
            "[sync]\nmax_change_ratio = 1.0\nlookback_minutes = 0\n"
        )
        secrets = session_env(sb)
        config = load_config(path, env=secrets)
        assert config.salesforce.bulk_upload_bytes == limit

        # The first run: its first job goes through; the sandbox takes the second job's upload and holds it
        # there, unanswered. The job's id is already in the state. Then the run is killed.
        sb.faults.hold(only=UPLOAD, after=1)
        log_path = tmp_path / "killed-run.log"
        with run_process(path, secrets, log_path) as proc:
            try:
                assert sb.faults.wait_parked(1, timeout=180), log_path.read_text()
                first, second = sb.sf.bulk2.ingest_jobs()
                assert first["state"] == "JobComplete" and 0 < first["uploaded"] < n
                assert (second["state"], second["uploaded"]) == ("Open", 0)
                assert open_jobs(config) == [
                    second["id"]
                ]  # the first booked, the second kept before its upload
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        sb.faults.release()  # the held upload lands on the dead run's open job, answered to no one
        assert sb.calls.wait_idle(timeout=60)
        [dead] = [j for j in sb.sf.bulk2.ingest_jobs() if j["id"] == second["id"]]
        assert dead["state"] == "Open" and dead["uploaded"] > 0 and dead["uploaded_bytes"] <= limit

        # The rerun settles the dead job (aborted: open, never closed), then writes the rest in jobs of its
        # own. Each of its uploads is held until the test has seen that job's id in the state.
        sb.faults.hold(only=UPLOAD, after=0)
        checked: list[str] = []
        with in_background(sb, lambda: job.run(config, policy=fast())) as outcome:
            while outcome["thread"].is_alive():
                if not sb.faults.wait_parked(1, timeout=0.2):
                    continue  # still working towards its next upload, or done
                [waiting] = [
                    j for j in sb.sf.bulk2.ingest_jobs() if j["state"] == "Open" and not j["uploaded"]
                ]
                assert waiting["id"] in open_jobs(config)
                checked.append(waiting["id"])
                sb.faults.hold(only=UPLOAD, after=0)  # lets this upload land; holds the next one
        report = outcome["value"]

        assert report.settled_bulk_jobs == 1
        assert (report.settled_written, report.settled_unprocessed) == (0, dead["uploaded"])
        assert report.written == n - first["uploaded"] and report.failed == 0
        jobs = sb.sf.bulk2.ingest_jobs()
        assert [j["state"] for j in jobs[:2]] == ["JobComplete", "Aborted"]
        assert checked == [j["id"] for j in jobs[2:]] and len(checked) >= 2
        assert all(j["state"] == "JobComplete" and j["uploaded_bytes"] <= limit for j in jobs[2:])
        counts = processed(sb)
        assert set(counts.values()) == {1} and len(counts) == n  # every record written once, by one job
        with State.open(config.state_dir, lock=False) as st:
            assert st.open_bulk_jobs(KEY) == [] and st.pending(KEY).empty
            assert len(st.last_written(KEY)) == n
        assert_crm_holds_desired(sb, config)
