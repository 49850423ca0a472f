"""HubSpot sandbox: the properties API (`core_api` and `groups_api`) as `icp fields` will drive it, the
seeded HubSpot-defined definitions, and enumeration options enforced on writes."""

from __future__ import annotations

import json

import pytest
from hubspot import HubSpot
from hubspot.crm.companies import BatchInputSimplePublicObjectBatchInput
from hubspot.crm.properties import (
    ApiException,
    OptionInput,
    PropertyCreate,
    PropertyGroupCreate,
    PropertyUpdate,
)
from hubspot.crm.properties.exceptions import NotFoundException

from sandbox import Sandbox
from sandbox.hubspot.store import COMPANY_ID_BASE


@pytest.fixture(scope="module")
def sb():
    with Sandbox(accounts=30, seed=2, hubspot_rate_limit=100_000) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def hs(sb):
    return HubSpot(
        access_token=sb.hubspot.access_token, host=sb.hubspot.base_url, client_side_validation=True
    )


@pytest.fixture(scope="module")
def icp_group(hs):
    return hs.crm.properties.groups_api.create(
        "companies", PropertyGroupCreate(name="icp_sync", label="ICP sync", display_order=5)
    )


def test_native_icp_properties_are_seeded(hs):
    core = hs.crm.properties.core_api
    tier = core.get_by_name("companies", "hs_ideal_customer_profile")
    assert (tier.type, tier.field_type, tier.hubspot_defined) == ("enumeration", "radio", True)
    assert [(o.value, o.label) for o in tier.options] == [
        ("tier_1", "Tier 1"),
        ("tier_2", "Tier 2"),
        ("tier_3", "Tier 3"),
    ]
    target = core.get_by_name("companies", "hs_is_target_account")
    assert (target.type, target.field_type) == ("bool", "booleancheckbox")
    assert sorted(o.value for o in target.options) == ["false", "true"]


def test_get_all_lists_company_and_deal_properties(hs):
    companies = {p.name: p for p in hs.crm.properties.core_api.get_all("companies").results}
    assert {
        "name",
        "domain",
        "industry",
        "numberofemployees",
        "annualrevenue",
        "hs_parent_company_id",
    } <= set(companies)
    assert companies["industry"].type == "enumeration" and companies["industry"].options
    assert companies["hs_lastmodifieddate"].modification_metadata.read_only_value is True
    assert not any(name.startswith("icp_") for name in companies), "icp_* exist only once created"
    deals = {p.name for p in hs.crm.properties.core_api.get_all("deals").results}
    assert {
        "dealname",
        "amount",
        "dealstage",
        "pipeline",
        "closedate",
        "hs_is_closed_won",
        "lead_source",
    } <= deals


def test_unknown_property_is_404(hs):
    with pytest.raises(NotFoundException) as err:
        hs.crm.properties.core_api.get_by_name("companies", "icp_nothing")
    assert json.loads(err.value.body)["category"] == "OBJECT_NOT_FOUND"


def test_groups_create_and_list(hs, icp_group):
    assert (icp_group.name, icp_group.label, icp_group.display_order, icp_group.archived) == (
        "icp_sync",
        "ICP sync",
        5,
        False,
    )
    names = [g.name for g in hs.crm.properties.groups_api.get_all("companies").results]
    assert "icp_sync" in names and "companyinformation" in names
    with pytest.raises(ApiException) as err:
        hs.crm.properties.groups_api.create("companies", PropertyGroupCreate(name="icp_sync", label="again"))
    assert err.value.status == 409


def test_create_update_and_enforce_an_enumeration(sb, hs, icp_group):
    core = hs.crm.properties.core_api
    created = core.create(
        "companies",
        PropertyCreate(
            name="icp_tier",
            label="ICP Tier",
            type="enumeration",
            field_type="select",
            group_name="icp_sync",
            options=[
                OptionInput(label=t, value=t, hidden=False, display_order=i) for i, t in enumerate("ABC")
            ],
        ),
    )
    assert created.name == "icp_tier" and created.hubspot_defined is False and created.created_at
    assert core.get_by_name("companies", "icp_tier").options[2].value == "C"

    batch = hs.crm.companies.batch_api
    one = {"id": str(COMPANY_ID_BASE + 1), "properties": {"icp_tier": "D"}}
    refused = batch.update(BatchInputSimplePublicObjectBatchInput(inputs=[one]))
    assert refused.errors[0].errors[0].code == "INVALID_OPTION"

    options = [OptionInput(label=t, value=t, hidden=False, display_order=i) for i, t in enumerate("ABCD")]
    updated = core.update("companies", "icp_tier", PropertyUpdate(options=options, label="ICP tier (A-D)"))
    assert [o.value for o in updated.options] == list("ABCD") and updated.label == "ICP tier (A-D)"
    assert updated.updated_at >= created.updated_at
    accepted = batch.update(BatchInputSimplePublicObjectBatchInput(inputs=[one]))
    assert accepted.results[0].properties["icp_tier"] == "D"


