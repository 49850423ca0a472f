"""HubSpot sandbox: companies and deals through the real hubspot-api-client (list, get, batch read, single
update), with the SDK's generated models validating every response (`client_side_validation=True`)."""

from __future__ import annotations

import pytest
from hubspot import HubSpot
from hubspot.crm.companies import ApiException, BatchReadInputSimplePublicObjectId, SimplePublicObjectInput
from hubspot.crm.companies.exceptions import NotFoundException, UnauthorizedException

from sandbox import Sandbox
from sandbox.book import generate_book
from sandbox.hubspot.properties import INDUSTRY_VALUES
from sandbox.hubspot.store import COMPANY_ID_BASE

ACCOUNTS = 300


def connect(sb: Sandbox, **kw) -> HubSpot:
    """The SDK pointed at the sandbox; every sub-package Configuration gets client_side_validation=True."""
    return HubSpot(
        access_token=sb.hubspot.access_token, host=sb.hubspot.base_url, client_side_validation=True, **kw
    )


@pytest.fixture(scope="module")
def sb():
    with Sandbox(accounts=ACCOUNTS, seed=7, hubspot_rate_limit=100_000) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def hs(sb):
    return connect(sb)


@pytest.fixture(scope="module")
def fresh():
    """A second sandbox for tests that write; each of them touches its own companies."""
    with Sandbox(accounts=50, seed=3, hubspot_rate_limit=100_000) as sandbox:
        yield sandbox


def test_the_client_validates_against_the_vendor_models(hs):
    config = hs.crm.companies.basic_api.api_client.configuration
    assert config.client_side_validation is True


def test_get_page_pages_through_every_company_in_id_order(hs):
    api = hs.crm.companies.basic_api
    seen, after, pages = [], None, 0
    while True:
        page = api.get_page(limit=100, after=after, properties=["name", "industry"])
        pages += 1
        seen += [c.id for c in page.results]
        if page.paging is None:
            break
        assert page.paging.next.link.startswith("http://127.0.0.1")
        after = page.paging.next.after
    assert pages == 3
    assert len(seen) == len(set(seen)) == ACCOUNTS
    assert seen == sorted(seen, key=int)


def test_last_page_has_no_paging(hs):
    page = hs.crm.companies.basic_api.get_page(limit=100, after=str(COMPANY_ID_BASE + ACCOUNTS - 4))
    assert len(page.results) == 5
    assert page.paging is None


def test_get_all_returns_every_company(hs):
    assert len(hs.crm.companies.get_all()) == ACCOUNTS


def test_only_requested_properties_come_back_plus_the_three_always_sent(hs):
    page = hs.crm.companies.basic_api.get_page(
        limit=5, properties=["industry", "numberofemployees", "nosuch"]
    )
    for company in page.results:
        assert set(company.properties) == {
            "industry",
            "numberofemployees",
            "createdate",
            "hs_lastmodifieddate",
            "hs_object_id",
        }
        assert company.properties["hs_object_id"] == company.id


def test_without_properties_the_defaults_come_back(hs):
    page = hs.crm.companies.basic_api.get_page(limit=3)
    assert set(page.results[0].properties) == {
        "createdate",
        "domain",
        "hs_lastmodifieddate",
        "hs_object_id",
        "name",
    }


def test_values_are_hubspot_strings(sb, hs):
    book = generate_book(ACCOUNTS, seed=7).accounts
    page = hs.crm.companies.basic_api.get_page(
        limit=100,
        properties=[
            "name",
            "industry",
            "numberofemployees",
            "annualrevenue",
            "country",
            "hs_parent_company_id",
        ],
    )
    by_name = {c.properties["name"]: c for c in page.results}
    for _, acc in book.head(100).iterrows():
        company = by_name[acc["name"]]
        props = company.properties
        if acc["employees"] is not None and not _missing(acc["employees"]):
            assert props["numberofemployees"] == str(int(acc["employees"]))
        else:
            assert props["numberofemployees"] is None
        if not _missing(acc["industry"]):
            assert props["industry"] == INDUSTRY_VALUES[acc["industry"]][0]
        assert props["createdate"].endswith(".000Z") and len(props["createdate"]) == 24
        assert company.created_at.year == acc["created_at"].year
    parents = [c for c in page.results if c.properties["hs_parent_company_id"]]
    assert parents, "the book has subsidiaries"
    ids = {c.id for c in hs.crm.companies.get_all()}
    assert all(c.properties["hs_parent_company_id"] in ids for c in parents)


def _missing(value) -> bool:
    import pandas as pd

    return value is None or pd.isna(value)


