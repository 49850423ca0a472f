"""Writes to the sandbox through the SDK: single-record PATCH, sObject Collections (mixed valid and invalid
records, every error code, allOrNone, the 200-record cap, record faults), and direct UI-style edits.
"""

from __future__ import annotations

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceResourceNotFound

from sandbox import Sandbox
from sandbox.salesforce.store import API_USER_ID, REP_USER_ID, RecordError

from .helpers import connect


@pytest.fixture(scope="module")
def sb():
    with Sandbox(accounts=300, seed=11, with_icp_fields=True) as sandbox:
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


def by_id(sb: Sandbox, sobject: str = "Account", include_deleted: bool = True) -> dict[str, dict]:
    return {r["Id"]: r for r in sb.sf.records(sobject, include_deleted=include_deleted)}


def collection(records: list[dict], all_or_none: bool = False) -> dict:
    return {
        "allOrNone": all_or_none,
        "records": [{"attributes": {"type": "Account"}, **r} for r in records],
    }


def test_single_patch_updates_and_bumps_timestamps(clean_sb, sf, account_ids):
    target = account_ids[0]
    before = by_id(clean_sb)[target]
    assert sf.Account.update(target, {"ICP_Tier__c": "A", "ICP_Fit_Score__c": 87.4}) == 204
    after = by_id(clean_sb)[target]
    assert after["ICP_Tier__c"] == "A" and after["ICP_Fit_Score__c"] == 87  # Number(3,0) rounds
    assert after["LastModifiedDate"] > before["LastModifiedDate"]
    assert after["SystemModstamp"] == after["LastModifiedDate"]
    assert after["LastModifiedById"] == API_USER_ID
    assert clean_sb.calls.snapshot() == {"sf.sobject.patch": 1}


def test_single_patch_errors(clean_sb, sf, account_ids):
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.Account.update(account_ids[1], {"ICP_Tier__c": "Z"})
    assert err.value.content == [
        {
            "message": "ICP Tier: bad value for restricted picklist field: Z",
            "errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "fields": ["ICP_Tier__c"],
        }
    ]
    missing = account_ids[0][:9] + "zzzzzz"
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.update(missing, {"ICP_Tier__c": "A"})
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.Account.update("not-an-id", {"ICP_Tier__c": "A"})
    assert err.value.content[0]["errorCode"] == "MALFORMED_ID"


