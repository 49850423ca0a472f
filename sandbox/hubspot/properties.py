"""HubSpot property definitions for the sandbox: the seeded catalogue, and how a wire value is checked and stored.

HubSpot sends and receives every property value as a string; the sandbox stores numbers as SQLite numbers and
dates as epoch milliseconds so search can compare them in SQL, and turns them back into HubSpot's strings
(`"1200"`, `"2024-05-01T10:00:00.000Z"`, `"2024-05-01"`) on the way out.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation

OBJECT_TYPES = ("companies", "deals")
PROPERTY_TYPES = ("string", "number", "date", "datetime", "enumeration", "bool")
FIELD_TYPES = {
    # Which fieldTypes HubSpot accepts for each property type.
    "string": {"text", "textarea", "file", "phonenumber", "html"},
    "number": {"number", "calculation_equation"},
    "date": {"date"},
    "datetime": {"date"},
    "enumeration": {"select", "radio", "checkbox", "booleancheckbox"},
    "bool": {"booleancheckbox"},
}
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,99}$")

# Properties kept in the record row itself rather than in a property column.
VIRTUAL_COLUMNS = {"hs_object_id": "id", "createdate": "created_ms", "hs_lastmodifieddate": "updated_ms"}
# HubSpot adds these to every record it returns, whatever `properties` asked for.
ALWAYS_RETURNED = ("createdate", "hs_lastmodifieddate", "hs_object_id")
# What HubSpot returns when a request names no properties at all.
DEFAULT_PROPERTIES = {
    "companies": ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
    "deals": (
        "amount",
        "closedate",
        "createdate",
        "dealname",
        "dealstage",
        "hs_lastmodifieddate",
        "hs_object_id",
        "pipeline",
    ),
}

# The book's industries as HubSpot industry enumeration options (HubSpot uses the LinkedIn-derived list, with
# values like COMPUTER_SOFTWARE). Manufacturing and Logistics keep their word in the label so a profile learned
# from option labels still reads naturally.
INDUSTRY_VALUES = {
    "Manufacturing": ("ELECTRICAL_ELECTRONIC_MANUFACTURING", "Electrical/Electronic Manufacturing"),
    "Logistics": ("LOGISTICS_AND_SUPPLY_CHAIN", "Logistics and Supply Chain"),
    "Software": ("COMPUTER_SOFTWARE", "Computer Software"),
    "Healthcare": ("HOSPITAL_HEALTH_CARE", "Hospital & Health Care"),
    "Financial Services": ("FINANCIAL_SERVICES", "Financial Services"),
    "Retail": ("RETAIL", "Retail"),
    "Education": ("EDUCATION_MANAGEMENT", "Education Management"),
    "Energy": ("OIL_ENERGY", "Oil & Energy"),
    "Media": ("MEDIA_PRODUCTION", "Media Production"),
    "Construction": ("CONSTRUCTION", "Construction"),
    "Hospitality": ("HOSPITALITY", "Hospitality"),
    "Agriculture": ("FARMING", "Farming"),
    "Telecommunications": ("TELECOMMUNICATIONS", "Telecommunications"),
    "Government": ("GOVERNMENT_ADMINISTRATION", "Government Administration"),
    "Nonprofit": ("NON_PROFIT_ORGANIZATION_MANAGEMENT", "Non-Profit Organization Management"),
}
# A few more real options no seeded company uses, so option lists are not just the book's values.
_EXTRA_INDUSTRIES = [
    ("ACCOUNTING", "Accounting"),
    ("INFORMATION_TECHNOLOGY_AND_SERVICES", "Information Technology and Services"),
    ("MACHINERY", "Machinery"),
    ("MARKETING_AND_ADVERTISING", "Marketing and Advertising"),
    ("PHARMACEUTICALS", "Pharmaceuticals"),
]
# HubSpot's company `type` options, plus CUSTOMER, which the book needs and many portals add.
COMPANY_TYPE_VALUES = {"Prospect": "PROSPECT", "Partner": "PARTNER", "Other": "OTHER", "Customer": "CUSTOMER"}
# The book's stages onto the default sales pipeline's stage ids.
DEAL_STAGE_VALUES = {
    "Prospecting": "appointmentscheduled",
    "Qualification": "qualifiedtobuy",
    "Proposal": "presentationscheduled",
    "Negotiation": "contractsent",
    "Closed Won": "closedwon",
    "Closed Lost": "closedlost",
}
WON_STAGES = {"closedwon"}
CLOSED_STAGES = {"closedwon", "closedlost"}
LEAD_SOURCES = ["Web", "Outbound", "Event", "Referral", "Partner", "Advertisement", "Webinar"]
ICP_SEGMENTS = ["SMB", "Mid-market", "Enterprise", "Unknown size"]

NATIVE_CREATED_MS = 1_546_300_800_000  # 2019-01-01: when HubSpot's own properties "were created"


@dataclass
class PropertyError:
    """One rejected property value, with HubSpot's error code (INVALID_OPTION, PROPERTY_DOESNT_EXIST, ...)."""

    code: str
    name: str
    message: str


