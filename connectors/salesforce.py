"""Salesforce connector on simple-salesforce: pull accounts and opportunities, manage and write the ICP fields.

The engine sees canonical frames only. This module owns the Salesforce specifics: the login flows (from
environment secrets), an injected `requests.Session` (CA bundle, timeouts, pool), SOQL built with escaped
literals, REST paging below `bulk_query_threshold` and Bulk API 2.0 above it, sObject Collections (200 per
call) below `bulk_threshold` and Bulk API 2.0 ingest above it, the Metadata API for fields, and the
classification of every Salesforce error for the one retry policy.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

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
)

from connectors.base import FieldPlan, FieldSpec, Usage, WriteResult
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


@dataclass(frozen=True)
class SalesforceSettings:
    """Behaviour from `[salesforce]` in icp.toml (these defaults are the config's: sync/config.py reads them
    from here), plus what the environment and the caller add. Credentials come separately."""

    api_version: str = "59.0"
    domain: str = "login"  # login | test | a My Domain such as acme.my
    bulk_threshold: int = 2000  # changed records above which writes go through Bulk API 2.0
    bulk_query_threshold: int = 200_000  # accounts above which pulls go through Bulk API 2.0 query
    timeout_s: float = 60.0
    quota_floor: int = 1000  # stop before pulling when fewer API calls than this are left today
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

    def __repr__(self) -> str:  # never the secrets
        return f"SalesforceConnector(mode={self.mode!r}, api_version={self.settings.api_version!r})"

    # -- connection -----------------------------------------------------------------------------------
    def _make_session(self) -> requests.Session:
        s = self.settings
        session = _Session(s.timeout_s)
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
        connection during login is retried; refused credentials are not."""
        sec, s = self._secrets, self.settings
        common = {"session": self._session, "version": s.api_version}
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

        def attempt() -> Salesforce:
            if self.mode != "session":
                self.api_calls += 1
            return Salesforce(**kwargs, **common)

        try:
            self._sf = self.policy.call(attempt, classify=self._classify_login, what="Salesforce login")
        except AuthFailed as exc:
            # Not chained: the SDK's exception could carry the login request, secrets included.
            raise AuthFailed(str(exc)) from None
        self.logins += 1

    def _classify_login(self, exc: BaseException) -> BaseException | None:
        if isinstance(
            exc, requests.ConnectionError | requests.Timeout | requests.exceptions.ChunkedEncodingError
        ):
            return Retryable(f"cannot reach Salesforce to log in: {type(exc).__name__}")
        if isinstance(exc, SalesforceAuthenticationFailed):
            code = exc.code
            transient = (isinstance(code, int) and (code >= 500 or code == 429)) or code in RETRYABLE_CODES
            if transient:
                return Retryable(f"login answered {code}", code=str(code))
            # exc.message is Salesforce's text (e.g. "Invalid username, password, security token; or user
            # locked out."); it never echoes the credentials sent.
            return AuthFailed(f"Salesforce refused the login ({self.mode}): {code}: {exc.message}")
        if isinstance(exc, requests.RequestException):
            return CrmError(f"cannot log in to Salesforce: {type(exc).__name__}")
        return None

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
        if isinstance(exc, SalesforceError):
            codes = (
                {e.get("errorCode") for e in exc.content if isinstance(e, dict)}
                if isinstance(exc.content, list)
                else set()
            )
            message = _error_text(exc)
            if "REQUEST_LIMIT_EXCEEDED" in codes and "TotalRequests" in message:
                return _QuotaOrRateLimit(message, code="REQUEST_LIMIT_EXCEEDED")
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
        """One Salesforce call under the retry policy; an expired session is renewed before the retry."""

        def attempt():
            self.api_calls += 1
            try:
                return fn()
            except SalesforceExpiredSession:
                self._renew_session()
                raise

        try:
            return self.policy.call(attempt, classify=self._classify, what=what)
        except CrmError as exc:
            cause = exc.__cause__
            if isinstance(cause, _QuotaOrRateLimit) or isinstance(exc, _QuotaOrRateLimit):
                raise QuotaExhausted(
                    f"Salesforce API request limit reached during {what} (REQUEST_LIMIT_EXCEEDED after "
                    f"{self.policy.attempts} attempts); the run stops here and resumes next time"
                ) from None
            raise

    def _renew_session(self) -> None:
        if self.mode == "session":
            raise AuthFailed(
                "the Salesforce session (SF_ACCESS_TOKEN) has expired and there are no login credentials "
                "to renew it: set a fresh SF_ACCESS_TOKEN, or SF_USERNAME + SF_PASSWORD + SF_SECURITY_TOKEN"
            )
        self._sf = None
        self._login()

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

    def _account_soql(self, *, since=None, ids=None, where=None, count=False) -> str:
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
        head = "SELECT COUNT() FROM Account" if count else f"SELECT {', '.join(fields)} FROM Account"
        tail = "" if count else " ORDER BY SystemModstamp, Id"
        return head + (f" WHERE {' AND '.join(clauses)}" if clauses else "") + tail

    def count_accounts(self, *, since=None, ids=None, where=None) -> int:
        soql = self._account_soql(since=since, ids=ids, where=where, count=True)
        return int(self._call("count accounts", lambda: self.sf.query(soql))["totalSize"])

    def iter_accounts(
        self,
        *,
        since=None,
        ids=None,
        where=None,
        total: int | None = None,
        report: ParseReport | None = None,
        page_size: int = 2000,
    ) -> Iterator[pd.DataFrame]:
        """Canonical account pages (plus `live_<field>` owned values and `_modstamp`), oldest change first."""
        if ids is not None and len(ids) > 500:
            for start in range(0, len(ids), 500):
                yield from self.iter_accounts(
                    since=since, ids=ids[start : start + 500], where=where, page_size=page_size, report=report
                )
            return
        soql = self._account_soql(since=since, ids=ids, where=where)
        try:
            if total is not None and total > self.settings.bulk_query_threshold:
                pages = self._bulk_query(soql)
            else:
                pages = (pd.DataFrame.from_records(page) for page in self._rest_pages(soql, page_size))
            for page in pages:
                yield self._to_accounts(page, report)
        except SalesforceMalformedRequest as exc:
            raise CrmError(f"Salesforce rejected the account query: {_error_text(exc)}") from None

    def iter_deals(self, *, report: ParseReport | None = None) -> Iterator[pd.DataFrame]:
        """Closed opportunities as canonical deals, page by page."""
        fields = ", ".join(OPPORTUNITY_FIELDS.values())
        soql = f"SELECT {fields} FROM Opportunity WHERE IsClosed = true AND AccountId != null ORDER BY Id"
        for page in self._rest_pages(soql, 2000):
            yield self._to_deals(pd.DataFrame.from_records(page), report)

    def _rest_pages(self, soql: str, page_size: int) -> Iterator[list[dict]]:
        """Follow nextRecordsUrl page by page; each page is a list of records without `attributes`."""
        result = self._call("query", lambda: self.sf.query(soql))
        buffer: list[dict] = []
        last_url = None
        while True:
            for rec in result.get("records", []):
                rec.pop("attributes", None)
                buffer.append(rec)
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
            result = self._call("query more", lambda u=url: self.sf.query_more(u, identifier_is_url=True))
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

    # -- writes ---------------------------------------------------------------------------------------
    def write(self, changes: pd.DataFrame) -> Iterator[list[WriteResult]]:
        """Write `changes` (index = Account id, logical owned columns); yields each batch's results."""
        if len(changes) > self.settings.bulk_threshold:
            yield from self._write_bulk(changes)
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

    def _write_bulk(self, changes: pd.DataFrame) -> Iterator[list[WriteResult]]:
        owned = self.settings.owned
        rows = []
        for rid, row in zip(changes.index, changes.itertuples(index=False), strict=True):
            rec = {"Id": str(rid)}
            for logical, value in zip(changes.columns, row, strict=True):
                if logical in owned:
                    v = _sf_value(logical, value)
                    rec[owned[logical].name] = "#N/A" if v is None else str(v)
            rows.append(rec)

        def send():
            # create job, upload, close, poll until done: one logical write whatever the size
            self.write_calls += 1
            return self.sf.bulk2.Account.update(records=rows, wait=self.settings.bulk_poll_s)

        info = self._call("bulk update", send)
        results: dict[str, WriteResult] = {}
        for job in info:
            job_id = job["job_id"]
            failed = self._call("bulk results", lambda j=job_id: self.sf.bulk2.Account.get_failed_records(j))
            for rec in csv.DictReader(io.StringIO(failed)):
                code, _, message = (rec.get("sf__Error") or "UNKNOWN:").partition(":")
                results[rec["sf__Id"] or rec.get("Id", "")] = WriteResult(
                    rec["sf__Id"] or rec.get("Id", ""), False, code.strip(), message.strip()
                )
            unprocessed = self._call(
                "bulk results", lambda j=job_id: self.sf.bulk2.Account.get_unprocessed_records(j)
            )
            for rec in csv.DictReader(io.StringIO(unprocessed)):
                results[rec["Id"]] = WriteResult(
                    rec["Id"], False, "UNPROCESSED", "the bulk job did not process it"
                )
        yield [results.get(str(rid), WriteResult(str(rid), True)) for rid in changes.index]


class _QuotaOrRateLimit(Retryable):
    """REQUEST_LIMIT_EXCEEDED: retried like any limit, and reported as the quota if it never clears."""


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


def _error_text(exc: SalesforceError) -> str:
    if isinstance(exc.content, list):
        return "; ".join(
            f"{e.get('errorCode', '')}: {e.get('message', '')}" for e in exc.content if isinstance(e, dict)
        )
    return str(exc.content)[:300]
