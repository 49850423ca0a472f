"""Salesforce connector on simple-salesforce: pull accounts and opportunities, manage and write the ICP fields.

The engine sees canonical frames only. This module owns the Salesforce specifics: the login flows (from
environment secrets), an injected `requests.Session` (CA bundle, timeouts, pool), SOQL built with escaped
literals, REST paging below `bulk_query_threshold` and Bulk API 2.0 above it, sObject Collections (200 per
call) below `bulk_threshold` and Bulk API 2.0 ingest above it, the Metadata API for fields, and the
classification of every Salesforce error for the one retry policy.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote_plus, urlparse

import pandas as pd
import requests
import zeep.exceptions
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce
from simple_salesforce.bulk2 import Operation
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceOperationError,
    SalesforceResourceNotFound,
)

from connectors.base import UNPROCESSED, FieldPlan, FieldSpec, Usage, WriteResult
from connectors.owned import OWNED, default_names
from connectors.retry import AuthFailed, CrmError, QuotaExhausted, RetriesExhausted, Retryable, RetryPolicy
from connectors.schema import ACCOUNT_SCHEMA, DEAL_SCHEMA, ParseReport, conform

#: canonical account column -> Salesforce Account field (standard fields; teams add their own mapping)
ACCOUNT_FIELDS = {
    "id": "Id",
    "name": "Name",
    "domain": "Website",
    "industry": "Industry",
    "employees": "NumberOfEmployees",
    "annual_revenue": "AnnualRevenue",
    "country": "BillingCountry",
    "state": "BillingState",
    "city": "BillingCity",
    "parent_id": "ParentId",
    "account_type": "Type",
    "created_at": "CreatedDate",
    "modified_at": "LastModifiedDate",
}
OPPORTUNITY_FIELDS = {
    "id": "Id",
    "account_id": "AccountId",
    "amount": "Amount",
    "is_won": "IsWon",
    "is_closed": "IsClosed",
    "closed_at": "CloseDate",
    "created_at": "CreatedDate",
    "lead_source": "LeadSource",
}
#: describe types each owned-field kind accepts (an admin may have made a compatible field by hand)
USABLE_TYPES = {
    "picklist": {"picklist"},
    "number": {"double", "int", "percent", "currency"},
    "text": {"string", "textarea"},
    "longtext": {"textarea", "string"},
    "datetime": {"datetime"},
}
RETRYABLE_CODES = {"REQUEST_LIMIT_EXCEEDED", "UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "QUERY_TIMEOUT"}
ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
COLLECTION_SIZE = 200
# Bulk API 2.0 ingest, per upload (= per job: one upload each). Salesforce takes at most 150 MB once it has
# base64-encoded the upload, i.e. 100 MB of raw CSV; simple-salesforce refuses more than 100 MiB
# (`MAX_INGEST_JOB_FILE_SIZE`, 104,857,600 bytes) before sending. We measure the exact bytes we send.
BULK_UPLOAD_MAX_BYTES = 100_000_000  # the highest `bulk_upload_bytes` the config accepts (the vendor's limit)
BULK_UPLOAD_MIN_BYTES = 10_000  # the lowest (small uploads are for rehearsals against the sandbox)
BULK_RENDER_ROWS = 50_000  # changes rendered to CSV lines at a time (memory: one block's lines at most)
BULK_POLL_MAX_S = 5.0  # the poll interval grows from `bulk_poll_s` up to this
BULK_WAIT_S = 24 * 3600  # a job not final after this long is left to the next run's `settle_job`
BULK_FINAL_STATES = ("JobComplete", "Failed", "Aborted")
# The URL-encoded SOQL of one REST query (GET ...?q=): Salesforce answers 414 past about 16,000 characters.
MAX_QUERY_CHARS = 12_000


@dataclass(frozen=True)
class SalesforceSettings:
    """Behaviour from `[salesforce]` in icp.toml (these defaults are the config's: sync/config.py reads them
    from here), plus what the environment and the caller add. Credentials come separately."""

    api_version: str = "59.0"
    domain: str = "login"  # login | test | a My Domain such as acme.my
    bulk_threshold: int = 2000  # changed records above which writes go through Bulk API 2.0
    bulk_query_threshold: int = 200_000  # accounts (or deals) above which pulls go through Bulk API 2.0 query
    # One Bulk API 2.0 job's upload, in bytes of CSV exactly as sent (header, quoting, LF line ends): 10%
    # under the vendor's 100 MB of raw CSV, so a retried upload or a byte counted differently never hits it.
    bulk_upload_bytes: int = 90_000_000
    # Records per Bulk API 2.0 job. Salesforce cuts each job into internal batches of 10,000 records plus one
    # parent batch, out of 15,000 batches per rolling 24 h that every Bulk API client of the org shares; a
    # multiple of 10,000 leaves no part-filled batch, and at 100,000 a million changes take 10 jobs of 11
    # batches (110, 0.7% of the day's allocation, 10 more than one job would). What the cap buys: each job's
    # three result lists come back whole in one response (the SDK reads them into memory), ~30 MB at 100,000
    # records instead of ~300 MB; a retried upload resends at most that much; and a run killed mid-write
    # leaves at most one job of 100,000 records for the next run to settle.
    bulk_job_records: int = 100_000
    timeout_s: float = 60.0
    quota_floor: int = 1000  # stop before pulling when fewer API calls than this are left today
    # Incremental pulls leave out records whose last change is this integration user's (our own writes);
    # false for an org whose integration user other tools share, whose changes must then be pulled.
    skip_own_writes: bool = True
    fields: dict[str, str] = field(default_factory=lambda: default_names("salesforce"))  # logical -> name
    account_columns: dict[str, str] = field(default_factory=dict)  # canonical/custom name -> SF field
    # Not in the config file:
    login_url: str | None = None  # send logins here instead of https://{domain}.salesforce.com (env)
    ca_bundle: str | None = None  # env SF_CA_BUNDLE, or the sandbox's
    reasons_length: int | None = None  # the reasons field's length ([scoring] reasons_max_len)
    bulk_poll_s: float = 0.5

    @property
    def owned(self) -> dict[str, FieldSpec]:
        """The owned-field table's rows, named as this org names them."""
        return {
            f.logical: FieldSpec(
                f.logical,
                self.fields.get(f.logical, f.salesforce),
                f.label,
                f.kind,
                (self.reasons_length or f.length) if f.logical == "reasons" else f.length,
                f.values,
            )
            for f in OWNED
        }


#: The owned fields under their default names.
DEFAULT_OWNED: dict[str, FieldSpec] = SalesforceSettings().owned
#: The Metadata API type `icp fields --apply` creates for each kind of owned field.
METADATA_TYPES: dict[str, str] = {f.kind: f.salesforce_type for f in OWNED}


