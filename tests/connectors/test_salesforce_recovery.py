"""connectors.salesforce: what must not stall a pull, through the sandbox and the unmodified simple-salesforce.

Many ids go in queries that each fit the URL limit (count and pages alike); a lost query cursor
(INVALID_QUERY_LOCATOR) resumes the pull where it stopped; a 503, a request limit or a dropped connection
during a login (ours, or the one the SDK makes by itself to renew an expired session) is retried under the one
retry policy; a spent daily quota is `QuotaExhausted` in every auth mode; a refused login says what Salesforce
said, never the SDK's message template and never a secret.
"""

from __future__ import annotations

import traceback

import pytest
import requests
from simple_salesforce.exceptions import SalesforceError

from connectors.retry import AuthFailed, QuotaExhausted
from connectors.salesforce import MAX_QUERY_CHARS, SalesforceConnector, soql_quote
from sandbox import Sandbox
from sandbox.salesforce.ids import KEY_PREFIXES, make_id
from tests.connectors import test_salesforce as base
from tests.connectors.test_salesforce import (
    DOMAIN,
    LOGIN_ENDPOINT,
    MODES,
    account_ids,
    connect,
    fast_policy,
    login_secrets,
    pull,
    settings_for,
)
from tests.sandbox.helpers import connect as sdk_connect

N = 300
private_key_file = base.private_key_file  # the module-scoped fixture, shared


def queries(sb: Sandbox, label: str = "sf.query") -> int:
    """Calls under exactly this label (`calls.count` counts by prefix: sf.query would take sf.query_more)."""
    return sb.calls.snapshot().get(label, 0)


book = base.book  # 300 accounts, REST query batches of 100: a pull is one query and two queryMore calls


@pytest.fixture
def org(book):
    """The shared org, with faults, counters and (unlike the base module's) sessions reset."""
    book.faults.clear()
    book.calls.reset()
    book.sf.reset_sessions()
    yield book
    book.faults.clear()
    book.sf.reset_sessions()


def connector_for(sb: Sandbox, mode: str, key_file: str, **changes) -> SalesforceConnector:
    return SalesforceConnector(
        settings_for(sb, domain=DOMAIN[mode], **changes),
        login_secrets(sb, mode, key_file),
        policy=fast_policy(),
    )


# -- many ids ----------------------------------------------------------------------------------------------
def unknown_ids(count: int) -> list[str]:
    """Well-formed Account ids the org does not hold (as failed records deleted since would be)."""
    return [make_id(KEY_PREFIXES["Account"], 900_000 + i) for i in range(count)]


def test_5000_ids_in_one_query_are_refused_by_the_server(org):
    ids = account_ids(org) + unknown_ids(4_700)
    soql = f"SELECT Id FROM Account WHERE Id IN ({', '.join(soql_quote(i) for i in ids)})"
    # The server answers 414 Request-URI Too Long and hangs up (so the client may see only the hang-up):
    # the query never runs, whatever the retries.
    with pytest.raises((SalesforceError, requests.RequestException)):
        sdk_connect(org).query(soql)
    assert queries(org) == 0


def test_5000_ids_are_counted_and_pulled_in_queries_that_fit(org):
    real = account_ids(org)
    unknown = unknown_ids(5_000 - N)
    ids = unknown[:2_000] + real + unknown[2_000:]
    connector = connect(org)
    assert connector.count_accounts(ids=ids) == N
    counts = queries(org)
    pulled = pull(connector, ids=ids)
    assert sorted(pulled["id"]) == sorted(real)
    pages = queries(org) - counts
    # each query holds as many ids as fit MAX_QUERY_CHARS (about 440 of 18 characters), no more
    per_query = MAX_QUERY_CHARS // len("%27001000000000000AAA%27%2C+")
    assert counts == pages >= len(ids) // per_query
    assert pages <= len(ids) // 300
    assert connector.policy.retries == 0


def test_ids_keep_the_since_and_where_filters_across_chunks(org):
    ids = account_ids(org) + unknown_ids(1_500)
    connector = connect(org)
    where = "Industry = 'Retail'"
    retail = set(pull(connector, where=where)["id"])
    assert connector.count_accounts(ids=ids, where=where) == len(retail) > 0
    assert set(pull(connector, ids=ids, where=where)["id"]) == retail


def test_no_ids_is_no_query(org):
    connector = connect(org)
    assert connector.count_accounts(ids=[]) == 0
    assert list(connector.iter_accounts(ids=[])) == []
    assert queries(org) == 0


# -- a lost query cursor ---------------------------------------------------------------------------------------
def test_a_dropped_last_page_whose_cursor_is_spent_resumes_the_pull(org):
    # The last queryMore is answered (and the server forgets the cursor), but the answer is lost on the way:
    # the retry gets INVALID_QUERY_LOCATOR, and the pull goes on after the last record it received.
    org.faults.inject("drop", times=1, only="sf.query_more", after=1)
    connector = connect(org)
    pulled = pull(connector, page_size=100)
    assert org.faults.fired["drop"] == 1
    assert len(pulled) == N and pulled["id"].is_unique and set(pulled["id"]) == set(account_ids(org))
    assert list(pulled["_modstamp"]) == sorted(pulled["_modstamp"])  # still oldest change first
    assert queries(org) == 2  # the query, then once more from where it stopped


