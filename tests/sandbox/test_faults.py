"""Fault injection: the `--faults` spec, determinism under a seed, and each fault kind as the Salesforce SDK
sees it (request faults become the SDK's exceptions; a dropped connection becomes a requests error).
"""

from __future__ import annotations

import pytest
import requests
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceRefusedRequest,
)

from sandbox import Faults, FaultSpecError, Sandbox

from .helpers import connect

DROPPED = (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)


# -- the spec -----------------------------------------------------------------------------------------------------
def test_spec_arms_each_part():
    faults = Faults.from_spec("rate_limit:0.25@sf.query,server_error:x3,drop,record_lock:0.5,quota:40,seed=9")
    armed = [(f.kind, f.rate, f.times, f.only) for f in faults.armed]
    assert armed == [
        ("rate_limit", 0.25, None, "sf.query"),
        ("server_error", 1.0, 3, ""),
        ("drop", 1.0, 1, ""),
        ("record_lock", 0.5, None, ""),
    ]
    assert faults.quota == {"salesforce": 40, "hubspot": 40}
    assert faults.seed == 9


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("explode:0.1", "'explode:0.1'"),
        ("rate_limit:2", "'rate_limit:2'"),
        ("rate_limit:abc", "'rate_limit:abc'"),
        ("server_error:x0", "'server_error:x0'"),
        ("quota", "'quota'"),
        ("quota:lots", "'quota:lots'"),
        ("seed=abc", "'seed=abc'"),
        ("drop,bogus:x2@sf.query", "'bogus:x2@sf.query'"),
    ],
)
def test_bad_specs_name_the_part(spec, named):
    with pytest.raises(FaultSpecError) as err:
        Faults.from_spec(spec)
    assert named in str(err.value)
    assert "kinds:" in str(err.value)


def test_an_empty_spec_arms_nothing():
    assert Faults.from_spec(None).armed == [] and Faults.from_spec("").armed == []


def _draws(seed: int, n: int = 200) -> list:
    faults = Faults.from_spec("rate_limit:0.2,server_error:0.1,record_lock:0.3", seed=seed)
    return [
        (faults.request_fault("salesforce", "sf.query"), faults.record_fault("sf.composite.sobjects"))
        for _ in range(n)
    ]


def test_draws_are_deterministic_under_a_seed():
    assert _draws(3) == _draws(3)
    assert _draws(3) != _draws(4)
    kinds = {k for pair in _draws(3) for k in pair}
    assert kinds == {None, "rate_limit", "server_error", "record_lock"}


def test_endpoint_prefix_and_times_limit_where_and_how_often():
    faults = Faults()
    faults.inject("server_error", times=2, only="sf.composite")
    assert faults.request_fault("salesforce", "sf.query") is None
    assert faults.request_fault("salesforce", "sf.composite.sobjects") == "server_error"
    assert faults.request_fault("salesforce", "sf.composite.sobjects") == "server_error"
    assert faults.request_fault("salesforce", "sf.composite.sobjects") is None
    assert faults.fired["server_error"] == 2


def test_after_lets_the_first_matching_requests_through():
    faults = Faults.from_spec("server_error:x2@sf.login+1,drop:0.5@sf.query_more+2")
    assert [(f.kind, f.times, f.only, f.after) for f in faults.armed] == [
        ("server_error", 2, "sf.login", 1),
        ("drop", None, "sf.query_more", 2),
    ]
    draws = [faults.request_fault("salesforce", "sf.login.soap") for _ in range(4)]
    assert draws == [None, "server_error", "server_error", None]
    with pytest.raises(FaultSpecError, match="'quota:5\\+1'"):
        Faults.from_spec("quota:5+1")


# -- through the SDK ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sb():
    with Sandbox(accounts=300, seed=4, with_icp_fields=True) as sandbox:
        yield sandbox


@pytest.fixture
def clean(sb):
    sb.faults.clear()
    sb.calls.reset()
    sb.sf.reset_sessions()
    yield sb
    sb.faults.clear()
    sb.sf.reset_sessions()


QUERY = "SELECT Id, Name FROM Account"


def test_rate_limit_is_request_limit_exceeded(clean):
    sf = connect(clean)
    clean.faults.inject("rate_limit", times=1, only="sf.query")
    with pytest.raises(SalesforceRefusedRequest) as err:
        sf.query(QUERY)
    assert err.value.status == 403
    assert err.value.content == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    assert len(sf.query(QUERY)["records"]) == 300


def test_daily_quota_refuses_every_request_once_spent(clean):
    sf = connect(clean)
    clean.faults.set_quota("salesforce", 2)
    sf.query(QUERY)
    sf.Account.describe()
    for _ in range(2):
        with pytest.raises(SalesforceRefusedRequest) as err:
            sf.query(QUERY)
        assert err.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert clean.faults.fired["quota"] == 2