def soql_quote(value: str) -> str:
    """A SOQL string literal; backslash and quote escaped as SOQL requires."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def soql_datetime(ts: pd.Timestamp) -> str:
    ts = pd.Timestamp(ts)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def check_ids(ids: list[str]) -> list[str]:
    """Salesforce ids are 15 or 18 letters and digits; anything else is refused before any query."""
    bad = [i for i in ids if not ID_RE.match(str(i))]
    if bad:
        raise CrmError(
            f"not a Salesforce id: {', '.join(repr(b) for b in bad[:5])}; ids are 15 or 18 letters and digits"
        )
    return [str(i) for i in ids]


class _Session(requests.Session):
    """A session whose own `verify` (the CA bundle we were given) beats REQUESTS_CA_BUNDLE from the
    environment, which requests would otherwise prefer; timeouts default to the configured one."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if self.verify not in (True, None):
            settings["verify"] = self.verify
        return settings

    def request(self, method, url, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, **kwargs)


class _LoginRedirect(HTTPAdapter):
    """Sends requests for https://{domain}.salesforce.com to `login_url` (the SDK hardcodes the login host)."""

    def __init__(self, login_url: str, **kwargs) -> None:
        super().__init__(**kwargs)
        parsed = urlparse(login_url)
        self.target = f"{parsed.scheme}://{parsed.netloc}"

    def send(self, request, **kwargs):
        parsed = urlparse(request.url)
        request.url = self.target + parsed.path + (f"?{parsed.query}" if parsed.query else "")
        return super().send(request, **kwargs)


def auth_mode(secrets: Mapping[str, Any]) -> str:
    """Which login flow the environment asks for (first complete set wins)."""
    has = {k for k, v in secrets.items() if v}
    if {"SF_INSTANCE_URL", "SF_ACCESS_TOKEN"} <= has:
        return "session"
    if {"SF_USERNAME", "SF_PASSWORD", "SF_SECURITY_TOKEN"} <= has:
        return "password"
    if {"SF_USERNAME", "SF_CONSUMER_KEY", "SF_PRIVATE_KEY_FILE"} <= has:
        return "jwt"
    if {"SF_CONSUMER_KEY", "SF_CONSUMER_SECRET"} <= has:
        return "client_credentials"
    raise AuthFailed(
        "no Salesforce credentials in the environment or .env: set SF_INSTANCE_URL + SF_ACCESS_TOKEN, or "
        "SF_USERNAME + SF_PASSWORD + SF_SECURITY_TOKEN, or SF_USERNAME + SF_CONSUMER_KEY + SF_PRIVATE_KEY_FILE "
        "(JWT), or SF_CONSUMER_KEY + SF_CONSUMER_SECRET with SF_DOMAIN set to your My Domain"
    )