def test_properties_with_history_need_not_be_among_properties(hs):
    cid = str(COMPANY_ID_BASE + 4)
    one = hs.crm.companies.basic_api.get_by_id(cid, properties=["name"], properties_with_history=["city"])
    page = hs.crm.companies.basic_api.get_page(limit=1, properties_with_history=["city", "nosuch"])
    for company in (one, page.results[0]):
        assert "city" not in company.properties
        (entry,) = company.properties_with_history["city"]
        assert entry.value and entry.timestamp == company.updated_at and entry.source_type == "API"


def test_limit_over_100_is_refused(hs):
    with pytest.raises(ApiException) as err:
        hs.crm.companies.basic_api.get_page(limit=101)
    assert err.value.status == 400


def test_get_by_id_and_404(hs):
    api = hs.crm.companies.basic_api
    company = api.get_by_id(str(COMPANY_ID_BASE + 7), properties=["name", "city"])
    assert company.id == str(COMPANY_ID_BASE + 7)
    assert "city" in company.properties
    with pytest.raises(NotFoundException) as err:
        api.get_by_id("123")
    assert "OBJECT_NOT_FOUND" in err.value.body


def test_wrong_token_is_401_with_hubspots_error_body(sb):
    bad = HubSpot(access_token="pat-wrong", host=sb.hubspot.base_url, client_side_validation=True)
    with pytest.raises(UnauthorizedException) as err:
        bad.crm.companies.basic_api.get_page()
    assert err.value.status == 401
    import json

    body = json.loads(err.value.body)
    assert body["status"] == "error" and body["category"] == "INVALID_AUTHENTICATION"
    assert body["correlationId"] and body["message"]


def test_archived_companies_leave_the_list_and_appear_with_archived_true(fresh):
    hs = connect(fresh)
    victim = str(COMPANY_ID_BASE + 2)
    fresh.hs.archive("companies", victim)
    live = [c.id for c in hs.crm.companies.get_all()]
    assert victim not in live and len(live) == len(fresh.hs.records())
    gone = {c.id: c for c in hs.crm.companies.basic_api.get_page(archived=True, limit=100).results}
    assert gone[victim].archived is True and gone[victim].archived_at is not None
    assert all(c.archived for c in gone.values())
    with pytest.raises(NotFoundException):
        hs.crm.companies.basic_api.get_by_id(victim)


def test_batch_read_200_and_207_for_missing_ids(hs):
    api = hs.crm.companies.batch_api
    ids = [str(COMPANY_ID_BASE + i) for i in (1, 2, 3)]
    ok = api.read(
        BatchReadInputSimplePublicObjectId(
            properties=["name"], properties_with_history=[], inputs=[{"id": i} for i in ids]
        )
    )
    assert ok.status == "COMPLETE" and sorted(r.id for r in ok.results) == ids
    assert not hasattr(ok, "errors") or getattr(ok, "errors", None) is None
    mixed = api.read(
        BatchReadInputSimplePublicObjectId(
            properties=["name"], properties_with_history=["name"], inputs=[{"id": ids[0]}, {"id": "999"}]
        )
    )
    assert mixed.num_errors == 1
    assert mixed.errors[0].category == "OBJECT_NOT_FOUND"
    assert mixed.errors[0].context == {"ids": ["999"]}
    assert [r.id for r in mixed.results] == [ids[0]]
    assert mixed.results[0].properties_with_history["name"][0].value == mixed.results[0].properties["name"]


def test_batch_read_over_100_inputs_is_400(hs):
    with pytest.raises(ApiException) as err:
        hs.crm.companies.batch_api.read(
            BatchReadInputSimplePublicObjectId(
                properties=[], properties_with_history=[], inputs=[{"id": str(i)} for i in range(101)]
            )
        )
    assert err.value.status == 400


def test_single_update_validates_and_bumps_updated_at(fresh):
    hs = connect(fresh)
    api = hs.crm.companies.basic_api
    cid = str(COMPANY_ID_BASE + 1)
    before = api.get_by_id(cid)
    updated = api.update(
        cid, SimplePublicObjectInput(properties={"city": "Lyon", "numberofemployees": "1200"})
    )
    assert updated.properties["city"] == "Lyon" and updated.properties["numberofemployees"] == "1200"
    assert updated.updated_at > before.updated_at
    assert updated.properties["hs_lastmodifieddate"] == updated.updated_at.strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{updated.updated_at.microsecond // 1000:03d}Z"
    )
    with pytest.raises(ApiException) as err:
        api.update(cid, SimplePublicObjectInput(properties={"industry": "BAKERY"}))
    assert err.value.status == 400 and "INVALID_OPTION" in err.value.body


