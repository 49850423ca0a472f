"""The Salesforce half of the sandbox as a WSGI app: routing, authentication, API usage and fault injection
around the REST, Bulk API 2.0, SOAP login and Metadata API handlers.

Every request is counted in `CallCounter` under its endpoint label, then draws a request fault (which also
spends the `quota:N` fault budget), then is authenticated, then counts against the org's daily API limit
(reported in `Sforce-Limit-Info` and `/limits`), then runs.
"""

from __future__ import annotations

import logging
import threading
import time

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import BaseConverter, Map, Rule
from werkzeug.wrappers import Request, Response

from sandbox.salesforce import auth, metadata
from sandbox.salesforce.bulk2 import Bulk2
from sandbox.salesforce.fields import icp_fields
from sandbox.salesforce.responses import ApiError, error_response
from sandbox.salesforce.rest import RestApi
from sandbox.salesforce.store import REP_USER_ID, RecordError, Store, WriteItem

log = logging.getLogger(__name__)


def _error(code: str, message: str) -> dict:
    return {"statusCode": code, "message": message, "fields": []}


class VersionConverter(BaseConverter):
    """`59.0` in `/services/data/v59.0/...`; any `NN.N` is accepted."""

    regex = r"\d+\.\d+"


def _rules() -> list[Rule]:
    data = "/services/data/v<version:version>"
    return [
        Rule("/services/Soap/u/<version:version>", endpoint="soap_login", methods=["POST"]),
        Rule("/services/Soap/u/<version:version>/<path:rest>", endpoint="soap_login", methods=["POST"]),
        Rule("/services/Soap/m/<version:version>", endpoint="mdapi", methods=["POST"]),
        Rule("/services/Soap/m/<version:version>/<path:rest>", endpoint="mdapi", methods=["POST"]),
        Rule("/services/oauth2/token", endpoint="oauth_token", methods=["POST"]),
        Rule("/services/oauth2/userinfo", endpoint="oauth_userinfo", methods=["GET", "POST"]),
        Rule("/services/data", endpoint="versions", methods=["GET"]),
        Rule(data, endpoint="resources", methods=["GET"]),
        Rule(f"{data}/query", endpoint="query", methods=["GET"]),
        Rule(f"{data}/query/<locator>", endpoint="query_more", methods=["GET"]),
        Rule(f"{data}/queryAll", endpoint="query_all", methods=["GET"]),
        Rule(f"{data}/queryAll/<locator>", endpoint="query_all_more", methods=["GET"]),
        Rule(f"{data}/sobjects", endpoint="describe_global", methods=["GET"]),
        Rule(f"{data}/sobjects/<sobject>", endpoint="sobject_info", methods=["GET"]),
        Rule(f"{data}/sobjects/<sobject>/describe", endpoint="describe", methods=["GET"]),
        Rule(f"{data}/sobjects/<sobject>/<record_id>", endpoint="sobject_get", methods=["GET"]),
        Rule(f"{data}/sobjects/<sobject>/<record_id>", endpoint="sobject_patch", methods=["PATCH"]),
        Rule(f"{data}/sobjects/<sobject>/<record_id>", endpoint="sobject_delete", methods=["DELETE"]),
        Rule(f"{data}/composite/sobjects", endpoint="composite_sobjects", methods=["PATCH"]),
        Rule(f"{data}/limits", endpoint="limits", methods=["GET"]),
        Rule(f"{data}/jobs/ingest", endpoint="ingest_create", methods=["POST"]),
        Rule(f"{data}/jobs/ingest", endpoint="ingest_list", methods=["GET"]),
        Rule(f"{data}/jobs/ingest/<job_id>", endpoint="ingest_get", methods=["GET"]),
        Rule(f"{data}/jobs/ingest/<job_id>", endpoint="ingest_state", methods=["PATCH"]),
        Rule(f"{data}/jobs/ingest/<job_id>", endpoint="ingest_delete", methods=["DELETE"]),
        Rule(f"{data}/jobs/ingest/<job_id>/batches", endpoint="ingest_upload", methods=["PUT"]),
        Rule(
            f"{data}/jobs/ingest/<job_id>/<any(successfulResults, failedResults, unprocessedRecords):which>",
            endpoint="ingest_results",
            methods=["GET"],
        ),
        Rule(f"{data}/jobs/query", endpoint="query_job_create", methods=["POST"]),
        Rule(f"{data}/jobs/query", endpoint="query_job_list", methods=["GET"]),
        Rule(f"{data}/jobs/query/<job_id>", endpoint="query_job_get", methods=["GET"]),
        Rule(f"{data}/jobs/query/<job_id>", endpoint="query_job_state", methods=["PATCH"]),
        Rule(f"{data}/jobs/query/<job_id>", endpoint="query_job_delete", methods=["DELETE"]),
        Rule(f"{data}/jobs/query/<job_id>/results", endpoint="query_job_results", methods=["GET"]),
    ]


