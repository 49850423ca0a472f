"""The sandbox's SOQL query, paging, describe and limits, driven through the unmodified simple-salesforce SDK.

Every SOQL case is checked against the same filter computed with pandas over `records()`, so the SQL
translation is judged by an independent implementation of SOQL's rules (case-insensitive text, `!=`
matching nulls, and so on).
"""

from __future__ import annotations

import pandas as pd
import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest

from sandbox import Sandbox

from .helpers import connect


@pytest.fixture(scope="module")
def sb():
    with Sandbox(accounts=500, seed=7, page_size=100, with_icp_fields=True) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def sf(sb):
    return connect(sb)


def frame(sb: Sandbox, include_deleted: bool = False) -> pd.DataFrame:
    return pd.DataFrame(sb.sf.records("Account", include_deleted=include_deleted))


def ids(records) -> list[str]:
    return [r["Id"] for r in records]


def test_query_all_iter_follows_next_records_url_across_pages(sb, sf):
    sb.calls.reset()
    got = list(sf.query_all_iter("SELECT Id, Name, Website FROM Account"))
    assert ids(got) == list(frame(sb)["Id"])
    assert sb.calls.snapshot() == {"sf.query": 1, "sf.query_more": 4}  # 500 records, pages of 100
    assert set(got[0]) == {"attributes", "Id", "Name", "Website"}
    assert got[0]["attributes"] == {
        "type": "Account",
        "url": f"/services/data/v59.0/sobjects/Account/{got[0]['Id']}",
    }


def test_first_page_says_how_many_there_are_and_where_the_rest_is(sf):
    page = sf.query("SELECT Id FROM Account")
    assert page["totalSize"] == 500 and page["done"] is False and len(page["records"]) == 100
    assert page["nextRecordsUrl"].startswith("/services/data/v59.0/query/01g")
    assert page["nextRecordsUrl"].endswith("-100")
    second = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True)
    assert len(second["records"]) == 100 and second["nextRecordsUrl"].endswith("-200")


