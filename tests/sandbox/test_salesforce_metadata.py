"""The Metadata API through the SDK's `sf.mdapi` (zeep): CustomField create, update, read, delete and errors."""

from __future__ import annotations

import pytest
import requests
import zeep.exceptions
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from sandbox import Sandbox


def connect(sb: Sandbox, session_id: str | None = None) -> Salesforce:
    session = requests.Session()
    session.verify = sb.salesforce.ca_bundle
    session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides session.verify
    sf = Salesforce(
        instance_url=sb.salesforce.instance_url,
        session_id=session_id or sb.salesforce.access_token,
        session=session,
    )
    # zeep keeps its own requests session; hand it ours (SDK-FACTS A1) so it trusts the sandbox certificate.
    sf.mdapi._client.transport.session = session
    return sf


@pytest.fixture(scope="module")
def sb():
    with Sandbox(accounts=300, seed=3) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def sf(sb):
    return connect(sb)


def icp_field_definitions(md) -> list:
    def picklist(full_name, label, values):
        return md.CustomField(
            fullName=full_name,
            label=label,
            type="Picklist",
            valueSet=md.ValueSet(
                restricted=True,
                valueSetDefinition=md.ValueSetValuesDefinition(
                    sorted=False, value=[md.CustomValue(fullName=v, label=v, default=False) for v in values]
                ),
            ),
        )

    return [
        picklist("Account.ICP_Segment__c", "ICP Segment", ["SMB", "Mid-market", "Enterprise"]),
        md.CustomField(
            fullName="Account.ICP_Fit_Score__c", label="ICP Fit Score", type="Number", precision=3, scale=0
        ),
        picklist("Account.ICP_Tier__c", "ICP Tier", ["A", "B", "C", "D"]),
        md.CustomField(
            fullName="Account.ICP_Reasons__c",
            label="ICP Reasons",
            type="LongTextArea",
            length=1024,
            visibleLines=3,
        ),
        md.CustomField(fullName="Account.ICP_Scored_At__c", label="ICP Scored At", type="DateTime"),
        md.CustomField(fullName="Account.ICP_Model__c", label="ICP Model", type="Text", length=40),
    ]


def describe_fields(sf) -> dict[str, dict]:
    return {f["name"]: f for f in sf.Account.describe()["fields"]}


def test_created_fields_become_columns_describe_entries_and_validated_writes(sb, sf):
    assert "ICP_Tier__c" not in describe_fields(sf)
    with pytest.raises(SalesforceMalformedRequest):
        sf.query("SELECT ICP_Tier__c FROM Account")
    md = sf.mdapi
    md.CustomField.create(icp_field_definitions(md))
    fields = describe_fields(sf)
    assert fields["ICP_Segment__c"]["restrictedPicklist"] is True
    assert (fields["ICP_Fit_Score__c"]["type"], fields["ICP_Fit_Score__c"]["precision"]) == ("double", 3)
    assert [p["value"] for p in fields["ICP_Tier__c"]["picklistValues"]] == ["A", "B", "C", "D"]
    assert (fields["ICP_Reasons__c"]["type"], fields["ICP_Reasons__c"]["length"]) == ("textarea", 1024)
    assert fields["ICP_Scored_At__c"]["type"] == "datetime"
    assert (fields["ICP_Model__c"]["type"], fields["ICP_Model__c"]["length"]) == ("string", 40)
    target = sb.sf.records("Account")[0]["Id"]
    sf.Account.update(target, {"ICP_Tier__c": "A", "ICP_Segment__c": "SMB"})
    record = sf.query(f"SELECT ICP_Tier__c, ICP_Segment__c FROM Account WHERE Id = '{target}'")["records"][0]
    assert (record["ICP_Tier__c"], record["ICP_Segment__c"]) == ("A", "SMB")
    with pytest.raises(SalesforceMalformedRequest):
        sf.Account.update(target, {"ICP_Segment__c": "Unknown size"})


def test_creating_an_existing_field_is_a_duplicate(sf):
    md = sf.mdapi
    with pytest.raises(Exception, match="DUPLICATE_DEVELOPER_NAME"):
        md.CustomField.create(
            [md.CustomField(fullName="Account.ICP_Model__c", label="ICP Model", type="Text", length=40)]
        )


