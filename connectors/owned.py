"""The owned fields: the only CRM fields icp-sync ever writes, defined once.

Every part that touches them reads this table: the plan (which fields make a change), the state store (its
columns), the config (`[salesforce.fields]` names and their defaults), field creation (`icp fields`) and each
connector (names and types per CRM). Adding a field, or a CRM, is an edit here, not a search through the code.
See docs/architecture.md, "Owned fields".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OwnedField:
    """One owned field, with its name and type in each CRM.

    `kind` is ours (picklist | number | text | longtext | datetime); each connector maps it to its CRM's type.
    `compared`: a difference in this field makes a record change; `scored_at` is not compared, it only
    travels with a change (else every record would change every night). `length` is the text length we
    create the field with (the reasons' length follows `[scoring] reasons_max_len`). `values` are a picklist's
    fixed values (the segment picklist's values come from the configured segments instead).
    """

    logical: str
    label: str
    kind: str
    salesforce: str  # Account field API name
    salesforce_type: str  # Metadata API type `icp fields --apply` creates
    hubspot: str  # company property name
    hubspot_type: tuple[str, str]  # (type, fieldType) of the company property
    compared: bool = True
    length: int | None = None
    values: tuple[str, ...] = ()


OWNED: tuple[OwnedField, ...] = (
    OwnedField(
        "segment",
        "ICP Segment",
        "picklist",
        "ICP_Segment__c",
        "Picklist",
        "icp_segment",
        ("enumeration", "select"),
    ),
    OwnedField(
        "fit_score",
        "ICP Fit Score",
        "number",
        "ICP_Fit_Score__c",
        "Number",
        "icp_fit_score",
        ("number", "number"),
    ),
    OwnedField(
        "tier",
        "ICP Tier",
        "picklist",
        "ICP_Tier__c",
        "Picklist",
        "icp_tier",
        ("enumeration", "select"),
        values=("A", "B", "C", "D"),
    ),
    OwnedField(
        "reasons",
        "ICP Reasons",
        "longtext",
        "ICP_Reasons__c",
        "LongTextArea",
        "icp_reasons",
        ("string", "textarea"),
        length=1024,
    ),
    OwnedField(
        "scored_at",
        "ICP Scored At",
        "datetime",
        "ICP_Scored_At__c",
        "DateTime",
        "icp_scored_at",
        ("datetime", "date"),
        compared=False,
    ),
    OwnedField(
        "model", "ICP Model", "text", "ICP_Model__c", "Text", "icp_model", ("string", "text"), length=40
    ),
)

#: Logical names, in the order they are written (and stored).
OWNED_FIELDS: tuple[str, ...] = tuple(f.logical for f in OWNED)
#: The fields whose difference makes a change.
COMPARED_FIELDS: tuple[str, ...] = tuple(f.logical for f in OWNED if f.compared)
BY_NAME: dict[str, OwnedField] = {f.logical: f for f in OWNED}


def default_names(crm: str) -> dict[str, str]:
    """logical -> the default field name in `crm` ("salesforce" or "hubspot")."""
    return {f.logical: getattr(f, crm) for f in OWNED}
