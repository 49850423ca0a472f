"""HubSpot sandbox: `batch_api.update` answers 200 when every input succeeds and 207 with HubSpot-shaped
per-input errors (which the SDK returns, not raises) when some fail; the good inputs are still applied."""

from __future__ import annotations

import json

import pytest
from hubspot import HubSpot
from hubspot.crm.companies import ApiException, BatchInputSimplePublicObjectBatchInput

from sandbox import Sandbox
from sandbox.hubspot.store import COMPANY_ID_BASE


@pytest.fixture(scope="module")
def sb():
    # One sandbox for the module (each test writes to its own companies): starting one costs ~0.7 s.
    with Sandbox(accounts=60, seed=5, with_icp_fields=True, hubspot_rate_limit=100_000) as sandbox:
        yield sandbox


@pytest.fixture(autouse=True)
def no_faults(sb):
    sb.faults.clear()
    yield
    sb.faults.clear()


@pytest.fixture(scope="module")
def batch(sb):
    api = HubSpot(
        access_token=sb.hubspot.access_token, host=sb.hubspot.base_url, client_side_validation=True
    ).crm.companies.batch_api

    def update(inputs: list[dict]):
        return api.update(BatchInputSimplePublicObjectBatchInput(inputs=inputs))

    return update


def cid(n: int) -> str:
    return str(COMPANY_ID_BASE + n)


def stored(sb, n: int) -> dict:
    return next(r for r in sb.hs.records() if r["id"] == cid(n))


ICP = {
    "icp_segment": "Enterprise",
    "icp_fit_score": "87",
    "icp_tier": "A",
    "icp_reasons": "+ industry is Manufacturing; + 1,000-5,000 employees",
    "icp_scored_at": "2026-05-01T10:00:00.000Z",
    "icp_model": "profile-3f2a",
}


def test_all_good_is_200_and_applied_with_one_timestamp(sb, batch):
    result = batch([{"id": cid(n), "properties": ICP} for n in (1, 2, 3)])
    assert type(result).__name__ == "BatchResponseSimplePublicObject"
    assert result.status == "COMPLETE" and result.completed_at and result.started_at
    assert sorted(r.id for r in result.results) == [cid(1), cid(2), cid(3)]
    for r in result.results:
        assert r.properties["icp_tier"] == "A" and r.properties["icp_fit_score"] == "87"
        assert r.properties["icp_scored_at"] == "2026-05-01T10:00:00.000Z"
    # One batch, one write time: records share their hs_lastmodifieddate to the millisecond.
    assert len({r.updated_at for r in result.results}) == 1
    for n in (1, 2, 3):
        props = stored(sb, n)["properties"]
        assert props["icp_segment"] == "Enterprise" and props["icp_reasons"] == ICP["icp_reasons"]
        assert props["hs_lastmodifieddate"] == stored(sb, n)["updatedAt"]


def test_datetime_accepts_epoch_ms_and_numbers_are_normalised(sb, batch):
    batch([{"id": cid(4), "properties": {"icp_scored_at": "1714557600000", "icp_fit_score": "87.50"}}])
    props = stored(sb, 4)["properties"]
    assert props["icp_scored_at"] == "2024-05-01T10:00:00.000Z"
    assert props["icp_fit_score"] == "87.5"


@pytest.mark.parametrize(
    ("properties", "code"),
    [
        ({"icp_nosuch": "x"}, "PROPERTY_DOESNT_EXIST"),
        ({"icp_tier": "E"}, "INVALID_OPTION"),
        ({"icp_fit_score": "high"}, "INVALID_DECIMAL"),
        ({"numberofemployees": "12.5"}, "INVALID_INTEGER"),
        ({"icp_scored_at": "last tuesday"}, "INVALID_DATETIME"),
        ({"hs_lastmodifieddate": "2024-01-01T00:00:00Z"}, "READ_ONLY_VALUE"),
        ({"hs_is_target_account": "maybe"}, "INVALID_BOOLEAN"),
    ],
)
def test_invalid_inputs_are_207_and_the_rest_applied(sb, batch, properties, code):
    result = batch(
        [{"id": cid(5), "properties": {"icp_tier": "B"}}, {"id": cid(6), "properties": properties}]
    )
    assert type(result).__name__ == "BatchResponseSimplePublicObjectWithErrors"
    assert result.num_errors == 1 and [r.id for r in result.results] == [cid(5)]
    error = result.errors[0]
    assert error.status == "error" and error.category == "VALIDATION_ERROR"
    assert error.context == {"ids": [cid(6)]}
    assert error.errors[0].code == code and code in error.message
    assert stored(sb, 5)["properties"]["icp_tier"] == "B"
    assert stored(sb, 6)["properties"]["icp_tier"] is None