def test_updating_a_picklist_changes_what_writes_may_use(sb, sf):
    md = sf.mdapi
    segment = next(d for d in icp_field_definitions(md) if d.fullName == "Account.ICP_Segment__c")
    values = ["SMB", "Mid-market", "Enterprise", "Unknown size"]
    segment.valueSet.valueSetDefinition.value = [
        md.CustomValue(fullName=v, label=v, default=False) for v in values
    ]
    md.CustomField.update([segment])
    target = sb.sf.records("Account")[1]["Id"]
    assert sf.Account.update(target, {"ICP_Segment__c": "Unknown size"}) == 204
    read = md.CustomField.read(["Account.ICP_Segment__c"])
    assert read.fullName == "Account.ICP_Segment__c" and read.type == "Picklist"
    assert read.valueSet.restricted is True
    assert [v.fullName for v in read.valueSet.valueSetDefinition.value] == values
    assert [p["value"] for p in describe_fields(sf)["ICP_Segment__c"]["picklistValues"]] == values


def test_read_returns_each_definition(sf):
    md = sf.mdapi
    score, model = md.CustomField.read(["Account.ICP_Fit_Score__c", "Account.ICP_Model__c"])
    assert (score.type, score.precision, score.scale, score.label) == ("Number", 3, 0, "ICP Fit Score")
    assert (model.type, model.length) == ("Text", 40)


@pytest.mark.parametrize(
    ("definition", "code"),
    [
        (
            {"fullName": "Account.Bad Name__c", "label": "Bad", "type": "Text", "length": 10},
            "FIELD_INTEGRITY_EXCEPTION",
        ),
        (
            {"fullName": "Contact.X__c", "label": "X", "type": "Text", "length": 10},
            "INVALID_CROSS_REFERENCE_KEY",
        ),
        ({"fullName": "Account.NoLength__c", "label": "X", "type": "Text"}, "FIELD_INTEGRITY_EXCEPTION"),
        ({"fullName": "Account.NoLabel__c", "type": "Text", "length": 5}, "REQUIRED_FIELD_MISSING"),
        (
            {"fullName": "Account.Lines__c", "label": "L", "type": "LongTextArea", "length": 1024},
            "REQUIRED_FIELD_MISSING",
        ),
        ({"fullName": "Account.Geo__c", "label": "G", "type": "Location"}, "FIELD_INTEGRITY_EXCEPTION"),
    ],
)
def test_invalid_definitions_fail_with_a_status_code(sf, definition, code):
    md = sf.mdapi
    with pytest.raises(Exception, match=code):
        md.CustomField.create([md.CustomField(**definition)])


def test_updating_a_missing_field_fails(sf):
    md = sf.mdapi
    with pytest.raises(Exception, match="INVALID_CROSS_REFERENCE_KEY"):
        md.CustomField.update(
            [md.CustomField(fullName="Account.Nope__c", label="Nope", type="Text", length=5)]
        )


def test_more_than_ten_components_is_a_fault(sf):
    md = sf.mdapi
    many = [
        md.CustomField(fullName=f"Account.F{i}__c", label=f"F{i}", type="Text", length=5) for i in range(11)
    ]
    with pytest.raises(zeep.exceptions.Fault, match="LIMIT_EXCEEDED"):
        md.CustomField.create(many)


def test_an_invalid_session_is_a_fault(sb):
    md = connect(sb, session_id="00Dnot!valid").mdapi
    with pytest.raises(zeep.exceptions.Fault, match="INVALID_SESSION_ID"):
        md.CustomField.read(["Account.ICP_Tier__c"])


def test_delete_removes_the_field(sf):
    md = sf.mdapi
    md.CustomField.create(
        [md.CustomField(fullName="Account.Temp__c", label="Temp", type="Checkbox", defaultValue="false")]
    )
    assert describe_fields(sf)["Temp__c"]["type"] == "boolean"
    md.CustomField.delete(["Account.Temp__c"])
    assert "Temp__c" not in describe_fields(sf)


def test_created_fields_survive_a_restart_on_the_same_database(tmp_path):
    db = tmp_path / "org.sqlite"
    with Sandbox(accounts=50, seed=1, db=str(db)) as first:
        sf = connect(first)
        md = sf.mdapi
        md.CustomField.create(
            [md.CustomField(fullName="Account.Kept__c", label="Kept", type="Text", length=8)]
        )
        target = first.sf.records("Account")[0]["Id"]
        sf.Account.update(target, {"Kept__c": "yes"})
    with Sandbox(accounts=999, seed=2, db=str(db)) as second:
        records = second.sf.records("Account")
        assert len(records) == 50  # not reseeded
        assert {r["Id"]: r["Kept__c"] for r in records}[target] == "yes"
        assert describe_fields(connect(second))["Kept__c"]["length"] == 8