class SalesforceConnector:
    kind = "salesforce"

    def __init__(
        self, settings: SalesforceSettings, secrets: Mapping[str, Any], *, policy: RetryPolicy | None = None
    ) -> None:
        self.settings = settings
        # Secrets arrive as sync.config.Secret (or plain strings in tests); they are read only to log in.
        self._secrets = {k: (v.reveal() if hasattr(v, "reveal") else v) for k, v in secrets.items() if v}
        self.policy = policy or RetryPolicy()
        self.mode = auth_mode(self._secrets)
        self.api_calls = 0
        self.write_calls = 0  # calls that change records (Collections PATCH, Bulk API 2.0 ingest)
        self.logins = 0
        self._sf: Salesforce | None = None
        self._session = self._make_session()
        self._usage: Usage | None = None
        self._account_fields: dict[str, dict] | None = None  # from the last describe
        self._own_user_id: str | None = None  # the user this session runs as, learned once (`own_user_id`)
        #: Salesforce's clock as of its latest answer (the HTTP Date header, to the second), or None
        self.server_time: pd.Timestamp | None = None

    def __repr__(self) -> str:  # never the secrets
        return f"SalesforceConnector(mode={self.mode!r}, api_version={self.settings.api_version!r})"

    # -- connection -----------------------------------------------------------------------------------
    def _make_session(self) -> requests.Session:
        s = self.settings
        session = _Session(s.timeout_s)
        session.hooks["response"].append(self._note_server_time)
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=8)
        session.mount("https://", adapter)
        if s.ca_bundle:
            session.verify = s.ca_bundle
        if s.login_url:
            session.mount(f"https://{s.domain}.salesforce.com", _LoginRedirect(s.login_url))
        return session

    @property
    def sf(self) -> Salesforce:
        if self._sf is None:
            self._login()
        return self._sf

    def _login(self) -> None:
        """Log in (or adopt the given session) under the retry policy: a 5xx, a request limit or a dropped
        connection during login is retried; refused credentials are not; a spent daily quota is
        `QuotaExhausted`, as for any other call."""
        self._under_policy("Salesforce login", self._login_once, self._classify_login)

    def _login_once(self) -> None:
        """One login attempt, its failure already classified (`Retryable`, `AuthFailed`, `CrmError`): the
        caller's retry policy decides. Never chained: the SDK's exception could carry the login request."""
        sec, s = self._secrets, self.settings
        if self.mode == "session":
            kwargs = {"instance_url": sec["SF_INSTANCE_URL"], "session_id": sec["SF_ACCESS_TOKEN"]}
        elif self.mode == "password":
            kwargs = {
                "username": sec["SF_USERNAME"],
                "password": sec["SF_PASSWORD"],
                "security_token": sec["SF_SECURITY_TOKEN"],
                "domain": s.domain,
            }
        elif self.mode == "jwt":
            kwargs = {
                "username": sec["SF_USERNAME"],
                "consumer_key": sec["SF_CONSUMER_KEY"],
                "privatekey_file": sec["SF_PRIVATE_KEY_FILE"],
                "domain": s.domain,
            }
        else:
            kwargs = {
                "consumer_key": sec["SF_CONSUMER_KEY"],
                "consumer_secret": sec["SF_CONSUMER_SECRET"],
                "domain": s.domain,
            }
        if self.mode != "session":
            self.api_calls += 1
        try:
            sf = Salesforce(**kwargs, session=self._session, version=s.api_version)
        except Exception as exc:
            mapped = self._classify_login(exc)
            if mapped is None:
                raise
            raise mapped from None
        self._sf = sf
        self.logins += 1

    def _classify_login(self, exc: BaseException) -> BaseException | None:
        """A login's failure, whether ours or the SDK's own session refresh (it logs in again by itself when
        a call answers INVALID_SESSION_ID): transient -> `Retryable`, the daily quota -> `_QuotaOrRateLimit`,
        refused -> `AuthFailed` with Salesforce's own message."""
        if isinstance(
            exc, requests.ConnectionError | requests.Timeout | requests.exceptions.ChunkedEncodingError
        ):
            return Retryable(f"cannot reach Salesforce to log in: {type(exc).__name__}")
        if isinstance(exc, SalesforceAuthenticationFailed):
            code = exc.code
            name = str(code).upper() if code is not None else ""
            text = self._scrub(_auth_text(exc))
            said = f"{code}: {text}" if code is not None and text else str(code or text or "no reason given")
            if name == "REQUEST_LIMIT_EXCEEDED" and "TOTALREQUESTS" in text.upper():
                return _QuotaOrRateLimit(f"Salesforce login answered {said}", code="REQUEST_LIMIT_EXCEEDED")
            transient = (isinstance(code, int) and (code >= 500 or code == 429)) or name in RETRYABLE_CODES
            if transient:
                return Retryable(f"Salesforce login answered {said}", code=name)
            # Salesforce's own words (e.g. "INVALID_LOGIN: Invalid username, password, security token; or
            # user locked out."), never the SDK's "Response content: {content}" template, never a secret.
            return AuthFailed(f"Salesforce refused the login ({self.mode}): {said}")
        if isinstance(exc, requests.RequestException):
            return CrmError(f"cannot log in to Salesforce: {type(exc).__name__}")
        return None

    def _note_server_time(self, response: requests.Response, *args, **kwargs) -> None:
        """Every answer's Date header (RFC 9110: the origin server's clock, whole seconds, rounded down):
        the job reads it before pulling as a lower bound, on Salesforce's clock, for any later change."""
        date = response.headers.get("Date")
        if date:
            with contextlib.suppress(TypeError, ValueError):  # an unreadable date tells us nothing
                self.server_time = pd.Timestamp(parsedate_to_datetime(date)).tz_convert("UTC")

    def own_user_id(self) -> str:
        """The Id of the user this session runs as (our own writes carry it in LastModifiedById), learned
        once per connector: one API call, a second only when the first way cannot tell.

        The SDK keeps no user id from any login (docs/reference B4). A username/password login asks SOQL
        for the User by its Username; the OAuth flows (JWT, client credentials) and a given session token
        ask the OpenID Connect `userinfo` endpoint, falling back to the Username query when a username is
        set and userinfo does not answer with one (a token without the `openid`/`id` scope, say)."""
        if self._own_user_id is None:
            username = self._secrets.get("SF_USERNAME")
            found = None if self.mode == "password" else self._user_id_from_userinfo()
            if found is None and username:
                found = self._user_id_by_username(username)
            if found is None:
                raise CrmError(
                    f"cannot tell which Salesforce user icp-sync runs as ({self.mode} login): the userinfo "
                    "endpoint gave no user_id and no SF_USERNAME is set. Set SF_USERNAME to the integration "
                    "user's username, or set [salesforce] skip_own_writes = false (incremental pulls then "
                    "include our own writes)"
                )
            self._own_user_id = found
        return self._own_user_id

    def _user_id_from_userinfo(self) -> str | None:
        try:
            info = self._call("userinfo", lambda: self.sf.oauth2("userinfo"))
        except (QuotaExhausted, AuthFailed):
            raise
        except CrmError:  # refused (no openid/id scope, a session id it does not take): try the username
            return None
        user_id = info.get("user_id") if isinstance(info, Mapping) else None
        return str(user_id) if user_id and ID_RE.match(str(user_id)) else None

    def _user_id_by_username(self, username: str) -> str | None:
        soql = f"SELECT Id FROM User WHERE Username = {soql_quote(username)}"
        records = self._call("user id", lambda: self.sf.query(soql)).get("records") or []
        return str(records[0]["Id"]) if records else None

    def _scrub(self, text: str) -> str:
        """`text` with any of our secrets' values blanked out (a vendor message should never echo one)."""
        for value in self._secrets.values():
            value = str(value)
            if len(value) >= 4 and value in text:
                text = text.replace(value, "***")
        return text

    def _metadata_api(self):
        mdapi = self.sf.mdapi
        # The Metadata API runs on zeep, which makes its own requests.Session; hand it ours so the same CA
        # bundle, timeouts and login redirect apply (zeep's Transport.session is its documented hook).
        mdapi._client.transport.session = self._session
        return mdapi

    def _classify(self, exc: BaseException) -> BaseException | None:
        if isinstance(
            exc, requests.ConnectionError | requests.Timeout | requests.exceptions.ChunkedEncodingError
        ):
            return Retryable(f"connection problem: {type(exc).__name__}")
        if isinstance(exc, SalesforceExpiredSession):
            return Retryable("session expired", code="INVALID_SESSION_ID")
        if isinstance(exc, SalesforceAuthenticationFailed):
            # The SDK renewed an expired session by itself (password, JWT, client credentials) and that login
            # failed: judged as a login, so a 503 or a request limit there is retried like anywhere else.
            return self._classify_login(exc)
        if isinstance(exc, SalesforceError):
            codes = (
                {e.get("errorCode") for e in exc.content if isinstance(e, dict)}
                if isinstance(exc.content, list)
                else set()
            )
            message = _error_text(exc)
            if "REQUEST_LIMIT_EXCEEDED" in codes and "TotalRequests" in message:
                return _QuotaOrRateLimit(message, code="REQUEST_LIMIT_EXCEEDED")
            if "INVALID_QUERY_LOCATOR" in codes:
                return _CursorLost(f"Salesforce lost the query cursor: {message}")
            if codes & RETRYABLE_CODES or (exc.status and exc.status >= 500) or exc.status == 429:
                return Retryable(message, code=",".join(sorted(c for c in codes if c)))
            return CrmError(f"Salesforce answered {exc.status} to {exc.resource_name}: {message}")
        if isinstance(exc, zeep.exceptions.Fault):
            # Metadata API (SOAP through zeep): the fault code carries Salesforce's, e.g. sf:SERVER_UNAVAILABLE.
            code = str(exc.code or "").rpartition(":")[2]
            message = str(exc.message or code)
            if code == "REQUEST_LIMIT_EXCEEDED" and "TotalRequests" in message:
                return _QuotaOrRateLimit(message, code=code)
            if code in RETRYABLE_CODES:
                return Retryable(message, code=code)
            return CrmError(f"the Salesforce Metadata API refused the call: {message}")
        if isinstance(exc, SalesforceOperationError):
            return CrmError(f"a Salesforce Bulk API 2.0 job failed: {str(exc)[:300]}")
        if type(exc) is Exception:
            # The SDK's Metadata API raises a bare Exception listing each component Salesforce rejected.
            return CrmError(f"the Salesforce Metadata API rejected the change: {str(exc).strip()}")
        return None

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """One Salesforce call under the retry policy. An expired session is renewed before the retry: the
        login is one more attempt under the same policy (not a policy of its own), so a 503 or a request limit
        while renewing is retried, and a spent quota ends as `QuotaExhausted` as anywhere else."""

        def attempt():
            if self._sf is None:
                self._login_once()
            self.api_calls += 1
            try:
                return fn()
            except SalesforceExpiredSession as exc:
                self._renew_session(exc)
                raise

        return self._under_policy(what, attempt, self._classify)

    def _under_policy(self, what: str, fn: Callable[[], Any], classify) -> Any:
        """`fn` under the retry policy; a request limit that never clears is the daily quota, and a refused
        login is re-raised unchained (the SDK's exception could carry the login request)."""
        try:
            return self.policy.call(fn, classify=classify, what=what)
        except AuthFailed as exc:
            raise AuthFailed(str(exc)) from None
        except CrmError as exc:
            cause = exc.__cause__
            if isinstance(cause, _QuotaOrRateLimit) or isinstance(exc, _QuotaOrRateLimit):
                raise QuotaExhausted(
                    f"Salesforce API request limit reached during {what} (REQUEST_LIMIT_EXCEEDED after "
                    f"{self.policy.attempts} attempts: {cause or exc}); the run stops here and resumes next time"
                ) from None
            raise

    def _renew_session(self, exc: SalesforceError | None = None) -> None:
        """Drop an expired session so the retry logs in again; with only a session id there is nothing to
        log in with."""
        if self.mode == "session":
            said = f" ({self._scrub(_error_text(exc))})" if exc is not None else ""
            raise AuthFailed(
                f"the Salesforce session (SF_ACCESS_TOKEN) was refused{said} and there are no login "
                "credentials to renew it: set a fresh SF_ACCESS_TOKEN, or SF_USERNAME + SF_PASSWORD + "
                "SF_SECURITY_TOKEN"
            )
        self._sf = None

    # -- usage ----------------------------------------------------------------------------------------
    def usage(self) -> Usage | None:
        """The org's daily API usage, from the last Sforce-Limit-Info header (fetched once if none yet)."""
        usage = (self.sf.api_usage or {}).get("api-usage")
        if usage is None:
            limits = self._call("limits", lambda: self.sf.limits())
            daily = limits.get("DailyApiRequests", {})
            if daily:
                return Usage(used=daily["Max"] - daily["Remaining"], limit=daily["Max"])
            usage = (self.sf.api_usage or {}).get("api-usage")
        return Usage(used=usage.used, limit=usage.total) if usage else None

    # -- fields ---------------------------------------------------------------------------------------
    def describe_account(self) -> dict[str, dict]:
        desc = self._call("describe Account", lambda: self.sf.Account.describe())
        self._account_fields = {f["name"]: f for f in desc["fields"]}
        return self._account_fields

    def check_fields(self, segment_values: list[str]) -> FieldPlan:
        """Compare the owned fields (and the mapped read fields) with describe; nothing is changed."""
        fields = self.describe_account()
        plan = FieldPlan()
        for logical, spec in self.settings.owned.items():
            values = tuple(segment_values) if logical == "segment" else spec.values
            spec = FieldSpec(spec.logical, spec.name, spec.label, spec.kind, spec.length, values)
            f = fields.get(spec.name)
            if f is None:
                plan.create.append(spec)
                continue
            if f["type"] not in USABLE_TYPES[spec.kind]:
                plan.problems.append(
                    f"{spec.name} ({logical}) exists as {f['type']}, but icp-sync writes a {spec.kind}; "
                    f"use a {' or '.join(sorted(USABLE_TYPES[spec.kind]))} field or map another name"
                )
                continue
            if not f.get("updateable", True):
                plan.problems.append(f"{spec.name} ({logical}) is not updateable by this user")
                continue
            if spec.kind == "picklist":
                have = {p["value"] for p in f.get("picklistValues", []) if p.get("active", True)}
                missing = tuple(v for v in values if v not in have)
                if missing:
                    plan.add_values[spec.name] = missing
                    continue
            plan.ok.append(spec.name)
        for name, sf_field in self.read_fields().items():
            if sf_field not in fields:
                plan.problems.append(
                    f"[salesforce.accounts.columns] {name} = {sf_field!r}: Account has no such field "
                    f"(or this user cannot read it)"
                )
        return plan

    def apply_fields(self, plan: FieldPlan) -> None:
        """Create missing fields and add picklist values through the Metadata API (10 components a call)."""
        md = self._metadata_api()
        creates = [self._custom_field(md, spec) for spec in plan.create]
        for start in range(0, len(creates), 10):
            batch = creates[start : start + 10]
            self._call("create fields", lambda b=batch: md.CustomField.create(b))
        for name, values in plan.add_values.items():
            full = f"Account.{name}"
            current = self._call("read field", lambda f=full: md.CustomField.read(f))
            existing = [v.fullName for v in current.valueSet.valueSetDefinition.value]
            current.valueSet.valueSetDefinition.value = [
                *current.valueSet.valueSetDefinition.value,
                *(md.CustomValue(fullName=v, label=v, default=False) for v in values if v not in existing),
            ]
            self._call("update field", lambda c=current: md.CustomField.update(c))

    def _custom_field(self, md, spec: FieldSpec):
        common = {
            "fullName": f"Account.{spec.name}",
            "label": spec.label,
            "description": "Written by icp-sync; edits are reported on the next run.",
        }
        kind = METADATA_TYPES[spec.kind]
        if kind == "Picklist":
            values = [md.CustomValue(fullName=v, label=v, default=False) for v in spec.values]
            return md.CustomField(
                type=kind,
                valueSet=md.ValueSet(
                    restricted=True,
                    valueSetDefinition=md.ValueSetValuesDefinition(sorted=False, value=values),
                ),
                **common,
            )
        if kind == "Number":
            return md.CustomField(type=kind, precision=3, scale=0, **common)
        if kind == "LongTextArea":
            return md.CustomField(type=kind, length=spec.length, visibleLines=4, **common)
        if kind == "DateTime":
            return md.CustomField(type=kind, **common)
        return md.CustomField(type=kind, length=spec.length or 255, **common)

    # -- pulls ----------------------------------------------------------------------------------------
    def read_fields(self) -> dict[str, str]:
        return {**ACCOUNT_FIELDS, **self.settings.account_columns}

    def _account_soql(
        self, *, since=None, ids=None, where=None, count=False, after=None, skip_own_writes=False
    ) -> str:
        # Owned fields not created yet (before `icp fields --apply`) are left out, so learning and scoring
        # work on a fresh org; their live values then read as empty. The job's preflight requires them all.
        present = self._account_fields if self._account_fields is not None else self.describe_account()
        owned = [spec.name for spec in self.settings.owned.values() if spec.name in present]
        fields = list(dict.fromkeys([*self.read_fields().values(), *owned, "SystemModstamp"]))
        clauses = []
        if since is not None:
            clauses.append(f"SystemModstamp >= {soql_datetime(since)}")
        if ids is not None:
            clauses.append(f"Id IN ({', '.join(soql_quote(i) for i in check_ids(ids))})")
        if where:
            clauses.append(f"({where})")
        if skip_own_writes:
            # Records whose last change is our own write (docs/reference B4). SystemModstamp stays the
            # indexed range; this only thins it. It sees the last writer only: a rep's change that our write
            # then covered is pulled by id instead (the job's `recheck`, see docs/architecture.md).
            clauses.append(f"LastModifiedById != {soql_quote(self.own_user_id())}")
        if after is not None:
            # Resume after the record last received, on the ORDER BY (SystemModstamp, Id) position.
            stamp, last_id = soql_datetime(after[0]), soql_quote(after[1])
            clauses.append(f"(SystemModstamp > {stamp} OR (SystemModstamp = {stamp} AND Id > {last_id}))")
        head = "SELECT COUNT() FROM Account" if count else f"SELECT {', '.join(fields)} FROM Account"
        tail = "" if count else " ORDER BY SystemModstamp, Id"
        return head + (f" WHERE {' AND '.join(clauses)}" if clauses else "") + tail

    def _id_chunks(self, ids, *, since=None, where=None, skip_own_writes=False) -> list[list[str]]:
        """`ids` split so that each `Id IN (...)` query, URL-encoded as the GET sends it, stays within
        `MAX_QUERY_CHARS` (Salesforce answers 414 to a longer URI): however many ids, every query fits."""
        ids = check_ids(list(ids))
        soql = self._account_soql(since=since, ids=[], where=where, skip_own_writes=skip_own_writes)
        base = len(quote_plus(soql))
        room = max(MAX_QUERY_CHARS - base, 1)
        chunks: list[list[str]] = []
        chunk: list[str] = []
        used = 0
        for rid in ids:
            cost = len(quote_plus(soql_quote(rid) + ", "))
            if chunk and used + cost > room:
                chunks.append(chunk)
                chunk, used = [], 0
            chunk.append(rid)
            used += cost
        if chunk:
            chunks.append(chunk)
        return chunks

    def count_accounts(self, *, since=None, ids=None, where=None, skip_own_writes=False) -> int:
        skip = skip_own_writes
        if ids is not None:
            return sum(
                self._count_accounts(since=since, ids=chunk, where=where, skip_own_writes=skip)
                for chunk in self._id_chunks(ids, since=since, where=where, skip_own_writes=skip)
            )
        return self._count_accounts(since=since, where=where, skip_own_writes=skip)

    def _count_accounts(self, *, since=None, ids=None, where=None, skip_own_writes=False) -> int:
        soql = self._account_soql(
            since=since, ids=ids, where=where, count=True, skip_own_writes=skip_own_writes
        )
        return int(self._call("count accounts", lambda: self.sf.query(soql))["totalSize"])

    def iter_accounts(
        self,
        *,
        since=None,
        ids=None,
        where=None,
        total: int | None = None,
        report: ParseReport | None = None,
        skip_own_writes: bool = False,
        page_size: int = 2000,
    ) -> Iterator[pd.DataFrame]:
        """Canonical account pages (plus `live_<field>` owned values and `_modstamp`), oldest change first
        (within each chunk of `ids`: many ids go in as many queries as keep each within the URL limit).
        `skip_own_writes`: leave out records whose last change is this session's user's."""
        skip = skip_own_writes
        if ids is not None:
            chunks = self._id_chunks(ids, since=since, where=where, skip_own_writes=skip)
            if len(chunks) != 1:
                for chunk in chunks:
                    yield from self.iter_accounts(
                        since=since,
                        ids=chunk,
                        where=where,
                        page_size=page_size,
                        report=report,
                        skip_own_writes=skip,
                    )
                return
            ids = chunks[0]
        soql = self._account_soql(since=since, ids=ids, where=where, skip_own_writes=skip)

        def resume(last: dict) -> str:
            after = (pd.Timestamp(last["SystemModstamp"]), last["Id"])
            return self._account_soql(since=since, ids=ids, where=where, after=after, skip_own_writes=skip)

        try:
            if total is not None and total > self.settings.bulk_query_threshold:
                pages = self._bulk_query(soql)
            else:
                pages = (
                    pd.DataFrame.from_records(page)
                    for page in self._rest_pages(soql, page_size, resume=resume)
                )
            for page in pages:
                yield self._to_accounts(page, report)
        except SalesforceMalformedRequest as exc:
            raise CrmError(f"Salesforce rejected the account query: {_error_text(exc)}") from None

    def iter_deals(self, *, report: ParseReport | None = None) -> Iterator[pd.DataFrame]:
        """Closed opportunities as canonical deals, page by page. One `SELECT COUNT()` sizes the pull: up to
        `bulk_query_threshold` deals come in REST pages of 2,000 (ordered by Id, so a lost cursor resumes
        after the last page), more through one Bulk API 2.0 query job, whose result pages (50,000 rows)
        go straight from CSV into frames."""
        fields = ", ".join(OPPORTUNITY_FIELDS.values())
        where = "IsClosed = true AND AccountId != null"
        total = self._call(
            "count deals", lambda: self.sf.query(f"SELECT COUNT() FROM Opportunity WHERE {where}")
        )["totalSize"]
        if int(total) > self.settings.bulk_query_threshold:
            # no ORDER BY: nothing downstream reads deals in order, and the server need not sort an extract
            pages = self._bulk_query(f"SELECT {fields} FROM Opportunity WHERE {where}")
        else:

            def soql(after: str = "") -> str:
                return f"SELECT {fields} FROM Opportunity WHERE {where}{after} ORDER BY Id"

            pages = (
                pd.DataFrame.from_records(page)
                for page in self._rest_pages(
                    soql(), 2000, resume=lambda last: soql(f" AND Id > {soql_quote(last['Id'])}")
                )
            )
        try:
            for page in pages:
                yield self._to_deals(page, report)
        except SalesforceMalformedRequest as exc:
            raise CrmError(f"Salesforce rejected the deal query: {_error_text(exc)}") from None

    def _rest_pages(
        self, soql: str, page_size: int, *, resume: Callable[[dict], str] | None = None
    ) -> Iterator[list[dict]]:
        """Follow nextRecordsUrl page by page; each page is a list of records without `attributes`.

        Salesforce can lose a query's cursor (INVALID_QUERY_LOCATOR: after 15 minutes idle, beyond ten open
        cursors, or when the connection dropped on the last page, whose answer spends the cursor). The pull
        then goes on from the last complete page: `resume(last record received)` is the query for the records
        after it (on the query's ORDER BY); without `resume` the query is issued again and the records
        already received (by Id) are skipped. Either way the new query goes through the retry policy; a cursor
        lost at every queryMore, `policy.attempts` times in a row, stops the pull."""
        result = self._call("query", lambda: self.sf.query(soql))
        seen: set[str] | None = None if resume is not None else set()
        buffer: list[dict] = []
        last: dict | None = None
        last_url = None
        lost = 0
        while True:
            for rec in result.get("records", []):
                rec.pop("attributes", None)
                if seen is not None:
                    if rec.get("Id") in seen:
                        continue
                    seen.add(rec.get("Id"))
                buffer.append(rec)
                last = rec
            while len(buffer) >= page_size:
                yield buffer[:page_size]
                buffer = buffer[page_size:]
            if result.get("done", True):
                break
            url = result["nextRecordsUrl"]
            if url == last_url:
                raise CrmError(
                    f"Salesforce returned the same nextRecordsUrl twice ({url}); stopping the pull"
                )
            last_url = url
            try:
                result = self._call("query more", lambda u=url: self.sf.query_more(u, identifier_is_url=True))
                lost = 0
            except _CursorLost as exc:
                lost += 1
                if lost >= self.policy.attempts:
                    raise CrmError(f"{exc}, {lost} times in a row; stopping the pull") from None
                again = resume(last) if resume is not None and last is not None else soql
                result = self._call("query (cursor lost)", lambda q=again: self.sf.query(q))
                last_url = None
        if buffer:
            yield buffer

    def _bulk_query(self, soql: str) -> Iterator[pd.DataFrame]:
        # `bulk2.Account.query` is a generator: calling it sends nothing, so under `_call` no request of it
        # would be retried or classified. Drive the job step by step through the SDK's Bulk 2.0 client
        # instead, each step one `_call`; a results page is fetched again with the same locator.
        # The client is looked up per call: a renewed session (after INVALID_SESSION_ID) means a new one.
        def client():
            return self.sf.bulk2.Account._client

        job = self._call("bulk query", lambda: client().create_job(Operation.query, soql))
        self._call("bulk query", lambda: client().wait_for_job(job["id"], True, self.settings.bulk_poll_s))
        locator = ""
        while True:
            page = self._call(
                "bulk query results", lambda loc=locator: client().get_query_results(job["id"], loc)
            )
            yield pd.read_csv(io.StringIO(page["records"]), dtype=str, keep_default_na=False)
            locator = page["locator"]
            if not locator:
                break

    def _to_accounts(self, raw: pd.DataFrame, report: ParseReport | None) -> pd.DataFrame:
        """Salesforce names to canonical ones, then the shared conforming step (the CSV reader's)."""
        raw = raw.reset_index(drop=True)
        named = pd.DataFrame(
            {canonical: raw[sf] for canonical, sf in self.read_fields().items() if sf in raw.columns},
            index=raw.index,
        )
        out, found = conform(named, ACCOUNT_SCHEMA, table="accounts", rows=_record_labels(raw))
        if report is not None:
            report.merge(found)
        for logical, spec in self.settings.owned.items():
            col = raw[spec.name] if spec.name in raw.columns else pd.Series(pd.NA, index=raw.index)
            out[f"live_{logical}"] = col.replace("", pd.NA).astype("string").to_numpy()
        out["_modstamp"] = pd.to_datetime(raw["SystemModstamp"], utc=True, format="mixed").to_numpy()
        return out

    def _to_deals(self, raw: pd.DataFrame, report: ParseReport | None) -> pd.DataFrame:
        raw = raw.reset_index(drop=True)
        named = pd.DataFrame(
            {c: raw[f] for c, f in OPPORTUNITY_FIELDS.items() if f in raw.columns}, index=raw.index
        )
        out, found = conform(named, DEAL_SCHEMA, table="deals", rows=_record_labels(raw))
        if report is not None:
            report.merge(found)
        return out

    def read_owned(self, ids, *, with_modstamp: bool = False) -> pd.DataFrame:
        """The owned fields as the org holds them now, by id (index), logical names as columns; with
        `with_modstamp`, also `_modstamp` (SystemModstamp now: later than the pulled one means someone
        touched the record since the pull)."""
        owned = self.settings.owned
        present = self._account_fields if self._account_fields is not None else self.describe_account()
        names = {spec.name: logical for logical, spec in owned.items() if spec.name in present}
        if with_modstamp:
            names["SystemModstamp"] = "_modstamp"
        frames = []
        # chunked as the account pulls are (the account query is the longer one, so these fit too)
        for chunk in self._id_chunks(dict.fromkeys(ids)):
            soql = f"SELECT Id, {', '.join(names)} FROM Account WHERE Id IN ({', '.join(map(soql_quote, chunk))})"
            for page in self._rest_pages(soql, 2000):
                frames.append(pd.DataFrame.from_records(page))
        out = pd.DataFrame(columns=["Id", *names]) if not frames else pd.concat(frames, ignore_index=True)
        out = out.set_index(out["Id"].astype(str)).drop(columns="Id").rename(columns=names)
        stamps = out["_modstamp"] if with_modstamp else None
        out = out.reindex(columns=list(owned)).replace("", pd.NA).astype("string")
        if stamps is not None:
            out["_modstamp"] = pd.to_datetime(stamps, utc=True, format="mixed")
        out.index.name = None
        return out

    # -- writes ---------------------------------------------------------------------------------------
    def batch_size(self, n_changes: int) -> int:
        """Above `bulk_threshold`, one Bulk API 2.0 job's worth (`bulk_job_records`; `_bulk_uploads` still
        cuts a write whose CSV would pass `bulk_upload_bytes`), so the engine re-reads and checks each job's
        records right before that job rather than all of them before the first; else one Collections call
        per 200. A remainder at or below `bulk_threshold` goes through Collections, as any small write."""
        if n_changes > self.settings.bulk_threshold:
            return max(min(n_changes, self.settings.bulk_job_records), 1)
        return COLLECTION_SIZE

    def write(
        self, changes: pd.DataFrame, *, on_job: Callable[[str], None] | None = None
    ) -> Iterator[list[WriteResult]]:
        """Write `changes` (index = Account id, logical owned columns); yields each batch's results. Above
        `bulk_threshold` through Bulk API 2.0, each job's id handed to `on_job` before its upload."""
        if len(changes) > self.settings.bulk_threshold:
            yield from self._write_bulk(changes, on_job)
        else:
            for start in range(0, len(changes), COLLECTION_SIZE):
                yield self._write_collection(changes.iloc[start : start + COLLECTION_SIZE])

    def _payload(self, changes: pd.DataFrame) -> list[dict]:
        owned = self.settings.owned
        records = []
        for rid, row in zip(changes.index, changes.itertuples(index=False), strict=True):
            rec = {"attributes": {"type": "Account"}, "id": str(rid)}
            for logical, value in zip(changes.columns, row, strict=True):
                if logical in owned:
                    rec[owned[logical].name] = _sf_value(logical, value)
            records.append(rec)
        return records

    def _write_collection(self, batch: pd.DataFrame) -> list[WriteResult]:
        """One sObject Collections PATCH (up to 200 records) under the retry policy. A retry re-sends only
        the records whose outcome is unknown (the call failed) or that were locked (UNABLE_TO_LOCK_ROW clears
        in moments): records the CRM already accepted or rejected are never sent twice."""
        outcome: dict[str, WriteResult] = {}
        unsettled = self._payload(batch)
        locked: dict[str, WriteResult] = {}

        def send() -> None:
            nonlocal unsettled
            locked.clear()
            self.write_calls += 1
            body = {"allOrNone": False, "records": unsettled}
            answer = self.sf.restful("composite/sobjects", method="PATCH", json=body) or []
            for rec, res in zip(unsettled, answer, strict=False):
                rid = rec["id"]
                if res.get("success"):
                    outcome[rid] = WriteResult(rid, True)
                    continue
                errors = res.get("errors") or [{}]
                code = errors[0].get("statusCode", "UNKNOWN")
                result = WriteResult(rid, False, code, "; ".join(e.get("message", "") for e in errors))
                if code == "UNABLE_TO_LOCK_ROW":
                    locked[rid] = result
                else:
                    outcome[rid] = result
            unsettled = [rec for rec in unsettled if rec["id"] not in outcome]
            if locked:
                raise Retryable(
                    f"{len(locked)} record(s) locked by another update", code="UNABLE_TO_LOCK_ROW"
                )

        try:
            self._call("update accounts", send)
        except RetriesExhausted:
            if not locked:
                raise
            outcome.update(locked)  # still locked after every attempt: failed, retried on the next run
        return [outcome[str(rid)] for rid in batch.index if str(rid) in outcome]

    # -- Bulk API 2.0 ingest, step by step ------------------------------------------------------------------
    # Each step is one `_call` under the retry policy, so a transient error retries that step on the same
    # job: a failed poll polls again, a failed download downloads again. A job is never created twice for
    # the same records. A step whose answer was lost after the server applied it (an upload, a close, an
    # abort) is recognised on its retry by the job's state instead of failing the write. The SDK client is
    # looked up per step: a renewed session (after INVALID_SESSION_ID) means a new one.
    def _bulk_client(self):
        return self.sf.bulk2.Account._client

    def _write_bulk(
        self, changes: pd.DataFrame, on_job: Callable[[str], None] | None
    ) -> Iterator[list[WriteResult]]:
        """One ingest job per upload (`_bulk_uploads`: within `bulk_upload_bytes` and `bulk_job_records`),
        one after the other: create it, report its id, upload, close, wait for it, read its results; each
        job's records come back as one batch before the next job is created."""
        for ids, data in self._bulk_uploads(changes):
            job_id = self._call(
                "bulk update (create job)", lambda: self._bulk_client().create_job(Operation.update)
            )["id"]
            if on_job is not None:
                on_job(job_id)  # kept by the caller before any record is sent
            self._bulk_upload(job_id, data)
            self._bulk_close(job_id)
            info = self._bulk_wait(job_id)
            if info is None:
                raise CrmError(f"Salesforce no longer knows the Bulk API 2.0 job {job_id} it was running")
            if info["state"] == "Failed":
                raise CrmError(
                    f"a Salesforce Bulk API 2.0 job failed: {info.get('errorMessage') or job_id} (job {job_id})"
                )
            outcomes = self._bulk_results(job_id)
            if outcomes is None:
                raise CrmError(f"Salesforce no longer knows the Bulk API 2.0 job {job_id} it was running")
            yield [
                outcomes.get(rid)
                or WriteResult(rid, False, UNPROCESSED, "not in the results of its Bulk API 2.0 job")
                for rid in ids
            ]

    def settle_job(self, job_id: str) -> list[WriteResult]:
        """A job a dead run left: aborted if still open or running, waited for, then its per-record results
        (successes, rejections, and the records it never reached as UNPROCESSED). [] if Salesforce no
        longer knows it (jobs are purged after some days)."""
        info = self._call("bulk job status", lambda: self._bulk_job(job_id))
        if info is None:
            return []
        if info["state"] not in BULK_FINAL_STATES:
            self._bulk_abort(job_id)
            info = self._bulk_wait(job_id, first_sleep=False)
            if info is None:
                return []
        outcomes = self._bulk_results(job_id)
        return [] if outcomes is None else list(outcomes.values())

    def _bulk_uploads(self, changes: pd.DataFrame) -> Iterator[tuple[list[str], str]]:
        """The changes as Bulk API 2.0 CSV (Id, then the owned fields' API names; `#N/A` clears a value),
        cut into uploads of at most `bulk_upload_bytes` bytes and `bulk_job_records` records: (the record
        ids, the CSV text). The bytes counted are exactly those sent: each line as the csv module writes it
        (quotes where needed, inner quotes doubled, LF), UTF-8 encoded, plus the header every upload repeats.
        A record whose line does not fit an upload even alone is a CrmError naming it, raised before the
        upload it would have joined (the uploads before it have been written by then)."""
        limit, per_job = self.settings.bulk_upload_bytes, self.settings.bulk_job_records
        owned = self.settings.owned
        columns = [c for c in changes.columns if c in owned]
        lines: list[str] = []
        writer = csv.writer(_LineSink(lines), lineterminator="\n")  # comma, LF, quotes only where needed
        writer.writerow(["Id", *(owned[c].name for c in columns)])
        header = lines.pop()
        head = len(header.encode())
        ids: list[str] = []
        upload, size = [header], head
        for start in range(0, len(changes), BULK_RENDER_ROWS):
            block = changes.iloc[start : start + BULK_RENDER_ROWS]
            block_ids = list(map(str, block.index.tolist()))
            writer.writerows(zip(block_ids, *(_bulk_cells(block[c], c) for c in columns), strict=True))
            for rid, line, n in zip(block_ids, lines, map(len, map(str.encode, lines)), strict=True):
                if head + n > limit:
                    raise CrmError(
                        f"the Bulk API 2.0 row of record {rid} is {n:,} bytes ({head + n:,} with the CSV "
                        f"header), more than one upload may hold ([salesforce] bulk_upload_bytes = {limit:,})"
                    )
                if size + n > limit or len(ids) >= per_job:
                    yield ids, "".join(upload)
                    ids, upload, size = [], [header], head
                ids.append(rid)
                upload.append(line)
                size += n
            lines.clear()
        if ids:
            yield ids, "".join(upload)

    def _bulk_job(self, job_id: str) -> dict | None:
        """The job's info, or None when Salesforce answers 404 (no such job, or purged)."""
        try:
            return self._bulk_client().get_job(job_id, False)
        except SalesforceResourceNotFound:
            return None

    def _bulk_upload(self, job_id: str, data: str) -> None:
        tried = False

        def upload() -> None:
            nonlocal tried
            retry, tried = tried, True
            try:
                self._bulk_client().upload_job_data(job_id, data)
            except SalesforceError as exc:
                # An earlier attempt landed and its answer was lost: the job refuses a second upload.
                if retry and "INVALIDJOBSTATE" in _error_codes(exc):
                    return
                raise

        self._call("bulk update (upload)", upload)

    def _bulk_close(self, job_id: str) -> None:
        tried = False

        def close() -> None:
            nonlocal tried
            if tried:  # an earlier attempt may have closed the job and lost the answer
                self.api_calls += 1
                info = self._bulk_job(job_id)
                if info is not None and info["state"] != "Open":
                    return
            tried = True
            self.write_calls += 1  # the call that sets the job's records going
            self._bulk_client().close_job(job_id)

        self._call("bulk update (close job)", close)

    def _bulk_abort(self, job_id: str) -> None:
        def abort() -> None:
            try:
                self._bulk_client().abort_job(job_id, False)
            except (SalesforceResourceNotFound, SalesforceMalformedRequest):
                # Gone, or refused because it is already final (it finished before the abort, or an earlier
                # attempt aborted it and lost the answer): the wait that follows reads which. Were the job
                # running still, that wait lets it finish, which settles it too.
                return

        self._call("bulk job abort", abort)

    def _bulk_wait(self, job_id: str, *, first_sleep: bool = True) -> dict | None:
        """Poll until the job is final (JobComplete, Failed, Aborted); each poll one `_call`. None if
        Salesforce no longer knows the job."""
        interval = self.settings.bulk_poll_s
        deadline = time.monotonic() + BULK_WAIT_S
        if first_sleep:
            time.sleep(interval)
        while True:
            info = self._call("bulk job status", lambda: self._bulk_job(job_id))
            if info is None or info["state"] in BULK_FINAL_STATES:
                return info
            if time.monotonic() > deadline:
                raise CrmError(
                    f"the Salesforce Bulk API 2.0 job {job_id} is still {info['state']} after "
                    f"{BULK_WAIT_S // 3600} hours; the next run settles it"
                )
            time.sleep(interval)
            interval = min(max(interval, 0.01) * 1.5, max(self.settings.bulk_poll_s, BULK_POLL_MAX_S))

    def _bulk_results(self, job_id: str) -> dict[str, WriteResult] | None:
        """Every record's outcome from the job's three result lists, by the Id it was uploaded with;
        None if Salesforce no longer knows the job."""
        texts = {}
        for kind in ("successfulResults", "failedResults", "unprocessedRecords"):

            def fetch(k=kind) -> str | None:
                try:
                    return self._bulk_client().get_ingest_results(job_id, k)
                except SalesforceResourceNotFound:
                    return None

            texts[kind] = self._call("bulk results", fetch)
            if texts[kind] is None:
                return None
        outcomes: dict[str, WriteResult] = {}
        for rec in csv.DictReader(io.StringIO(texts["successfulResults"])):
            rid = rec.get("Id") or rec.get("sf__Id", "")
            outcomes[rid] = WriteResult(rid, True)
        for rec in csv.DictReader(io.StringIO(texts["failedResults"])):
            rid = rec.get("Id") or rec.get("sf__Id", "")
            code, _, message = (rec.get("sf__Error") or "UNKNOWN:").partition(":")
            outcomes[rid] = WriteResult(rid, False, code.strip(), message.strip())
        for rec in csv.DictReader(io.StringIO(texts["unprocessedRecords"])):
            rid = rec.get("Id", "")
            outcomes[rid] = WriteResult(
                rid, False, UNPROCESSED, "the Bulk API 2.0 job stopped before it reached this record"
            )
        return outcomes