@dataclass
class PropertyDef:
    """A property definition as HubSpot's properties API describes it (ModelProperty), plus `integer_only`."""

    name: str
    label: str
    type: str
    field_type: str
    group_name: str
    description: str = ""
    options: list[dict] = field(default_factory=list)
    display_order: int = -1
    has_unique_value: bool = False
    calculated: bool = False
    external_options: bool = False
    hubspot_defined: bool = False
    hidden: bool = False
    form_field: bool = False
    show_currency_symbol: bool = False
    read_only_value: bool = False
    read_only_definition: bool = False
    read_only_options: bool = False
    archivable: bool = True
    calculation_formula: str | None = None
    created_ms: int = NATIVE_CREATED_MS
    updated_ms: int = NATIVE_CREATED_MS
    archived: bool = False
    archived_ms: int | None = None
    integer_only: bool = False  # sandbox-only: number properties HubSpot validates as integers

    @property
    def numeric(self) -> bool:
        """Stored as a number in SQLite (numbers, dates, datetimes), so comparisons in search are numeric."""
        return self.type in ("number", "date", "datetime")

    def option_values(self) -> list[str]:
        return [o["value"] for o in self.options]

    def to_wire(self) -> dict:
        """The ModelProperty JSON HubSpot returns."""
        body = {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "description": self.description,
            "groupName": self.group_name,
            "options": [dict(o) for o in self.options],
            "displayOrder": self.display_order,
            "calculated": self.calculated,
            "externalOptions": self.external_options,
            "hasUniqueValue": self.has_unique_value,
            "hidden": self.hidden,
            "hubspotDefined": self.hubspot_defined,
            "showCurrencySymbol": self.show_currency_symbol,
            "modificationMetadata": {
                "archivable": self.archivable,
                "readOnlyDefinition": self.read_only_definition,
                "readOnlyValue": self.read_only_value,
                "readOnlyOptions": self.read_only_options,
            },
            "formField": self.form_field,
            "createdAt": iso_ms(self.created_ms),
            "updatedAt": iso_ms(self.updated_ms),
            "archived": self.archived,
        }
        if self.calculation_formula is not None:
            body["calculationFormula"] = self.calculation_formula
        if self.archived_ms is not None:
            body["archivedAt"] = iso_ms(self.archived_ms)
        return body

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> PropertyDef:
        return cls(**data)


def option(value: str, label: str, order: int, *, description: str = "") -> dict:
    return {
        "label": label,
        "value": value,
        "displayOrder": order,
        "hidden": False,
        "description": description,
    }


BOOL_OPTIONS = [option("true", "Yes", 0), option("false", "No", 1)]


def _native(name: str, label: str, type_: str, field_type: str, group: str, **kw) -> PropertyDef:
    read_only = kw.pop("read_only", False)
    return PropertyDef(
        name=name,
        label=label,
        type=type_,
        field_type=field_type,
        group_name=group,
        hubspot_defined=True,
        read_only_value=read_only,
        read_only_definition=True,
        archivable=False,
        **kw,
    )


def native_groups(object_type: str) -> list[tuple[str, str, int]]:
    """(name, label, displayOrder) of the property groups every portal has."""
    if object_type == "companies":
        return [("companyinformation", "Company information", 0), ("company_activity", "Company activity", 1)]
    return [("dealinformation", "Deal information", 0), ("deal_activity", "Deal activity", 1)]


