"""connectors.retry: the one policy: which errors retry, Retry-After honoured, attempts bounded."""

from __future__ import annotations

import pytest

from connectors.retry import QuotaExhausted, RetriesExhausted, Retryable, RetryPolicy


class Flaky:
    def __init__(self, failures):
        self.failures = list(failures)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


class SdkError(Exception):
    def __init__(self, status, retry_after=None):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


def classify(exc):
    if isinstance(exc, SdkError) and exc.status in (429, 503):
        return Retryable(str(exc), retry_after=exc.retry_after)
    if isinstance(exc, SdkError) and exc.status == 403:
        return QuotaExhausted("daily quota")
    return None


def policy(**kw):
    slept = []
    return RetryPolicy(sleep=slept.append, **kw), slept


def test_retryable_errors_are_retried_and_retry_after_is_honoured():
    p, slept = policy()
    fn = Flaky([SdkError(429, retry_after=3), SdkError(503)])
    assert p.call(fn, classify=classify) == "ok"
    assert fn.calls == 3 and p.retries == 2
    assert slept[0] == 3  # the server's hint, not our backoff
    assert 0 <= slept[1] <= p.max_wait


def test_retry_after_is_capped_by_max_wait():
    p, slept = policy(max_wait=5)
    p.call(Flaky([SdkError(429, retry_after=3600)]), classify=classify)
    assert slept == [5]


def test_attempts_are_bounded_and_the_error_says_so():
    p, slept = policy(attempts=3)
    fn = Flaky([SdkError(503)] * 10)
    with pytest.raises(RetriesExhausted, match="after 3 attempts"):
        p.call(fn, classify=classify, what="query accounts")
    assert fn.calls == 3 and len(slept) == 2


def test_quota_and_unclassified_errors_stop_at_once():
    p, slept = policy()
    fn = Flaky([SdkError(403)])
    with pytest.raises(QuotaExhausted):
        p.call(fn, classify=classify)
    assert fn.calls == 1
    fn = Flaky([SdkError(400)])
    with pytest.raises(SdkError):
        p.call(fn, classify=classify)
    assert fn.calls == 1 and slept == []
