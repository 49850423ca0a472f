"""Salesforce ids and field value checks in the sandbox, without HTTP."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.salesforce.fields import FieldError, custom_field, icp_fields, parse_datetime
from sandbox.salesforce.ids import checksum_suffix, id_number, make_id, make_ids, normalize_id


def test_checksum_matches_salesforce():
    # A published example: 001A0000006Vm9r is 001A0000006Vm9rIAC in its 18-character form.
    assert checksum_suffix("001A0000006Vm9r") == "IAC"
    assert normalize_id("001A0000006Vm9r") == "001A0000006Vm9rIAC"
    assert normalize_id("001A0000006Vm9rIAC") == "001A0000006Vm9rIAC"
    assert normalize_id("001A0000006Vm9riac") == "001A0000006Vm9rIAC"  # the suffix is case-insensitive


@pytest.mark.parametrize("bad", ["", "001", "001A0000006Vm9rIAD", "001A0000006Vm9r!AC", None, 42, "0" * 17])
def test_malformed_ids(bad):
    assert normalize_id(bad) is None


@given(st.integers(min_value=1, max_value=10**9), st.integers(min_value=1, max_value=50))
def test_generated_ids_are_valid_ordered_and_invertible(first, count):
    ids = list(make_ids("001", first, count))
    assert all(len(i) == 18 and normalize_id(i) == i and i.startswith("001") for i in ids)
    assert ids == sorted(ids)  # a later record has a larger id
    assert [id_number(i) for i in ids] == list(range(first, first + count))
    assert make_id("001", first) == ids[0]


FIELDS = {f.name: f for f in icp_fields()}


@pytest.mark.parametrize(
    ("name", "value", "stored"),
    [
        ("ICP_Fit_Score__c", 999, 999),
        ("ICP_Fit_Score__c", -999, -999),
        ("ICP_Fit_Score__c", 12.5, 13),  # rounded half up to the scale
        ("ICP_Fit_Score__c", "42", 42),  # Bulk API cells are strings
        ("ICP_Fit_Score__c", None, None),
        ("ICP_Tier__c", "A", "A"),
        ("ICP_Tier__c", "", None),  # an empty string is stored as null
        ("ICP_Model__c", "x" * 40, "x" * 40),
        ("ICP_Scored_At__c", "2026-01-31T10:00:00Z", "2026-01-31T10:00:00.000+0000"),
        ("ICP_Scored_At__c", "2026-01-31T10:00:00.123+0000", "2026-01-31T10:00:00.123+0000"),
        ("ICP_Scored_At__c", "2026-01-31T11:00:00+01:00", "2026-01-31T10:00:00.000+0000"),
    ],
)
def test_values_salesforce_accepts(name, value, stored):
    assert FIELDS[name].coerce(value) == stored


@pytest.mark.parametrize(
    ("name", "value", "code"),
    [
        ("ICP_Fit_Score__c", 1000, "NUMBER_OUTSIDE_VALID_RANGE"),
        ("ICP_Fit_Score__c", 999.5, "NUMBER_OUTSIDE_VALID_RANGE"),
        ("ICP_Fit_Score__c", "lots", "INVALID_TYPE_ON_FIELD_IN_RECORD"),
        ("ICP_Fit_Score__c", True, "INVALID_TYPE_ON_FIELD_IN_RECORD"),
        ("ICP_Fit_Score__c", float("nan"), "INVALID_TYPE_ON_FIELD_IN_RECORD"),
        ("ICP_Tier__c", "a", "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ("ICP_Segment__c", "Galactic", "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ("ICP_Model__c", "x" * 41, "STRING_TOO_LONG"),
        ("ICP_Reasons__c", "r" * 1025, "STRING_TOO_LONG"),
        ("ICP_Model__c", ["list"], "INVALID_TYPE_ON_FIELD_IN_RECORD"),
        ("ICP_Scored_At__c", "2026-02-30T10:00:00Z", "INVALID_TYPE_ON_FIELD_IN_RECORD"),
        ("ICP_Scored_At__c", 1700000000, "INVALID_TYPE_ON_FIELD_IN_RECORD"),
    ],
)
def test_values_salesforce_refuses(name, value, code):
    with pytest.raises(FieldError) as err:
        FIELDS[name].coerce(value)
    assert err.value.status_code == code
    assert err.value.fields == [name]


def test_checkbox_and_date_fields():
    checkbox = custom_field("Flag__c", "Flag", "Checkbox")
    assert checkbox.coerce(True) == 1 and checkbox.coerce("false", from_csv=True) == 0
    with pytest.raises(FieldError):
        checkbox.coerce("maybe", from_csv=True)
    date = custom_field("Day__c", "Day", "Date")
    assert date.coerce("2024-02-29") == "2024-02-29"
    with pytest.raises(FieldError):
        date.coerce("2023-02-29")


OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: dt.timezone(dt.timedelta(minutes=m))
)


@given(st.datetimes(min_value=dt.datetime(1701, 1, 1), max_value=dt.datetime(3999, 1, 1), timezones=OFFSETS))
def test_any_aware_datetime_is_stored_as_fixed_width_utc(moment):
    stored = parse_datetime(moment.isoformat())
    assert stored is not None and len(stored) == 28 and stored.endswith("+0000")
    assert dt.datetime.strptime(stored, "%Y-%m-%dT%H:%M:%S.%f%z") == moment.replace(
        microsecond=moment.microsecond // 1000 * 1000
    )


def test_dates_outside_salesforces_range_are_refused():
    assert parse_datetime("1699-12-31T23:59:59Z") is None and parse_datetime("4001-01-01T00:00:00Z") is None
