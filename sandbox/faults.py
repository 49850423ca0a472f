"""Fault injection for the sandbox: what can go wrong on a real CRM, on demand and deterministic under a seed.

Both vendor apps ask the same `Faults` object before serving a request (`request_fault`) and, for writes,
before accepting each record (`record_fault`). A fault is armed with a probability (`rate`), a number of
occurrences (`times`), or both, optionally only for endpoints whose label starts with `only`.

Spec strings (CLI `--faults`, comma-separated): `KIND[:VALUE][@ENDPOINT_PREFIX]`, where VALUE is a probability
(`rate_limit:0.1`), a count of occurrences (`server_error:x3`), or for `quota` the daily limit
(`quota:500`), or for `slow` the delay in seconds (`slow:0.2@sf.composite`). `seed=N` sets the seed. Example: `rate_limit:0.05,drop:x1@sf.query,record_lock:0.01,seed=3`.
A request or record fault may end in `+N`: the first N matching requests (or records) go through untouched,
then the fault is armed, e.g. `server_error:x2@sf.login+1` (the login after the first one: a session
renewal) or `drop:x1@sf.query_more+1` (the second queryMore of a pull).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field

# Request-level faults: the whole HTTP request fails.
REQUEST_FAULTS = {
    "rate_limit": "429 with Retry-After (HubSpot RATE_LIMIT) / 403 REQUEST_LIMIT_EXCEEDED (Salesforce)",
    "server_error": "a 5xx answer (500 or 503)",
    "drop": "the connection is closed in the middle of the response body",
    "expire_session": "401: the session or token has expired (INVALID_SESSION_ID on Salesforce)",
}
# Record-level faults: one record of a batch write fails, the others go through.
RECORD_FAULTS = {
    "record_lock": "UNABLE_TO_LOCK_ROW on Salesforce / a per-record error on HubSpot",
    "validation": "a validation rule rejects the record (FIELD_CUSTOM_VALIDATION_EXCEPTION / VALIDATION_ERROR)",
    "picklist": "the value is rejected by a restricted picklist / enumeration",
}
# The daily API quota: `quota:N` lets N more requests through per CRM, then every request is refused.
QUOTA = {
    "quota": "daily API quota: after N requests, REQUEST_LIMIT_EXCEEDED (Salesforce) / 429 DAILY (HubSpot)"
}
ALL_KINDS = {**REQUEST_FAULTS, **RECORD_FAULTS, **QUOTA}


class FaultSpecError(ValueError):
    """A `--faults` spec that cannot be read; the message says which part and what is allowed."""


@dataclass
class Fault:
    kind: str
    rate: float | None = None  # probability per request (or per record)
    times: int | None = None  # occurrences left; None = unlimited while `rate` holds
    only: str = ""  # endpoint label prefix, e.g. "sf.composite" or "hs.companies.batch"
    after: int = 0  # matching requests (or records) to let through before the fault is armed

    def applies(self, endpoint: str) -> bool:
        return endpoint.startswith(self.only) and (self.times is None or self.times > 0)


@dataclass
class _Hold:
    only: str
    let_through: int
    parked: int = 0
    released: threading.Event = field(default_factory=threading.Event)


@dataclass
class Faults:
    """Thread-safe registry of armed faults; one per sandbox, shared by both vendor apps."""

    seed: int = 0
    armed: list[Fault] = field(default_factory=list)
    quota: dict[str, int | None] = field(default_factory=lambda: {"salesforce": None, "hubspot": None})
    fired: Counter = field(default_factory=Counter)
    latency: dict[str, float] = field(default_factory=dict)  # endpoint prefix -> seconds

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._rng = random.Random(self.seed)
        self._hold: _Hold | None = None

    # -- arming -------------------------------------------------------------------------------------------
    def inject(
        self,
        kind: str,
        *,
        rate: float | None = None,
        times: int | None = None,
        only: str = "",
        after: int = 0,
    ) -> Fault:
        """Arm `kind` for endpoints starting with `only`: with probability `rate`, at most `times` times,
        once `after` matching requests (or records) have gone through untouched."""
        if kind not in REQUEST_FAULTS and kind not in RECORD_FAULTS:
            raise FaultSpecError(f"unknown fault {kind!r}; allowed: {', '.join(sorted(ALL_KINDS))}")
        if rate is None and times is None:
            times = 1
        if rate is not None and not 0 < rate <= 1:
            raise FaultSpecError(f"fault {kind}: rate must be in (0, 1], got {rate}")
        if times is not None and times < 1:
            raise FaultSpecError(f"fault {kind}: times must be at least 1, got {times}")
        if after < 0:
            raise FaultSpecError(f"fault {kind}: after must be at least 0, got {after}")
        fault = Fault(kind, rate if rate is not None else 1.0, times, only, after)
        with self._lock:
            self.armed.append(fault)
        return fault

    def set_quota(self, crm: str, remaining: int | None) -> None:
        """Allow `remaining` more requests to `crm` ("salesforce" or "hubspot") today; None lifts the quota."""
        with self._lock:
            self.quota[crm] = remaining

    def slow_down(self, seconds: float, *, only: str = "") -> None:
        """Answer requests whose endpoint label starts with `only` this many seconds late (0 removes it)."""
        if seconds < 0:
            raise FaultSpecError(f"fault slow: seconds must be at least 0, got {seconds}")
        with self._lock:
            self.latency[only] = seconds

    def delay(self, endpoint: str) -> float:
        """How long to hold this request before answering it."""
        with self._lock:
            return max((s for p, s in self.latency.items() if endpoint.startswith(p)), default=0.0)

    def hold(self, *, only: str = "", after: int = 0) -> None:
        """Let `after` requests whose endpoint label starts with `only` through, then park every further one
        (counted, not yet applied) until `release()`: a server that has taken a request and not answered it.
        A test waits for the parked request with `wait_parked`, then acts (kills the client, say) at a known
        point instead of a guessed moment."""
        if after < 0:
            raise FaultSpecError(f"hold: after must be at least 0, got {after}")
        self.release()
        with self._lock:
            self._hold = _Hold(only, after)

    def release(self) -> None:
        """Let every parked request go on (it is then applied and answered as usual) and stop holding."""
        with self._lock:
            if self._hold is not None:
                self._hold.released.set()
                self._hold = None

    def park(self, endpoint: str) -> None:
        """Called by the apps once per request, after its `delay` and once its body has been read (so a parked
        request has arrived whole): blocks while `hold` parks this endpoint."""
        with self._lock:
            hold = self._hold
            if hold is None or not endpoint.startswith(hold.only):
                return
            if hold.let_through > 0:
                hold.let_through -= 1
                return
            hold.parked += 1
            self._lock.notify_all()
        hold.released.wait()
        with self._lock:
            hold.parked -= 1

    def wait_parked(self, at_least: int = 1, timeout: float | None = None) -> bool:
        """Block until `at_least` requests are parked by the current `hold`; False on timeout."""
        with self._lock:
            return self._lock.wait_for(
                lambda: self._hold is not None and self._hold.parked >= at_least, timeout
            )

    def clear(self) -> None:
        self.release()
        with self._lock:
            self.latency.clear()
            self.armed.clear()
            self.quota = {"salesforce": None, "hubspot": None}

    def reseed(self, seed: int) -> None:
        with self._lock:
            self.seed = seed
            self._rng = random.Random(seed)

    # -- drawing ------------------------------------------------------------------------------------------
    def request_fault(self, crm: str, endpoint: str) -> str | None:
        """Called once per request: "quota", a REQUEST_FAULTS kind, or None. Also spends the daily quota."""
        with self._lock:
            left = self.quota.get(crm)
            if left is not None:
                if left <= 0:
                    self.fired["quota"] += 1
                    return "quota"
                self.quota[crm] = left - 1
            return self._draw(endpoint, REQUEST_FAULTS)

    def record_fault(self, endpoint: str) -> str | None:
        """Called once per record of a write: a RECORD_FAULTS kind, or None."""
        with self._lock:
            return self._draw(endpoint, RECORD_FAULTS)

    def _draw(self, endpoint: str, kinds: dict[str, str]) -> str | None:
        for fault in self.armed:
            if fault.kind in kinds and fault.applies(endpoint) and fault.after > 0:
                fault.after -= 1  # not armed yet: this one goes through
                continue
            if fault.kind in kinds and fault.applies(endpoint) and self._rng.random() < (fault.rate or 1.0):
                if fault.times is not None:
                    fault.times -= 1
                self.fired[fault.kind] += 1
                return fault.kind
        return None

    # -- the CLI spec -------------------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: str | None, seed: int = 0) -> Faults:
        faults = cls(seed=seed)
        if not spec:
            return faults
        problems = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            if part.startswith("seed="):
                try:
                    faults.reseed(int(part[5:]))
                except ValueError:
                    problems.append(f"{part!r}: seed must be a whole number")
                continue
            body, plus, after_text = part.partition("+")
            head, _, only = body.partition("@")
            kind, _, value = head.partition(":")
            try:
                after = 0
                if plus:
                    if kind in ("slow", "quota") or not after_text.isdigit():
                        raise FaultSpecError(
                            "+N (let N requests through first) needs a fault kind and a count"
                        )
                    after = int(after_text)
                if kind == "slow":
                    faults.slow_down(float(value or 0.2), only=only)
                elif kind == "quota":
                    if not value.isdigit():
                        raise FaultSpecError("quota needs the number of requests left, e.g. quota:500")
                    faults.set_quota("salesforce", int(value))
                    faults.set_quota("hubspot", int(value))
                elif value.startswith("x"):
                    faults.inject(kind, times=int(value[1:]), only=only, after=after)
                elif value:
                    faults.inject(kind, rate=float(value), only=only, after=after)
                else:
                    faults.inject(kind, times=1, only=only, after=after)
            except (FaultSpecError, ValueError) as exc:
                problems.append(f"{part!r}: {exc}")
        if problems:
            allowed = ", ".join(sorted(ALL_KINDS))
            raise FaultSpecError(
                "bad --faults spec: "
                + "; ".join(problems)
                + f". Form: KIND[:RATE|:xTIMES][@ENDPOINT][+AFTER], kinds: {allowed}"
            )
        return faults
