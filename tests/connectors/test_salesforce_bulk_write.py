"""Bulk API 2.0 writes step by step: the job's id is handed over before the upload, a transient error retries
its step on the same job (never a second job), and `settle_job` finishes a job a dead client left behind.

The unmodified simple-salesforce against the sandbox over HTTPS; the sandbox runs ingest jobs in the
background, chunk by chunk, so a test holds a job in flight with `faults.hold` on `sf.bulk2.ingest.chunk`.
"""

from __future__ import annotations

import csv
import io
from collections import Counter

import pytest

from connectors.base import UNPROCESSED
from connectors.retry import CrmError, RetriesExhausted
from connectors.salesforce import SalesforceConnector
from sandbox import Sandbox
from sandbox.salesforce.ids import KEY_PREFIXES, make_id
from tests.connectors.test_salesforce import (
    assert_written,
    changes_for,
    fast_policy,
    flat,
    session_secrets,
    settings_for,
    stored,
)
from tests.sandbox.helpers import connect as sdk_connect

CHUNK = "sf.bulk2.ingest.chunk"


@pytest.fixture
def org():
    with Sandbox(accounts=500, seed=7, with_icp_fields=True) as sb:
        yield sb


def connect(sb: Sandbox, **changes) -> SalesforceConnector:
    options = {"bulk_threshold": 10, "bulk_poll_s": 0.01, **changes}
    return SalesforceConnector(settings_for(sb, **options), session_secrets(sb), policy=fast_policy())


def ids_of(sb: Sandbox, n: int) -> list[str]:
    return [r["Id"] for r in sb.sf.records()][:n]


def processed(sb: Sandbox) -> Counter:
    """How many times the org's ingest jobs went through each record (written or rejected)."""
    return Counter(rid for job in sb.sf.bulk2.ingest_jobs() for rid in job["processed"])


def start_job(sb: Sandbox, changes) -> str:
    """An ingest job as a client that then died would leave it: created, uploaded, closed, never polled."""
    client = sdk_connect(sb).bulk2.Account._client
    job_id = client.create_job("update")["id"]
    lines = [
        "Id,ICP_Tier__c,ICP_Model__c",
        *(f"{rid},{row.tier},{row.model}" for rid, row in changes.iterrows()),
    ]
    client.upload_job_data(job_id, "\n".join(lines) + "\n")
    client.close_job(job_id)
    return job_id


# -- the job id before the upload ------------------------------------------------------------------------------
def test_the_job_id_is_handed_over_before_any_record_is_uploaded(org):
    ids = ids_of(org, 300)
    connector = connect(org)
    seen = []

    def on_job(job_id: str) -> None:
        assert org.calls.count("sf.bulk2.ingest.upload") == 0
        [job] = org.sf.bulk2.ingest_jobs()
        assert (job["id"], job["state"], job["uploaded"]) == (job_id, "Open", 0)
        seen.append(job_id)

    [results] = list(connector.write(changes_for(ids), on_job=on_job))
    assert [r.record_id for r in results] == ids and all(r.success for r in results)
    assert seen == [job["id"] for job in org.sf.bulk2.ingest_jobs()]
    assert connector.write_calls == 1
    assert_written(org, changes_for(ids))


def test_collections_writes_create_no_job(org):
    connector = connect(org, bulk_threshold=1000)
    seen = []
    assert all(r.success for r in flat(connector.write(changes_for(ids_of(org, 50)), on_job=seen.append)))
    assert seen == [] and org.calls.count("sf.bulk2") == 0


# -- transient errors retry their step on the same job ------------------------------------------------------------
STEPS = [
    ("server_error", "sf.bulk2.ingest.create"),
    ("server_error", "sf.bulk2.ingest.upload"),
    ("server_error", "sf.bulk2.ingest.state"),
    ("server_error", "sf.bulk2.ingest.get"),
    ("server_error", "sf.bulk2.ingest.results"),
    ("drop", "sf.bulk2.ingest.upload"),  # the upload lands, its answer is lost
    ("drop", "sf.bulk2.ingest.state"),  # the job is closed, the answer is lost
    ("drop", "sf.bulk2.ingest.get"),
    ("drop", "sf.bulk2.ingest.results"),
    ("rate_limit", "sf.bulk2.ingest.get"),
]


@pytest.mark.parametrize(("kind", "endpoint"), STEPS, ids=[f"{k}@{e.rsplit('.', 1)[1]}" for k, e in STEPS])
def test_a_transient_error_retries_its_step_on_the_same_job(org, kind, endpoint):
    ids = ids_of(org, 450)
    changes = changes_for(ids)
    connector = connect(org)
    org.faults.inject(kind, times=1, only=endpoint)
    jobs = []
    [results] = list(connector.write(changes, on_job=jobs.append))
    assert org.faults.fired[kind] == 1 and connector.policy.retries >= 1
    assert all(r.success for r in results) and [r.record_id for r in results] == ids
    assert org.calls.count("sf.bulk2.ingest.create") == 1 + (endpoint.endswith("create"))
    assert len(org.sf.bulk2.ingest_jobs()) == 1 and len(jobs) == 1
    assert processed(org) == Counter(ids)  # every record went through the job exactly once
    assert_written(org, changes)