def native_properties(object_type: str) -> list[PropertyDef]:
    """The HubSpot-defined properties the sandbox seeds (only those icp-sync can touch, not HubSpot's 200+)."""
    info = "companyinformation" if object_type == "companies" else "dealinformation"
    common = [
        _native("createdate", "Create Date", "datetime", "date", info),
        _native("hs_lastmodifieddate", "Last Modified Date", "datetime", "date", info, read_only=True),
        _native("hs_object_id", "Record ID", "number", "number", info, read_only=True, integer_only=True),
    ]
    if object_type == "companies":
        industries = list(INDUSTRY_VALUES.values()) + _EXTRA_INDUSTRIES
        industries.sort(key=lambda pair: pair[1])
        types = [("PROSPECT", "Prospect"), ("PARTNER", "Partner"), ("RESELLER", "Reseller")]
        types += [("VENDOR", "Vendor"), ("OTHER", "Other"), ("CUSTOMER", "Customer")]
        return [
            _native("name", "Company name", "string", "text", info),
            _native("domain", "Company Domain Name", "string", "text", info),
            _native(
                "industry",
                "Industry",
                "enumeration",
                "select",
                info,
                options=[option(v, lbl, i) for i, (v, lbl) in enumerate(industries)],
            ),
            _native("numberofemployees", "Number of Employees", "number", "number", info, integer_only=True),
            _native("annualrevenue", "Annual Revenue", "number", "number", info, show_currency_symbol=True),
            _native("country", "Country/Region", "string", "text", info),
            _native("state", "State/Region", "string", "text", info),
            _native("city", "City", "string", "text", info),
            _native(
                "hs_parent_company_id",
                "Parent Company",
                "number",
                "number",
                info,
                read_only=True,
                integer_only=True,
            ),
            _native(
                "type",
                "Type",
                "enumeration",
                "select",
                info,
                options=[option(v, lbl, i) for i, (v, lbl) in enumerate(types)],
            ),
            _native(
                "hs_ideal_customer_profile",
                "Ideal Customer Profile Tier",
                "enumeration",
                "radio",
                info,
                options=[option(f"tier_{i}", f"Tier {i}", i - 1) for i in (1, 2, 3)],
                read_only_options=True,
            ),
            _native(
                "hs_is_target_account",
                "Target Account",
                "bool",
                "booleancheckbox",
                info,
                options=[dict(o) for o in BOOL_OPTIONS],
            ),
            *common,
        ]
    stages = [
        ("appointmentscheduled", "Appointment Scheduled"),
        ("qualifiedtobuy", "Qualified To Buy"),
        ("presentationscheduled", "Presentation Scheduled"),
        ("decisionmakerboughtin", "Decision Maker Bought-In"),
        ("contractsent", "Contract Sent"),
        ("closedwon", "Closed Won"),
        ("closedlost", "Closed Lost"),
    ]
    return [
        _native("dealname", "Deal Name", "string", "text", info),
        _native("amount", "Amount", "number", "number", info, show_currency_symbol=True),
        _native(
            "dealstage",
            "Deal Stage",
            "enumeration",
            "radio",
            info,
            options=[option(v, lbl, i) for i, (v, lbl) in enumerate(stages)],
        ),
        _native(
            "pipeline",
            "Pipeline",
            "enumeration",
            "select",
            info,
            options=[option("default", "Sales Pipeline", 0)],
        ),
        _native("closedate", "Close Date", "datetime", "date", info),
        _native(
            "hs_is_closed_won",
            "Is Closed Won",
            "bool",
            "booleancheckbox",
            info,
            options=[dict(o) for o in BOOL_OPTIONS],
            read_only=True,
            calculated=True,
        ),
        _native(
            "hs_is_closed",
            "Is Deal Closed?",
            "bool",
            "booleancheckbox",
            info,
            options=[dict(o) for o in BOOL_OPTIONS],
            read_only=True,
            calculated=True,
        ),
        # Lead source is a portal's own property (HubSpot's hs_analytics_source is web-traffic attribution,
        # which has no "customer referral" or "partner" value), so it is seeded as a custom enumeration.
        PropertyDef(
            name="lead_source",
            label="Lead Source",
            type="enumeration",
            field_type="select",
            group_name=info,
            options=[option(v, v, i) for i, v in enumerate(LEAD_SOURCES)],
        ),
        *common,
    ]


ICP_GROUP = ("icp_sync", "ICP sync", 2)


