"""HubSpot's private-app limits for the sandbox: a rolling burst window, the search API's own per-second
window, and the daily quota that resets at midnight (UTC here; HubSpot uses the account's time zone).
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections import deque
from collections.abc import Callable


class RollingWindow:
    """At most `limit` requests in any `window_s` seconds; a refused request does not use up the window."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock  # replaceable: tests pass their own (HubSpotApp.use_clock)
        self._hits: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> tuple[bool, int, int]:
        """(allowed, remaining after this request, Retry-After seconds if refused)."""
        with self._lock:
            now = self.clock()
            self._expire(now)
            if len(self._hits) >= self.limit:
                wait = self._hits[0] + self.window_s - now if self._hits else self.window_s
                return False, 0, max(1, math.ceil(wait))
            self._hits.append(now)
            return True, self.limit - len(self._hits), 0

    def remaining(self) -> int:
        with self._lock:
            self._expire(self.clock())
            return max(0, self.limit - len(self._hits))

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()

    def _expire(self, now: float) -> None:
        while self._hits and self._hits[0] <= now - self.window_s:
            self._hits.popleft()


class DailyQuota:
    """Requests used today against `limit`; the count starts again when the UTC date changes."""

    def __init__(
        self, limit: int, today: Callable[[], dt.date] = lambda: dt.datetime.now(dt.UTC).date()
    ) -> None:
        self.limit = limit
        self.today = today  # replaceable: tests pass their own (HubSpotApp.use_clock)
        self._day = today()
        self._used = 0
        self._lock = threading.Lock()

    def _roll(self) -> None:
        day = self.today()
        if day != self._day:
            self._day, self._used = day, 0

    def exhausted(self) -> bool:
        with self._lock:
            self._roll()
            return self._used >= self.limit

    def spend(self) -> None:
        with self._lock:
            self._roll()
            self._used += 1

    @property
    def used(self) -> int:
        with self._lock:
            self._roll()
            return self._used

    def remaining(self) -> int:
        return max(0, self.limit - self.used)