def test_collection_update_mixes_successes_and_every_validation_error(clean_sb, sf, account_ids):
    deleted = account_ids[-1]
    clean_sb.sf.delete("Account", deleted)
    opportunity = clean_sb.sf.records("Opportunity")[0]["Id"]
    ok = account_ids[2]
    cases = [
        ({"id": ok, "ICP_Tier__c": "B", "ICP_Segment__c": "SMB", "ICP_Model__c": "v1"}, None),
        ({"id": account_ids[3], "Nope__c": 1}, "INVALID_FIELD"),
        ({"id": account_ids[4], "ICP_Fit_Score__c": "high"}, "INVALID_TYPE_ON_FIELD_IN_RECORD"),
        ({"id": account_ids[5], "ICP_Fit_Score__c": 1000}, "NUMBER_OUTSIDE_VALID_RANGE"),
        ({"id": account_ids[6], "ICP_Model__c": "x" * 41}, "STRING_TOO_LONG"),
        ({"id": account_ids[7], "ICP_Reasons__c": "r" * 1025}, "STRING_TOO_LONG"),
        ({"id": account_ids[8], "ICP_Segment__c": "Galactic"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ({"id": deleted, "ICP_Tier__c": "A"}, "ENTITY_IS_DELETED"),
        ({"id": "001xyz", "ICP_Tier__c": "A"}, "MALFORMED_ID"),
        ({"id": opportunity, "ICP_Tier__c": "A"}, "MALFORMED_ID"),
        ({"id": account_ids[0][:9] + "zzzzzz", "ICP_Tier__c": "A"}, "INVALID_CROSS_REFERENCE_KEY"),
        ({"id": account_ids[9], "CreatedDate": "2020-01-01T00:00:00Z"}, "INVALID_FIELD_FOR_INSERT_UPDATE"),
        ({"id": account_ids[10], "Name": None}, "REQUIRED_FIELD_MISSING"),
        ({"id": account_ids[11], "ICP_Scored_At__c": "yesterday"}, "INVALID_TYPE_ON_FIELD_IN_RECORD"),
        ({"id": account_ids[12], "ParentId": account_ids[0][:9] + "zzzzzz"}, "INVALID_CROSS_REFERENCE_KEY"),
        ({"id": ok, "ICP_Tier__c": "C"}, "DUPLICATE_VALUE"),
        ({"ICP_Tier__c": "A"}, "MISSING_ARGUMENT"),
    ]
    before = by_id(clean_sb)
    results = sf.restful("composite/sobjects", method="PATCH", json=collection([c[0] for c in cases]))
    assert len(results) == len(cases)
    for (record, code), result in zip(cases, results, strict=True):
        if code is None:
            assert result == {"id": ok, "success": True, "errors": []}
        else:
            assert result["success"] is False, record
            assert result["errors"][0]["statusCode"] == code, (record, result)
            assert set(result["errors"][0]) == {"statusCode", "message", "fields"}
    after = by_id(clean_sb)
    assert (after[ok]["ICP_Tier__c"], after[ok]["ICP_Segment__c"], after[ok]["ICP_Model__c"]) == (
        "B",
        "SMB",
        "v1",
    )
    changed = {i for i in after if after[i] != before[i]}
    assert changed == {ok}
    assert clean_sb.calls.snapshot()["sf.composite.sobjects"] == 1


def test_failed_records_with_a_known_id_report_it(clean_sb, sf, account_ids):
    [result] = sf.restful(
        "composite/sobjects", method="PATCH", json=collection([{"id": account_ids[20], "ICP_Tier__c": "Q"}])
    )
    assert result["id"] == account_ids[20] and result["success"] is False
    [result] = sf.restful(
        "composite/sobjects", method="PATCH", json=collection([{"id": "bad", "ICP_Tier__c": "A"}])
    )
    assert "id" not in result


def test_all_or_none_rolls_everything_back(clean_sb, sf, account_ids):
    before = by_id(clean_sb)
    records = [
        {"id": account_ids[30], "ICP_Tier__c": "A"},
        {"id": account_ids[31], "ICP_Tier__c": "nope"},
        {"id": account_ids[32], "ICP_Tier__c": "B"},
    ]
    results = sf.restful("composite/sobjects", method="PATCH", json=collection(records, all_or_none=True))
    assert [r["success"] for r in results] == [False, False, False]
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert results[1]["errors"][0]["statusCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert results[2]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert by_id(clean_sb) == before
    # The same batch without the bad record goes through, all in one timestamp.
    results = sf.restful(
        "composite/sobjects", method="PATCH", json=collection(records[::2], all_or_none=True)
    )
    assert [r["success"] for r in results] == [True, True]
    after = by_id(clean_sb)
    assert after[account_ids[30]]["SystemModstamp"] == after[account_ids[32]]["SystemModstamp"]


def test_more_than_200_records_is_a_bad_request(clean_sb, sf, account_ids):
    records = [{"id": account_ids[i % len(account_ids)], "ICP_Tier__c": "A"} for i in range(201)]
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.restful("composite/sobjects", method="PATCH", json=collection(records))
    assert err.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.restful("composite/sobjects", method="PATCH", data="{not json")
    assert err.value.content[0]["errorCode"] == "JSON_PARSER_ERROR"


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("record_lock", "UNABLE_TO_LOCK_ROW"),
        ("validation", "FIELD_CUSTOM_VALIDATION_EXCEPTION"),
        ("picklist", "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
    ],
)
def test_record_faults_fail_one_record_and_spare_the_others(clean_sb, sf, account_ids, kind, code):
    clean_sb.faults.inject(kind, times=1, only="sf.composite.sobjects")
    records = [{"id": account_ids[40 + i], "ICP_Tier__c": "D"} for i in range(3)]
    results = sf.restful("composite/sobjects", method="PATCH", json=collection(records))
    assert [r["success"] for r in results] == [False, True, True]
    assert results[0]["errors"][0]["statusCode"] == code
    if kind == "picklist":
        assert results[0]["errors"][0]["fields"] == ["ICP_Tier__c"]
    assert clean_sb.faults.fired[kind] == 1


def test_opportunity_stage_drives_is_won_and_is_closed(clean_sb, sf):
    opportunity = next(o for o in clean_sb.sf.records("Opportunity") if not o["IsClosed"])
    sf.Opportunity.update(opportunity["Id"], {"StageName": "Closed Won"})
    after = by_id(clean_sb, "Opportunity")[opportunity["Id"]]
    assert (after["IsClosed"], after["IsWon"]) == (True, True)
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.Opportunity.update(opportunity["Id"], {"IsWon": False})
    assert err.value.content[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"


def test_datetimes_are_stored_in_utc(clean_sb, sf, account_ids):
    sf.Account.update(account_ids[50], {"ICP_Scored_At__c": "2026-03-01T10:30:00+01:00"})
    assert by_id(clean_sb)[account_ids[50]]["ICP_Scored_At__c"] == "2026-03-01T09:30:00.000+0000"


def test_a_reps_edit_is_validated_and_leaves_their_fingerprint(clean_sb, account_ids):
    target = account_ids[60]
    before = by_id(clean_sb)[target]
    clean_sb.sf.edit("Account", target, {"ICP_Tier__c": "C", "Industry": "Logistics"})
    after = by_id(clean_sb)[target]
    assert after["LastModifiedById"] == REP_USER_ID
    assert after["SystemModstamp"] > before["SystemModstamp"]
    assert (after["ICP_Tier__c"], after["Industry"]) == ("C", "Logistics")
    with pytest.raises(RecordError) as err:
        clean_sb.sf.edit("Account", target, {"ICP_Tier__c": "E"})
    assert err.value.errors[0]["statusCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert clean_sb.calls.count() == 0  # direct edits are not API calls


def test_delete_through_the_api(clean_sb, sf, account_ids):
    target = account_ids[70]
    assert sf.Account.delete(target) == 204
    assert by_id(clean_sb)[target]["IsDeleted"] is True
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.get(target)