class _QuotaOrRateLimit(Retryable):
    """REQUEST_LIMIT_EXCEEDED: retried like any limit, and reported as the quota if it never clears."""


class _CursorLost(CrmError):
    """INVALID_QUERY_LOCATOR: Salesforce no longer holds the query's cursor (expired, more than ten open, or
    spent by a last page whose answer was lost); `_rest_pages` re-issues the query where it stopped."""


def _record_labels(raw: pd.DataFrame) -> pd.Series:
    """What a parse report calls each record: its Salesforce id."""
    ids = raw["Id"] if "Id" in raw.columns else pd.Series(raw.index, index=raw.index)
    return ids.astype(str)


def _sf_value(logical: str, value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return None
    if logical == "fit_score":
        return int(value)
    return str(value)


def _bulk_cells(values: pd.Series, logical: str) -> list[str]:
    """One owned column as Bulk API 2.0 CSV cells, a column at a time: the text of `_sf_value` (the score
    as a whole number, anything else as `str` gives it), `#N/A` (clear the field) where the value is missing."""
    missing = values.isna().to_numpy()
    if logical == "fit_score":
        return ["#N/A" if m else str(int(v)) for v, m in zip(values.tolist(), missing, strict=True)]
    cells = values.astype(str).tolist()
    for i in missing.nonzero()[0]:
        cells[i] = "#N/A"
    return cells


class _LineSink:
    """A file for `csv.writer` that keeps each row as one string: the writer renders a whole row (its line
    terminator included) and hands it to `write` in one call, so each row's exact text can be measured."""

    def __init__(self, lines: list[str]) -> None:
        self.write = lines.append


def _error_codes(exc: SalesforceError) -> set[str]:
    if isinstance(exc.content, list):
        return {str(e.get("errorCode", "")) for e in exc.content if isinstance(e, dict)}
    return set()


def _auth_text(exc: SalesforceAuthenticationFailed) -> str:
    """Salesforce's own words from a refused login (simple-salesforce keeps them in `auth_message`; older
    releases in an instance `message`), never the class's "Response content: {content}" template."""
    text = getattr(exc, "auth_message", None)
    if not isinstance(text, str):
        text = exc.__dict__.get("message")
    if not isinstance(text, str):
        content = exc.content
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content or "")
    return " ".join(text.split())[:300]


def _error_text(exc: SalesforceError) -> str:
    if isinstance(exc.content, list):
        return "; ".join(
            f"{e.get('errorCode', '')}: {e.get('message', '')}" for e in exc.content if isinstance(e, dict)
        )
    return str(exc.content)[:300]