def icp_properties() -> list[PropertyDef]:
    """The icp_* company properties of docs/architecture.md ("Owned fields"), as `icp fields --apply` would create them."""
    g = ICP_GROUP[0]
    return [
        PropertyDef(
            "icp_segment",
            "ICP Segment",
            "enumeration",
            "select",
            g,
            options=[option(s, s, i) for i, s in enumerate(ICP_SEGMENTS)],
        ),
        PropertyDef("icp_fit_score", "ICP Fit Score", "number", "number", g),
        PropertyDef(
            "icp_tier",
            "ICP Tier",
            "enumeration",
            "select",
            g,
            options=[option(t, t, i) for i, t in enumerate("ABCD")],
        ),
        PropertyDef("icp_reasons", "ICP Reasons", "string", "textarea", g),
        PropertyDef("icp_scored_at", "ICP Scored At", "datetime", "date", g),
        PropertyDef("icp_model", "ICP Model", "string", "text", g),
    ]


# -- values ---------------------------------------------------------------------------------------------------
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS_RE = re.compile(r"^-?\d{1,15}$")


@functools.lru_cache(
    maxsize=1 << 16
)  # pages repeat timestamps (createdAt = createdate, batch writes share one)
def iso_ms(ms: int) -> str:
    """HubSpot's datetime form: `2024-05-01T10:00:00.000Z`."""
    moment = _EPOCH + dt.timedelta(milliseconds=ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def iso_date(ms: int) -> str:
    return f"{_EPOCH + dt.timedelta(milliseconds=ms):%Y-%m-%d}"


def parse_moment(text: str) -> int | None:
    """Epoch milliseconds from `1714557600000`, `2024-05-01`, or ISO 8601 with or without zone (UTC if none)."""
    text = text.strip()
    if _MS_RE.match(text):
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // dt.timedelta(milliseconds=1)


def parse_number(text: str) -> int | float | None:
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    if number == number.to_integral_value():
        return int(number)
    as_float = float(number)
    return as_float if math.isfinite(as_float) else None


def as_wire_text(raw) -> str | None:
    """JSON values a client may send for a property, as the string HubSpot would see."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


def coerce(defn: PropertyDef, raw) -> tuple[object, PropertyError | None]:
    """Check one written value against its definition; returns (value to store, error). "" clears a value."""
    text = as_wire_text(raw)
    if text is None or text == "":
        return None, None
    name, kind = defn.name, defn.type
    if kind == "number":
        number = parse_number(text)
        if number is None:
            code = "INVALID_INTEGER" if defn.integer_only else "INVALID_DECIMAL"
            return None, PropertyError(code, name, f"{text!r} is not a valid number for property {name!r}")
        if defn.integer_only and not isinstance(number, int):
            return None, PropertyError("INVALID_INTEGER", name, f"{text!r} is not a whole number ({name!r})")
        return number, None
    if kind in ("date", "datetime"):
        ms = parse_moment(text)
        if ms is None:
            return None, PropertyError(
                "INVALID_DATE" if kind == "date" else "INVALID_DATETIME",
                name,
                f"{text!r} is not a valid {kind} for property {name!r}: use epoch milliseconds or ISO 8601",
            )
        if kind == "date" and ms % 86_400_000:
            return None, PropertyError(
                "INVALID_DATE", name, f"{text!r} is not midnight UTC; date property {name!r} holds whole days"
            )
        return ms, None
    if kind == "bool":
        lowered = text.lower()
        if lowered not in ("true", "false"):
            return None, PropertyError("INVALID_BOOLEAN", name, f"{text!r} is not true or false ({name!r})")
        return lowered, None
    if kind == "enumeration":
        allowed = defn.option_values()
        chosen = text.split(";") if defn.field_type == "checkbox" else [text]
        for value in chosen:
            if value not in allowed:
                return None, PropertyError(
                    "INVALID_OPTION",
                    name,
                    f"{value!r} was not one of the allowed options for {name!r}: [{', '.join(allowed)}]",
                )
        return text, None
    return text, None


def render(defn_type: str, stored) -> str | None:
    """A stored value as HubSpot's wire string."""
    if stored is None:
        return None
    if defn_type == "datetime":
        return iso_ms(int(stored))
    if defn_type == "date":
        return iso_date(int(stored))
    if defn_type == "number" and isinstance(stored, float):
        return repr(stored)
    return str(stored)
