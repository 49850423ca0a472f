"""HubSpot sandbox: CRM search through `search_api.do_search` (every operator family, sorts, paging, the
10,000-result cap, malformed requests) checked against the stored records."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hubspot import HubSpot
from hubspot.crm.companies import ApiException, Filter, FilterGroup, PublicObjectSearchRequest

from sandbox import Sandbox
from sandbox.hubspot.properties import parse_moment

ACCOUNTS = 10_100  # enough to page into HubSpot's 10,000-result wall


@pytest.fixture(scope="module")
def sb():
    with Sandbox(accounts=ACCOUNTS, seed=11, hubspot_rate_limit=100_000) as sandbox:
        sandbox.hs.search_window.limit = 100_000  # these tests are not about the 5/s search limit
        yield sandbox


@pytest.fixture(scope="module")
def search(sb):
    api = HubSpot(
        access_token=sb.hubspot.access_token, host=sb.hubspot.base_url, client_side_validation=True
    ).crm.companies.search_api

    def run(*filters_groups, **kw):
        groups = [FilterGroup(filters=list(g)) for g in filters_groups]
        return api.do_search(PublicObjectSearchRequest(filter_groups=groups, **kw))

    run.api = api
    return run


@pytest.fixture(scope="module")
def book(sb):
    """The stored companies, as plain dicts, to check search answers against."""
    return sb.hs.records()


def f(prop, op, value=None, **kw) -> Filter:
    return Filter(property_name=prop, operator=op, value=value, **kw)


def ids_of(result) -> set[str]:
    return {r.id for r in result.results}


def expected(book, pred) -> set[str]:
    return {r["id"] for r in book if pred(r["properties"])}


def num(value):
    return None if value is None else float(value)


def test_eq_and_neq_on_an_enumeration(search, book):
    r = search([f("industry", "EQ", "RETAIL")], limit=200)
    want = expected(book, lambda p: p["industry"] == "RETAIL")
    assert r.total == len(want) and ids_of(r) <= want
    r = search([f("industry", "NEQ", "RETAIL"), f("numberofemployees", "GT", "50000")], limit=200)
    want = expected(book, lambda p: p["industry"] != "RETAIL" and (num(p["numberofemployees"]) or 0) > 50000)
    assert r.total == len(want) and ids_of(r) == want


def test_eq_on_text_is_case_insensitive(search, book):
    name = book[5]["properties"]["name"]
    r = search([f("name", "EQ", name.upper())])
    assert ids_of(r) == {book[5]["id"]}


@pytest.mark.parametrize(
    ("op", "check"),
    [
        ("LT", lambda v: v < 100),
        ("LTE", lambda v: v <= 100),
        ("GT", lambda v: v > 100),
        ("GTE", lambda v: v >= 100),
    ],
)
def test_number_comparisons_are_numeric(search, book, op, check):
    r = search([f("numberofemployees", op, "100")], limit=1)
    want = expected(
        book, lambda p: p["numberofemployees"] is not None and check(float(p["numberofemployees"]))
    )
    assert r.total == len(want)


def test_between_is_inclusive(search, book):
    r = search([f("numberofemployees", "BETWEEN", "200", high_value="2500")], limit=1)
    want = expected(
        book, lambda p: p["numberofemployees"] is not None and 200 <= int(p["numberofemployees"]) <= 2500
    )
    assert r.total == len(want)


def test_in_and_not_in(search, book):
    wanted = ["DE", "FR", "NL"]
    r = search([f("country", "IN", values=wanted)], limit=1)
    assert r.total == len(expected(book, lambda p: p["country"] in wanted))
    r = search([f("country", "NOT_IN", values=wanted)], limit=1)
    # Companies without a country are "not in" the list too.
    assert r.total == len(expected(book, lambda p: p["country"] not in wanted))


def test_has_and_not_has_property(search, book):
    has = search([f("numberofemployees", "HAS_PROPERTY")], limit=1).total
    has_not = search([f("numberofemployees", "NOT_HAS_PROPERTY")], limit=1).total
    assert has_not == len(expected(book, lambda p: p["numberofemployees"] is None)) > 0
    assert has + has_not == ACCOUNTS


def test_contains_token_and_wildcards(search, book):
    r = search([f("name", "CONTAINS_TOKEN", "helios")], limit=1)
    want = expected(book, lambda p: "helios" in p["name"].lower().split())
    assert r.total == len(want) > 0
    r = search([f("domain", "CONTAINS_TOKEN", "*.example")], limit=1)
    assert r.total == ACCOUNTS
    r = search([f("name", "CONTAINS_TOKEN", "müller")], limit=1)
    assert r.total == len(expected(book, lambda p: "müller" in p["name"].lower().split())) > 0
    r = search([f("name", "NOT_CONTAINS_TOKEN", "helios")], limit=1)
    assert r.total == ACCOUNTS - len(want)


def test_datetime_filters_take_iso_or_epoch_ms(search, book):
    cut = "2025-01-01T00:00:00.000Z"
    want = expected(book, lambda p: p["hs_lastmodifieddate"] >= cut)
    iso = search([f("hs_lastmodifieddate", "GTE", cut)], limit=1)
    ms = search([f("hs_lastmodifieddate", "GTE", str(parse_moment(cut)))], limit=1)
    assert iso.total == ms.total == len(want)


def test_groups_are_ored_and_filters_anded(search, book):
    r = search(
        [f("industry", "EQ", "RETAIL"), f("country", "EQ", "DE")],
        [f("industry", "EQ", "FARMING")],
        limit=1,
    )
    want = expected(
        book, lambda p: (p["industry"] == "RETAIL" and p["country"] == "DE") or p["industry"] == "FARMING"
    )
    assert r.total == len(want)


def test_sorts_and_paging_cover_each_record_once(search, book):
    sorts = [
        {"propertyName": "numberofemployees", "direction": "DESCENDING"},
        {"propertyName": "hs_object_id", "direction": "ASCENDING"},
    ]
    filters = [f("industry", "EQ", "COMPUTER_SOFTWARE")]
    seen, after = [], None
    while True:
        page = search(filters, sorts=sorts, limit=200, after=after, properties=["numberofemployees"])
        seen += page.results
        if page.paging is None:
            break
        after = page.paging.next.after
    want = expected(book, lambda p: p["industry"] == "COMPUTER_SOFTWARE")
    assert len(seen) == len(want) == page.total and {r.id for r in seen} == want
    sizes = [r.properties["numberofemployees"] for r in seen if r.properties["numberofemployees"] is not None]
    assert [int(s) for s in sizes] == sorted((int(s) for s in sizes), reverse=True)
    assert set(seen[0].properties) == {
        "numberofemployees",
        "createdate",
        "hs_lastmodifieddate",
        "hs_object_id",
    }


def test_string_sorts_are_accepted(search):
    r = search(
        [f("country", "EQ", "NL")], sorts=["-numberofemployees"], limit=20, properties=["numberofemployees"]
    )
    sizes = [int(x.properties["numberofemployees"]) for x in r.results if x.properties["numberofemployees"]]
    assert sizes == sorted(sizes, reverse=True)


def test_incremental_pull_by_modified_date_then_id(sb, search):
    """What an incremental pull does: GTE the watermark, sorted by hs_lastmodifieddate then hs_object_id."""
    sorts = [
        {"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"},
        {"propertyName": "hs_object_id", "direction": "ASCENDING"},
    ]
    watermark = "2026-06-01T00:00:00.000Z"
    got, after = [], None
    while True:
        page = search([f("hs_lastmodifieddate", "GTE", watermark)], sorts=sorts, limit=200, after=after)
        got += [(r.properties["hs_lastmodifieddate"], int(r.id)) for r in page.results]
        if page.paging is None:
            break
        after = page.paging.next.after
    assert got == sorted(got) and len(got) == len(set(got)) == page.total
    stamps = [g[0] for g in got]
    assert len(stamps) > len(set(stamps)), "imported records share timestamps: the id tie-break matters"


def test_paging_to_10000_is_refused_with_400(search):
    first = search(limit=200, after="9800")
    assert first.total == ACCOUNTS and len(first.results) == 200
    assert first.paging.next.after == "10000"
    with pytest.raises(ApiException) as err:
        search(limit=200, after=first.paging.next.after)
    assert err.value.status == 400
    body = json.loads(err.value.body)
    assert (
        body["status"] == "error" and body["category"] == "VALIDATION_ERROR" and "10,000" in body["message"]
    )


def test_limit_over_200_is_400(search):
    with pytest.raises(ApiException) as err:
        search(limit=201)
    assert err.value.status == 400


@pytest.mark.parametrize(
    "groups",
    [
        [[f("industry", "EQ", "RETAIL")]] * 6,  # 6 groups
        [[f("industry", "EQ", "RETAIL")] * 7],  # 7 filters in one group
        [[f("industry", "EQ", "RETAIL")] * 5] * 4,  # 20 filters in all
        [[f("nosuchproperty", "EQ", "x")]],
        [[f("numberofemployees", "GT", "many")]],
        [[f("hs_lastmodifieddate", "GT", "yesterday")]],
        [[f("numberofemployees", "BETWEEN", "1")]],
        [[f("country", "IN")]],
    ],
)
def test_malformed_searches_are_400(search, groups):
    with pytest.raises(ApiException) as err:
        search(*groups)
    assert err.value.status == 400
    assert json.loads(err.value.body)["category"] == "VALIDATION_ERROR"


def test_unknown_operator_is_400(sb):
    """The SDK's own model refuses an unknown operator, so send it without the client-side check."""
    api = HubSpot(access_token=sb.hubspot.access_token, host=sb.hubspot.base_url).crm.companies.search_api
    body = {"filterGroups": [{"filters": [{"propertyName": "name", "operator": "LIKE", "value": "a"}]}]}
    with pytest.raises(ApiException) as err:
        api.do_search(body)
    assert err.value.status == 400 and "LIKE" in json.loads(err.value.body)["message"]


def test_free_text_query(search, book):
    r = search(query="blue harbor", limit=1)
    assert r.total == len(expected(book, lambda p: "blue harbor" in p["name"].lower()))


def test_deal_search_on_closed_won(sb):
    api = HubSpot(
        access_token=sb.hubspot.access_token, host=sb.hubspot.base_url, client_side_validation=True
    ).crm.deals.search_api
    r = api.do_search(
        PublicObjectSearchRequest(
            filter_groups=[FilterGroup(filters=[f("hs_is_closed_won", "EQ", "true")])],
            properties=["dealstage", "closedate"],
            limit=50,
        )
    )
    assert r.total > 0 and all(d.properties["dealstage"] == "closedwon" for d in r.results)
    assert all(dt.date.fromisoformat(d.properties["closedate"][:10]) for d in r.results)
