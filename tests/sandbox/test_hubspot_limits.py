"""HubSpot sandbox: the private-app limits as the SDK meets them: the rolling burst window (429 +
Retry-After, seen as ApiException and honoured by a urllib3 Retry), search's own per-second window, the
daily quota, and the X-HubSpot-RateLimit-* headers."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
import urllib3.util.retry
from hubspot import HubSpot
from hubspot.crm.companies import ApiException, PublicObjectSearchRequest
from urllib3.util.retry import Retry

from sandbox import Sandbox


def connect(sb: Sandbox, **kw) -> HubSpot:
    return HubSpot(
        access_token=sb.hubspot.access_token, host=sb.hubspot.base_url, client_side_validation=True, **kw
    )


class Clock:
    """The windows' clock, moved only by the test (or by a client's sleep, see `client_sleeps`): a window
    passes when the test says so, never because a loaded machine was slow between two requests."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def clock():
    return Clock()


@pytest.fixture(scope="module")
def burst(clock):
    with Sandbox(accounts=10, seed=1, hubspot_rate_limit=5, hubspot_rate_window_s=1.0) as sb:
        sb.hs.use_clock(clock)
        yield sb


@pytest.fixture
def client_sleeps(clock, monkeypatch):
    """What urllib3's Retry sleeps, recorded; each sleep moves the windows' clock instead of the test waiting."""
    slept: list[float] = []

    class SleepMovesTheClock:
        def __getattr__(self, name):
            return getattr(time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            slept.append(seconds)
            clock.advance(seconds)

    monkeypatch.setattr(urllib3.util.retry, "time", SleepMovesTheClock())
    return slept


def one_day() -> dt.date:
    """The daily quota's day, fixed: a test that counts today's requests must not see the day change."""
    return dt.date(2026, 1, 1)


def fresh_window(sb: Sandbox) -> None:
    sb.hs.reset_limits()


def test_rate_limit_headers_on_every_response(burst):
    fresh_window(burst)
    api = connect(burst).crm.companies.basic_api
    remaining = []
    for _ in range(3):
        _, status, headers = api.get_page_with_http_info(limit=1)
        assert status == 200
        assert headers["X-HubSpot-RateLimit-Max"] == "5"
        assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "1000"
        assert int(headers["X-HubSpot-RateLimit-Daily"]) == 1_000_000
        assert int(headers["X-HubSpot-RateLimit-Daily-Remaining"]) < 1_000_000
        remaining.append(int(headers["X-HubSpot-RateLimit-Remaining"]))
    assert remaining == [4, 3, 2]


def test_the_sixth_request_in_the_window_is_429_with_retry_after(burst):
    fresh_window(burst)
    # Retry(0): the SDK's default transport (urllib3's Retry.DEFAULT) would itself retry a GET 429 that
    # carries Retry-After; see the next test.
    api = connect(burst, retry=Retry(0)).crm.companies.basic_api
    for _ in range(5):
        api.get_page(limit=1)
    with pytest.raises(ApiException) as err:
        api.get_page(limit=1)
    assert err.value.status == 429
    assert err.value.headers["Retry-After"] == "1"
    body = json.loads(err.value.body)
    assert body == {
        "status": "error",
        "message": "You have reached your ten_secondly_rolling limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": body["correlationId"],
        "category": "RATE_LIMITS",
        "policyName": "TEN_SECONDLY_ROLLING",
    }


def test_a_urllib3_retry_honouring_retry_after_gets_through(burst, client_sleeps):
    fresh_window(burst)
    burst.calls.reset()
    retry = Retry(
        total=3,
        status_forcelist=(429,),
        allowed_methods=None,
        respect_retry_after_header=True,
        backoff_factor=0,
    )
    api = connect(burst, retry=retry).crm.companies.basic_api
    for _ in range(6):
        api.get_page(limit=1)
    assert client_sleeps == [1], "the sixth call waited for the window as Retry-After said"
    assert burst.calls.count("hs.companies.list") == 7  # the sixth was refused once, then got through


def test_the_sdks_default_transport_retries_a_get_429_but_not_a_post(burst, client_sleeps):
    """Worth knowing for the connector: with no `retry=`, urllib3's Retry.DEFAULT honours Retry-After on
    idempotent GETs (list pages wait and succeed) but a POST (search, batch) surfaces the 429 at once."""
    fresh_window(burst)
    hs = connect(burst)
    burst.hs.search_window.limit = 0  # every search is over its limit
    try:
        for _ in range(6):
            hs.crm.companies.basic_api.get_page(limit=1)
        assert client_sleeps == [1]  # the GET 429 was retried after Retry-After
        with pytest.raises(ApiException) as err:
            hs.crm.companies.search_api.do_search(PublicObjectSearchRequest(limit=1))
        assert err.value.status == 429
    finally:
        burst.hs.search_window.limit = 5


def test_search_has_its_own_window_and_ignores_the_burst_one(burst):
    fresh_window(burst)
    hs = connect(burst)
    for _ in range(5):
        hs.crm.companies.basic_api.get_page(limit=1)
    search = hs.crm.companies.search_api
    for _ in range(5):
        assert search.do_search(PublicObjectSearchRequest(limit=1)).total == 10
    with pytest.raises(ApiException) as err:
        search.do_search(PublicObjectSearchRequest(limit=1))
    assert err.value.status == 429 and json.loads(err.value.body)["policyName"] == "SECONDLY"
    assert err.value.headers["Retry-After"] == "1"


def test_daily_limit_refuses_with_policy_daily_and_no_retry_after():
    with Sandbox(accounts=5, seed=1, hubspot_daily_limit=3) as sb:
        sb.hs.use_clock(today=one_day)  # no midnight in the middle of the test
        api = connect(sb).crm.companies.basic_api
        for _ in range(3):
            api.get_page(limit=1)
        with pytest.raises(ApiException) as err:
            api.get_page(limit=1)
        assert err.value.status == 429
        assert json.loads(err.value.body)["policyName"] == "DAILY"
        assert "Retry-After" not in err.value.headers
        assert err.value.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"
        assert sb.hs.api_usage == (3, 3)


def test_quota_fault_spends_the_days_remaining_requests():
    with Sandbox(accounts=5, seed=1) as sb:
        sb.hs.use_clock(today=one_day)
        sb.faults.set_quota("hubspot", 2)
        api = connect(sb).crm.companies.basic_api
        api.get_page(limit=1)
        api.get_page(limit=1)
        with pytest.raises(ApiException) as err:
            api.get_page(limit=1)
        assert err.value.status == 429 and json.loads(err.value.body)["policyName"] == "DAILY"
        assert sb.faults.fired["quota"] == 1
        sb.faults.set_quota("hubspot", None)
        api.get_page(limit=1)
        assert sb.hs.api_usage[0] == 3