# Endpoint -> the label faults and call counts use. Login endpoints need no session.
LABELS = {
    "soap_login": "sf.login.soap",
    "oauth_token": "sf.login.oauth",
    "oauth_userinfo": "sf.oauth.userinfo",
    "mdapi": "sf.mdapi",
    "versions": "sf.versions",
    "resources": "sf.versions",
    "query": "sf.query",
    "query_all": "sf.query",
    "query_more": "sf.query_more",
    "query_all_more": "sf.query_more",
    "describe_global": "sf.describe",
    "sobject_info": "sf.describe",
    "describe": "sf.describe",
    "sobject_get": "sf.sobject.get",
    "sobject_patch": "sf.sobject.patch",
    "sobject_delete": "sf.sobject.delete",
    "composite_sobjects": "sf.composite.sobjects",
    "limits": "sf.limits",
    "ingest_create": "sf.bulk2.ingest.create",
    "ingest_list": "sf.bulk2.ingest.list",
    "ingest_get": "sf.bulk2.ingest.get",
    "ingest_state": "sf.bulk2.ingest.state",
    "ingest_delete": "sf.bulk2.ingest.delete",
    "ingest_upload": "sf.bulk2.ingest.upload",
    "ingest_results": "sf.bulk2.ingest.results",
    "query_job_create": "sf.bulk2.query.create",
    "query_job_list": "sf.bulk2.query.list",
    "query_job_get": "sf.bulk2.query.get",
    "query_job_state": "sf.bulk2.query.state",
    "query_job_delete": "sf.bulk2.query.delete",
    "query_job_results": "sf.bulk2.query.results",
}
LOGIN_ENDPOINTS = {"soap_login", "oauth_token"}
UNAUTHENTICATED = LOGIN_ENDPOINTS | {"versions"}