def test_create_every_icp_property_type(hs, icp_group):
    core = hs.crm.properties.core_api
    specs = [
        ("icp_fit_score", "number", "number"),
        ("icp_reasons", "string", "textarea"),
        ("icp_scored_at", "datetime", "date"),
        ("icp_model", "string", "text"),
        ("icp_target", "bool", "booleancheckbox"),
    ]
    for name, type_, field_type in specs:
        made = core.create(
            "companies",
            PropertyCreate(name=name, label=name, type=type_, field_type=field_type, group_name="icp_sync"),
        )
        assert (made.type, made.field_type) == (type_, field_type)
    assert {o.value for o in core.get_by_name("companies", "icp_target").options} == {"true", "false"}


def test_duplicate_create_is_409(hs, icp_group):
    core = hs.crm.properties.core_api
    spec = PropertyCreate(name="icp_dupe", label="x", type="string", field_type="text", group_name="icp_sync")
    core.create("companies", spec)
    with pytest.raises(ApiException) as err:
        core.create("companies", spec)
    assert err.value.status == 409
    body = json.loads(err.value.body)
    assert body["category"] == "OBJECT_ALREADY_EXISTS" and "PROPERTY_EXISTS" in body["subCategory"]


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "Bad Name", "type": "string", "field_type": "text"},
        {"name": "hs_mine", "type": "string", "field_type": "text"},
        {"name": "icp_x1", "type": "number", "field_type": "select"},
        {"name": "icp_x2", "type": "string", "field_type": "text", "group_name": "nosuchgroup"},
    ],
)
def test_invalid_definitions_are_400(hs, icp_group, spec):
    spec = {"label": "x", "group_name": "icp_sync", **spec}
    with pytest.raises(ApiException) as err:
        hs.crm.properties.core_api.create("companies", PropertyCreate(**spec))
    assert err.value.status == 400


def test_hubspot_defined_definitions_are_read_only(hs):
    with pytest.raises(ApiException) as err:
        hs.crm.properties.core_api.update(
            "companies", "hs_ideal_customer_profile", PropertyUpdate(label="Mine")
        )
    assert err.value.status == 400


def test_archived_property_disappears(hs, icp_group):
    core = hs.crm.properties.core_api
    core.create(
        "companies",
        PropertyCreate(name="icp_old", label="old", type="string", field_type="text", group_name="icp_sync"),
    )
    core.archive("companies", "icp_old")
    with pytest.raises(NotFoundException):
        core.get_by_name("companies", "icp_old")
    assert core.get_by_name("companies", "icp_old", archived=True).archived is True


def test_with_icp_fields_seeds_the_six_properties():
    with Sandbox(accounts=5, seed=1, with_icp_fields=True) as sb:
        hs = HubSpot(
            access_token=sb.hubspot.access_token, host=sb.hubspot.base_url, client_side_validation=True
        )
        props = {p.name: p for p in hs.crm.properties.core_api.get_all("companies").results}
        kinds = {n: (p.type, p.field_type, p.group_name) for n, p in props.items() if n.startswith("icp_")}
        assert kinds == {
            "icp_segment": ("enumeration", "select", "icp_sync"),
            "icp_fit_score": ("number", "number", "icp_sync"),
            "icp_tier": ("enumeration", "select", "icp_sync"),
            "icp_reasons": ("string", "textarea", "icp_sync"),
            "icp_scored_at": ("datetime", "date", "icp_sync"),
            "icp_model": ("string", "text", "icp_sync"),
        }
        assert [o.value for o in props["icp_tier"].options] == list("ABCD")
