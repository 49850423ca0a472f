"""HubSpot sandbox: every injected fault as the SDK sees it (429, 5xx, a connection dropped mid-body, an
expired token), the call counter, and the same faults again under the same seed."""

from __future__ import annotations

import json

import pytest
import urllib3
from hubspot import HubSpot
from hubspot.crm.companies import (
    ApiException,
    BatchInputSimplePublicObjectBatchInput,
    PublicObjectSearchRequest,
)
from hubspot.crm.companies.exceptions import ServiceException, UnauthorizedException
from urllib3.util.retry import Retry

from sandbox import Sandbox
from sandbox.hubspot.store import COMPANY_ID_BASE

SPEC = "server_error:0.3,rate_limit:0.2@hs.companies.list,seed=42"


@pytest.fixture(scope="module")
def sb():
    with Sandbox(accounts=40, seed=3, hubspot_rate_limit=100_000, with_icp_fields=True) as sandbox:
        yield sandbox


def no_retries(sb: Sandbox) -> HubSpot:
    # Retry(0): no transport retries, so each fault reaches the test as it would reach a connector.
    return HubSpot(
        access_token=sb.hubspot.access_token,
        host=sb.hubspot.base_url,
        client_side_validation=True,
        retry=Retry(0),
    )


@pytest.fixture(scope="module")
def hs(sb):
    return no_retries(sb)


@pytest.fixture
def clean(sb):
    sb.faults.clear()
    sb.calls.reset()
    yield sb
    sb.faults.clear()


def outcomes(hs, n: int) -> list[str]:
    """What n list calls met: "ok", "429" or "5xx" (the 502/503 alternation is not part of the draw)."""
    out = []
    for _ in range(n):
        try:
            hs.crm.companies.basic_api.get_page(limit=1)
            out.append("ok")
        except ApiException as exc:
            out.append("5xx" if exc.status >= 500 else str(exc.status))
    return out


def test_faults_from_a_spec_replay_identically_under_the_same_seed():
    with Sandbox(accounts=5, seed=3, faults=SPEC, hubspot_rate_limit=100_000) as sb:
        hs = no_retries(sb)
        first = outcomes(hs, 30)
        assert set(first) == {"ok", "429", "5xx"}
        # Re-arm the same faults under the same seed: the same calls fail the same way.
        sb.faults.clear()
        sb.faults.inject("server_error", rate=0.3)
        sb.faults.inject("rate_limit", rate=0.2, only="hs.companies.list")
        sb.faults.reseed(42)
        assert outcomes(hs, 30) == first
        sb.faults.reseed(43)
        assert outcomes(hs, 30) != first


def test_rate_limit_fault_is_429_with_retry_after_1(clean, hs):
    clean.faults.inject("rate_limit", times=1, only="hs.companies.search")
    with pytest.raises(ApiException) as err:
        hs.crm.companies.search_api.do_search(PublicObjectSearchRequest(limit=1))
    assert err.value.status == 429 and err.value.headers["Retry-After"] == "1"
    body = json.loads(err.value.body)
    assert (body["errorType"], body["policyName"]) == ("RATE_LIMIT", "TEN_SECONDLY_ROLLING")
    assert hs.crm.companies.search_api.do_search(PublicObjectSearchRequest(limit=1)).total == 40
    assert clean.calls.snapshot() == {"hs.companies.search": 2}


def test_server_error_is_502_then_503_with_a_json_body(clean, hs):
    clean.faults.inject("server_error", times=2, only="hs.companies.batch.read")
    statuses = []
    for _ in range(2):
        with pytest.raises(ServiceException) as err:
            hs.crm.companies.batch_api.read(
                {"properties": [], "propertiesWithHistory": [], "inputs": [{"id": "1"}]}
            )
        statuses.append(err.value.status)
        assert json.loads(err.value.body)["status"] == "error"
    assert sorted(statuses) == [502, 503]


def test_expired_session_is_401_and_the_token_works_again(clean, hs):
    clean.faults.inject("expire_session", times=1)
    with pytest.raises(UnauthorizedException) as err:
        hs.crm.companies.basic_api.get_page(limit=1)
    assert json.loads(err.value.body)["category"] == "EXPIRED_AUTHENTICATION"
    assert len(hs.crm.companies.basic_api.get_page(limit=1).results) == 1


def test_drop_cuts_a_post_mid_body_and_urllib3_raises_protocol_error(clean, hs):
    clean.faults.inject("drop", times=1, only="hs.companies.search")
    with pytest.raises(urllib3.exceptions.ProtocolError) as err:
        hs.crm.companies.search_api.do_search(PublicObjectSearchRequest(limit=20, properties=["name"]))
    assert "IncompleteRead" in repr(err.value)
    assert hs.crm.companies.search_api.do_search(PublicObjectSearchRequest(limit=20)).total == 40


def test_drop_after_a_write_still_applied_it(clean, hs):
    """The connection dies while the answer is on its way: the update happened, the client cannot know."""
    clean.faults.inject("drop", times=1, only="hs.companies.batch.update")
    company = str(COMPANY_ID_BASE + 3)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        hs.crm.companies.batch_api.update(
            BatchInputSimplePublicObjectBatchInput(inputs=[{"id": company, "properties": {"icp_tier": "A"}}])
        )
    stored = next(r for r in clean.hs.records() if r["id"] == company)
    assert stored["properties"]["icp_tier"] == "A"


def test_a_dropped_get_is_retried_by_urllib3_when_retries_allow(clean):
    hs = HubSpot(
        access_token=clean.hubspot.access_token, host=clean.hubspot.base_url, client_side_validation=True
    )
    clean.faults.inject("drop", times=1, only="hs.companies.list")
    assert len(hs.crm.companies.basic_api.get_page(limit=10).results) == 10
    assert clean.calls.snapshot() == {"hs.companies.list": 2}


def test_every_request_is_counted_by_label(clean, hs):
    hs.crm.companies.basic_api.get_page(limit=1)
    hs.crm.companies.basic_api.get_by_id(str(COMPANY_ID_BASE + 1))
    hs.crm.deals.basic_api.get_page(limit=1)
    hs.crm.properties.core_api.get_by_name("companies", "name")
    hs.crm.properties.groups_api.get_all("companies")
    hs.crm.associations.v4.basic_api.get_page("deals", "1", "companies")
    assert clean.calls.snapshot() == {
        "hs.companies.list": 1,
        "hs.companies.get": 1,
        "hs.deals.list": 1,
        "hs.properties.get": 1,
        "hs.properties.groups.list": 1,
        "hs.associations.get": 1,
    }
    assert clean.calls.count("hs.") == 6


def test_record_faults_replay_under_the_same_seed(clean, hs):
    inputs = [{"id": str(COMPANY_ID_BASE + n), "properties": {"icp_model": "m1"}} for n in range(1, 31)]

    def failed_ids() -> list[str]:
        result = hs.crm.companies.batch_api.update(BatchInputSimplePublicObjectBatchInput(inputs=inputs))
        return sorted(i for e in (result.errors or []) for i in e.context["ids"])

    clean.faults.reseed(7)
    clean.faults.inject("record_lock", rate=0.2)
    first = failed_ids()
    assert 0 < len(first) < 30
    clean.faults.reseed(7)
    assert failed_ids() == first