class SalesforceApp:
    """The sandbox's Salesforce org, served over WSGI; see the package docstring for the surface."""

    def __init__(self, db, faults, calls, options) -> None:
        self.db = db
        self.faults = faults
        self.calls = calls
        self.options = options
        self.base_url = ""  # set by Sandbox once the server is bound
        self.store = Store(db, seed=options.seed, api_username=options.sf_username)
        self.sessions = auth.Sessions(options)
        self.rest = RestApi(self.store, options)
        self.bulk2 = Bulk2(self.store, self.rest.compile, upload_limit=options.salesforce_bulk_upload_bytes)
        self.mdapi = metadata.MetadataApi(self.store)
        self.url_map = Map(_rules(), converters={"version": VersionConverter}, strict_slashes=False)
        self._usage_lock = threading.Lock()
        self._api_used = 0
        if options.with_icp_fields:
            for fld in icp_fields():
                if fld.name not in self.store.types["Account"].fields:
                    self.store.add_field("Account", fld)

    # -- the contract with Sandbox and the tests ----------------------------------------------------------
    def is_empty(self) -> bool:
        return self.store.is_empty()

    def seed(self, book) -> None:
        self.store.seed(book)

    def records(self, sobject: str = "Account", include_deleted: bool = False) -> list[dict]:
        return self.store.records(sobject, include_deleted)

    def edit(self, sobject: str, record_id: str, fields: dict) -> None:
        """Change a record as a rep would in the UI: validated, timestamps bumped, LastModifiedById = the rep."""
        [result] = self.store.update(
            sobject, [WriteItem(sobject, record_id, dict(fields))], user_id=REP_USER_ID
        )
        if not result.success:
            raise RecordError(result.errors)

    def delete(self, sobject: str, record_id: str) -> None:
        """Delete a record as a rep would in the UI: to the recycle bin, so queryAll still returns it."""
        if self.store.record(sobject, record_id) is None:
            raise RecordError([_error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")])
        if not self.store.delete(sobject, record_id, REP_USER_ID):
            raise RecordError([_error("ENTITY_IS_DELETED", "entity is deleted")])

    @property
    def api_usage(self) -> tuple[int, int]:
        with self._usage_lock:
            return self._api_used, self.options.salesforce_daily_limit

    def reset_sessions(self) -> None:
        """Make the pre-issued access token valid again after an `expire_session` fault revoked it."""
        self.sessions.reset()

    def close(self) -> None:
        """Stop the Bulk API 2.0 ingest jobs still running (before their next chunk) and join their threads."""
        self.bulk2.close(self.faults)

    # -- WSGI ---------------------------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        request = Request(environ)
        self.calls.arrived()
        try:
            response = self._respond(request)
        finally:
            self.calls.answered()
        return response(environ, start_response)

    def _respond(self, request: Request):
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except MethodNotAllowed as exc:
            self.calls.hit("sf.unknown")
            allowed = ",".join(sorted(exc.valid_methods or []))
            return error_response(
                405,
                "METHOD_NOT_ALLOWED",
                f"HTTP Method '{request.method}' not allowed. Allowed are {allowed}",
            )
        except NotFound:
            self.calls.hit("sf.unknown")
            return error_response(404, "NOT_FOUND", "The requested resource does not exist")
        label = LABELS[endpoint]
        self.calls.hit(label)
        kind = (
            "login"
            if endpoint in LOGIN_ENDPOINTS
            else "soap"
            if endpoint == "mdapi"
            else "oauth"
            if endpoint == "oauth_userinfo"
            else "rest"
        )
        pause = self.faults.delay(label)
        if pause:
            time.sleep(pause)
        # A parked request has been taken whole: its body is read before parking, so a client killed while
        # it waits cannot leave half a batch (the parked request is applied on release, answered to no one).
        request.get_data(cache=True)
        self.faults.park(label)
        fault = self.faults.request_fault("salesforce", label)
        if fault == "expire_session" and endpoint in LOGIN_ENDPOINTS:
            fault = None  # a login has no session to expire
        if fault in ("quota", "rate_limit", "server_error", "expire_session"):
            if fault == "expire_session":
                self.sessions.revoke(self._token(request, endpoint))
            return self._with_usage(self._fault_response(fault, endpoint), kind)
        response = self._handle(request, endpoint, args, kind)
        if fault == "drop":
            return DroppedResponse(response)
        return response

    def _handle(self, request: Request, endpoint: str, args: dict, kind: str) -> Response:
        if endpoint == "soap_login":
            return auth.soap_login(request, self.sessions, self._base_url(request), args["version"])
        if endpoint == "oauth_token":
            return auth.oauth_token(request, self.sessions, self._base_url(request))
        if endpoint not in UNAUTHENTICATED and not self.sessions.is_valid(self._token(request, endpoint)):
            return self._fault_response("expire_session", endpoint)
        if endpoint == "oauth_userinfo":
            # An OAuth endpoint, not the REST API: no API request is spent, no Sforce-Limit-Info sent.
            return auth.userinfo(self._base_url(request), self.store.api_username)
        if endpoint != "versions":
            refused = self._spend_api_call(endpoint)
            if refused is not None:
                return self._with_usage(refused, kind)
        if endpoint == "mdapi":
            return self.mdapi.handle(request)
        try:
            response = self._dispatch(request, endpoint, args)
        except ApiError as exc:
            response = exc.response()
        except Exception:
            # A sandbox bug: answer as Salesforce answers its own internal errors, and leave a trace.
            log.exception("sandbox error on %s %s", request.method, request.path)
            response = error_response(500, "UNKNOWN_EXCEPTION", "An unexpected error occurred in the sandbox")
        return self._with_usage(response, kind)

    def _dispatch(self, request: Request, endpoint: str, args: dict) -> Response:
        version = args.get("version", "")
        rest, bulk = self.rest, self.bulk2
        handlers = {
            "versions": lambda: rest.versions(self._base_url(request)),
            "resources": lambda: rest.resources(version),
            "query": lambda: rest.query(request, version, include_deleted=False),
            "query_all": lambda: rest.query(request, version, include_deleted=True),
            "query_more": lambda: rest.query_more(version, args.get("locator", ""), include_deleted=False),
            "query_all_more": lambda: rest.query_more(version, args.get("locator", ""), include_deleted=True),
            "describe_global": lambda: rest.describe_global(version),
            "sobject_info": lambda: rest.sobject_info(version, args["sobject"]),
            "describe": lambda: rest.describe(version, args["sobject"]),
            "sobject_get": lambda: rest.get_record(
                version, args["sobject"], args["record_id"], request.args.get("fields")
            ),
            "sobject_patch": lambda: rest.patch_record(
                request, args["sobject"], args["record_id"], self.faults
            ),
            "sobject_delete": lambda: rest.delete_record(args["sobject"], args["record_id"]),
            "composite_sobjects": lambda: rest.composite_update(request, self.faults),
            "limits": lambda: rest.limits(*self.api_usage),
            "ingest_create": lambda: bulk.create_ingest(request, version),
            "ingest_list": lambda: bulk.list_jobs("ingest"),
            "ingest_get": lambda: bulk.get_job(args["job_id"], "ingest"),
            "ingest_state": lambda: bulk.set_ingest_state(request, args["job_id"], self.faults),
            "ingest_delete": lambda: bulk.delete_job(args["job_id"], "ingest"),
            "ingest_upload": lambda: bulk.upload(request, args["job_id"]),
            "ingest_results": lambda: bulk.ingest_results(args["job_id"], args["which"]),
            "query_job_create": lambda: bulk.create_query(request, version),
            "query_job_list": lambda: bulk.list_jobs("query"),
            "query_job_get": lambda: bulk.get_job(args["job_id"], "query"),
            "query_job_state": lambda: bulk.set_query_state(request, args["job_id"]),
            "query_job_delete": lambda: bulk.delete_job(args["job_id"], "query"),
            "query_job_results": lambda: bulk.query_results(request, args["job_id"]),
        }
        return handlers[endpoint]()

    # -- cross-cutting ------------------------------------------------------------------------------------
    def _base_url(self, request: Request) -> str:
        return self.base_url or request.host_url.rstrip("/")

    @staticmethod
    def _token(request: Request, endpoint: str) -> str | None:
        if endpoint == "mdapi":
            return metadata.session_id(request.get_data())
        return auth.bearer_token(request)

    def _spend_api_call(self, endpoint: str) -> Response | None:
        with self._usage_lock:
            if self._api_used >= self.options.salesforce_daily_limit:
                refused = True
            else:
                self._api_used += 1
                refused = False
        return self._fault_response("quota", endpoint) if refused else None

    def _with_usage(self, response: Response, kind: str) -> Response:
        if kind == "rest":
            used, limit = self.api_usage
            response.headers["Sforce-Limit-Info"] = f"api-usage={used}/{limit}"
        return response

    @staticmethod
    def _fault_response(fault: str, endpoint: str) -> Response:
        """What Salesforce answers for a refused request, in the protocol of the endpoint."""
        if fault in ("quota", "rate_limit"):
            code, message, status = "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", 403
        elif fault == "server_error":
            code, message, status = (
                "SERVER_UNAVAILABLE",
                "Server is temporarily unavailable. Please retry.",
                503,
            )
        else:
            code, message, status = "INVALID_SESSION_ID", "Session expired or invalid", 401
        if endpoint == "soap_login":
            return auth.soap_fault(code, message)
        if endpoint == "oauth_token":
            return auth.oauth_error(code.lower(), message, status)
        if endpoint == "mdapi":
            if code == "INVALID_SESSION_ID":
                message = "Invalid Session ID found in SessionHeader: Illegal Session"
            return metadata.md_fault(code, message)
        return error_response(status, code, message)


class DroppedResponse:
    """A response whose connection breaks mid-body: the headers promise the full length, half the bytes come,
    then the server hangs up (raising ConnectionAbortedError makes werkzeug close the socket quietly).
    A response with no body (a 204) is sent as a 200 promising a short body that never fully arrives: the
    request was applied, its answer is lost, which is what a client must survive."""

    def __init__(self, response: Response) -> None:
        self.response = response

    def __call__(self, environ, start_response):
        body = self.response.get_data()
        status = self.response.status
        if len(body) < 2:
            body, status = b'{"lost": "in transit"}', "200 OK"
        headers = [
            (k, v)
            for k, v in self.response.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding")
        ]
        headers.append(("Content-Length", str(len(body))))
        headers.append(("Connection", "close"))
        start_response(status, headers)
        return self._partial(body)

    @staticmethod
    def _partial(body: bytes):
        # werkzeug sends "Connection: close" with the headers, so it closes the socket after this.
        yield body[: len(body) // 2]
        raise ConnectionAbortedError("sandbox fault: connection dropped")
