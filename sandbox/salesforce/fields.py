"""Salesforce field definitions for the sandbox: the standard Account/Opportunity fields, the ICP custom fields,
how each is described (`describe`), stored (SQLite) and how a written value is checked, as Salesforce checks it.

Values are stored in SQLite in the form the REST API shows them, so reads need no per-value conversion:
datetimes as `2024-05-01T10:00:00.000+0000` (UTC, fixed width, so text order is time order), dates as
`2024-05-01`, booleans as 0/1, numbers as numbers.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from sandbox.salesforce.ids import normalize_id

SYSTEM_FIELDS = {
    "Id",
    "IsDeleted",
    "CreatedDate",
    "CreatedById",
    "LastModifiedDate",
    "LastModifiedById",
    "SystemModstamp",
}
TEXT_TYPES = {"string", "picklist", "url", "textarea", "email", "phone", "id", "reference"}
NUMBER_TYPES = {"double", "currency", "percent"}
SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "string": "xsd:string",
    "picklist": "xsd:string",
    "url": "xsd:string",
    "textarea": "xsd:string",
    "email": "xsd:string",
    "phone": "xsd:string",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "int": "xsd:int",
    "boolean": "xsd:boolean",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
}
# Metadata API field types the sandbox can create, and the describe type each becomes.
METADATA_TYPES = {
    "Text": "string",
    "TextArea": "textarea",
    "LongTextArea": "textarea",
    "Number": "double",
    "Currency": "currency",
    "Percent": "percent",
    "Checkbox": "boolean",
    "Date": "date",
    "DateTime": "datetime",
    "Picklist": "picklist",
    "Url": "url",
    "Email": "email",
    "Phone": "phone",
}


class FieldError(Exception):
    """One Salesforce save error: `statusCode`, `message`, `fields`, as the API reports it."""

    def __init__(self, status_code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.fields = fields or []

    def as_dict(self) -> dict:
        return {"statusCode": self.status_code, "message": self.message, "fields": self.fields}


@dataclass
class PicklistValue:
    value: str
    label: str | None = None
    active: bool = True
    default: bool = False

    def describe(self) -> dict:
        return {
            "active": self.active,
            "defaultValue": self.default,
            "label": self.label or self.value,
            "validFor": None,
            "value": self.value,
        }


@dataclass
class Field:
    name: str
    label: str
    type: str  # describe type: id, string, picklist, double, int, currency, url, textarea, datetime, ...
    length: int = 0
    precision: int = 0
    scale: int = 0
    digits: int = 0
    nillable: bool = True
    updateable: bool = True
    createable: bool = True
    custom: bool = False
    restricted: bool = False
    picklist: list[PicklistValue] = field(default_factory=list)
    reference_to: list[str] = field(default_factory=list)
    relationship_name: str | None = None
    name_field: bool = False
    filterable: bool = True
    sortable: bool = True
    metadata_type: str | None = None  # for custom fields: the Metadata API type (Text, Picklist, ...)
    visible_lines: int | None = None
    description: str | None = None
    inline_help_text: str | None = None
    external_id: bool = False

    @property
    def sql_type(self) -> str:
        if self.type in ("int", "boolean"):
            return "INTEGER"
        if self.type in NUMBER_TYPES:
            return "REAL"
        return "TEXT"

    @property
    def is_text(self) -> bool:
        return self.type in TEXT_TYPES

    @property
    def case_insensitive(self) -> bool:
        """SOQL compares and sorts text case-insensitively, except ids."""
        return self.is_text and self.type not in ("id", "reference")

    def active_values(self) -> set[str]:
        return {p.value for p in self.picklist if p.active}

    def describe(self) -> dict:
        """The field as `GET .../sobjects/X/describe` shows it (the keys clients read, with Salesforce's names)."""
        text = self.is_text
        return {
            "aggregatable": self.filterable,
            "autoNumber": False,
            "byteLength": self.length * 3 if text else 0,
            "calculated": False,
            "calculatedFormula": None,
            "cascadeDelete": False,
            "caseSensitive": False,
            "createable": self.createable,
            "custom": self.custom,
            "defaultValue": None,
            "defaultedOnCreate": self.name in SYSTEM_FIELDS,
            "dependentPicklist": False,
            "deprecatedAndHidden": False,
            "digits": self.digits,
            "externalId": self.external_id,
            "extraTypeInfo": "plaintextarea" if self.type == "textarea" else None,
            "filterable": self.filterable,
            "groupable": self.filterable and self.type not in NUMBER_TYPES,
            "htmlFormatted": False,
            "idLookup": self.name == "Id",
            "inlineHelpText": self.inline_help_text,
            "label": self.label,
            "length": self.length if text else 0,
            "name": self.name,
            "nameField": self.name_field,
            "nillable": self.nillable,
            "permissionable": self.custom,
            "picklistValues": [p.describe() for p in self.picklist],
            "precision": self.precision,
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name,
            "restrictedPicklist": self.restricted,
            "scale": self.scale,
            "soapType": SOAP_TYPES[self.type],
            "sortable": self.sortable,
            "type": self.type,
            "unique": False,
            "updateable": self.updateable,
        }

    # -- checking a written value ---------------------------------------------------------------------------
    def coerce(self, value: object, *, from_csv: bool = False) -> object:
        """The stored form of `value` written to this field, or FieldError as Salesforce would report it.

        JSON bodies carry typed values; Bulk API CSV cells are all strings (the caller has already turned
        an empty cell into "leave unchanged" and `#N/A` into None).
        """
        if value is None or (value == "" and self.is_text):
            # Salesforce stores an empty string as null.
            if not self.nillable:
                raise FieldError(
                    "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{self.name}]", [self.name]
                )
            return None
        if self.is_text:
            return self._coerce_text(value)
        if self.type in NUMBER_TYPES or self.type == "int":
            return self._coerce_number(value)
        if self.type == "boolean":
            return self._coerce_boolean(value, from_csv)
        if self.type == "datetime":
            stored = parse_datetime(value) if isinstance(value, str) else None
            if stored is None:
                raise self._wrong_type(value)
            return stored
        if self.type == "date":
            stored = parse_date(value) if isinstance(value, str) else None
            if stored is None:
                raise self._wrong_type(value)
            return stored
        raise self._wrong_type(value)

    def _wrong_type(self, value: object) -> FieldError:
        return FieldError(
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            f"{self.label}: value not of required type: {value}",
            [self.name],
        )

    def _coerce_text(self, value: object) -> str:
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | float):
            value = str(value)
        elif not isinstance(value, str):
            raise self._wrong_type(value)
        if self.type == "reference":
            ref = normalize_id(value)
            if ref is None:
                raise FieldError(
                    "MALFORMED_ID", f"{self.label}: id value of incorrect type: {value}", [self.name]
                )
            return ref
        if self.length and len(value) > self.length:
            shown = value if len(value) <= 80 else value[:77] + "..."
            raise FieldError(
                "STRING_TOO_LONG",
                f"{self.label}: data value too large: {shown} (max length={self.length})",
                [self.name],
            )
        if self.type == "picklist" and self.restricted and value not in self.active_values():
            raise FieldError(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{self.label}: bad value for restricted picklist field: {value}",
                [self.name],
            )
        return value

    def _coerce_number(self, value: object) -> int | float:
        if isinstance(value, bool):
            raise self._wrong_type(value)
        if isinstance(value, str):
            try:
                number = Decimal(value.strip())
            except InvalidOperation:
                raise self._wrong_type(value) from None
        elif isinstance(value, int | float):
            if isinstance(value, float) and not math.isfinite(value):
                raise self._wrong_type(value)
            number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        else:
            raise self._wrong_type(value)
        if not number.is_finite():
            raise self._wrong_type(value)
        if self.type == "int":
            if number != number.to_integral_value():
                raise self._wrong_type(value)
            if abs(number) >= Decimal(10) ** (self.digits or 9):
                raise self._out_of_range(value)
            return int(number)
        # Salesforce rounds to the field's scale, then checks the digits left of the point.
        rounded = number.quantize(Decimal(1).scaleb(-self.scale), rounding=ROUND_HALF_UP)
        if abs(rounded) >= Decimal(10) ** (self.precision - self.scale):
            raise self._out_of_range(value)
        return int(rounded) if self.scale == 0 else float(rounded)

    def _out_of_range(self, value: object) -> FieldError:
        return FieldError(
            "NUMBER_OUTSIDE_VALID_RANGE",
            f"{self.label}: value outside of valid range on numeric field: {value}",
            [self.name],
        )

    def _coerce_boolean(self, value: object, from_csv: bool) -> int:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, str) and (from_csv or value.lower() in ("true", "false")):
            lowered = value.strip().lower()
            if lowered in ("true", "1", "yes"):
                return 1
            if lowered in ("false", "0", "no"):
                return 0
        raise self._wrong_type(value)

    def render(self, stored: object) -> object:
        """The JSON value of a stored value (only booleans differ)."""
        if self.type == "boolean" and stored is not None:
            return bool(stored)
        return stored


