"""The Metadata API (SOAP) for the sandbox: createMetadata, updateMetadata, upsertMetadata, readMetadata and
deleteMetadata of `CustomField` on Account and Opportunity, as simple-salesforce's zeep client sends them.

Creating a field adds a real column and a describe entry; updating a picklist replaces its values, so later
writes are checked against the new set. Field types: Text, TextArea, LongTextArea, Number, Currency, Percent,
Checkbox, Date, DateTime, Picklist (inline values; global value sets are not supported), Url, Email, Phone.
Changing a field's type through updateMetadata is refused (FIELD_INTEGRITY_EXCEPTION).
"""

from __future__ import annotations

import re

from lxml import etree
from werkzeug.wrappers import Request, Response

from sandbox.salesforce.auth import SAFE_XML, SOAP_ENV, XSI, xml_response
from sandbox.salesforce.fields import METADATA_TYPES, Field, PicklistValue, custom_field
from sandbox.salesforce.store import Store

MD_NS = "http://soap.sforce.com/2006/04/metadata"
MAX_COMPONENTS = 10
CUSTOM_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|_(?!_))*__c$")
WRITE_CALLS = ("createMetadata", "updateMetadata", "upsertMetadata")


class MetadataFault(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ComponentError(Exception):
    """One component's failure, reported in its SaveResult rather than as a fault."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields or []


def md_fault(code: str, message: str, status: int = 500) -> Response:
    envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soapenv": SOAP_ENV, "sf": MD_NS})
    fault = etree.SubElement(etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body"), f"{{{SOAP_ENV}}}Fault")
    etree.SubElement(fault, "faultcode").text = f"sf:{code}"
    etree.SubElement(fault, "faultstring").text = f"{code}: {message}"
    return xml_response(envelope, status)


def session_id(body: bytes) -> str | None:
    try:
        root = etree.fromstring(body, SAFE_XML)
    except etree.XMLSyntaxError:
        return None
    return root.findtext(f".//{{{MD_NS}}}SessionHeader/{{{MD_NS}}}sessionId")


class MetadataApi:
    def __init__(self, store: Store) -> None:
        self.store = store

    def handle(self, request: Request) -> Response:
        try:
            root = etree.fromstring(request.get_data(), SAFE_XML)
        except etree.XMLSyntaxError as exc:
            return md_fault("INVALID_XML", f"Could not parse the request: {exc}")
        body = root.find(f"{{{SOAP_ENV}}}Body")
        if body is None or len(body) == 0:
            return md_fault("INVALID_XML", "The SOAP envelope has no body")
        call = body[0]
        name = etree.QName(call).localname
        try:
            if name in WRITE_CALLS:
                components = call.findall(f"{{{MD_NS}}}metadata")
                self._check_count(components)
                results = [self._save(name, c) for c in components]
                return self._respond(name, results)
            if name in ("readMetadata", "deleteMetadata"):
                kind = call.findtext(f"{{{MD_NS}}}type")
                if kind != "CustomField":
                    raise MetadataFault("INVALID_TYPE", f"The sandbox supports CustomField only, not {kind}")
                full_names = [e.text or "" for e in call.findall(f"{{{MD_NS}}}fullNames")]
                self._check_count(full_names)
                if name == "readMetadata":
                    return self._read(full_names)
                return self._respond(name, [self._delete(n) for n in full_names])
        except MetadataFault as exc:
            return md_fault(exc.code, exc.message)
        return md_fault("INVALID_OPERATION", f"The sandbox's Metadata API does not implement {name}")

    @staticmethod
    def _check_count(items: list) -> None:
        if len(items) > MAX_COMPONENTS:
            raise MetadataFault(
                "LIMIT_EXCEEDED", f"Too many components: {len(items)}; at most {MAX_COMPONENTS} per call"
            )

    # -- writes -------------------------------------------------------------------------------------------
    def _save(self, call: str, element) -> tuple[str, ComponentError | None]:
        full_name = _text(element, "fullName") or ""
        try:
            kind = (element.get(f"{{{XSI}}}type") or "").rpartition(":")[2]
            if kind != "CustomField":
                raise ComponentError(
                    "INVALID_TYPE", f"The sandbox supports CustomField only, not {kind or '?'}"
                )
            sobject, field_name = self._split(full_name)
            existing = self.store.types[sobject].fields.get(field_name)
            if call == "createMetadata" or (call == "upsertMetadata" and existing is None):
                if existing is not None:
                    raise ComponentError(
                        "DUPLICATE_DEVELOPER_NAME",
                        f"There is already a field named {field_name.removesuffix('__c')} on {sobject}.",
                        ["fullName"],
                    )
                self.store.add_field(sobject, field_from_element(field_name, element))
            else:
                if existing is None or not existing.custom:
                    raise ComponentError(
                        "INVALID_CROSS_REFERENCE_KEY",
                        f"In field: fullName - no CustomField named {full_name} found",
                        ["fullName"],
                    )
                updated = field_from_element(field_name, element)
                if updated.metadata_type != existing.metadata_type:
                    raise ComponentError(
                        "FIELD_INTEGRITY_EXCEPTION",
                        f"Changing the type of {full_name} from {existing.metadata_type} to "
                        f"{updated.metadata_type} is not supported by the sandbox",
                        ["type"],
                    )
                self.store.replace_field(sobject, updated)
        except ComponentError as exc:
            return full_name, exc
        return full_name, None

    def _delete(self, full_name: str) -> tuple[str, ComponentError | None]:
        try:
            sobject, field_name = self._split(full_name)
            existing = self.store.types[sobject].fields.get(field_name)
            if existing is None or not existing.custom:
                raise ComponentError(
                    "INVALID_CROSS_REFERENCE_KEY",
                    f"In field: fullName - no CustomField named {full_name} found",
                )
            self.store.remove_field(sobject, field_name)
        except ComponentError as exc:
            return full_name, exc
        return full_name, None

    def _split(self, full_name: str) -> tuple[str, str]:
        sobject_name, _, field_name = full_name.partition(".")
        if not field_name:
            raise ComponentError(
                "FIELD_INTEGRITY_EXCEPTION",
                f"fullName must be Object.Field__c, got {full_name!r}",
                ["fullName"],
            )
        sobject = self.store.type(sobject_name)
        if sobject is None or sobject.name != sobject_name:
            raise ComponentError(
                "INVALID_CROSS_REFERENCE_KEY",
                f"In field: fullName - no CustomObject named {sobject_name} found",
                ["fullName"],
            )
        if not CUSTOM_NAME.match(field_name) or len(field_name) > 43:
            raise ComponentError(
                "FIELD_INTEGRITY_EXCEPTION",
                f"{field_name}: a custom field name must start with a letter, end with __c, use only letters, "
                "digits and single underscores, and have at most 40 characters before __c",
                ["fullName"],
            )
        return sobject.name, field_name

    def _respond(self, call: str, results: list[tuple[str, ComponentError | None]]) -> Response:
        envelope, response = _envelope(f"{call}Response")
        for full_name, error in results:
            result = etree.SubElement(response, f"{{{MD_NS}}}result")
            if error is not None:
                errors = etree.SubElement(result, f"{{{MD_NS}}}errors")
                for name in error.fields:
                    etree.SubElement(errors, f"{{{MD_NS}}}fields").text = name
                etree.SubElement(errors, f"{{{MD_NS}}}message").text = error.message
                etree.SubElement(errors, f"{{{MD_NS}}}statusCode").text = error.code
            etree.SubElement(result, f"{{{MD_NS}}}fullName").text = full_name
            etree.SubElement(result, f"{{{MD_NS}}}success").text = "false" if error else "true"
        return xml_response(envelope)

    # -- reads --------------------------------------------------------------------------------------------
    def _read(self, full_names: list[str]) -> Response:
        envelope, response = _envelope("readMetadataResponse")
        result = etree.SubElement(response, f"{{{MD_NS}}}result")
        for full_name in full_names:
            sobject_name, _, field_name = full_name.partition(".")
            sobject = self.store.type(sobject_name)
            fld = sobject.fields.get(field_name) if sobject else None
            if fld is None or not fld.custom:
                continue  # Salesforce leaves unknown names out of the result
            records = etree.SubElement(result, f"{{{MD_NS}}}records")
            records.set(f"{{{XSI}}}type", "CustomField")
            _write_field(records, f"{sobject.name}.{fld.name}", fld)
        return xml_response(envelope)


def _envelope(response_name: str):
    envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soapenv": SOAP_ENV, None: MD_NS, "xsi": XSI})
    body = etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body")
    return envelope, etree.SubElement(body, f"{{{MD_NS}}}{response_name}")


def _text(element, name: str) -> str | None:
    child = element.find(f"{{{MD_NS}}}{name}")
    return None if child is None else (child.text or "")


def _int(element, name: str) -> int | None:
    text = _text(element, name)
    if text in (None, ""):
        return None
    try:
        return int(float(text))
    except ValueError:
        raise ComponentError("FIELD_INTEGRITY_EXCEPTION", f"{name}: not a number: {text}", [name]) from None


def _bool(element, name: str) -> bool | None:
    text = _text(element, name)
    return None if text in (None, "") else text.strip().lower() == "true"


def field_from_element(field_name: str, element) -> Field:
    """A Field from a `<metadata xsi:type="CustomField">`, checked as Salesforce checks a field definition."""
    label = _text(element, "label")
    if not label:
        raise ComponentError("REQUIRED_FIELD_MISSING", "Label: You must enter a value", ["label"])
    if len(label) > 40:
        raise ComponentError(
            "FIELD_INTEGRITY_EXCEPTION", "Label: data value too large (max length=40)", ["label"]
        )
    kind = _text(element, "type")
    if kind not in METADATA_TYPES:
        raise ComponentError(
            "FIELD_INTEGRITY_EXCEPTION",
            f"Field type {kind!r} is not supported by the sandbox; use one of {', '.join(METADATA_TYPES)}",
            ["type"],
        )
    attrs: dict = {
        "description": _text(element, "description"),
        "inline_help_text": _text(element, "inlineHelpText"),
        "external_id": bool(_bool(element, "externalId")),
    }
    if _bool(element, "required"):
        attrs["nillable"] = False
    length, precision, scale = _int(element, "length"), _int(element, "precision"), _int(element, "scale")
    if kind == "Text":
        if length is None or not 1 <= length <= 255:
            raise ComponentError("FIELD_INTEGRITY_EXCEPTION", "Length: must be between 1 and 255", ["length"])
        attrs["length"] = length
    elif kind == "LongTextArea":
        if length is None or not 256 <= length <= 131072:
            raise ComponentError(
                "FIELD_INTEGRITY_EXCEPTION", "Length: must be between 256 and 131,072", ["length"]
            )
        visible = _int(element, "visibleLines")
        if visible is None:
            raise ComponentError(
                "REQUIRED_FIELD_MISSING", "Visible Lines: You must enter a value", ["visibleLines"]
            )
        attrs.update(length=length, visible_lines=visible)
    elif kind in ("Number", "Currency", "Percent"):
        if precision is None or not 1 <= precision <= 18:
            raise ComponentError(
                "FIELD_INTEGRITY_EXCEPTION", "Precision: must be between 1 and 18", ["precision"]
            )
        scale = scale or 0
        if not 0 <= scale <= precision:
            raise ComponentError(
                "FIELD_INTEGRITY_EXCEPTION", "Scale: must be between 0 and the precision", ["scale"]
            )
        attrs.update(precision=precision, scale=scale)
    elif kind == "Checkbox":
        if _text(element, "defaultValue") in (None, ""):
            raise ComponentError(
                "REQUIRED_FIELD_MISSING", "Default Value: You must enter a value", ["defaultValue"]
            )
    elif kind == "Picklist":
        restricted, values = _value_set(element)
        attrs.update(restricted=restricted, picklist=values)
    return custom_field(field_name, label, kind, **attrs)


def _value_set(element) -> tuple[bool, list[PicklistValue]]:
    value_set = element.find(f"{{{MD_NS}}}valueSet")
    if value_set is None:
        raise ComponentError("REQUIRED_FIELD_MISSING", "Picklist: a valueSet is required", ["valueSet"])
    if _text(value_set, "valueSetName"):
        raise ComponentError(
            "FIELD_INTEGRITY_EXCEPTION", "Global value sets are not supported by the sandbox", ["valueSet"]
        )
    definition = value_set.find(f"{{{MD_NS}}}valueSetDefinition")
    values = []
    seen: set[str] = set()
    for value in [] if definition is None else definition.findall(f"{{{MD_NS}}}value"):
        api_name = _text(value, "fullName")
        if not api_name:
            raise ComponentError(
                "REQUIRED_FIELD_MISSING", "Picklist value: API name is required", ["valueSet"]
            )
        if api_name in seen:
            raise ComponentError("DUPLICATE_VALUE", f"Duplicate picklist value: {api_name}", ["valueSet"])
        seen.add(api_name)
        active = _bool(value, "isActive")
        values.append(
            PicklistValue(
                api_name,
                _text(value, "label") or api_name,
                active=True if active is None else active,
                default=bool(_bool(value, "default")),
            )
        )
    if not values:
        raise ComponentError(
            "REQUIRED_FIELD_MISSING", "Picklist: at least one value is required", ["valueSet"]
        )
    return bool(_bool(value_set, "restricted")), values


def _write_field(parent, full_name: str, fld: Field) -> None:
    """A CustomField's elements in the WSDL's order (zeep reads them in any order, Salesforce writes them so)."""

    def add(name: str, value) -> None:
        if value is not None:
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            etree.SubElement(parent, f"{{{MD_NS}}}{name}").text = text

    add("fullName", full_name)
    add("description", fld.description)
    add("externalId", fld.external_id)
    add("inlineHelpText", fld.inline_help_text)
    add("label", fld.label)
    if fld.metadata_type in ("Text", "LongTextArea"):
        add("length", fld.length)
    if fld.metadata_type in ("Number", "Currency", "Percent"):
        add("precision", fld.precision)
    add("required", not fld.nillable)
    if fld.metadata_type in ("Number", "Currency", "Percent"):
        add("scale", fld.scale)
    add("type", fld.metadata_type)
    if fld.metadata_type == "Picklist":
        value_set = etree.SubElement(parent, f"{{{MD_NS}}}valueSet")
        etree.SubElement(value_set, f"{{{MD_NS}}}restricted").text = "true" if fld.restricted else "false"
        definition = etree.SubElement(value_set, f"{{{MD_NS}}}valueSetDefinition")
        etree.SubElement(definition, f"{{{MD_NS}}}sorted").text = "false"
        for value in fld.picklist:
            item = etree.SubElement(definition, f"{{{MD_NS}}}value")
            etree.SubElement(item, f"{{{MD_NS}}}fullName").text = value.value
            etree.SubElement(item, f"{{{MD_NS}}}default").text = "true" if value.default else "false"
            etree.SubElement(item, f"{{{MD_NS}}}isActive").text = "true" if value.active else "false"
            etree.SubElement(item, f"{{{MD_NS}}}label").text = value.label or value.value
    if fld.visible_lines is not None:
        add("visibleLines", fld.visible_lines)
