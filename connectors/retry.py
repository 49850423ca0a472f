"""The one retry policy: every CRM call a connector makes goes through `RetryPolicy.call`.

Errors are classified explicitly by the connector (`classify` turns an SDK exception into one of the
classes below or None for "not ours to judge"): `Retryable` (429, 5xx, dropped connections, Salesforce
REQUEST_LIMIT_EXCEEDED / UNABLE_TO_LOCK_ROW / SERVER_UNAVAILABLE) is retried with exponential backoff and
jitter, honouring Retry-After, for a bounded number of attempts; `QuotaExhausted` and anything else stop at
once. When attempts run out, the last `Retryable` is raised as `RetriesExhausted`, with a message a person
can act on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

T = TypeVar("T")


class CrmError(Exception):
    """A CRM call failed in a way the job reports (never carries credentials)."""


class Retryable(CrmError):
    """Worth trying again; `retry_after` (seconds) when the server said so."""

    def __init__(self, message: str, *, retry_after: float | None = None, code: str = "") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.code = code


class QuotaExhausted(CrmError):
    """The daily API quota is used up: stop cleanly and resume on the next run."""


class RetriesExhausted(CrmError):
    """A retryable failure outlived every attempt."""


class AuthFailed(CrmError):
    """Credentials or session refused; retrying will not help."""


@dataclass
class RetryPolicy:
    attempts: int = 5
    initial_wait: float = 0.5
    max_wait: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    retries: int = field(default=0, init=False)  # how many retries this policy has made (for the report)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = getattr(exc, "retry_after", None)
        if hinted is not None:
            return min(float(hinted), self.max_wait)
        backoff = wait_exponential(multiplier=self.initial_wait, max=self.max_wait) + wait_random(
            0, self.initial_wait
        )
        return min(backoff(state), self.max_wait)

    def _count(self, state: RetryCallState) -> None:
        self.retries += 1

    def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        classify: Callable[[BaseException], BaseException | None],
        what: str = "CRM call",
        **kwargs: Any,
    ) -> T:
        """Run `fn(*args, **kwargs)`; SDK exceptions pass through `classify` first."""

        def attempt() -> T:
            try:
                return fn(*args, **kwargs)
            except CrmError:
                raise
            except Exception as exc:  # the SDKs' own exception classes, judged by the connector
                mapped = classify(exc)
                if mapped is None:
                    raise
                raise mapped from exc

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=self._wait,
            retry=retry_if_exception_type(Retryable),
            sleep=self.sleep,
            before_sleep=self._count,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except Retryable as exc:
            raise RetriesExhausted(f"{what} still failing after {self.attempts} attempts: {exc}") from exc
