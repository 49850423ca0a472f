"""connectors.salesforce: the real connector and the unmodified simple-salesforce against the sandbox, over HTTPS.

Each login flow; pulls (REST paging, Bulk API 2.0 query, the `since` cursor, ids, deals, mapped columns); the
owned fields through describe and the Metadata API; writes (sObject Collections, Bulk API 2.0 ingest,
per-record errors, row locks); and how Salesforce's errors come out of the one retry policy.
"""

from __future__ import annotations

import re
import traceback
from urllib.parse import urlparse

import certifi
import pandas as pd
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from simple_salesforce.exceptions import SalesforceError

from connectors.base import FieldPlan, FieldSpec, Usage
from connectors.retry import AuthFailed, CrmError, QuotaExhausted, RetriesExhausted, RetryPolicy
from connectors.salesforce import (
    DEFAULT_OWNED,
    SalesforceConnector,
    SalesforceSettings,
    check_ids,
    soql_quote,
)
from sandbox import Sandbox
from sandbox.salesforce.ids import KEY_PREFIXES, make_id
from sync.config import Secret
from tests.sandbox.helpers import connect as sdk_connect

N = 300
OWNED_NAMES = sorted(spec.name for spec in DEFAULT_OWNED.values())
SCORED_AT = "2024-05-01T10:00:00Z"
SCORED_AT_STORED = "2024-05-01T10:00:00.000+0000"  # how Salesforce gives a datetime back


# -- helpers ------------------------------------------------------------------------------------------------
def fast_policy() -> RetryPolicy:
    return RetryPolicy(attempts=4, initial_wait=0.01, max_wait=0.02)


def settings_for(sb: Sandbox, **changes) -> SalesforceSettings:
    options = {"ca_bundle": sb.salesforce.ca_bundle, "login_url": sb.salesforce.login_url, "bulk_poll_s": 0}
    return SalesforceSettings(**{**options, **changes})


def session_secrets(sb: Sandbox) -> dict[str, str]:
    return {"SF_INSTANCE_URL": sb.salesforce.instance_url, "SF_ACCESS_TOKEN": sb.salesforce.access_token}


def connect(sb: Sandbox, secrets: dict | None = None, **changes) -> SalesforceConnector:
    return SalesforceConnector(
        settings_for(sb, **changes), secrets or session_secrets(sb), policy=fast_policy()
    )


def pull(connector: SalesforceConnector, **kwargs) -> pd.DataFrame:
    return pd.concat(list(connector.iter_accounts(**kwargs)), ignore_index=True)


def account_ids(sb: Sandbox) -> list[str]:
    return [r["Id"] for r in sb.sf.records()]


def stored(sb: Sandbox) -> dict[str, dict]:
    return {r["Id"]: r for r in sb.sf.records(include_deleted=True)}


