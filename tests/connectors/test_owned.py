"""One table of owned fields: every part that names them reads it, so they cannot drift apart."""

from __future__ import annotations

import sqlite3

from connectors.owned import COMPARED_FIELDS, OWNED, OWNED_FIELDS, default_names
from connectors.salesforce import DEFAULT_OWNED, METADATA_TYPES, SalesforceSettings
from sandbox.hubspot.properties import icp_properties
from sandbox.salesforce.fields import icp_fields
from sync import plan
from sync.config import parse_config
from sync.state import State


def test_logical_names_and_order_come_from_the_table():
    assert OWNED_FIELDS == ("segment", "fit_score", "tier", "reasons", "scored_at", "model")
    assert tuple(f for f in OWNED_FIELDS if f != "scored_at") == COMPARED_FIELDS
    assert plan.OWNED_FIELDS is OWNED_FIELDS and plan.COMPARED_FIELDS is COMPARED_FIELDS


def test_the_state_store_has_one_column_per_owned_field(tmp_path):
    State(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "state.sqlite")
    for table in ("written", "pending"):
        cols = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        assert [c for c in cols if c in OWNED_FIELDS] == list(OWNED_FIELDS)
        assert set(cols) - set(OWNED_FIELDS) == {"crm", "record_id", "run_id", "written_at"} - (
            {"written_at"} if table == "pending" else set()
        )


def test_config_and_connector_defaults_are_the_tables():
    cfg = parse_config({"crm": {"kind": "salesforce"}}, env={})
    assert cfg.salesforce.fields == default_names("salesforce")
    assert {k: s.name for k, s in DEFAULT_OWNED.items()} == default_names("salesforce")
    assert {s.kind for s in DEFAULT_OWNED.values()} <= set(METADATA_TYPES)
    raw = {"crm": {"kind": "salesforce"}, "salesforce": {"fields": {"tier": "Tier__c"}}}
    renamed = parse_config(raw, env={}).salesforce
    assert renamed.owned["tier"].name == "Tier__c" and renamed.owned["segment"].name == "ICP_Segment__c"
    assert SalesforceSettings(reasons_length=255).owned["reasons"].length == 255


def test_the_sandbox_seeds_the_fields_the_table_describes():
    # The sandbox imports nothing from the product; this is where the two are held to each other.
    sf = {f.name: f for f in icp_fields()}
    hs = {p.name: p for p in icp_properties()}
    for field in OWNED:
        assert sf[field.salesforce].metadata_type == field.salesforce_type
        assert (hs[field.hubspot].type, hs[field.hubspot].field_type) == field.hubspot_type
        assert sf[field.salesforce].label == hs[field.hubspot].label == field.label