def test_deals_list_with_company_associations(sb, hs):
    page = hs.crm.deals.basic_api.get_page(
        limit=100, properties=["dealname", "amount", "dealstage", "lead_source"], associations=["companies"]
    )
    assert page.results
    deals = generate_book(ACCOUNTS, seed=7).deals
    for deal in page.results:
        assoc = deal.associations["companies"].results
        ids = {a.id for a in assoc}
        assert len(ids) == 1, "one company per deal, listed as primary and unlabeled"
        assert {a.type for a in assoc} == {"deal_to_company", "deal_to_company_unlabeled"}
        company_id = int(next(iter(ids)))
        position = int(deal.id) - 40_000_000_000 - 1
        assert company_id == COMPANY_ID_BASE + 1 + int(deals["account_id"].iloc[position][3:]) - 1
        stage = deal.properties["dealstage"]
        assert stage in {
            "appointmentscheduled",
            "qualifiedtobuy",
            "presentationscheduled",
            "contractsent",
            "closedwon",
            "closedlost",
        }


def test_deals_batch_read(hs):
    from hubspot.crm.deals import BatchReadInputSimplePublicObjectId as DealsBatchRead

    ids = [d.id for d in hs.crm.deals.basic_api.get_page(limit=5).results]
    result = hs.crm.deals.batch_api.read(
        DealsBatchRead(
            properties=["amount", "dealstage"], properties_with_history=[], inputs=[{"id": i} for i in ids]
        )
    )
    assert sorted(r.id for r in result.results) == sorted(ids)
    assert all("dealstage" in r.properties for r in result.results)


def test_archive_through_the_api(fresh):
    hs = connect(fresh)
    victim = str(COMPANY_ID_BASE + 9)
    hs.crm.companies.basic_api.archive(victim)
    assert victim not in {r["id"] for r in fresh.hs.records()}
    assert fresh.calls.snapshot()["hs.companies.archive"] >= 1


def test_deal_stage_flags_follow_the_stage(fresh):
    hs = connect(fresh)
    deal = hs.crm.deals.basic_api.get_page(limit=1, properties=["dealstage", "hs_is_closed_won"]).results[0]
    fresh.hs.edit("deals", deal.id, {"dealstage": "closedwon"})
    again = hs.crm.deals.basic_api.get_by_id(
        deal.id, properties=["dealstage", "hs_is_closed_won", "hs_is_closed"]
    )
    assert again.properties["hs_is_closed_won"] == "true" and again.properties["hs_is_closed"] == "true"
    fresh.hs.edit("deals", deal.id, {"dealstage": "qualifiedtobuy"})
    again = hs.crm.deals.basic_api.get_by_id(deal.id, properties=["hs_is_closed_won", "hs_is_closed"])
    assert again.properties["hs_is_closed_won"] == "false" and again.properties["hs_is_closed"] == "false"


def test_direct_access_records_edit_archive(fresh):
    app = fresh.hs
    records = app.records()
    everything = app.records(include_archived=True)
    assert not app.is_empty()
    first = next(r for r in records if r["id"] == str(COMPANY_ID_BASE + 20))
    assert set(first) == {"id", "properties", "createdAt", "updatedAt", "archived"}
    app.edit("companies", first["id"], {"name": "Renamed GmbH"})
    after = next(r for r in app.records() if r["id"] == first["id"])
    assert after["properties"]["name"] == "Renamed GmbH" and after["updatedAt"] > first["updatedAt"]
    with pytest.raises(ValueError, match="INVALID_OPTION"):
        app.edit("companies", first["id"], {"industry": "nope"})
    with pytest.raises(ValueError, match="READ_ONLY_VALUE"):
        app.edit("companies", first["id"], {"hs_lastmodifieddate": "2024-01-01"})
    app.archive("companies", first["id"])
    assert len(app.records()) == len(records) - 1
    assert len(app.records(include_archived=True)) == len(everything)
    assert len(app.records("deals")) > 0


def test_a_db_file_keeps_state_and_is_not_reseeded(tmp_path):
    path = tmp_path / "crm.sqlite"
    with Sandbox(accounts=20, seed=1, db=str(path), with_icp_fields=True) as first:
        first.hs.edit("companies", str(COMPANY_ID_BASE + 1), {"icp_tier": "A"})
    with Sandbox(accounts=999, seed=2, db=str(path)) as second:
        assert not second.hs.is_empty()
        records = second.hs.records()
        assert len(records) == 20
        assert records[0]["properties"]["icp_tier"] == "A"