def test_polls_that_keep_failing_leave_the_job_running_and_settle_job_finishes_it(org):
    ids = ids_of(org, 450)
    changes = changes_for(ids)
    connector = connect(org)
    org.faults.inject("server_error", rate=1.0, only="sf.bulk2.ingest.get")
    jobs = []
    with pytest.raises(RetriesExhausted, match="SERVER_UNAVAILABLE"):
        list(connector.write(changes, on_job=jobs.append))
    [job_id] = jobs
    assert org.sf.bulk2.wait_for_state(job_id, ("JobComplete",), timeout=60)  # it ran on without its client
    org.faults.clear()
    settled = connect(org).settle_job(job_id)
    assert sorted(r.record_id for r in settled) == sorted(ids) and all(r.success for r in settled)
    assert org.calls.count("sf.bulk2.ingest.create") == 1 and processed(org) == Counter(ids)
    assert org.calls.count("sf.bulk2.ingest.state") == 1  # closed once, never aborted: it had finished
    assert_written(org, changes)


# -- settle_job ------------------------------------------------------------------------------------------------
def test_settle_job_reads_a_completed_jobs_results(org):
    ids = ids_of(org, 300)
    org.sf.delete("Account", ids[7])
    changes = changes_for(ids)
    changes.loc[ids[9], "tier"] = "Z"
    jobs = []
    written = {r.record_id: r for r in flat(connect(org).write(changes, on_job=jobs.append))}
    org.calls.reset()
    settled = connect(org).settle_job(jobs[0])
    assert {r.record_id: r for r in settled} == written
    assert {r.record_id: r.code for r in settled if not r.success} == {
        ids[7]: "ENTITY_IS_DELETED",
        ids[9]: "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
    }
    assert org.calls.count("sf.bulk2.ingest.state") == 0  # nothing to abort
    assert org.calls.count("sf.bulk2.ingest.create") == 0


def test_settle_job_aborts_a_running_job_and_reports_the_records_it_never_reached(org):
    ids = ids_of(org, 450)
    changes = changes_for(ids)
    org.faults.hold(only=CHUNK, after=1)  # one chunk of 200 goes through, then the job waits
    job_id = start_job(org, changes)
    assert org.faults.wait_parked(1, timeout=60)
    settled = connect(org).settle_job(job_id)
    org.faults.release()
    by_id = {r.record_id: r for r in settled}
    assert sorted(by_id) == sorted(ids)
    assert [rid for rid in ids if by_id[rid].success] == ids[:200]
    assert all(by_id[rid].code == UNPROCESSED and not by_id[rid].success for rid in ids[200:])
    [job] = org.sf.bulk2.ingest_jobs()
    assert job["state"] == "Aborted" and job["processed"] == ids[:200]
    now = stored(org)
    assert all(now[rid]["ICP_Tier__c"] == changes.loc[rid, "tier"] for rid in ids[:200])
    assert all(now[rid]["ICP_Tier__c"] is None for rid in ids[200:])


def test_settle_job_survives_a_lost_answer_to_its_abort(org):
    ids = ids_of(org, 300)
    org.faults.hold(only=CHUNK, after=1)
    job_id = start_job(org, changes_for(ids))
    assert org.faults.wait_parked(1, timeout=60)
    org.faults.inject("drop", times=1, only="sf.bulk2.ingest.state")  # the abort lands, its answer is lost
    settled = connect(org).settle_job(job_id)
    assert sum(r.success for r in settled) == 200 and len(settled) == 300
    assert org.calls.count("sf.bulk2.ingest.state") == 3  # the close, the abort, the abort again


def test_settle_job_of_a_job_that_never_got_its_records(org):
    client = sdk_connect(org).bulk2.Account._client
    job_id = client.create_job("update")["id"]  # its client died right after reporting it
    assert connect(org).settle_job(job_id) == []
    assert [j["state"] for j in org.sf.bulk2.ingest_jobs()] == ["Aborted"]


def test_settle_job_of_a_job_salesforce_no_longer_knows_is_empty(org):
    assert connect(org).settle_job(make_id(KEY_PREFIXES["BulkJob"], 999)) == []
    assert org.calls.count("sf.bulk2.ingest.get") == 1


def test_settle_job_retries_a_failed_results_download(org):
    ids = ids_of(org, 300)
    jobs = []
    list(connect(org).write(changes_for(ids), on_job=jobs.append))
    org.calls.reset()
    org.faults.inject("server_error", times=2, only="sf.bulk2.ingest.results")
    settled = connect(org).settle_job(jobs[0])
    assert len(settled) == 300 and all(r.success for r in settled)
    assert org.calls.count("sf.bulk2.ingest.results") == 3 + 2