def test_the_orgs_daily_limit_is_enforced_and_reported(clean):
    sf = connect(clean)
    sf.query(QUERY)
    used, _ = clean.sf.api_usage
    clean.options.salesforce_daily_limit = used + 1
    try:
        sf.query(QUERY)
        assert sf.api_usage["api-usage"].used == sf.api_usage["api-usage"].total
        with pytest.raises(SalesforceRefusedRequest):
            sf.query(QUERY)
    finally:
        clean.options.salesforce_daily_limit = 5_000_000


def test_server_error_is_a_503(clean):
    sf = connect(clean)
    clean.faults.inject("server_error", times=1, only="sf.composite")
    records = [{"attributes": {"type": "Account"}, "id": clean.sf.records()[0]["Id"], "ICP_Tier__c": "A"}]
    with pytest.raises(SalesforceGeneralError) as err:
        sf.restful("composite/sobjects", method="PATCH", json={"records": records})
    assert err.value.status == 503 and err.value.content[0]["errorCode"] == "SERVER_UNAVAILABLE"
    assert clean.sf.records()[0]["ICP_Tier__c"] is None  # refused before anything was written


def test_expire_session_is_an_invalid_session(clean):
    sf = connect(clean)
    clean.faults.inject("expire_session", times=1, only="sf.describe")
    with pytest.raises(SalesforceExpiredSession) as err:
        sf.Account.describe()
    assert err.value.content[0]["errorCode"] == "INVALID_SESSION_ID"


def test_drop_breaks_the_connection_mid_body(clean):
    sf = connect(clean)
    clean.faults.inject("drop", times=1, only="sf.query")
    with pytest.raises(DROPPED):
        sf.query(QUERY)
    assert len(sf.query(QUERY)["records"]) == 300  # the server keeps serving


def test_a_dropped_write_may_still_have_been_applied(clean):
    sf = connect(clean)
    target = clean.sf.records()[5]["Id"]
    clean.faults.inject("drop", times=1, only="sf.sobject.patch")
    with pytest.raises(DROPPED):
        sf.Account.update(target, {"ICP_Tier__c": "B"})  # a 204 has no body: the connection closes first
    assert {r["Id"]: r["ICP_Tier__c"] for r in clean.sf.records()}[target] == "B"


def test_drop_during_a_bulk_download(clean):
    sf = connect(clean)
    clean.faults.inject("drop", times=1, only="sf.bulk2.query.results")
    with pytest.raises(DROPPED):
        list(sf.bulk2.Account.query(QUERY, wait=0))


def test_faults_through_http_are_deterministic_under_a_seed(clean):
    def pattern() -> list[bool]:
        clean.faults.clear()
        clean.faults.reseed(21)
        clean.faults.inject("rate_limit", rate=0.3, only="sf.query")
        sf = connect(clean)
        outcome = []
        for _ in range(25):
            try:
                sf.query("SELECT Id FROM Account LIMIT 1")
                outcome.append(True)
            except SalesforceRefusedRequest:
                outcome.append(False)
        return outcome

    first = pattern()
    assert first == pattern()
    assert 0 < first.count(False) < 25


def test_slow_holds_matching_requests_only():
    faults = Faults.from_spec("slow:0.25@sf.composite")
    assert faults.delay("sf.composite.sobjects") == 0.25
    assert faults.delay("sf.query") == 0.0
    faults.clear()
    assert faults.delay("sf.composite.sobjects") == 0.0


def test_slow_is_observed_through_the_sdk(clean):
    import time

    sf = connect(clean)
    clean.faults.slow_down(0.3, only="sf.query")
    t0 = time.monotonic()
    sf.query("SELECT Id FROM Account LIMIT 1")
    assert time.monotonic() - t0 >= 0.3
    clean.faults.clear()


def test_hold_parks_a_request_whole_until_released_and_calls_say_when_it_is_done(clean):
    import threading

    sf = connect(clean)
    clean.faults.hold(only="sf.query", after=1)
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 300  # the first one goes through
    answers = []
    client = threading.Thread(target=lambda: answers.append(sf.query("SELECT COUNT() FROM Account")))
    client.start()
    try:
        assert clean.faults.wait_parked(timeout=60)
        assert clean.calls.in_flight == 1 and answers == []  # taken, not answered
        assert clean.calls.count("sf.query") == 2
    finally:
        clean.faults.release()
        client.join(timeout=60)
    assert clean.calls.wait_idle(timeout=60) and clean.calls.in_flight == 0
    assert [a["totalSize"] for a in answers] == [300]
    assert clean.calls.wait_for("sf.query", 2, timeout=0)
    assert not clean.calls.wait_for("sf.query", 3, timeout=0)