def test_unknown_query_locator_is_refused(sf):
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.query_more("/services/data/v59.0/query/01g8d0020H0ZZZZAQA-100", identifier_is_url=True)
    assert err.value.content[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def _ci(series: pd.Series) -> pd.Series:
    return series.str.lower()


SOQL_CASES = [
    # SOQL compares text case-insensitively; the seed writes some industries as "manufacturing"/"MANUFACTURING".
    ("Industry = 'Manufacturing'", lambda d: _ci(d.Industry) == "manufacturing"),
    # != also matches records where the field is null.
    ("Industry != 'Retail'", lambda d: d.Industry.isna() | (_ci(d.Industry) != "retail")),
    ("Industry = null", lambda d: d.Industry.isna()),
    ("Industry != null", lambda d: d.Industry.notna()),
    (
        "NumberOfEmployees >= 200 AND NumberOfEmployees <= 2500",
        lambda d: d.NumberOfEmployees.between(200, 2500),
    ),
    ("NumberOfEmployees < 10", lambda d: d.NumberOfEmployees < 10),
    ("AnnualRevenue > 1500000.5", lambda d: d.AnnualRevenue > 1500000.5),
    ("BillingCountry IN ('DE', 'FR', 'nl')", lambda d: d.BillingCountry.isin(["DE", "FR", "NL"])),
    ("BillingCountry NOT IN ('DE', 'FR')", lambda d: ~d.BillingCountry.isin(["DE", "FR"])),
    ("Name LIKE 'acme%'", lambda d: _ci(d.Name).str.startswith("acme")),
    ("Website LIKE 'https://www.%'", lambda d: d.Website.fillna("").str.startswith("https://www.")),
    ("Name LIKE '%labs%1_'", lambda d: d.Name.str.fullmatch(r"(?i).*Labs.*1.")),
    ("NOT Name LIKE '%Group%'", lambda d: ~_ci(d.Name).str.contains("group")),
    (
        "NOT (Industry = 'Retail' OR Industry = 'Software')",
        lambda d: ~_ci(d.Industry).isin(["retail", "software"]),
    ),
    (
        "(BillingCountry = 'DE' OR BillingCountry = 'FR') AND NumberOfEmployees > 100",
        lambda d: d.BillingCountry.isin(["DE", "FR"]) & (d.NumberOfEmployees > 100),
    ),
    (
        "BillingCountry = 'GB' OR (Industry = 'Logistics' AND NOT NumberOfEmployees < 500)",
        # NOT of a comparison with a null is true: the null comparison counts as false first.
        lambda d: (
            (d.BillingCountry == "GB") | ((_ci(d.Industry) == "logistics") & ~(d.NumberOfEmployees < 500))
        ),
    ),
    ("CreatedDate > 2024-01-01T00:00:00Z", lambda d: d.CreatedDate > "2024-01-01T00:00:00.000+0000"),
    # The same instant written with an offset and with milliseconds.
    ("CreatedDate > 2024-01-01T01:00:00+01:00", lambda d: d.CreatedDate > "2024-01-01T00:00:00.000+0000"),
    (
        "LastModifiedDate <= 2025-06-01T00:00:00.000Z",
        lambda d: d.LastModifiedDate <= "2025-06-01T00:00:00.000+0000",
    ),
    ("IsDeleted = false", lambda d: ~d.IsDeleted),
    (
        "Type IN ('Customer', 'Partner') AND ParentId != null",
        lambda d: d.Type.isin(["Customer", "Partner"]) & d.ParentId.notna(),
    ),
]


@pytest.mark.parametrize(("where", "expected"), SOQL_CASES, ids=[c[0] for c in SOQL_CASES])
def test_where_clause_matches_pandas(sb, sf, where, expected):
    data = frame(sb)
    want = data.loc[expected(data).fillna(False).astype(bool), "Id"].tolist()
    got = ids(sf.query_all(f"SELECT Id FROM Account WHERE {where}")["records"])
    assert got == want
    assert 0 < len(want) < len(data) or where in ("IsDeleted = false",)


def test_order_by_several_keys_with_nulls_placement(sb, sf):
    soql = (
        "SELECT Id, BillingCountry, NumberOfEmployees FROM Account "
        "ORDER BY BillingCountry DESC NULLS FIRST, NumberOfEmployees ASC NULLS LAST, Id"
    )
    got = ids(sf.query_all(soql)["records"])
    data = frame(sb)
    nulls = data[data.BillingCountry.isna()].sort_values(["NumberOfEmployees", "Id"], na_position="last")
    rest = data[data.BillingCountry.notna()].sort_values(
        ["BillingCountry", "NumberOfEmployees", "Id"], ascending=[False, True, True], na_position="last"
    )
    assert got == list(nulls.Id) + list(rest.Id)


def test_order_by_text_ignores_case_and_limit_offset_slice_it(sb, sf):
    got = ids(sf.query("SELECT Id FROM Account ORDER BY Name, Id LIMIT 7 OFFSET 5")["records"])
    data = frame(sb).assign(key=lambda d: d.Name.str.lower()).sort_values(["key", "Id"])
    assert got == list(data.Id[5:12])


def test_count_and_default_order(sb, sf):
    assert sf.query("SELECT COUNT() FROM Account WHERE BillingCountry = 'DE'")["totalSize"] == int(
        (frame(sb).BillingCountry == "DE").sum()
    )
    aggregate = sf.query("SELECT COUNT(Industry) FROM Account")
    assert aggregate["records"][0]["expr0"] == int(frame(sb).Industry.notna().sum())
    # Without ORDER BY, records come in creation order, so Id order.
    assert ids(sf.query("SELECT Id FROM Account LIMIT 5")["records"]) == sorted(frame(sb).Id)[:5]


def test_names_are_case_insensitive_and_come_back_canonical(sf):
    record = sf.query("select id, NAME, account.website from ACCOUNT limit 1")["records"][0]
    assert list(record) == ["attributes", "Id", "Name", "Website"]


def test_values_render_like_salesforce(sb, sf):
    target = frame(sb).dropna(subset=["AnnualRevenue", "NumberOfEmployees"]).iloc[0]
    soql = (
        "SELECT Id, IsDeleted, CreatedDate, AnnualRevenue, NumberOfEmployees, ICP_Tier__c FROM Account "
        f"WHERE Id = '{target.Id[:15]}'"  # a 15-character id matches its 18-character form
    )
    [record] = sf.query(soql)["records"]
    assert record["IsDeleted"] is False
    assert record["CreatedDate"] == target.CreatedDate
    assert pd.Timestamp(record["CreatedDate"]).tz is not None
    assert record["CreatedDate"].endswith("+0000") and len(record["CreatedDate"]) == 28
    assert isinstance(record["AnnualRevenue"], float) and isinstance(record["NumberOfEmployees"], int)
    assert record["ICP_Tier__c"] is None


def test_string_literal_escapes(sb, sf):
    target = frame(sb).Id.iloc[3]
    sb.sf.edit("Account", target, {"Name": "O'Brien \\ Sons 100%"})
    got = sf.query("SELECT Id, Name FROM Account WHERE Name = 'O\\'Brien \\\\ Sons 100%'")["records"]
    assert ids(got) == [target] and got[0]["Name"] == "O'Brien \\ Sons 100%"
    # In LIKE, \% is a literal percent sign.
    assert ids(sf.query("SELECT Id FROM Account WHERE Name LIKE '%100\\%'")["records"]) == [target]


def test_query_all_sees_deleted_records_and_query_does_not(sb, sf):
    victim = frame(sb).Id.iloc[10]
    sb.sf.delete("Account", victim)
    assert victim not in ids(sf.query_all("SELECT Id FROM Account")["records"])
    everything = sf.query_all("SELECT Id, IsDeleted FROM Account", include_deleted=True)["records"]
    assert {r["Id"]: r["IsDeleted"] for r in everything}[victim] is True
    assert ids(everything) == list(frame(sb, include_deleted=True).Id)
    assert ids(
        sf.query_all("SELECT Id FROM Account WHERE IsDeleted = true", include_deleted=True)["records"]
    ) == [victim]


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Id FORM Account", "MALFORMED_QUERY"),
        ("SELECT Id FROM Account WHERE", "MALFORMED_QUERY"),
        ("SELECT Id FROM Account WHERE Name = 'unterminated", "MALFORMED_QUERY"),
        ("SELECT Id FROM Account WHERE Name = 'a' AND Type = 'b' OR Industry = 'c'", "MALFORMED_QUERY"),
        ("SELECT Id FROM Account LIMIT -1", "MALFORMED_QUERY"),
        ("SELECT Id FROM Account WHERE CreatedDate > 2024-01-01T00:00:00", "MALFORMED_QUERY"),
        ("SELECT Id, Id FROM Account", "MALFORMED_QUERY"),
        ("SELECT Nope__c FROM Account", "INVALID_FIELD"),
        ("SELECT Id FROM Account WHERE Parent.Name = 'x'", "INVALID_FIELD"),
        ("SELECT Id FROM Account ORDER BY Nope", "INVALID_FIELD"),
        ("SELECT Id FROM Account WHERE CreatedDate > '2024-01-01'", "INVALID_FIELD"),
        ("SELECT Id FROM Account WHERE NumberOfEmployees = '5'", "INVALID_FIELD"),
        ("SELECT Id FROM Account WHERE Name = 5", "INVALID_FIELD"),
        ("SELECT Id FROM Account WHERE ICP_Reasons__c = 'x'", "INVALID_FIELD"),
        ("SELECT Id FROM Account WHERE Id = 'nope'", "INVALID_QUERY_FILTER_OPERATOR"),
        ("SELECT Id FROM Contact", "INVALID_TYPE"),
    ],
)
def test_bad_queries_are_refused_with_salesforce_error_codes(sf, soql, code):
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.query(soql)
    assert err.value.content[0]["errorCode"] == code
    assert err.value.status == 400