# -- uploads of any size: cut by the bytes sent and by records, one job each ----------------------------------------
LIMIT = (
    20_000  # the sandbox's upload limit and the connector's, so that a few hundred records need several jobs
)
UPLOAD = "sf.bulk2.ingest.upload"


@pytest.fixture
def small_uploads():
    with Sandbox(accounts=500, seed=7, with_icp_fields=True, salesforce_bulk_upload_bytes=LIMIT) as sb:
        yield sb


def quoted_reasons(i: int) -> str:
    """Reasons as scoring writes them, 150-250 characters: commas, double quotes and non-ASCII letters, all of
    which the CSV sent must quote, double or encode in more than one byte."""
    parts = [
        f'Industry "Software", like {i % 9 + 1} of 10 best customers',
        "size 50–999 employees (Mid-market)",
        'country Österreich, "verified"',
        "revenue ≥ $10M, above the club's median",
        "Ünternehmen, São Paulo",
        'last won 14 months ago, "renewal" due',
    ]
    return "; ".join(parts[: 4 + i % 3])


def csv_bytes(rid: str, row) -> int:
    """The bytes of one change's line as the CSV module writes it (what the connector must count)."""
    buffer = io.StringIO()
    cells = [rid, row.segment, str(row.fit_score), row.tier, row.reasons, row.scored_at, row.model]
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return len(buffer.getvalue().encode())


def test_quoted_rows_are_cut_by_the_bytes_sent_into_jobs_the_sandbox_accepts(small_uploads):
    sb = small_uploads
    ids = ids_of(sb, 300)
    changes = changes_for(ids)
    changes["reasons"] = [quoted_reasons(i) for i in range(len(ids))]
    assert all(150 <= len(r) <= 250 for r in changes["reasons"])
    changes.loc[ids[7], "reasons"] += "\nand a second line,\r\nand a third"  # quoted line ends in a cell
    connector = connect(sb, bulk_upload_bytes=LIMIT)
    seen: list[str] = []

    def on_job(job_id: str) -> None:
        # every earlier job uploaded once, this one created and not yet sent anything
        assert sb.calls.count(UPLOAD) == len(seen)
        job = sb.sf.bulk2.ingest_jobs()[-1]
        assert (job["id"], job["state"], job["uploaded"]) == (job_id, "Open", 0)
        seen.append(job_id)

    batches = list(connector.write(changes, on_job=on_job))
    jobs = sb.sf.bulk2.ingest_jobs()
    assert len(jobs) >= 4 and seen == [j["id"] for j in jobs]
    assert [len(batch) for batch in batches] == [j["uploaded"] for j in jobs]  # one batch of results a job
    assert all(r.success for r in flat(batches)) and [r.record_id for r in flat(batches)] == ids
    assert sb.calls.count(UPLOAD) == len(jobs)  # every upload accepted the first time
    assert all(j["state"] == "JobComplete" and j["uploaded_bytes"] <= LIMIT for j in jobs)
    # The cut is tight: the first row of each next job would not have fitted in the job before it, so a
    # count that left out quotes, doubled quotes, line ends or the header would have overfilled some job.
    starts = [sum(j["uploaded"] for j in jobs[:k]) for k in range(1, len(jobs))]
    for job, start in zip(jobs, starts, strict=False):
        assert job["uploaded_bytes"] + csv_bytes(ids[start], changes.iloc[start]) > LIMIT
    assert processed(sb) == Counter(ids)
    assert_written(sb, changes)


def test_uploads_are_cut_at_the_records_per_job(org):
    ids = ids_of(org, 450)
    changes = changes_for(ids)
    seen: list[str] = []
    batches = list(connect(org, bulk_job_records=100).write(changes, on_job=seen.append))
    jobs = org.sf.bulk2.ingest_jobs()
    assert [j["uploaded"] for j in jobs] == [100, 100, 100, 100, 50] == [len(b) for b in batches]
    assert seen == [j["id"] for j in jobs]
    assert [r.record_id for r in flat(batches)] == ids and all(r.success for r in flat(batches))
    assert processed(org) == Counter(ids)
    assert_written(org, changes)


def test_a_row_bigger_than_an_upload_is_an_error_naming_its_record_before_any_job(org):
    ids = ids_of(org, 30)
    changes = changes_for(ids)
    changes.loc[ids[12], "reasons"] = 'a "long", long reason; ' * 500  # 11,500 characters, quoted
    connector = connect(org, bulk_upload_bytes=10_000)
    with pytest.raises(CrmError, match=rf"record {ids[12]} is [\d,]+ bytes .*bulk_upload_bytes = 10,000"):
        list(connector.write(changes, on_job=lambda job_id: None))
    assert org.calls.count("sf.bulk2") == 0  # the upload it would have joined was never started
