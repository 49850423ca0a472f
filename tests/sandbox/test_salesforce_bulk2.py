"""Bulk API 2.0 through the SDK's `sf.bulk2`: ingest (update) with per-record results, and query with paging."""

from __future__ import annotations

import csv
import io

import pytest
import requests
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceOperationError

from sandbox import Sandbox

from .helpers import connect


@pytest.fixture(scope="module")
def sb():
    with Sandbox(accounts=400, seed=5, with_icp_fields=True) as sandbox:
        yield sandbox


@pytest.fixture
def clean_sb(sb):
    sb.faults.clear()
    sb.calls.reset()
    yield sb
    sb.faults.clear()


@pytest.fixture(scope="module")
def sf(sb):
    return connect(sb)


@pytest.fixture(scope="module")
def account_ids(sb):
    return [r["Id"] for r in sb.sf.records("Account")]


def rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def by_id(sb: Sandbox) -> dict[str, dict]:
    return {r["Id"]: r for r in sb.sf.records("Account", include_deleted=True)}


def test_update_reports_processed_and_failed_records(clean_sb, sf, account_ids):
    records = [
        {"Id": account_ids[0], "ICP_Tier__c": "A", "ICP_Fit_Score__c": "91"},
        {"Id": account_ids[1], "ICP_Tier__c": "Z", "ICP_Fit_Score__c": "50"},
        {"Id": account_ids[2], "ICP_Tier__c": "B", "ICP_Fit_Score__c": "1000"},
        {"Id": account_ids[3], "ICP_Tier__c": "C", "ICP_Fit_Score__c": "12"},
    ]
    [summary] = sf.bulk2.Account.update(records=records, wait=0)
    assert summary["numberRecordsProcessed"] == 4 and summary["numberRecordsFailed"] == 2
    failed = rows(sf.bulk2.Account.get_failed_records(summary["job_id"]))
    assert [(r["Id"], r["sf__Error"].split(":")[0]) for r in failed] == [
        (account_ids[1], "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        (account_ids[2], "NUMBER_OUTSIDE_VALID_RANGE"),
    ]
    assert failed[0]["sf__Error"] == (
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:ICP Tier: bad value for restricted picklist field: Z:ICP_Tier__c --"
    )
    succeeded = rows(sf.bulk2.Account.get_successful_records(summary["job_id"]))
    assert [(r["sf__Id"], r["sf__Created"]) for r in succeeded] == [
        (account_ids[0], "false"),
        (account_ids[3], "false"),
    ]
    stored = by_id(clean_sb)
    assert (stored[account_ids[0]]["ICP_Tier__c"], stored[account_ids[0]]["ICP_Fit_Score__c"]) == ("A", 91)
    assert stored[account_ids[1]]["ICP_Tier__c"] is None
    assert rows(sf.bulk2.Account.get_unprocessed_records(summary["job_id"])) == []
    labels = clean_sb.calls.snapshot()
    assert (
        labels["sf.bulk2.ingest.create"]
        == labels["sf.bulk2.ingest.upload"]
        == labels["sf.bulk2.ingest.state"]
        == 1
    )


def test_columns_are_read_by_name_empty_cells_leave_values_and_na_clears_them(
    clean_sb, sf, account_ids, tmp_path
):
    target, other = account_ids[10], account_ids[11]
    clean_sb.sf.edit("Account", target, {"ICP_Model__c": "v0", "ICP_Tier__c": "D"})
    clean_sb.sf.edit("Account", other, {"ICP_Model__c": "v0", "ICP_Tier__c": "D"})
    path = tmp_path / "update.csv"
    path.write_text(f"ICP_Tier__c,ICP_Model__c,Id\nA,,{target}\n,#N/A,{other}\n")
    [summary] = sf.bulk2.Account.update(csv_file=str(path), wait=0)
    assert summary["numberRecordsFailed"] == 0
    stored = by_id(clean_sb)
    assert (stored[target]["ICP_Tier__c"], stored[target]["ICP_Model__c"]) == ("A", "v0")
    assert (stored[other]["ICP_Tier__c"], stored[other]["ICP_Model__c"]) == ("D", None)


def test_an_unknown_column_fails_the_whole_job(clean_sb, sf, account_ids):
    with pytest.raises(SalesforceOperationError, match="Field name not found : Nope__c"):
        sf.bulk2.Account.update(records=[{"Id": account_ids[0], "Nope__c": "x"}], wait=0)


def test_record_faults_apply_per_record(clean_sb, sf, account_ids):
    clean_sb.faults.inject("record_lock", times=2, only="sf.bulk2.ingest")
    records = [{"Id": account_ids[20 + i], "ICP_Tier__c": "B"} for i in range(5)]
    [summary] = sf.bulk2.Account.update(records=records, wait=0)
    assert summary["numberRecordsFailed"] == 2
    errors = [r["sf__Error"] for r in rows(sf.bulk2.Account.get_failed_records(summary["job_id"]))]
    assert all(e.startswith("UNABLE_TO_LOCK_ROW:") for e in errors)


def test_query_pages_with_locators_and_matches_the_store(clean_sb, sf):
    pages = list(
        sf.bulk2.Account.query(
            "SELECT Id, Name, IsDeleted, CreatedDate, NumberOfEmployees FROM Account", max_records=150, wait=0
        )
    )
    assert len(pages) == 3
    got = [r for page in pages for r in rows(page)]
    stored = clean_sb.sf.records("Account")
    assert [r["Id"] for r in got] == [r["Id"] for r in stored]
    first, record = got[0], stored[0]
    assert first["Name"] == record["Name"] and first["IsDeleted"] == "false"
    # Bulk CSV writes datetimes with a Z offset and nulls as empty cells.
    assert first["CreatedDate"] == record["CreatedDate"][:23] + "Z"
    nulls = [g for g, s in zip(got, stored, strict=True) if s["NumberOfEmployees"] is None]
    assert nulls and all(g["NumberOfEmployees"] == "" for g in nulls)
    assert clean_sb.calls.snapshot()["sf.bulk2.query.results"] == 3


def test_query_all_includes_deleted_records(clean_sb, sf, account_ids):
    clean_sb.sf.delete("Account", account_ids[-2])
    live = [r for p in sf.bulk2.Account.query("SELECT Id FROM Account", wait=0) for r in rows(p)]
    everything = [
        r for p in sf.bulk2.Account.query_all("SELECT Id, IsDeleted FROM Account", wait=0) for r in rows(p)
    ]
    assert account_ids[-2] not in {r["Id"] for r in live}
    assert {r["Id"]: r["IsDeleted"] for r in everything}[account_ids[-2]] == "true"


def test_query_job_with_a_bad_query_is_refused(clean_sb, sf):
    with pytest.raises(SalesforceMalformedRequest) as err:
        list(sf.bulk2.Account.query("SELECT Nope FROM Account", wait=0))
    assert err.value.content[0]["errorCode"] == "INVALID_FIELD"


def test_abort_leaves_the_uploaded_rows_unprocessed(clean_sb, account_ids):
    info = clean_sb.salesforce
    session = requests.Session()
    session.verify, session.trust_env = info.ca_bundle, False
    session.headers["Authorization"] = f"Bearer {info.access_token}"
    base = f"{info.instance_url}/services/data/v60.0/jobs/ingest"
    job = session.post(base, json={"object": "Account", "operation": "update", "lineEnding": "LF"}).json()
    assert job["state"] == "Open" and job["id"].startswith("750")
    upload = session.put(
        f"{base}/{job['id']}/batches",
        data=f"Id,ICP_Tier__c\n{account_ids[5]},A\n",
        headers={"Content-Type": "text/csv"},
    )
    assert upload.status_code == 201
    aborted = session.patch(f"{base}/{job['id']}", json={"state": "Aborted"}).json()
    assert aborted["state"] == "Aborted"
    unprocessed = session.get(f"{base}/{job['id']}/unprocessedRecords").text
    assert rows(unprocessed) == [{"Id": account_ids[5], "ICP_Tier__c": "A"}]
    assert by_id(clean_sb)[account_ids[5]]["ICP_Tier__c"] is None
    assert session.delete(f"{base}/{job['id']}").status_code == 204
    assert session.get(f"{base}/{job['id']}").status_code == 404


# -- ingest jobs run asynchronously, chunk by chunk, and can be aborted ----------------------------------------
def live_ids(sb: Sandbox) -> list[str]:
    """The accounts not deleted by an earlier test of this module (399 of them at most)."""
    return [r["Id"] for r in sb.sf.records("Account")][:399]


def start_job(sf, records: list[dict]) -> str:
    """Create, upload and close an ingest job through the SDK's Bulk 2.0 client; returns its id."""
    client = sf.bulk2.Account._client
    job_id = client.create_job("update")["id"]
    header = list(records[0])
    data = "\n".join([",".join(header), *(",".join(r[h] for h in header) for r in records)]) + "\n"
    client.upload_job_data(job_id, data)
    closed = client.close_job(job_id)
    assert closed["state"] == "UploadComplete"
    return job_id


def test_a_closed_job_is_processed_in_the_background_chunk_by_chunk(clean_sb, sf, account_ids):
    clean_sb.faults.hold(only="sf.bulk2.ingest.chunk", after=1)  # the first chunk goes, the second waits
    records = [{"Id": rid, "ICP_Model__c": "async-1"} for rid in live_ids(clean_sb)[:400]]
    job_id = start_job(sf, records)
    assert clean_sb.faults.wait_parked(1, timeout=30)
    client = sf.bulk2.Account._client
    running = client.get_job(job_id, False)
    assert (running["state"], running["numberRecordsProcessed"]) == ("InProgress", 200)
    stored = by_id(clean_sb)
    assert [stored[r["Id"]]["ICP_Model__c"] for r in records].count("async-1") == 200
    clean_sb.faults.release()
    assert clean_sb.sf.bulk2.wait_for_state(job_id, ("JobComplete",), timeout=30)
    done = client.get_job(job_id, False)
    assert (done["state"], done["numberRecordsProcessed"], done["numberRecordsFailed"]) == (
        "JobComplete",
        399,
        0,
    )
    assert all(by_id(clean_sb)[r["Id"]]["ICP_Model__c"] == "async-1" for r in records)
    [summary] = [j for j in clean_sb.sf.bulk2.ingest_jobs() if j["id"] == job_id]
    assert summary["processed"] == [r["Id"] for r in records] and summary["unprocessed"] == 0


def test_a_job_runs_on_without_its_client(clean_sb, sf, account_ids):
    records = [{"Id": rid, "ICP_Model__c": "async-2"} for rid in live_ids(clean_sb)[:300]]
    job_id = start_job(sf, records)  # nobody polls it
    assert clean_sb.sf.bulk2.wait_for_state(job_id, ("JobComplete",), timeout=30)
    assert all(by_id(clean_sb)[r["Id"]]["ICP_Model__c"] == "async-2" for r in records)
    assert clean_sb.calls.count("sf.bulk2.ingest.get") == 0


def test_abort_stops_a_running_job_before_its_next_chunk(clean_sb, sf, account_ids):
    clean_sb.faults.hold(only="sf.bulk2.ingest.chunk", after=1)
    records = [{"Id": rid, "ICP_Model__c": "async-3"} for rid in live_ids(clean_sb)[:400]]
    job_id = start_job(sf, records)
    assert clean_sb.faults.wait_parked(1, timeout=30)
    client = sf.bulk2.Account._client
    aborted = client.abort_job(job_id, False)
    assert (aborted["state"], aborted["numberRecordsProcessed"]) == ("Aborted", 200)
    clean_sb.faults.release()  # the parked chunk now finds its job aborted and stops
    assert client.get_job(job_id, False)["state"] == "Aborted"
    succeeded = rows(client.get_ingest_results(job_id, "successfulResults"))
    unprocessed = rows(client.get_ingest_results(job_id, "unprocessedRecords"))
    assert [r["sf__Id"] for r in succeeded] == [r["Id"] for r in records[:200]]
    assert unprocessed == records[200:]
    assert rows(client.get_ingest_results(job_id, "failedResults")) == []
    stored = by_id(clean_sb)
    assert all(stored[r["Id"]]["ICP_Model__c"] == "async-3" for r in records[:200])
    assert all(stored[r["Id"]]["ICP_Model__c"] != "async-3" for r in records[200:])
    # an aborted or finished job cannot be aborted again
    with pytest.raises(SalesforceMalformedRequest) as err:
        client.abort_job(job_id, False)
    assert err.value.content[0]["errorCode"] == "INVALIDJOBSTATE"
    [summary] = [j for j in clean_sb.sf.bulk2.ingest_jobs() if j["id"] == job_id]
    assert summary["state"] == "Aborted" and len(summary["processed"]) == 200


def test_a_slow_fault_delays_each_chunk_and_an_abort_does_not_wait_for_it(clean_sb, sf, account_ids):
    clean_sb.faults.slow_down(3600, only="sf.bulk2.ingest.chunk")  # the first chunk would wait an hour
    records = [{"Id": rid, "ICP_Model__c": "async-4"} for rid in live_ids(clean_sb)[:10]]
    job_id = start_job(sf, records)
    assert clean_sb.sf.bulk2.wait_for_state(job_id, ("InProgress",), timeout=30)
    client = sf.bulk2.Account._client
    assert client.abort_job(job_id, False)["numberRecordsProcessed"] == 0
    assert rows(client.get_ingest_results(job_id, "unprocessedRecords")) == records
    assert all(by_id(clean_sb)[r["Id"]]["ICP_Model__c"] != "async-4" for r in records)


def test_the_slow_spec_reaches_the_chunks():
    from sandbox.faults import Faults

    faults = Faults.from_spec("slow:0.25@sf.bulk2.ingest")
    assert faults.delay("sf.bulk2.ingest.chunk") == 0.25 and faults.delay("sf.bulk2.query.get") == 0


def test_stopping_the_sandbox_ends_jobs_in_flight():
    import threading

    with Sandbox(accounts=400, seed=5, with_icp_fields=True) as sandbox:
        sf = connect(sandbox)
        ids = [r["Id"] for r in sandbox.sf.records("Account")]
        sandbox.faults.hold(only="sf.bulk2.ingest.chunk", after=1)
        parked = start_job(sf, [{"Id": rid, "ICP_Tier__c": "A"} for rid in ids])
        assert sandbox.faults.wait_parked(1, timeout=30)  # between its first and second chunk
        sandbox.faults.slow_down(3600, only="sf.bulk2.ingest.chunk")
        slowed = start_job(sf, [{"Id": rid, "ICP_Tier__c": "B"} for rid in ids[:10]])
        assert sandbox.sf.bulk2.wait_for_state(slowed, ("InProgress",), timeout=30)  # waiting out its delay
    names = {f"sandbox-bulk2-{parked}", f"sandbox-bulk2-{slowed}"}
    assert not [t for t in threading.enumerate() if t.name in names]


# -- the upload limit --------------------------------------------------------------------------------------------
def test_the_default_upload_limit_is_the_sdks():
    from simple_salesforce.bulk2 import MAX_INGEST_JOB_FILE_SIZE

    from sandbox import SandboxOptions
    from sandbox.salesforce.bulk2 import MAX_UPLOAD_BYTES

    assert MAX_UPLOAD_BYTES == MAX_INGEST_JOB_FILE_SIZE == 104_857_600
    assert SandboxOptions().salesforce_bulk_upload_bytes == MAX_UPLOAD_BYTES


LIMIT = 2_000


@pytest.fixture(scope="module")
def small_uploads():
    with Sandbox(accounts=60, seed=5, with_icp_fields=True, salesforce_bulk_upload_bytes=LIMIT) as sandbox:
        yield sandbox


def upload_of(ids: list[str], size: int) -> str:
    """An update CSV of exactly `size` bytes (UTF-8), padding the model of its last row."""
    lines = ["Id,ICP_Model__c\n", *(f"{rid},m\n" for rid in ids)]
    pad = size - len("".join(lines).encode())
    assert pad >= 0
    lines[-1] = f"{ids[-1]},m{'x' * pad}\n"
    return "".join(lines)


def test_an_upload_at_the_limit_is_taken_one_byte_more_is_refused_with_400(small_uploads):
    sb = small_uploads
    client = connect(sb).bulk2.Account._client
    ids = [r["Id"] for r in sb.sf.records("Account")][:20]
    refused = client.create_job("update")["id"]
    with pytest.raises(SalesforceMalformedRequest) as err:
        client.upload_job_data(refused, upload_of(ids, LIMIT + 1))
    assert err.value.status == 400
    [error] = err.value.content
    assert error["errorCode"] == "EXCEEDED_MAX_SIZE_REQUEST"
    assert f"{LIMIT + 1:,} bytes" in error["message"] and f"{LIMIT:,} bytes" in error["message"]
    # refused whole: the job is still open and empty, and can take a smaller upload
    [job] = [j for j in sb.sf.bulk2.ingest_jobs() if j["id"] == refused]
    assert (job["state"], job["uploaded"], job["uploaded_bytes"]) == ("Open", 0, 0)
    client.upload_job_data(refused, upload_of(ids, LIMIT))
    client.close_job(refused)
    assert sb.sf.bulk2.wait_for_state(refused, ("JobComplete",), timeout=30)
    [job] = [j for j in sb.sf.bulk2.ingest_jobs() if j["id"] == refused]
    assert (job["uploaded"], job["uploaded_bytes"], job["processed"]) == (20, LIMIT, ids)


def test_a_split_by_the_sdks_estimate_makes_an_upload_the_sandbox_refuses(small_uploads):
    """simple-salesforce sizes its chunks by `",".join(fields)`: no quotes, no doubled quotes, no line ends,
    no header. Cut at the limit by that estimate, rows whose reasons need quoting make a bigger upload,
    which the sandbox refuses with its 400; the SDK then aborts the job, and nothing is written."""
    sb = small_uploads
    ids = [r["Id"] for r in sb.sf.records("Account")][20:60]
    reasons = 'Industry "Software", like 8 of 10 best customers; Größe 50–999'
    records = [{"Id": rid, "ICP_Reasons__c": reasons} for rid in ids]
    estimates = [len(",".join(r.values()).encode()) for r in records]
    k = max(n for n in range(1, len(records) + 1) if sum(estimates[:n]) <= LIMIT)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(
        [["Id", "ICP_Reasons__c"], *(r.values() for r in records[:k])]
    )
    assert len(buffer.getvalue().encode()) > LIMIT  # what that chunk is once written as CSV
    with pytest.raises(SalesforceMalformedRequest) as err:
        connect(sb).bulk2.Account.update(records=records[:k], wait=0)
    assert err.value.status == 400 and err.value.content[0]["errorCode"] == "EXCEEDED_MAX_SIZE_REQUEST"
    last = sb.sf.bulk2.ingest_jobs()[-1]
    assert (last["state"], last["uploaded"]) == ("Aborted", 0)
    assert all(by_id(sb)[rid]["ICP_Reasons__c"] is None for rid in ids)