def test_malformed_query_message_points_at_the_culprit(sf):
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.query("SELECT Id FORM Account")
    assert "ERROR at Row:1:Column:11" in err.value.content[0]["message"]


def test_opportunities_are_queryable_and_link_to_accounts(sb, sf):
    opps = sf.query_all(
        "SELECT Id, AccountId, Amount, StageName, IsWon, IsClosed, CloseDate FROM Opportunity"
    )["records"]
    assert len(opps) == len(sb.sf.records("Opportunity")) > 0
    account_ids = set(frame(sb, include_deleted=True).Id)
    assert all(o["AccountId"] in account_ids and o["Id"].startswith("006") for o in opps)
    assert all(o["IsWon"] == (o["StageName"] == "Closed Won") for o in opps)
    assert all(len(o["CloseDate"]) == 10 for o in opps)


def test_describe_reflects_the_field_set(sf):
    described = sf.Account.describe()
    fields = {f["name"]: f for f in described["fields"]}
    assert described["keyPrefix"] == "001"
    assert fields["Id"]["type"] == "id" and not fields["Id"]["updateable"]
    assert fields["NumberOfEmployees"]["type"] == "int"
    assert fields["AnnualRevenue"]["type"] == "currency"
    assert fields["Website"]["type"] == "url"
    assert fields["ParentId"]["referenceTo"] == ["Account"]
    assert fields["SystemModstamp"]["type"] == "datetime" and not fields["SystemModstamp"]["updateable"]
    score = fields["ICP_Fit_Score__c"]
    assert (score["type"], score["precision"], score["scale"], score["custom"]) == ("double", 3, 0, True)
    tier = fields["ICP_Tier__c"]
    assert tier["type"] == "picklist" and tier["restrictedPicklist"] is True
    assert [p["value"] for p in tier["picklistValues"]] == ["A", "B", "C", "D"]
    assert fields["ICP_Reasons__c"]["length"] == 1024 and fields["ICP_Reasons__c"]["type"] == "textarea"
    assert fields["ICP_Model__c"]["length"] == 40 and fields["ICP_Scored_At__c"]["type"] == "datetime"
    assert {s["name"] for s in sf.describe()["sobjects"]} == {"Account", "Opportunity"}
    assert sf.Opportunity.describe()["keyPrefix"] == "006"


def test_limits_and_api_usage_header(sb, sf):
    sf.query("SELECT Id FROM Account LIMIT 1")
    used, limit = sf.api_usage["api-usage"]
    assert (used, limit) == sb.sf.api_usage
    assert limit == sb.options.salesforce_daily_limit
    daily = sf.limits()["DailyApiRequests"]
    assert daily["Max"] == limit and daily["Remaining"] == limit - used - 1
