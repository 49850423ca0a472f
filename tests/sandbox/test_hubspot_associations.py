"""HubSpot sandbox: deal-company associations through the v4 basic and batch APIs and the v3 batch read,
agreeing with the book the sandbox was seeded from."""

from __future__ import annotations

import pytest
from hubspot import HubSpot
from hubspot.crm.associations import BatchInputPublicObjectId
from hubspot.crm.associations.v4 import BatchInputPublicFetchAssociationsBatchRequest

from sandbox import Sandbox
from sandbox.book import generate_book
from sandbox.hubspot.store import COMPANY_ID_BASE, DEAL_ID_BASE


@pytest.fixture(scope="module")
def sb():
    with Sandbox(accounts=200, seed=9, hubspot_rate_limit=100_000) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def hs(sb):
    return HubSpot(
        access_token=sb.hubspot.access_token, host=sb.hubspot.base_url, client_side_validation=True
    )


@pytest.fixture(scope="module")
def owner_of():
    """deal id -> company id, as the book says."""
    deals = generate_book(200, seed=9).deals
    return {
        str(DEAL_ID_BASE + 1 + i): str(COMPANY_ID_BASE + int(acc[3:]))
        for i, acc in enumerate(deals["account_id"])
    }


def test_v4_basic_get_page_lists_the_deals_company(hs, owner_of):
    api = hs.crm.associations.v4.basic_api
    deal_id = next(iter(owner_of))
    page = api.get_page("deals", deal_id, "companies")
    assert [str(r.to_object_id) for r in page.results] == [owner_of[deal_id]]
    types = page.results[0].association_types
    assert {(t.category, t.type_id, t.label) for t in types} == {
        ("HUBSPOT_DEFINED", 5, "Primary"),
        ("HUBSPOT_DEFINED", 341, None),
    }


def test_v4_reverse_direction_and_paging(hs, owner_of):
    company = max(set(owner_of.values()), key=list(owner_of.values()).count)
    deals = sorted(d for d, c in owner_of.items() if c == company)
    assert len(deals) >= 2
    api = hs.crm.associations.v4.basic_api
    first = api.get_page("companies", company, "deals", limit=1)
    assert [str(r.to_object_id) for r in first.results] == deals[:1]
    rest = api.get_page("companies", company, "deals", after=first.paging.next.after, limit=100)
    assert [str(r.to_object_id) for r in rest.results] == deals[1:]


def test_v4_batch_read(hs, owner_of):
    deal_ids = list(owner_of)[:50]
    result = hs.crm.associations.v4.batch_api.get_page(
        "deals",
        "companies",
        BatchInputPublicFetchAssociationsBatchRequest(inputs=[{"id": d} for d in deal_ids]),
    )
    assert result.status == "COMPLETE"
    got = {r._from.id: [str(t.to_object_id) for t in r.to] for r in result.results}
    assert got == {d: [owner_of[d]] for d in deal_ids}


def test_v4_batch_read_reports_ids_without_associations(hs, owner_of):
    deal_id = next(iter(owner_of))
    result = hs.crm.associations.v4.batch_api.get_page(
        "deals",
        "companies",
        BatchInputPublicFetchAssociationsBatchRequest(inputs=[{"id": deal_id}, {"id": "1"}]),
    )
    assert result.num_errors == 1 and result.errors[0].context["ids"] == ["1"]
    assert len(result.results) == 1


def test_v3_batch_read(hs, owner_of):
    deal_ids = list(owner_of)[:10]
    result = hs.crm.associations.batch_api.read(
        "deals", "companies", BatchInputPublicObjectId(inputs=[{"id": d} for d in deal_ids])
    )
    got = {r._from.id: [t.id for t in r.to] for r in result.results}
    assert got == {d: [owner_of[d]] for d in deal_ids}
    assert all(t.type == "deal_to_company" for r in result.results for t in r.to)


def test_deal_list_with_associations_is_one_call_per_page(sb, hs, owner_of):
    sb.calls.reset()
    deals = []
    after = None
    while True:
        page = hs.crm.deals.basic_api.get_page(
            limit=100, after=after, associations=["companies"], properties=["amount"]
        )
        deals += page.results
        if page.paging is None:
            break
        after = page.paging.next.after
    assert len(deals) == len(owner_of)
    assert {d.id: d.associations["companies"].results[0].id for d in deals} == owner_of
    assert sb.calls.snapshot() == {"hs.deals.list": -(-len(owner_of) // 100)}


def test_archived_companies_drop_out_of_associations(sb, hs, owner_of):
    deal_id, company = list(owner_of.items())[-1]
    sb.hs.archive("companies", company)
    page = hs.crm.associations.v4.basic_api.get_page("deals", deal_id, "companies")
    assert page.results == []
