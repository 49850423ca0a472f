"""The connector contract is what the code does: every operation the job and CLI call is in `Connector`,
and the Salesforce connector implements each with the same parameters."""

from __future__ import annotations

import inspect

from connectors.base import Connector, FieldPlan, FieldSpec
from connectors.salesforce import SalesforceConnector

OPERATIONS = [
    name
    for name, member in vars(Connector).items()
    if callable(member) and not name.startswith("_") and name not in {"register"}
]


def _params(func) -> list[tuple[str, object, object]]:
    sig = inspect.signature(func)
    return [(p.name, p.kind, p.default) for p in sig.parameters.values() if p.name != "self"]


def test_the_contract_names_what_the_engine_calls():
    assert set(OPERATIONS) == {
        "usage",
        "check_fields",
        "apply_fields",
        "count_accounts",
        "iter_accounts",
        "iter_deals",
        "read_owned",
        "batch_size",
        "write",
        "settle_job",
    }
    assert {"kind", "mode", "api_calls", "write_calls", "policy"} <= set(Connector.__annotations__)


def test_salesforce_implements_every_operation_with_the_same_parameters():
    for name in OPERATIONS:
        theirs = _params(getattr(SalesforceConnector, name))
        ours = _params(getattr(Connector, name))
        # the connector may add keyword-only options of its own (with defaults) after the contract's
        assert theirs[: len(ours)] == ours, name
        assert all(
            kind == inspect.Parameter.KEYWORD_ONLY and default is not inspect.Parameter.empty
            for _, kind, default in theirs[len(ours) :]
        ), name


def test_the_engine_and_cli_call_nothing_outside_the_contract():
    """Every `connector.<name>` the sync package uses is in the contract (a second CRM plugs in)."""
    import re
    from pathlib import Path

    allowed = set(OPERATIONS) | set(Connector.__annotations__)
    used = set()
    for path in Path(__file__).resolve().parents[2].joinpath("sync").glob("*.py"):
        used |= set(re.findall(r"\bconnector\.([a-z_]+)", path.read_text()))
    assert used <= allowed, sorted(used - allowed)


def test_blockers_is_the_one_reading_of_a_field_check():
    assert FieldPlan(ok=["A__c"]).ready and FieldPlan().blockers() == []
    plan = FieldPlan(
        create=[FieldSpec("tier", "ICP_Tier__c", "ICP Tier", "picklist")],
        add_values={"ICP_Segment__c": ("SMB",)},
        problems=["ICP_Model__c (model) is not updateable by this user"],
    )
    assert not plan.ready and not plan.empty
    text = "\n".join(plan.blockers())
    assert "ICP_Model__c (model) is not updateable" in text
    assert "missing fields: ICP_Tier__c — run `icp fields --apply`" in text
    assert "picklist values missing: ICP_Segment__c: SMB" in text
    assert not FieldPlan(problems=["x"]).ready and FieldPlan(problems=["x"]).empty