def test_unknown_and_archived_ids_are_object_not_found(sb, batch):
    # Company 8 is archived here; no other test uses it.
    sb.hs.archive("companies", cid(8))
    result = batch(
        [
            {"id": cid(7), "properties": {"icp_tier": "C"}},
            {"id": cid(8), "properties": {"icp_tier": "C"}},
            {"id": "999", "properties": {"icp_tier": "C"}},
        ]
    )
    assert result.num_errors == 1
    assert result.errors[0].category == "OBJECT_NOT_FOUND"
    assert sorted(result.errors[0].context["ids"]) == sorted([cid(8), "999"])
    assert [r.id for r in result.results] == [cid(7)]


@pytest.mark.parametrize(
    ("kind", "category", "code", "first"),
    [
        ("record_lock", "CONFLICT", "CONFLICT", 30),
        ("validation", "VALIDATION_ERROR", None, 33),
        ("picklist", "VALIDATION_ERROR", "INVALID_OPTION", 36),
    ],
)
def test_record_faults_fail_one_record_each(sb, batch, kind, category, code, first):
    sb.faults.inject(kind, times=1, only="hs.companies.batch.update")
    result = batch([{"id": cid(n), "properties": {"icp_tier": "D"}} for n in (first, first + 1, first + 2)])
    assert result.num_errors == 1 and len(result.results) == 2
    error = result.errors[0]
    assert error.category == category
    if code:
        assert error.errors[0].code == code
    failed = error.context["ids"][0]
    assert stored(sb, int(failed) - COMPANY_ID_BASE)["properties"]["icp_tier"] is None
    assert sb.faults.fired[kind] == 1


def test_more_than_100_inputs_is_400(batch):
    with pytest.raises(ApiException) as err:
        batch([{"id": cid(1), "properties": {"icp_tier": "A"}}] * 101)
    assert err.value.status == 400
    assert json.loads(err.value.body)["category"] == "VALIDATION_ERROR"


def test_duplicate_ids_are_400(batch):
    with pytest.raises(ApiException) as err:
        batch(
            [{"id": cid(1), "properties": {"icp_tier": "A"}}, {"id": cid(1), "properties": {"icp_tier": "B"}}]
        )
    assert err.value.status == 400 and "Duplicate" in json.loads(err.value.body)["message"]


def test_empty_string_clears_a_value(sb, batch):
    batch([{"id": cid(13), "properties": {"icp_tier": "A"}}])
    batch([{"id": cid(13), "properties": {"icp_tier": ""}}])
    assert stored(sb, 13)["properties"]["icp_tier"] is None


def test_writes_move_records_into_an_incremental_search(sb, batch):
    from hubspot.crm.companies import PublicObjectSearchRequest

    api = HubSpot(
        access_token=sb.hubspot.access_token, host=sb.hubspot.base_url, client_side_validation=True
    ).crm.companies.search_api
    result = batch([{"id": cid(n), "properties": {"icp_tier": "B"}} for n in (20, 21)])
    stamp = result.results[0].properties["hs_lastmodifieddate"]
    found = api.do_search(
        PublicObjectSearchRequest(
            filter_groups=[
                {"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": stamp}]}
            ],
            sorts=[{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
        )
    )
    # Other tests of this module may have written since, never before: 20 and 21 come first.
    assert [r.id for r in found.results][:2] == [cid(20), cid(21)]