# -- datetimes ------------------------------------------------------------------------------------------------
_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?\s*(Z|[+-]\d{2}:?\d{2})?$"
)
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
MIN_YEAR, MAX_YEAR = 1700, 4000  # the range Salesforce accepts for dates and datetimes


def format_ms(epoch_ms: int) -> str:
    """Epoch milliseconds as Salesforce writes a datetime: `2024-05-01T10:00:00.000+0000`."""
    moment = dt.datetime.fromtimestamp(epoch_ms // 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{epoch_ms % 1000:03d}+0000"


def format_datetime(moment: dt.datetime) -> str:
    moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}+0000"


def parse_datetime(text: str) -> str | None:
    """A written datetime (`2024-05-01T10:00:00Z`, `...+01:00`, `...000+0000`) in stored form, or None.

    A value with no offset is taken as UTC, as the API does.
    """
    match = _DATETIME.match(text.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        moment = dt.datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=_tz(offset),
        )
    except ValueError:
        return None
    if not MIN_YEAR <= moment.astimezone(dt.UTC).year <= MAX_YEAR:
        return None
    return format_datetime(moment)


def parse_date(text: str) -> str | None:
    text = text.strip()
    match = _DATE.match(text)
    if match:
        try:
            day = dt.date(*(int(g) for g in match.groups()))
        except ValueError:
            return None
        return day.isoformat() if MIN_YEAR <= day.year <= MAX_YEAR else None
    stored = parse_datetime(text)
    return stored[:10] if stored else None


