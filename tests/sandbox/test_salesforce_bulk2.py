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
