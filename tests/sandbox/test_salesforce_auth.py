"""Every login flow of simple-salesforce against the sandbox, and what an expired or invalid session does.

The SDK hardcodes `https://{domain}.salesforce.com` for logins, so the tests mount a requests adapter that
sends those requests to the sandbox instead (SDK-FACTS A1(b)); the SDK itself is not touched.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed, SalesforceExpiredSession

from sandbox import Sandbox


class SandboxLoginAdapter(HTTPAdapter):
    """Sends requests for any https://*.salesforce.com URL to the sandbox's host and port."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.target = urlsplit(base_url)

    def send(self, request, **kwargs):
        parts = urlsplit(request.url)
        if parts.hostname and parts.hostname.endswith(".salesforce.com"):
            request.url = urlunsplit((self.target.scheme, self.target.netloc, parts.path, parts.query, ""))
        return super().send(request, **kwargs)


def login_session(sb: Sandbox) -> requests.Session:
    session = requests.Session()
    session.verify = sb.salesforce.ca_bundle
    session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides session.verify
    session.mount("https://", SandboxLoginAdapter(sb.salesforce.instance_url))
    return session


@pytest.fixture(scope="module")
def sb():
    with Sandbox(accounts=300, seed=2) as sandbox:
        yield sandbox


@pytest.fixture
def clean_sb(sb):
    sb.faults.clear()
    sb.calls.reset()
    sb.sf.reset_sessions()
    yield sb
    sb.faults.clear()
    sb.sf.reset_sessions()


def can_query(sf: Salesforce) -> bool:
    return sf.query("SELECT COUNT() FROM Account")["totalSize"] == 300


def rsa_private_key_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_soap_login(clean_sb):
    info = clean_sb.salesforce
    sf = Salesforce(
        username=info.username,
        password=info.password,
        security_token=info.security_token,
        session=login_session(clean_sb),
    )
    assert sf.sf_instance == urlsplit(info.instance_url).netloc
    assert sf.session_id != info.access_token
    assert can_query(sf)
    assert clean_sb.calls.snapshot()["sf.login.soap"] == 1


def test_soap_login_with_a_wrong_password(clean_sb):
    info = clean_sb.salesforce
    with pytest.raises(SalesforceAuthenticationFailed) as err:
        Salesforce(
            username=info.username,
            password="wrong",
            security_token=info.security_token,
            session=login_session(clean_sb),
        )
    assert err.value.code == "INVALID_LOGIN"


def test_oauth_password_flow(clean_sb):
    info = clean_sb.salesforce
    sf = Salesforce(
        username=info.username,
        password=info.password,
        consumer_key=info.consumer_key,
        consumer_secret=info.consumer_secret,
        session=login_session(clean_sb),
    )
    assert can_query(sf)
    with pytest.raises(SalesforceAuthenticationFailed) as err:
        Salesforce(
            username=info.username,
            password=info.password,
            consumer_key=info.consumer_key,
            consumer_secret="wrong",
            session=login_session(clean_sb),
        )
    assert err.value.code == "invalid_client_id"


def test_client_credentials_flow(clean_sb):
    info = clean_sb.salesforce
    sf = Salesforce(
        consumer_key=info.consumer_key,
        consumer_secret=info.consumer_secret,
        domain="icp-sandbox.my",
        session=login_session(clean_sb),
    )
    assert can_query(sf)
    with pytest.raises(SalesforceAuthenticationFailed) as err:
        Salesforce(
            consumer_key="nope",
            consumer_secret="nope",
            domain="icp-sandbox.my",
            session=login_session(clean_sb),
        )
    assert err.value.code == "invalid_client"


def test_jwt_bearer_flow(clean_sb):
    info = clean_sb.salesforce
    key = rsa_private_key_pem()
    sf = Salesforce(
        username=info.username,
        consumer_key=info.consumer_key,
        privatekey=key,
        session=login_session(clean_sb),
    )
    assert can_query(sf)
    with pytest.raises(SalesforceAuthenticationFailed) as err:
        Salesforce(
            username=info.username,
            consumer_key="someone-else",
            privatekey=key,
            session=login_session(clean_sb),
        )
    assert err.value.code == "invalid_grant"


def test_requests_without_a_valid_session_are_refused(clean_sb):
    session = requests.Session()
    session.verify, session.trust_env = clean_sb.salesforce.ca_bundle, False
    sf = Salesforce(
        instance_url=clean_sb.salesforce.instance_url, session_id="00Dforged!token", session=session
    )
    with pytest.raises(SalesforceExpiredSession) as err:
        sf.query("SELECT Id FROM Account")
    assert err.value.content == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    bare = session.get(f"{clean_sb.salesforce.instance_url}/services/data/v59.0/limits/")
    assert bare.status_code == 401


def test_an_expired_session_makes_the_sdk_log_in_again(clean_sb):
    info = clean_sb.salesforce
    sf = Salesforce(
        username=info.username,
        password=info.password,
        security_token=info.security_token,
        session=login_session(clean_sb),
    )
    first_session = sf.session_id
    clean_sb.faults.inject("expire_session", times=1, only="sf.query")
    assert can_query(sf)  # the SDK got a 401, logged in again and retried
    assert sf.session_id != first_session
    assert clean_sb.calls.snapshot()["sf.login.soap"] == 2
    # The old session stays dead.
    stale = Salesforce(
        instance_url=info.instance_url, session_id=first_session, session=login_session(clean_sb)
    )
    with pytest.raises(SalesforceExpiredSession):
        stale.query("SELECT Id FROM Account LIMIT 1")


def test_an_expired_direct_session_stays_expired_until_renewed(clean_sb):
    info = clean_sb.salesforce
    sf = Salesforce(
        instance_url=info.instance_url, session_id=info.access_token, session=login_session(clean_sb)
    )
    clean_sb.faults.inject("expire_session", times=1, only="sf.query")
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM Account LIMIT 1")
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM Account LIMIT 1")  # no fault armed any more: the token itself is dead
    clean_sb.sf.reset_sessions()
    assert can_query(sf)