def changes_for(ids: list[str], **fixed) -> pd.DataFrame:
    """A write batch as the job builds it: index = Account id, the logical owned columns."""
    n = len(ids)
    frame = pd.DataFrame(
        {
            "segment": ["SMB", "Mid-market", "Enterprise"] * (n // 3) + ["SMB"] * (n % 3),
            "fit_score": pd.array([(i * 7) % 101 for i in range(n)], dtype="Int64"),
            "tier": ["ABCD"[i % 4] for i in range(n)],
            "reasons": [f"reason {i}" for i in range(n)],
            "scored_at": SCORED_AT,
            "model": "m1",
        },
        index=pd.Index(ids, name="id"),
    )
    for column, value in fixed.items():
        frame[column] = value
    return frame


def flat(batches) -> list:
    return [result for batch in batches for result in batch]


def assert_written(sb: Sandbox, changes: pd.DataFrame) -> None:
    now = stored(sb)
    for rid, row in changes.iterrows():
        rec = now[rid]
        assert (rec["ICP_Segment__c"], rec["ICP_Tier__c"], rec["ICP_Reasons__c"], rec["ICP_Model__c"]) == (
            row.segment,
            row.tier,
            row.reasons,
            row.model,
        ), rid
        assert rec["ICP_Fit_Score__c"] == row.fit_score and rec["ICP_Scored_At__c"] == SCORED_AT_STORED


# -- fixtures -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def book():
    """A read-only org: 300 accounts, no ICP fields, REST query batches of 100 so every pull pages."""
    with Sandbox(accounts=N, seed=7, page_size=100) as sb:
        yield sb


@pytest.fixture
def org(book):
    book.faults.clear()
    book.calls.reset()
    yield book
    book.faults.clear()


@pytest.fixture
def icp_org():
    """A fresh org with the ICP fields, for tests that write."""
    with Sandbox(accounts=500, seed=7, with_icp_fields=True) as sb:
        yield sb


@pytest.fixture
def bare_org():
    """A fresh small org without the ICP fields, for tests that create fields or edit records."""
    with Sandbox(accounts=20, seed=7) as sb:
        yield sb


@pytest.fixture(scope="module")
def private_key_file(tmp_path_factory) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("jwt") / "connected-app.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(path)


def login_secrets(sb: Sandbox, mode: str, key_file: str) -> dict[str, str]:
    info = sb.salesforce
    return {
        "session": session_secrets(sb),
        "password": {
            "SF_USERNAME": info.username,
            "SF_PASSWORD": info.password,
            "SF_SECURITY_TOKEN": info.security_token,
        },
        "jwt": {
            "SF_USERNAME": info.username,
            "SF_CONSUMER_KEY": info.consumer_key,
            "SF_PRIVATE_KEY_FILE": key_file,
        },
        "client_credentials": {
            "SF_CONSUMER_KEY": info.consumer_key,
            "SF_CONSUMER_SECRET": info.consumer_secret,
        },
    }[mode]


# client credentials needs a My Domain: the SDK refuses it on login/test
DOMAIN = {"session": "login", "password": "login", "jwt": "login", "client_credentials": "acme.my"}
LOGIN_ENDPOINT = {
    "password": "sf.login.soap",
    "jwt": "sf.login.oauth",
    "client_credentials": "sf.login.oauth",
}
MODES = list(DOMAIN)


# -- logins -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_each_login_flow_reaches_the_org(org, mode, private_key_file):
    connector = SalesforceConnector(
        settings_for(org, domain=DOMAIN[mode]),
        login_secrets(org, mode, private_key_file),
        policy=fast_policy(),
    )
    assert connector.mode == mode
    assert connector.count_accounts() == N
    assert connector.logins == 1
    # the SDK's hardcoded https://{domain}.salesforce.com was sent to the sandbox; no login for a session
    assert org.calls.count("sf.login") == (0 if mode == "session" else 1)
    if mode != "session":
        assert org.calls.count(LOGIN_ENDPOINT[mode]) == 1
        assert connector.sf.session_id != org.salesforce.access_token  # a freshly issued session
    assert connector.sf.sf_instance == urlparse(org.salesforce.instance_url).netloc


@pytest.mark.parametrize(
    ("mode", "wrong", "code"),
    [
        ("password", {"SF_PASSWORD": "Wr0ng-Passw0rd-77"}, "INVALID_LOGIN"),
        ("client_credentials", {"SF_CONSUMER_SECRET": "Wr0ng-Secret-77"}, "invalid_client"),
    ],
)
def test_refused_login_is_auth_failed_without_the_secret(org, mode, wrong, code, private_key_file):
    secrets = {**login_secrets(org, mode, private_key_file), **wrong}
    connector = SalesforceConnector(settings_for(org, domain=DOMAIN[mode]), secrets, policy=fast_policy())
    with pytest.raises(AuthFailed) as info:
        connector.count_accounts()
    shown = "".join(traceback.format_exception(info.value))
    assert code in str(info.value) and mode in str(info.value)
    [secret] = wrong.values()
    assert secret not in shown and org.salesforce.security_token not in shown
    # the SDK's exception (which may carry the request) is not chained
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert org.calls.count("sf.query") == 0 and org.calls.count("sf.describe") == 0


@pytest.mark.parametrize(
    "secrets",
    [
        {},
        {"SF_INSTANCE_URL": "", "SF_ACCESS_TOKEN": ""},
        {"SF_USERNAME": "rep@sandbox.icp", "SF_PASSWORD": "x"},  # no security token, no key, no secret
        {"SF_CONSUMER_KEY": "k"},
    ],
)
def test_missing_credentials_name_every_variable(org, secrets):
    with pytest.raises(AuthFailed) as info:
        SalesforceConnector(settings_for(org), secrets)
    for name in (
        "SF_INSTANCE_URL",
        "SF_ACCESS_TOKEN",
        "SF_USERNAME",
        "SF_PASSWORD",
        "SF_SECURITY_TOKEN",
        "SF_CONSUMER_KEY",
        "SF_PRIVATE_KEY_FILE",
        "SF_CONSUMER_SECRET",
    ):
        assert name in str(info.value)
    assert org.calls.count() == 0


@pytest.mark.parametrize("mode", MODES)
def test_repr_never_shows_secrets(org, mode, private_key_file):
    plain = login_secrets(org, mode, private_key_file)
    # secrets arrive from the config as Secret objects; the connector reveals them only to log in
    connector = SalesforceConnector(
        settings_for(org, domain=DOMAIN[mode]), {k: Secret(v) for k, v in plain.items()}, policy=fast_policy()
    )
    assert connector.count_accounts() == N
    shown = repr(connector) + str(connector)
    assert mode in shown
    for value in [*plain.values(), connector.sf.session_id]:
        if value != org.salesforce.instance_url:
            assert value not in shown


def test_the_ca_bundle_setting_beats_requests_ca_bundle_from_the_environment(org, monkeypatch):
    # a bundle that does not hold the sandbox's certificate, as REQUESTS_CA_BUNDLE often is on CI machines
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    assert connect(org).count_accounts() == N
    with pytest.raises(CrmError, match="SSLError"):
        connect(org, ca_bundle=None).count_accounts()


# -- pulls --------------------------------------------------------------------------------------------------
def test_rest_pull_pages_through_every_account_exactly_once(org):
    connector = connect(org)
    pages = list(connector.iter_accounts(page_size=120))
    assert [len(p) for p in pages] == [120, 120, 60]
    assert org.calls.count("sf.query_more") == 2  # the org answers 100 records a batch
    assert org.calls.count("sf.bulk2") == 0
    accounts = pd.concat(pages, ignore_index=True)
    assert accounts["id"].is_unique
    assert set(accounts["id"]) == set(account_ids(org))
    assert accounts["_modstamp"].is_monotonic_increasing  # oldest change first, for the cursor


def test_pulled_accounts_are_canonical(org):
    accounts = pull(connect(org)).set_index("id")
    assert accounts["employees"].dtype == "Int64"
    assert accounts["annual_revenue"].dtype == "Float64"
    for name in ("name", "domain", "industry", "country", "parent_id"):
        assert accounts[name].dtype == "string", name
    for name in ("created_at", "modified_at", "_modstamp"):
        assert str(accounts[name].dt.tz) == "UTC", name
    records = stored(org)
    dirty = [
        r["Website"]
        for r in records.values()
        if r["Website"] and re.search(r"^(https?://|www\.)|/$", r["Website"])
    ]
    assert len(dirty) > 30  # reps' websites come with schemes, www. and slashes, or this proves nothing
    for rid, rec in records.items():
        row = accounts.loc[rid]
        website = rec["Website"]
        if website is None:
            assert pd.isna(row["domain"])
        else:
            assert row["domain"] == re.sub(r"^(https?://)?(www\.)?", "", website.lower()).rstrip("/")
        for canonical, field in (("employees", "NumberOfEmployees"), ("annual_revenue", "AnnualRevenue")):
            assert pd.isna(row[canonical]) if rec[field] is None else row[canonical] == rec[field]
        assert row["created_at"] == pd.Timestamp(rec["CreatedDate"])
        assert row["name"] == rec["Name"] and (
            pd.isna(row["parent_id"]) or row["parent_id"] == rec["ParentId"]
        )


def test_bulk_query_above_the_threshold_yields_what_rest_yields(icp_org):
    ids = account_ids(icp_org)
    # live values of the owned fields come back too, whichever API brings them
    icp_org.sf.edit(
        "Account",
        ids[0],
        {
            "ICP_Segment__c": "SMB",
            "ICP_Fit_Score__c": 87,
            "ICP_Tier__c": "A",
            "ICP_Reasons__c": 'size, "industry"\nand country',
            "ICP_Scored_At__c": SCORED_AT,
            "ICP_Model__c": "m1",
        },
    )
    connector = connect(icp_org, bulk_query_threshold=400)
    icp_org.calls.reset()
    rest = pull(connector, total=400)  # at the threshold: REST
    assert icp_org.calls.count("sf.bulk2") == 0 and icp_org.calls.count("sf.query") >= 1
    icp_org.calls.reset()
    bulk = pull(connector, total=401)
    assert icp_org.calls.count("sf.bulk2.query.create") == 1
    assert icp_org.calls.count("sf.bulk2.query.results") >= 1
    assert icp_org.calls.count("sf.query") == 0

    rest, bulk = (f.sort_values("id").reset_index(drop=True) for f in (rest, bulk))
    assert len(bulk) == 500 and bulk["id"].is_unique
    # Bulk API CSV writes datetimes with Z, REST with +0000: the same instant in the raw live value
    for frame in (rest, bulk):
        frame["live_scored_at"] = pd.to_datetime(frame["live_scored_at"], utc=True, format="mixed")
    pd.testing.assert_frame_equal(bulk, rest)
    first = bulk.set_index("id").loc[ids[0]]
    assert (first["live_tier"], first["live_reasons"]) == ("A", 'size, "industry"\nand country')
    assert float(first["live_fit_score"]) == 87


def test_since_includes_a_record_exactly_at_the_timestamp(org):
    stamps = sorted((r["SystemModstamp"], r["Id"]) for r in org.sf.records())
    at, at_id = stamps[N // 2]
    since = pd.Timestamp(at)
    expected = {rid for stamp, rid in stamps if stamp >= at}
    connector = connect(org)
    pulled = pull(connector, since=since)
    assert set(pulled["id"]) == expected and at_id in expected
    assert connector.count_accounts(since=since) == len(expected)
    # a millisecond later the record at the cursor drops out: the filter is on the timestamp, with >=
    later = pull(connector, since=since + pd.Timedelta(milliseconds=1))
    assert set(later["id"]) == {rid for stamp, rid in stamps if stamp > at}
    assert at_id not in set(later["id"])


def test_ids_select_exactly_those_accounts(org):
    ids = account_ids(org)[10:15]
    connector = connect(org)
    assert sorted(pull(connector, ids=ids)["id"]) == sorted(ids)
    assert connector.count_accounts(ids=ids) == 5


def test_more_than_500_ids_go_in_chunks_and_keep_the_other_filters(org):
    stamps = {r["Id"]: r["SystemModstamp"] for r in org.sf.records()}
    at = sorted(stamps.values())[N // 2]
    # well-formed ids with valid checksums, but no such accounts
    unknown = [make_id(KEY_PREFIXES["Account"], 900_000 + n) for n in range(201)]
    connector = connect(org)
    connector.describe_account()
    org.calls.reset()
    pulled = pull(connector, ids=[*stamps, *unknown], since=pd.Timestamp(at))
    assert org.calls.snapshot()["sf.query"] == 2  # 501 ids: two queries of at most 500
    assert sorted(pulled["id"]) == sorted(rid for rid, stamp in stamps.items() if stamp >= at)


@pytest.mark.parametrize(
    "bad",
    ["001' OR Name != '", "001000000000001AAA' OR Id != '", "0010000000000001", "001\\'", ""],
)
def test_ids_that_are_not_salesforce_ids_are_refused_before_any_query(org, bad):
    with pytest.raises(CrmError, match="not a Salesforce id"):
        check_ids(["001000000000001AAA", bad])
    connector = connect(org)
    with pytest.raises(CrmError, match="not a Salesforce id"):
        list(connector.iter_accounts(ids=[bad]))
    with pytest.raises(CrmError, match="not a Salesforce id"):
        connector.count_accounts(ids=[bad])
    assert org.calls.count("sf.query") == 0 and org.calls.count("sf.bulk2") == 0


def test_check_ids_accepts_15_and_18_character_ids():
    assert check_ids(["001000000000001", "001000000000001AAA"]) == ["001000000000001", "001000000000001AAA"]


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("plain", "'plain'"),
        ("O'Brien", "'O\\'Brien'"),
        ("back\\slash", "'back\\\\slash'"),
        ("\\'", "'\\\\\\''"),  # a backslash then a quote: both escaped, so the quote cannot close the literal
    ],
)
def test_soql_quote_escapes_quotes_and_backslashes(value, literal):
    assert soql_quote(value) == literal


def test_soql_quote_finds_a_name_with_quotes_and_backslashes(bare_org):
    rid = account_ids(bare_org)[3]
    name = "O'Brien \\ Sons' OR Name != '"
    bare_org.sf.edit("Account", rid, {"Name": name})
    connector = connect(bare_org)
    [found] = pull(connector, where=f"Name = {soql_quote(name)}")["id"]
    assert found == rid


def test_iter_deals_returns_closed_deals_with_booleans(org):
    deals = pd.concat(list(connect(org).iter_deals()), ignore_index=True)
    opportunities = org.sf.records("Opportunity")
    closed = {o["Id"] for o in opportunities if o["IsClosed"] and o["AccountId"]}
    assert any(not o["IsClosed"] for o in opportunities)  # open deals exist and are left out
    assert deals["id"].is_unique and set(deals["id"]) == closed
    assert deals["is_closed"].dtype == "boolean" and deals["is_won"].dtype == "boolean"
    assert deals["is_closed"].all()
    won = {o["Id"] for o in opportunities if o["IsWon"]}
    assert set(deals.loc[deals["is_won"], "id"]) == won & closed
    assert 0 < deals["is_won"].sum() < len(deals)
    assert deals["amount"].dtype == "Float64" and str(deals["closed_at"].dt.tz) == "UTC"


def test_a_mapped_custom_field_is_pulled_as_its_own_column(bare_org):
    connect(bare_org).apply_fields(FieldPlan(create=[FieldSpec("region", "Region__c", "Region", "text", 40)]))
    ids = account_ids(bare_org)
    bare_org.sf.edit("Account", ids[0], {"Region__c": "EMEA"})
    bare_org.sf.edit("Account", ids[1], {"Region__c": "APAC"})
    connector = connect(bare_org, account_columns={"region": "Region__c"})
    assert not [p for p in connector.check_fields(["SMB"]).problems if "Region__c" in p]
    accounts = pull(connector).set_index("id")
    assert accounts["region"].dtype == "string"
    assert (accounts.loc[ids[0], "region"], accounts.loc[ids[1], "region"]) == ("EMEA", "APAC")
    assert accounts["region"].isna().sum() == len(ids) - 2


# -- fields -------------------------------------------------------------------------------------------------
def test_fields_are_planned_created_and_then_in_place(bare_org):
    connector = connect(bare_org)
    plan = connector.check_fields(["SMB", "Enterprise"])
    assert sorted(spec.name for spec in plan.create) == OWNED_NAMES
    assert (plan.add_values, plan.ok, plan.problems) == ({}, [], [])
    assert next(s for s in plan.create if s.logical == "segment").values == ("SMB", "Enterprise")

    connector.apply_fields(plan)
    assert bare_org.calls.count("sf.mdapi") == 1  # six components, one call (at most ten a call)
    fields = connector.describe_account()
    assert {name: fields[name]["type"] for name in OWNED_NAMES} == {
        "ICP_Fit_Score__c": "double",
        "ICP_Model__c": "string",
        "ICP_Reasons__c": "textarea",
        "ICP_Scored_At__c": "datetime",
        "ICP_Segment__c": "picklist",
        "ICP_Tier__c": "picklist",
    }
    assert [p["value"] for p in fields["ICP_Tier__c"]["picklistValues"]] == ["A", "B", "C", "D"]
    assert fields["ICP_Tier__c"]["restrictedPicklist"] and fields["ICP_Reasons__c"]["length"] == 1024

    again = connector.check_fields(["SMB", "Enterprise"])
    assert again.empty and again.problems == [] and sorted(again.ok) == OWNED_NAMES


def test_a_new_segment_value_is_the_only_thing_planned(bare_org):
    connector = connect(bare_org)
    connector.apply_fields(connector.check_fields(["SMB", "Enterprise"]))
    plan = connector.check_fields(["SMB", "Enterprise", "Strategic"])
    assert plan.create == [] and plan.add_values == {"ICP_Segment__c": ("Strategic",)}
    assert "ICP_Segment__c" not in plan.ok and len(plan.ok) == 5
    connector.apply_fields(plan)
    assert connector.check_fields(["SMB", "Enterprise", "Strategic"]).empty
    rid = account_ids(bare_org)[0]
    [result] = flat(connector.write(changes_for([rid], segment="Strategic")))
    assert result.success and stored(bare_org)[rid]["ICP_Segment__c"] == "Strategic"


def test_an_owned_field_with_the_wrong_type_is_a_problem_not_a_creation(bare_org):
    sf = sdk_connect(bare_org)
    sf.mdapi._client.transport.session = sf.session  # zeep keeps its own session otherwise
    md = sf.mdapi
    md.CustomField.create(
        [md.CustomField(fullName="Account.ICP_Tier__c", label="Tier", type="Text", length=5)]
    )
    plan = connect(bare_org).check_fields(["SMB"])
    assert "ICP_Tier__c" not in {spec.name for spec in plan.create} and len(plan.create) == 5
    [problem] = plan.problems
    assert "ICP_Tier__c" in problem and "exists as string" in problem and "picklist" in problem


def test_a_mapped_read_field_that_does_not_exist_is_a_problem(org):
    plan = connect(org, account_columns={"region": "Region__c"}).check_fields(["SMB"])
    [problem] = plan.problems
    assert "region" in problem and "'Region__c'" in problem
    assert org.calls.count("sf.mdapi") == 0  # checking changes nothing


def test_metadata_api_errors_are_classified(bare_org):
    connector = connect(bare_org)
    plan = connector.check_fields(["SMB"])
    bare_org.faults.inject("server_error", times=1, only="sf.mdapi")
    connector.apply_fields(plan)  # a 503 SOAP fault is retried like any other
    assert connector.policy.retries == 1 and connector.check_fields(["SMB"]).empty
    # applying the stale plan again: Salesforce rejects each component; a CrmError says why
    with pytest.raises(CrmError, match="DUPLICATE_DEVELOPER_NAME"):
        connector.apply_fields(plan)
    bare_org.faults.inject("rate_limit", rate=1.0, only="sf.mdapi")
    with pytest.raises(QuotaExhausted):
        connector.apply_fields(FieldPlan(add_values={"ICP_Segment__c": ("Strategic",)}))


# -- writes -------------------------------------------------------------------------------------------------
def test_450_changes_go_in_three_collections_calls(icp_org):
    connector = connect(icp_org)
    changes = changes_for(account_ids(icp_org)[:450])
    icp_org.calls.reset()
    batches = list(connector.write(changes))
    assert [len(b) for b in batches] == [200, 200, 50]
    results = flat(batches)
    assert [r.record_id for r in results] == list(changes.index)
    assert all(r.success for r in results)
    assert icp_org.calls.count("sf.composite") == 3 and icp_org.calls.count("sf.bulk2") == 0
    assert connector.write_calls == 3
    assert_written(icp_org, changes)


def test_per_record_errors_come_back_with_their_codes_and_the_rest_is_written(icp_org):
    ids = account_ids(icp_org)[:6]
    icp_org.sf.edit("Account", ids[0], {"ICP_Reasons__c": "old reasons"})
    icp_org.sf.delete("Account", ids[2])
    connector = connect(icp_org)
    changes = changes_for(ids)
    changes.loc[ids[4], "segment"] = "Galactic"
    changes.loc[ids[0], "reasons"] = None  # clears the field
    [results] = list(connector.write(changes))
    assert [r.record_id for r in results] == ids
    failed = {r.record_id: r.code for r in results if not r.success}
    assert failed == {ids[2]: "ENTITY_IS_DELETED", ids[4]: "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"}
    assert "Galactic" in results[4].message
    assert connector.write_calls == 1
    ok = changes.drop([ids[2], ids[4]])
    assert_written(icp_org, ok.drop(ids[0]))
    now = stored(icp_org)
    assert now[ids[0]]["ICP_Reasons__c"] is None and now[ids[0]]["ICP_Tier__c"] == "A"
    assert now[ids[4]]["ICP_Tier__c"] is None  # the refused record kept every old value


def test_locked_rows_are_sent_again_through_the_retry_policy_and_land(icp_org):
    ids = account_ids(icp_org)[:10]
    icp_org.faults.inject("record_lock", times=3, only="sf.composite")
    connector = connect(icp_org)
    results = flat(connector.write(changes_for(ids)))
    assert icp_org.faults.fired["record_lock"] == 3
    assert sorted(r.record_id for r in results) == sorted(ids)
    assert all(r.success for r in results)
    # the first call settles 7 records; the retry (one backoff, counted) re-sends only the 3 locked ones
    assert icp_org.calls.count("sf.composite") == 2 and connector.write_calls == 2
    assert connector.policy.retries == 1 and connector.api_calls == 2
    assert_written(icp_org, changes_for(ids))


def test_a_row_that_stays_locked_is_reported_once_the_retry_policy_gives_up(icp_org):
    rid = account_ids(icp_org)[0]
    connector = connect(icp_org)  # 4 attempts
    icp_org.faults.inject("record_lock", times=connector.policy.attempts, only="sf.composite")
    [result] = flat(connector.write(changes_for([rid])))
    assert (result.record_id, result.success, result.code) == (rid, False, "UNABLE_TO_LOCK_ROW")
    assert icp_org.calls.count("sf.composite") == connector.policy.attempts == connector.api_calls
    assert connector.policy.retries == connector.policy.attempts - 1
    assert stored(icp_org)[rid]["ICP_Tier__c"] is None


def test_a_locked_row_that_clears_before_the_last_attempt_lands(icp_org):
    rid = account_ids(icp_org)[0]
    connector = connect(icp_org)
    icp_org.faults.inject("record_lock", times=connector.policy.attempts - 1, only="sf.composite")
    [result] = flat(connector.write(changes_for([rid])))
    assert result.success and icp_org.calls.count("sf.composite") == connector.policy.attempts
    assert stored(icp_org)[rid]["ICP_Tier__c"] == changes_for([rid]).loc[rid, "tier"]


def test_above_bulk_threshold_writes_go_through_bulk_api_2(icp_org):
    ids = account_ids(icp_org)[:150]
    icp_org.sf.edit("Account", ids[30], {"ICP_Reasons__c": "old reasons"})
    icp_org.sf.delete("Account", ids[10])
    connector = connect(icp_org, bulk_threshold=100)
    changes = changes_for(ids)
    changes.loc[ids[20], "tier"] = "Z"
    changes.loc[ids[30], "reasons"] = None
    icp_org.calls.reset()
    batches = list(connector.write(changes))
    assert len(batches) == 1
    [results] = batches
    assert [r.record_id for r in results] == ids
    failed = {r.record_id: r.code for r in results if not r.success}
    assert failed == {ids[10]: "ENTITY_IS_DELETED", ids[20]: "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"}
    assert "Z" in next(r.message for r in results if r.record_id == ids[20])
    assert icp_org.calls.count("sf.bulk2.ingest.create") == 1 and icp_org.calls.count("sf.composite") == 0
    assert connector.write_calls == 1
    assert_written(icp_org, changes.drop([ids[10], ids[20], ids[30]]))
    now = stored(icp_org)
    assert (
        now[ids[30]]["ICP_Reasons__c"] is None and now[ids[30]]["ICP_Tier__c"] == changes.loc[ids[30], "tier"]
    )
    assert now[ids[20]]["ICP_Tier__c"] is None

    # at the threshold itself, Collections again
    icp_org.calls.reset()
    assert all(r.success for r in flat(connector.write(changes_for(ids[40:140]))))
    assert icp_org.calls.count("sf.composite") == 1 and icp_org.calls.count("sf.bulk2") == 0
    assert connector.write_calls == 2


# -- errors and retries ----------------------------------------------------------------------------------------
def test_server_errors_are_retried_until_the_query_lands(org):
    org.faults.inject("server_error", times=2, only="sf.query")
    connector = connect(org)
    assert connector.count_accounts() == N
    assert connector.policy.retries == 2 and org.calls.count("sf.query") == 3


def test_server_errors_that_never_clear_exhaust_the_attempts(org):
    org.faults.inject("server_error", rate=1.0, only="sf.query")
    connector = connect(org)
    with pytest.raises(RetriesExhausted, match="SERVER_UNAVAILABLE"):
        connector.count_accounts()
    assert org.calls.count("sf.query") == 4


@pytest.mark.parametrize(
    "endpoint", ["sf.bulk2.query.create", "sf.bulk2.query.get", "sf.bulk2.query.results"]
)
def test_bulk_query_steps_are_retried(org, endpoint):
    org.faults.inject("server_error", times=1, only=endpoint)
    connector = connect(org, bulk_query_threshold=100)
    pulled = pull(connector, total=N)
    assert len(pulled) == N and pulled["id"].is_unique
    assert connector.policy.retries == 1 and org.calls.count(endpoint) == 2


def test_an_expired_session_is_renewed_by_logging_in_again(org, private_key_file):
    connector = connect(org, login_secrets(org, "password", private_key_file), bulk_query_threshold=100)
    connector.describe_account()
    org.faults.inject("expire_session", times=1, only="sf.bulk2.query.create")
    assert len(pull(connector, total=N)) == N
    assert connector.logins == 2 and org.calls.count("sf.login.soap") == 2


def test_an_expired_access_token_with_nothing_to_renew_it_is_auth_failed(bare_org):
    bare_org.faults.inject("expire_session", times=1, only="sf.query")
    with pytest.raises(AuthFailed, match="SF_ACCESS_TOKEN"):
        connect(bare_org).count_accounts()


def test_request_limit_on_collections_ends_in_quota_exhausted(icp_org):
    icp_org.faults.inject("rate_limit", rate=1.0, only="sf.composite")
    connector = connect(icp_org)
    ids = account_ids(icp_org)[:5]
    with pytest.raises(QuotaExhausted, match="REQUEST_LIMIT_EXCEEDED"):
        list(connector.write(changes_for(ids)))
    assert icp_org.calls.count("sf.composite") == 4 and connector.write_calls == 4
    assert all(stored(icp_org)[rid]["ICP_Tier__c"] is None for rid in ids)


@pytest.mark.parametrize(
    ("where", "code"), [("Name = ", "MALFORMED_QUERY"), ("No_Such_Field__c = 'x'", "INVALID_FIELD")]
)
@pytest.mark.parametrize("total", [None, N], ids=["rest", "bulk"])
def test_a_bad_where_condition_is_a_crm_error_naming_the_problem(org, where, code, total):
    connector = connect(org, bulk_query_threshold=100)
    with pytest.raises(CrmError) as info:
        list(connector.iter_accounts(where=where, total=total))
    assert code in str(info.value)
    assert not isinstance(info.value, SalesforceError | RetriesExhausted)
    assert connector.policy.retries == 0  # fatal: not retried
    with pytest.raises(CrmError, match=code):
        connector.count_accounts(where=where)


def test_usage_reports_the_orgs_daily_api_usage(org):
    connector = connect(org)
    assert connector.usage() == Usage(*org.sf.api_usage)  # before any call: from /limits
    assert org.calls.count("sf.limits") == 1
    connector.count_accounts()
    usage = connector.usage()  # now from the last Sforce-Limit-Info header, no extra call
    assert usage == Usage(*org.sf.api_usage) and usage.used > 1
    assert org.calls.count("sf.limits") == 1


@pytest.mark.parametrize("kind", ["server_error", "drop"])
def test_a_transient_failure_during_login_is_retried(org, kind, private_key_file):
    before = org.faults.fired[kind]  # the module's org has seen other faults of this kind
    org.faults.inject(kind, times=2, only="sf.login")
    connector = SalesforceConnector(
        settings_for(org), login_secrets(org, "password", private_key_file), policy=fast_policy()
    )
    assert connector.count_accounts() > 0
    assert org.faults.fired[kind] - before == 2 and connector.policy.retries >= 2