def test_a_cursor_evicted_mid_pull_resumes_after_the_last_record_received(org):
    connector = connect(org)
    pages = connector.iter_accounts(page_size=100)
    first = next(pages)
    # Salesforce keeps ten open cursors per user: ten other paged queries push this pull's out.
    other = sdk_connect(org)
    for _ in range(10):
        assert not other.query("SELECT Id FROM Account")["done"]
    rest = list(pages)
    ids = list(first["id"]) + [i for page in rest for i in page["id"]]
    assert len(ids) == N and set(ids) == set(account_ids(org))
    assert queries(org) == 1 + 10 + 1  # ours, the ten others, ours again after the last record received
    assert connector.policy.retries == 0


def test_deals_and_unordered_queries_resume_too(org):
    connector = connect(org)
    org.faults.inject("drop", times=1, only="sf.query_more", after=1)
    deals = list(connector.iter_deals())
    every = [r["Id"] for r in org.sf.records("Opportunity") if r["IsClosed"] and r["AccountId"]]
    got = [i for page in deals for i in page["id"]]
    assert sorted(got) == sorted(every)

    # without an ORDER BY to resume on, the query is issued again and what was received is skipped
    org.faults.inject("drop", times=1, only="sf.query_more", after=1)
    pages = list(connector._rest_pages("SELECT Id, Name FROM Account", 100))
    got = [rec["Id"] for page in pages for rec in page]
    assert sorted(got) == sorted(account_ids(org))


# -- logins under the retry policy ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        ("password", "server_error"),
        ("password", "rate_limit"),
        ("password", "drop"),
        ("jwt", "server_error"),
        ("jwt", "rate_limit"),
        ("client_credentials", "server_error"),
    ],
)
def test_a_transient_failure_while_the_sdk_renews_an_expired_session_is_retried(
    org, mode, kind, private_key_file
):
    connector = connector_for(org, mode, private_key_file)
    connector.describe_account()  # logged in
    # The session expires; the SDK logs in again by itself, and that login fails twice.
    org.faults.inject("expire_session", times=1, only="sf.query")
    org.faults.inject(kind, times=2, only=LOGIN_ENDPOINT[mode])
    assert connector.count_accounts() == N
    assert org.faults.fired[kind] >= 2 and connector.policy.retries >= 2
    assert org.calls.count(LOGIN_ENDPOINT[mode]) == 1 + 3  # the first login, two failed renewals, one good


@pytest.mark.parametrize("kind", ["server_error", "rate_limit", "drop"])
def test_a_transient_failure_while_we_renew_an_expired_session_is_retried(org, kind, private_key_file):
    # Bulk API 2.0 calls do not renew a session inside the SDK: the connector logs in again, as one more
    # attempt under the same policy.
    connector = connector_for(org, "password", private_key_file, bulk_query_threshold=100)
    connector.describe_account()
    org.faults.inject("expire_session", times=1, only="sf.bulk2.query.create")
    org.faults.inject(kind, times=2, only="sf.login")
    assert len(pull(connector, total=N)) == N
    assert connector.logins == 2 and org.calls.count("sf.login.soap") == 1 + 3
    assert connector.policy.retries >= 3  # the expired session, then the two failed logins


@pytest.mark.parametrize("mode", MODES)
def test_a_spent_daily_quota_is_quota_exhausted_in_every_auth_mode(org, mode, private_key_file):
    org.faults.set_quota("salesforce", 0)
    connector = connector_for(org, mode, private_key_file)
    with pytest.raises(QuotaExhausted, match="REQUEST_LIMIT_EXCEEDED"):
        connector.count_accounts()
    assert queries(org) == 0


def test_a_quota_spent_during_a_session_renewal_is_quota_exhausted(org, private_key_file):
    connector = connector_for(org, "password", private_key_file)
    connector.describe_account()
    org.faults.inject("expire_session", times=1, only="sf.query")
    org.faults.inject("rate_limit", rate=1.0, only="sf.login")
    with pytest.raises(QuotaExhausted):
        connector.count_accounts()


# -- what a refused login says ---------------------------------------------------------------------------
REFUSED = {
    "password": (
        {"SF_PASSWORD": "Wr0ng-Passw0rd-77"},
        "INVALID_LOGIN: Invalid username, password, security token; or user locked out.",
    ),
    "jwt": ({"SF_CONSUMER_KEY": "Wr0ng-Key-77"}, "invalid_grant: invalid client credentials"),
    "client_credentials": (
        {"SF_CONSUMER_SECRET": "Wr0ng-Secret-77"},
        "invalid_client: invalid client credentials",
    ),
    "session": (
        {"SF_ACCESS_TOKEN": "00D000000000001!Wr0ngT0ken77"},
        "INVALID_SESSION_ID: Session expired or invalid",
    ),
}


@pytest.mark.parametrize("mode", MODES)
def test_a_refused_login_shows_salesforces_message_and_no_secret(org, mode, private_key_file):
    wrong, said = REFUSED[mode]
    secrets = {**login_secrets(org, mode, private_key_file), **wrong}
    connector = SalesforceConnector(settings_for(org, domain=DOMAIN[mode]), secrets, policy=fast_policy())
    with pytest.raises(AuthFailed) as info:
        connector.count_accounts()
    message = str(info.value)
    assert said in message and "Response content" not in message and "{content}" not in message
    shown = "".join(traceback.format_exception(info.value))
    for value in [*wrong.values(), org.salesforce.password, org.salesforce.security_token]:
        assert value not in shown
    assert info.value.__cause__ is None and connector.policy.retries == 0