def _tz(offset: str | None) -> dt.tzinfo:
    if offset in (None, "Z"):
        return dt.UTC
    sign = -1 if offset[0] == "-" else 1
    digits = offset[1:].replace(":", "")
    return dt.timezone(sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


# -- the standard objects ---------------------------------------------------------------------------------------
def _system_fields() -> list[Field]:
    return [
        Field("IsDeleted", "Deleted", "boolean", nillable=False, updateable=False, createable=False),
        Field("CreatedDate", "Created Date", "datetime", nillable=False, updateable=False, createable=False),
        Field(
            "CreatedById",
            "Created By ID",
            "reference",
            length=18,
            nillable=False,
            updateable=False,
            createable=False,
            reference_to=["User"],
            relationship_name="CreatedBy",
        ),
        Field(
            "LastModifiedDate",
            "Last Modified Date",
            "datetime",
            nillable=False,
            updateable=False,
            createable=False,
        ),
        Field(
            "LastModifiedById",
            "Last Modified By ID",
            "reference",
            length=18,
            nillable=False,
            updateable=False,
            createable=False,
            reference_to=["User"],
            relationship_name="LastModifiedBy",
        ),
        Field(
            "SystemModstamp",
            "System Modstamp",
            "datetime",
            nillable=False,
            updateable=False,
            createable=False,
        ),
    ]


def _picklist(*values: str) -> list[PicklistValue]:
    return [PicklistValue(v) for v in values]


INDUSTRY_VALUES = (
    "Agriculture",
    "Apparel",
    "Banking",
    "Biotechnology",
    "Chemicals",
    "Communications",
    "Construction",
    "Consulting",
    "Education",
    "Electronics",
    "Energy",
    "Engineering",
    "Entertainment",
    "Financial Services",
    "Government",
    "Healthcare",
    "Hospitality",
    "Insurance",
    "Logistics",
    "Manufacturing",
    "Media",
    "Nonprofit",
    "Retail",
    "Software",
    "Telecommunications",
    "Transportation",
    "Utilities",
    "Other",
)
# Opportunity stages and what each means for IsClosed/IsWon (Salesforce derives both from the stage).
STAGES = {
    "Prospecting": (False, False),
    "Qualification": (False, False),
    "Proposal": (False, False),
    "Negotiation": (False, False),
    "Closed Won": (True, True),
    "Closed Lost": (True, False),
}


def account_fields() -> list[Field]:
    return [
        Field("Id", "Account ID", "id", length=18, nillable=False, updateable=False, createable=False),
        *_system_fields()[:1],
        Field("Name", "Account Name", "string", length=255, nillable=False, name_field=True),
        Field(
            "Type",
            "Account Type",
            "picklist",
            length=255,
            picklist=_picklist("Customer", "Prospect", "Partner", "Other"),
        ),
        Field(
            "ParentId",
            "Parent Account ID",
            "reference",
            length=18,
            reference_to=["Account"],
            relationship_name="Parent",
        ),
        Field("BillingCity", "Billing City", "string", length=40),
        Field("BillingState", "Billing State/Province", "string", length=80),
        Field("BillingCountry", "Billing Country", "string", length=80),
        Field("Website", "Website", "url", length=255),
        Field("Industry", "Industry", "picklist", length=255, picklist=_picklist(*INDUSTRY_VALUES)),
        Field("AnnualRevenue", "Annual Revenue", "currency", precision=18, scale=0),
        Field("NumberOfEmployees", "Employees", "int", digits=8),
        Field(
            "Description", "Account Description", "textarea", length=32000, filterable=False, sortable=False
        ),
        *_system_fields()[1:],
    ]


def opportunity_fields() -> list[Field]:
    return [
        Field("Id", "Opportunity ID", "id", length=18, nillable=False, updateable=False, createable=False),
        *_system_fields()[:1],
        Field(
            "AccountId",
            "Account ID",
            "reference",
            length=18,
            reference_to=["Account"],
            relationship_name="Account",
        ),
        Field("Name", "Name", "string", length=120, nillable=False, name_field=True),
        Field("Amount", "Amount", "currency", precision=18, scale=2),
        Field("StageName", "Stage", "picklist", length=255, nillable=False, picklist=_picklist(*STAGES)),
        Field("IsClosed", "Closed", "boolean", nillable=False, updateable=False, createable=False),
        Field("IsWon", "Won", "boolean", nillable=False, updateable=False, createable=False),
        Field("CloseDate", "Close Date", "date", nillable=False),
        Field(
            "LeadSource",
            "Lead Source",
            "picklist",
            length=255,
            picklist=_picklist("Web", "Outbound", "Event", "Referral", "Partner", "Advertisement", "Webinar"),
        ),
        *_system_fields()[1:],
    ]


DEFAULT_SEGMENTS = ("SMB", "Mid-market", "Enterprise", "Unknown size")


def icp_fields() -> list[Field]:
    """The fields icp-sync owns on Account (docs/architecture.md, "Owned fields"), as `icp fields --apply` would create them."""
    return [
        custom_field(
            "ICP_Segment__c",
            "ICP Segment",
            "Picklist",
            restricted=True,
            picklist=_picklist(*DEFAULT_SEGMENTS),
        ),
        custom_field("ICP_Fit_Score__c", "ICP Fit Score", "Number", precision=3, scale=0),
        custom_field(
            "ICP_Tier__c", "ICP Tier", "Picklist", restricted=True, picklist=_picklist("A", "B", "C", "D")
        ),
        custom_field("ICP_Reasons__c", "ICP Reasons", "LongTextArea", length=1024, visible_lines=3),
        custom_field("ICP_Scored_At__c", "ICP Scored At", "DateTime"),
        custom_field("ICP_Model__c", "ICP Model", "Text", length=40),
    ]


def custom_field(name: str, label: str, metadata_type: str, **attrs) -> Field:
    """A custom field as the Metadata API would define it (type Text, Number, Picklist, ...)."""
    describe_type = METADATA_TYPES[metadata_type]
    if metadata_type == "TextArea":
        attrs.setdefault("length", 255)
    if metadata_type == "LongTextArea":
        # Long text areas can be neither filtered nor sorted in SOQL.
        attrs.update(filterable=False, sortable=False)
    if metadata_type in ("Url", "Email", "Phone"):
        attrs.setdefault("length", {"Url": 255, "Email": 80, "Phone": 40}[metadata_type])
    if metadata_type == "Picklist":
        attrs.setdefault("length", 255)
    if metadata_type == "Checkbox":
        attrs["nillable"] = False
    return Field(name, label, describe_type, custom=True, metadata_type=metadata_type, **attrs)


def user_fields() -> list[Field]:
    """The User setup object, as far as an integration needs it: who a session runs as, by Username."""
    return [
        Field("Id", "User ID", "id", length=18, nillable=False, updateable=False, createable=False),
        *_system_fields()[:1],
        Field("Username", "Username", "email", length=80, nillable=False, updateable=False),
        Field("Name", "Full Name", "string", length=121, nillable=False, updateable=False, name_field=True),
        Field("Email", "Email", "email", length=128, nillable=False, updateable=False),
        Field("IsActive", "Active", "boolean", nillable=False, updateable=False),
        *_system_fields()[1:],
    ]


STANDARD_FIELDS = {"Account": account_fields, "Opportunity": opportunity_fields}
#: Setup objects: queryable and describable, but not seeded from the book nor listed by describe global.
SETUP_FIELDS = {"User": user_fields}
