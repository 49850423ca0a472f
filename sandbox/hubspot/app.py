"""The HubSpot half of the sandbox: a WSGI app speaking CRM v3/v4 the way hubspot-api-client 12 calls it.

`Sandbox.start()` builds one `HubSpotApp` over the shared Database, Faults and CallCounter. Each request is
counted, authenticated (Bearer private-app token), offered to the fault registry, held to the private-app
limits (burst window, search's own per-second window, daily quota) and then served from `Store`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from sandbox.hubspot.errors import HubSpotError, batch_error, error_body, validation_error
from sandbox.hubspot.properties import (
    ALWAYS_RETURNED,
    BOOL_OPTIONS,
    CLOSED_STAGES,
    FIELD_TYPES,
    NAME_RE,
    OBJECT_TYPES,
    PROPERTY_TYPES,
    VIRTUAL_COLUMNS,
    WON_STAGES,
    PropertyDef,
    PropertyError,
    coerce,
    iso_ms,
    option,
)
from sandbox.hubspot.ratelimit import DailyQuota, RollingWindow
from sandbox.hubspot.search import compile_search, contains_token, returned_names
from sandbox.hubspot.store import Store

if TYPE_CHECKING:  # sandbox.server imports this package when a Sandbox starts
    import datetime as dt

    from sandbox.book import Book
    from sandbox.faults import Faults
    from sandbox.server import CallCounter, Database, SandboxOptions

log = logging.getLogger(__name__)

BATCH_LIMIT = 100  # batch read/update inputs (HubSpot's CRM objects batch limit)
ASSOCIATION_BATCH_LIMIT = 1000  # v4 association batch read inputs
LIST_LIMIT = 100
ASSOCIATION_PAGE_LIMIT = 500
SEARCH_PER_SECOND = 5  # HubSpot's documented search limit; SandboxOptions.hubspot_search_rate_limit overrides
SINGULAR = {"companies": "COMPANY", "deals": "DEAL"}
OTHER = {"companies": "deals", "deals": "companies"}
# v3 association type names and v4 association types: HubSpot returns the primary association and its
# unlabeled twin for every deal-company pair, so clients must de-duplicate ids.
V3_TYPES = {
    ("deals", "companies"): ("deal_to_company", "deal_to_company_unlabeled"),
    ("companies", "deals"): ("company_to_deal", "company_to_deal_unlabeled"),
}
V4_TYPES = {
    ("deals", "companies"): [
        {"category": "HUBSPOT_DEFINED", "typeId": 5, "label": "Primary"},
        {"category": "HUBSPOT_DEFINED", "typeId": 341, "label": None},
    ],
    ("companies", "deals"): [
        {"category": "HUBSPOT_DEFINED", "typeId": 6, "label": "Primary"},
        {"category": "HUBSPOT_DEFINED", "typeId": 342, "label": None},
    ],
}

_T = "<any(companies, deals):object_type>"
_F = "<any(companies, deals):from_type>"
_TO = "<any(companies, deals):to_type>"
URL_MAP = Map(
    [
        Rule(f"/crm/v3/objects/{_T}", methods=["GET"], endpoint="list"),
        Rule(f"/crm/v3/objects/{_T}/search", methods=["POST"], endpoint="search"),
        Rule(f"/crm/v3/objects/{_T}/batch/read", methods=["POST"], endpoint="batch_read"),
        Rule(f"/crm/v3/objects/{_T}/batch/update", methods=["POST"], endpoint="batch_update"),
        Rule(f"/crm/v3/objects/{_T}/<record_id>", methods=["GET"], endpoint="get"),
        Rule(f"/crm/v3/objects/{_T}/<record_id>", methods=["PATCH"], endpoint="update"),
        Rule(f"/crm/v3/objects/{_T}/<record_id>", methods=["DELETE"], endpoint="archive"),
        Rule(f"/crm/v4/objects/{_F}/<record_id>/associations/{_TO}", methods=["GET"], endpoint="assoc_page"),
        Rule(f"/crm/v4/associations/{_F}/{_TO}/batch/read", methods=["POST"], endpoint="assoc_batch_v4"),
        Rule(f"/crm/v3/associations/{_F}/{_TO}/batch/read", methods=["POST"], endpoint="assoc_batch_v3"),
        Rule(f"/crm/v3/properties/{_T}", methods=["GET"], endpoint="props_list"),
        Rule(f"/crm/v3/properties/{_T}", methods=["POST"], endpoint="props_create"),
        Rule(f"/crm/v3/properties/{_T}/groups", methods=["GET"], endpoint="groups_list"),
        Rule(f"/crm/v3/properties/{_T}/groups", methods=["POST"], endpoint="groups_create"),
        Rule(f"/crm/v3/properties/{_T}/groups/<name>", methods=["GET"], endpoint="groups_get"),
        Rule(f"/crm/v3/properties/{_T}/groups/<name>", methods=["PATCH"], endpoint="groups_update"),
        Rule(f"/crm/v3/properties/{_T}/<name>", methods=["GET"], endpoint="props_get"),
        Rule(f"/crm/v3/properties/{_T}/<name>", methods=["PATCH"], endpoint="props_update"),
        Rule(f"/crm/v3/properties/{_T}/<name>", methods=["DELETE"], endpoint="props_archive"),
    ]
)
# The label each endpoint is counted and fault-matched under (`{t}` is the object type).
LABELS = {
    "list": "hs.{t}.list",
    "search": "hs.{t}.search",
    "batch_read": "hs.{t}.batch.read",
    "batch_update": "hs.{t}.batch.update",
    "get": "hs.{t}.get",
    "update": "hs.{t}.update",
    "archive": "hs.{t}.archive",
    "assoc_page": "hs.associations.get",
    "assoc_batch_v4": "hs.associations.batch.read",
    "assoc_batch_v3": "hs.associations.batch.read",
    "props_list": "hs.properties.list",
    "props_create": "hs.properties.create",
    "props_get": "hs.properties.get",
    "props_update": "hs.properties.update",
    "props_archive": "hs.properties.archive",
    "groups_list": "hs.properties.groups.list",
    "groups_create": "hs.properties.groups.create",
    "groups_get": "hs.properties.groups.get",
    "groups_update": "hs.properties.groups.update",
}
_GROUP_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,99}$")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _parse_bool(raw: str | None, name: str, default: bool = False) -> bool:
    if raw is None or raw == "":
        return default
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise validation_error(f"{name} must be true or false, got {raw!r}")


def _parse_int(raw: str | None, name: str, default: int) -> int:
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"-?\d{1,18}", raw):
        raise validation_error(f"{name} must be a whole number, got {raw!r}")
    return int(raw)


def _multi(request: Request, key: str) -> list[str]:
    """A repeated query parameter, also accepting HubSpot's comma-joined form."""
    return [part for value in request.args.getlist(key) for part in value.split(",") if part]


def _record_id(raw) -> int | None:
    text = str(raw).strip() if raw is not None else ""
    return int(text) if re.fullmatch(r"\d{1,18}", text) else None


class HubSpotApp:
    """A HubSpot CRM for one private app: WSGI for the SDK, plus direct methods for tests (no HTTP)."""

    def __init__(self, db: Database, faults: Faults, calls: CallCounter, options: SandboxOptions) -> None:
        self.db = db
        self.faults = faults
        self.calls = calls
        self.options = options
        self.store = Store(db, with_icp_fields=options.with_icp_fields)
        db.conn.create_function("hs_contains_token", 2, contains_token, deterministic=True)
        self.burst = RollingWindow(options.hubspot_rate_limit, options.hubspot_rate_window_s)
        self.search_window = RollingWindow(
            getattr(options, "hubspot_search_rate_limit", SEARCH_PER_SECOND), 1.0
        )
        self.daily = DailyQuota(options.hubspot_daily_limit)
        self._server_errors = 0
        self.base_url = ""

    # -- the contract Sandbox.start() and tests use -------------------------------------------------------
    def is_empty(self) -> bool:
        return self.store.is_empty()

    def seed(self, book: Book) -> None:
        self.store.seed(book)

    @property
    def api_usage(self) -> tuple[int, int]:
        """(requests counted against today's quota, the daily limit)."""
        return self.daily.used, self.daily.limit

    def use_clock(
        self, clock: Callable[[], float] | None = None, today: Callable[[], dt.date] | None = None
    ) -> None:
        """Measure the burst and search windows with `clock` (seconds, like time.monotonic) and the daily quota's
        day with `today` instead of the real ones, so a test decides when a window or a day has passed instead
        of racing it. Set `today` before the first request of the day it stands for."""
        if clock is not None:
            self.burst.clock = clock
            self.search_window.clock = clock
        if today is not None:
            self.daily.today = today  # the count starts again at the first request of that day

    def reset_limits(self) -> None:
        """Forget the burst and search windows (not the daily count), like waiting them out."""
        self.burst.reset()
        self.search_window.reset()

    def records(self, object_type: str = "companies", include_archived: bool = False) -> list[dict]:
        """Every stored record with every property (None where unset), in id order."""
        names = [d.name for d in self.store.defs[object_type].values() if not d.archived]
        out = []
        for archived in (False, True) if include_archived else (False,):
            after = 0
            while True:
                rows = self.store.page(object_type, names, after=after, limit=10_000, archived=archived)
                out.extend(self.store.to_wire(object_type, r, names) for r in rows[:10_000])
                if len(rows) <= 10_000:
                    break
                after = rows[10_000]["id"]
        out.sort(key=lambda r: int(r["id"]))
        return out

    def edit(self, object_type: str, record_id, properties: dict) -> None:
        """Change a record as a person would in HubSpot's UI: validated like the API, bumps updatedAt."""
        rid = _record_id(record_id)
        if rid is None or not self.store.fetch(object_type, [rid], [], archived=False):
            raise ValueError(f"no live {object_type} record with id {record_id!r}")
        values, errors = self._validate(object_type, properties)
        if errors:
            raise ValueError("; ".join(f"{e.code}: {e.message}" for e in errors))
        self.store.update(object_type, [(rid, values)], now_ms())

    def archive(self, object_type: str, record_id) -> None:
        rid = _record_id(record_id)
        if rid is None or not self.store.archive(object_type, rid, now_ms()):
            raise ValueError(f"no live {object_type} record with id {record_id!r}")

    # -- WSGI ---------------------------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        request = Request(environ)
        self.calls.arrived()
        try:
            response = self._respond(request)
        except Exception:  # a sandbox bug must still answer like a server, not kill the connection
            log.exception("HubSpot sandbox failed on %s %s", request.method, request.path)
            response = self._json(500, error_body("INTERNAL_ERROR", "internal error in the HubSpot sandbox"))
        finally:
            self.calls.answered()
        return response(environ, start_response)

    def _respond(self, request: Request) -> Response:
        adapter = URL_MAP.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except MethodNotAllowed:
            return self._json(405, error_body("VALIDATION_ERROR", f"{request.method} is not allowed here"))
        except NotFound:
            return self._json(
                404, error_body("OBJECT_NOT_FOUND", f"No route for {request.method} {request.path}")
            )
        object_type = args.get("object_type") or args.get("from_type") or ""
        label = LABELS[endpoint].format(t=object_type)
        self.calls.hit(label)

        if request.headers.get("Authorization", "") != f"Bearer {self.options.hubspot_access_token}":
            return self._limited(
                self._json(
                    401,
                    error_body(
                        "INVALID_AUTHENTICATION",
                        "Authentication credentials not found. This API supports OAuth 2.0 authentication, "
                        "and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                    ),
                )
            )

        # The fault registry is asked exactly once per authenticated request, so a seed replays the same faults.
        pause = self.faults.delay(label)
        if pause:
            time.sleep(pause)
        # A parked request has been taken whole: its body is read before parking, so a client killed while
        # it waits cannot leave half a batch (the parked request is applied on release, answered to no one).
        request.get_data(cache=True)
        self.faults.park(label)
        fault = self.faults.request_fault("hubspot", label)
        if fault == "quota" or self.daily.exhausted():
            return self._limited(self._rate_limited("DAILY", retry_after=None))
        if fault == "rate_limit":
            return self._limited(self._rate_limited("TEN_SECONDLY_ROLLING", retry_after=1))
        window = self.search_window if endpoint == "search" else self.burst
        allowed, _, retry_after = window.acquire()
        if not allowed:
            policy = "SECONDLY" if endpoint == "search" else "TEN_SECONDLY_ROLLING"
            return self._limited(self._rate_limited(policy, retry_after=retry_after))
        self.daily.spend()

        if fault == "server_error":
            # Alternate 502 and 503 so both reach the client's retry policy.
            self._server_errors += 1
            status = 502 if self._server_errors % 2 else 503
            reason = "Bad Gateway" if status == 502 else "Service Unavailable"
            return self._limited(
                self._json(status, error_body("INTERNAL_ERROR", f"{status} {reason}: try again"))
            )
        if fault == "expire_session":
            # A private-app token never really expires: the same token works again on the next request.
            return self._limited(
                self._json(
                    401,
                    error_body(
                        "EXPIRED_AUTHENTICATION",
                        "The OAuth token used to make this call expired 1 second(s) ago.",
                    ),
                )
            )

        handler: Callable = getattr(self, f"_h_{endpoint}")
        try:
            status, body = handler(request, **args)
        except HubSpotError as exc:
            status, body = exc.status, exc.body()
        response = self._limited(self._json(status, body))
        if fault == "drop":
            return _truncated(response)
        return response

    # -- responses ----------------------------------------------------------------------------------------
    def _json(self, status: int, body) -> Response:
        if body is None:
            return Response(status=status)
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        return Response(data, status=status, content_type="application/json;charset=utf-8")

    def _limited(self, response: Response) -> Response:
        """Add the rate-limit headers HubSpot sends with private-app responses."""
        response.headers["X-HubSpot-RateLimit-Max"] = str(self.burst.limit)
        response.headers["X-HubSpot-RateLimit-Remaining"] = str(self.burst.remaining())
        response.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] = str(int(self.burst.window_s * 1000))
        response.headers["X-HubSpot-RateLimit-Daily"] = str(self.daily.limit)
        response.headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(self.daily.remaining())
        return response

    def _rate_limited(self, policy: str, retry_after: int | None) -> Response:
        message = {
            "DAILY": "You have reached your daily limit.",
            "SECONDLY": "You have reached your secondly limit.",
        }.get(policy, "You have reached your ten_secondly_rolling limit.")
        body = error_body("RATE_LIMITS", message, errorType="RATE_LIMIT", policyName=policy)
        response = self._json(429, body)
        # No Retry-After on DAILY: waiting seconds will not help, and a transport retry honouring a
        # many-hour Retry-After would hang the client; the connector must stop instead.
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response

    # -- objects ------------------------------------------------------------------------------------------
    def _names(self, object_type: str, requested: list[str]) -> list[str]:
        return returned_names(object_type, requested, self.store.defs[object_type])

    def _history(self, object_type: str, requested: list[str]) -> list[str]:
        """The propertiesWithHistory names that exist (their columns must be selected too)."""
        defs = self.store.defs[object_type]
        return [n for n in dict.fromkeys(requested) if n in defs and not defs[n].archived]

    def _wire(self, object_type: str, row, names, *, history: list[str] = ()) -> dict:
        body = self.store.to_wire(object_type, row, names)
        if history:
            # The sandbox keeps no history: each property's history is its current value.
            hist = {}
            wire = self.store.to_wire(object_type, row, history)
            for name, value in wire["properties"].items():
                if value is not None:
                    hist[name] = [{"value": value, "timestamp": body["updatedAt"], "sourceType": "API"}]
            body["propertiesWithHistory"] = hist
        return body

    def _attach_associations(self, object_type: str, bodies: list[dict], wanted: list[str]) -> None:
        for to_type in dict.fromkeys(wanted):
            if to_type != OTHER[object_type]:
                continue  # the sandbox only knows deal-company associations; others have none
            found = self.store.associations(object_type, to_type, [int(b["id"]) for b in bodies])
            names = V3_TYPES[(object_type, to_type)]
            for body in bodies:
                targets = found[int(body["id"])]
                if targets:
                    results = [{"id": str(t), "type": n} for t in targets for n in names]
                    body.setdefault("associations", {})[to_type] = {"results": results}

    def _h_list(self, request: Request, object_type: str):
        limit = _parse_int(request.args.get("limit"), "limit", 10)
        if not 1 <= limit <= LIST_LIMIT:
            raise validation_error(f"limit must be between 1 and {LIST_LIMIT}, got {limit}")
        after_raw = request.args.get("after")
        after = _record_id(after_raw) if after_raw else 0
        if after is None:
            raise validation_error(f"after must be the paging token of a previous page, got {after_raw!r}")
        archived = _parse_bool(request.args.get("archived"), "archived")
        names = self._names(object_type, _multi(request, "properties"))
        history = self._history(object_type, _multi(request, "propertiesWithHistory"))
        rows = self.store.page(object_type, [*names, *history], after=after, limit=limit, archived=archived)
        results = [self._wire(object_type, r, names, history=history) for r in rows[:limit]]
        self._attach_associations(object_type, results, _multi(request, "associations"))
        body: dict = {"results": results}
        if len(rows) > limit:
            next_after = str(rows[limit]["id"])
            query = [(k, v) for k, v in request.args.items(multi=True) if k != "after"] + [
                ("after", next_after)
            ]
            link = f"{request.host_url}crm/v3/objects/{object_type}?{urlencode(query)}"
            body["paging"] = {"next": {"after": next_after, "link": link}}
        return 200, body

    def _find_one(self, request: Request, object_type: str, record_id: str, names) -> object:
        id_property = request.args.get("idProperty")
        archived = _parse_bool(request.args.get("archived"), "archived")
        rid = self._resolve_ids(object_type, [record_id], id_property)[0]
        row = self.store.fetch(object_type, [rid], names, archived=archived).get(rid) if rid else None
        if row is None:
            raise HubSpotError(
                404,
                "OBJECT_NOT_FOUND",
                "Object not found.  objectId are usually numeric.",
                context={"id": [str(record_id)]},
            )
        return row

    def _h_get(self, request: Request, object_type: str, record_id: str):
        names = self._names(object_type, _multi(request, "properties"))
        history = self._history(object_type, _multi(request, "propertiesWithHistory"))
        row = self._find_one(request, object_type, record_id, [*names, *history])
        body = self._wire(object_type, row, names, history=history)
        self._attach_associations(object_type, [body], _multi(request, "associations"))
        return 200, body

    def _h_update(self, request: Request, object_type: str, record_id: str):
        payload = _body(request)
        properties = payload.get("properties") if isinstance(payload, dict) else None
        if not isinstance(properties, dict):
            raise validation_error("The request needs a `properties` object")
        row = self._find_one(request, object_type, record_id, [])
        values, errors = self._validate(object_type, properties)
        if not errors:
            failure = self._record_fault(f"hs.{object_type}.update", object_type, str(row["id"]), values)
            if failure:
                status = 409 if failure["category"] == "CONFLICT" else 400
                raise HubSpotError(status, failure["category"], failure["message"], errors=failure["errors"])
        if errors:
            raise validation_error(_invalid_message(errors), errors=[_detail(e) for e in errors])
        self.store.update(object_type, [(row["id"], values)], now_ms())
        names = self._names(object_type, list(properties))
        fresh = self.store.fetch(object_type, [row["id"]], names, archived=False)[row["id"]]
        return 200, self.store.to_wire(object_type, fresh, names)

    def _h_archive(self, request: Request, object_type: str, record_id: str):
        # HubSpot answers 204 whether or not the record existed.
        rid = _record_id(record_id)
        if rid is not None:
            self.store.archive(object_type, rid, now_ms())
        return 204, None

    def _resolve_ids(self, object_type: str, raw_ids: list, id_property: str | None) -> list[int | None]:
        """Input ids as record ids (None where there is no such record), by id or by a unique property."""
        if not id_property or id_property == "hs_object_id":
            return [_record_id(r) for r in raw_ids]
        defn = self.store.defs[object_type].get(id_property)
        if defn is None or not defn.has_unique_value:
            raise validation_error(f"idProperty {id_property!r} is not a property with unique values")
        found: dict[str, int] = {}
        with self.db.reading() as conn:
            for raw in raw_ids:
                row = conn.execute(
                    f'SELECT id FROM hs_{object_type} WHERE "p_{defn.name}" = ? AND archived = 0', (str(raw),)
                ).fetchone()
                if row:
                    found[str(raw)] = row[0]
        return [found.get(str(r)) for r in raw_ids]

    def _batch_inputs(self, payload) -> list[dict]:
        inputs = payload.get("inputs") if isinstance(payload, dict) else None
        if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
            raise validation_error("The request needs `inputs`: a list of objects")
        if len(inputs) > BATCH_LIMIT:
            raise validation_error(
                f"Batch input exceeds the limit of {BATCH_LIMIT} inputs (got {len(inputs)})",
                context={"inputs": [str(len(inputs))]},
            )
        return inputs

    def _h_batch_read(self, request: Request, object_type: str):
        payload = _body(request)
        inputs = self._batch_inputs(payload)
        archived = _parse_bool(request.args.get("archived"), "archived")
        names = self._names(object_type, [str(p) for p in payload.get("properties") or []])
        history = self._history(object_type, [str(p) for p in payload.get("propertiesWithHistory") or []])
        raw_ids = [str(i.get("id", "")) for i in inputs]
        ids = self._resolve_ids(object_type, raw_ids, payload.get("idProperty"))
        found = [i for i in ids if i is not None]
        rows = self.store.fetch(object_type, found, [*names, *history], archived=archived)
        results, missing, seen = [], [], set()
        for raw, rid in zip(raw_ids, ids, strict=True):
            if rid in rows:
                if rid not in seen:
                    seen.add(rid)
                    results.append(self._wire(object_type, rows[rid], names, history=history))
            else:
                missing.append(raw)
        errors = []
        if missing:
            errors.append(
                batch_error(
                    "OBJECT_NOT_FOUND",
                    f"Could not get some {SINGULAR[object_type]} objects, they may be deleted or not exist. "
                    "Check that ids are valid.",
                    missing,
                )
            )
        return _batch_response(results, errors)

    def _h_batch_update(self, request: Request, object_type: str):
        payload = _body(request)
        inputs = self._batch_inputs(payload)
        if not inputs:
            raise validation_error("inputs must not be empty")
        raw_ids = []
        for n, item in enumerate(inputs):
            if item.get("id") in (None, ""):
                raise validation_error(f"inputs[{n}].id is required")
            if not isinstance(item.get("properties"), dict):
                raise validation_error(f"inputs[{n}].properties must be an object")
            raw_ids.append(str(item["id"]))
        duplicates = sorted({r for r in raw_ids if raw_ids.count(r) > 1})
        if duplicates:
            raise validation_error(f"Duplicate IDs found in batch input: {duplicates}. IDs must be unique")
        ids = self._resolve_ids(object_type, raw_ids, payload.get("idProperty"))
        live = self.store.fetch(object_type, [i for i in ids if i is not None], [], archived=False)

        errors, changes, missing = [], [], []
        for item, raw, rid in zip(inputs, raw_ids, ids, strict=True):
            if rid not in live:
                missing.append(raw)
                continue
            values, problems = self._validate(object_type, item["properties"])
            if problems:
                errors.append(
                    batch_error(
                        "VALIDATION_ERROR", _invalid_message(problems), [raw], [_detail(e) for e in problems]
                    )
                )
                continue
            failure = self._record_fault(f"hs.{object_type}.batch.update", object_type, raw, values)
            if failure:
                errors.append(failure)
                continue
            changes.append((rid, values))
        if missing:
            errors.insert(
                0,
                batch_error(
                    "OBJECT_NOT_FOUND",
                    f"Could not update some {SINGULAR[object_type]} objects, they may be deleted or not exist. "
                    "Check that ids are valid.",
                    missing,
                ),
            )
        results = []
        if changes:
            self.store.update(object_type, changes, now_ms())
            changed = [rid for rid, _ in changes]
            written = {name for _, values in changes for name in values}
            names = self._names(object_type, sorted(written))
            rows = self.store.fetch(object_type, changed, names, archived=False)
            for rid, values in changes:
                body = self.store.to_wire(object_type, rows[rid], names)
                body["properties"] = {
                    k: v for k, v in body["properties"].items() if k in values or k in ALWAYS_RETURNED
                }
                results.append(body)
        return _batch_response(results, errors)

    def _validate(self, object_type: str, properties: dict) -> tuple[dict, list[PropertyError]]:
        """Written values as stored values, or every problem with them (HubSpot reports all at once)."""
        defs = self.store.defs[object_type]
        values: dict = {}
        errors: list[PropertyError] = []
        for name, raw in properties.items():
            defn = defs.get(name)
            if defn is None or defn.archived:
                errors.append(
                    PropertyError("PROPERTY_DOESNT_EXIST", name, f'Property "{name}" does not exist')
                )
                continue
            if defn.read_only_value:
                errors.append(
                    PropertyError(
                        "READ_ONLY_VALUE", name, f'Property "{name}" is read-only and cannot be set'
                    )
                )
                continue
            value, error = coerce(defn, raw)
            if error is None and value is None and name in VIRTUAL_COLUMNS:
                error = PropertyError("INVALID_DATETIME", name, f'Property "{name}" cannot be cleared')
            if error:
                errors.append(error)
            else:
                values[name] = value
        if object_type == "deals" and "dealstage" in values:
            # HubSpot calculates these from the stage; keep them in step as it does.
            stage = values["dealstage"]
            values["hs_is_closed_won"] = "true" if stage in WON_STAGES else "false"
            values["hs_is_closed"] = "true" if stage in CLOSED_STAGES else "false"
        return values, errors

    def _record_fault(self, label: str, object_type: str, raw_id: str, values: dict) -> dict | None:
        """An injected per-record failure as HubSpot would report it in a 207, or None."""
        kind = self.faults.record_fault(label)
        if kind is None:
            return None
        if kind == "record_lock":
            return batch_error(
                "CONFLICT",
                f"{SINGULAR[object_type]} {raw_id} is locked by another update in progress; retry later.",
                [raw_id],
                [{"message": "record is locked by a concurrent update", "code": "CONFLICT"}],
            )
        if kind == "picklist":
            defs = self.store.defs[object_type]
            name = next((n for n in values if defs[n].type == "enumeration"), next(iter(values), "property"))
            problem = PropertyError(
                "INVALID_OPTION",
                name,
                f"{values.get(name)!r} was not one of the allowed options for {name!r}",
            )
        else:
            name = next(iter(values), "property")
            problem = PropertyError(
                "INVALID_PROPERTY_VALUE", name, f'Property "{name}" failed the portal\'s validation rule'
            )
        return batch_error("VALIDATION_ERROR", _invalid_message([problem]), [raw_id], [_detail(problem)])

    def _h_search(self, request: Request, object_type: str):
        query = compile_search(object_type, _body(request), self.store.defs[object_type])
        total, rows = self.store.search(
            object_type,
            query.names,
            query.where,
            query.params,
            query.order,
            limit=query.limit,
            offset=query.offset,
        )
        body: dict = {
            "total": total,
            "results": [self.store.to_wire(object_type, r, query.names) for r in rows],
        }
        end = query.offset + len(rows)
        if rows and end < total:
            body["paging"] = {"next": {"after": str(end)}}
        return 200, body

    # -- associations -------------------------------------------------------------------------------------
    def _assoc_inputs(self, payload, limit: int) -> list[str]:
        inputs = payload.get("inputs") if isinstance(payload, dict) else None
        if not isinstance(inputs, list) or not all(isinstance(i, dict) and "id" in i for i in inputs):
            raise validation_error("The request needs `inputs`: a list of {id}")
        if len(inputs) > limit:
            raise validation_error(f"Batch input exceeds the limit of {limit} inputs (got {len(inputs)})")
        return [str(i["id"]) for i in inputs]

    def _h_assoc_page(self, request: Request, from_type: str, record_id: str, to_type: str):
        limit = _parse_int(request.args.get("limit"), "limit", ASSOCIATION_PAGE_LIMIT)
        if not 1 <= limit <= ASSOCIATION_PAGE_LIMIT:
            raise validation_error(f"limit must be between 1 and {ASSOCIATION_PAGE_LIMIT}")
        offset = _parse_int(request.args.get("after"), "after", 0)
        rid = _record_id(record_id)
        targets = (
            self.store.associations(from_type, to_type, [rid])[rid] if rid and from_type != to_type else []
        )
        page = targets[offset : offset + limit]
        body: dict = {
            "results": [
                {"toObjectId": t, "associationTypes": [dict(a) for a in V4_TYPES[(from_type, to_type)]]}
                for t in page
            ]
        }
        if offset + limit < len(targets):
            body["paging"] = {"next": {"after": str(offset + limit)}}
        return 200, body

    def _assoc_batch(self, request: Request, from_type: str, to_type: str, limit: int, shape: Callable):
        raw_ids = self._assoc_inputs(_body(request), limit)
        ids = [_record_id(r) for r in raw_ids]
        found = (
            self.store.associations(from_type, to_type, [i for i in ids if i]) if from_type != to_type else {}
        )
        results, errors = [], []
        for raw, rid in zip(raw_ids, ids, strict=True):
            targets = found.get(rid) or []
            if targets:
                results.append({"from": {"id": raw}, "to": [shape(t) for t in targets]})
            else:
                errors.append(
                    batch_error(
                        "OBJECT_NOT_FOUND",
                        f"No {SINGULAR[to_type].lower()} is associated with {SINGULAR[from_type].lower()} {raw}.",
                        [raw],
                        subCategory="crm.associations.NO_ASSOCIATIONS_FOUND",
                    )
                )
        return _batch_response(results, errors)

    def _h_assoc_batch_v4(self, request: Request, from_type: str, to_type: str):
        types = V4_TYPES.get((from_type, to_type), [])
        return self._assoc_batch(
            request,
            from_type,
            to_type,
            ASSOCIATION_BATCH_LIMIT,
            lambda t: {"toObjectId": t, "associationTypes": [dict(a) for a in types]},
        )

    def _h_assoc_batch_v3(self, request: Request, from_type: str, to_type: str):
        names = V3_TYPES.get((from_type, to_type), ("",))
        return self._assoc_batch(
            request, from_type, to_type, BATCH_LIMIT, lambda t: {"id": str(t), "type": names[0]}
        )

    # -- properties and groups ----------------------------------------------------------------------------
    def _def(self, object_type: str, name: str, *, archived: bool = False) -> PropertyDef:
        defn = self.store.defs[object_type].get(name)
        if defn is None or defn.archived != archived:
            raise HubSpotError(
                404,
                "OBJECT_NOT_FOUND",
                f"Unable to find property with name '{name}' for object type {object_type}",
                context={"propertyName": [name]},
            )
        return defn

    def _h_props_list(self, request: Request, object_type: str):
        archived = _parse_bool(request.args.get("archived"), "archived")
        defs = [d for d in self.store.defs[object_type].values() if d.archived == archived]
        defs.sort(key=lambda d: (d.group_name, d.display_order, d.name))
        return 200, {"results": [d.to_wire() for d in defs]}

    def _h_props_get(self, request: Request, object_type: str, name: str):
        archived = _parse_bool(request.args.get("archived"), "archived")
        return 200, self._def(object_type, name, archived=archived).to_wire()

    def _h_props_create(self, request: Request, object_type: str):
        payload = _body(request)
        if not isinstance(payload, dict):
            raise validation_error("The request body must be a property definition object")
        missing = [k for k in ("name", "label", "type", "fieldType", "groupName") if not payload.get(k)]
        if missing:
            raise validation_error(f"Missing required fields: {', '.join(missing)}")
        name = str(payload["name"])
        if not NAME_RE.match(name):
            raise validation_error(
                f"Property name {name!r} is invalid: use lower-case letters, digits and underscores, "
                "starting with a letter"
            )
        if name.startswith("hs_"):
            raise validation_error(
                f"Property name {name!r} is invalid: the hs_ prefix is reserved for HubSpot"
            )
        if name in self.store.defs[object_type]:
            raise HubSpotError(
                409,
                "OBJECT_ALREADY_EXISTS",
                f"Property named '{name}' already exists.",
                subCategory="PropertyCrudError.PROPERTY_EXISTS",
                context={"name": [name]},
            )
        now = now_ms()
        defn = PropertyDef(
            name=name,
            label=str(payload["label"]),
            type=str(payload["type"]),
            field_type=str(payload["fieldType"]),
            group_name=str(payload["groupName"]),
            description=str(payload.get("description") or ""),
            display_order=int(payload.get("displayOrder", -1)),
            has_unique_value=bool(payload.get("hasUniqueValue", False)),
            hidden=bool(payload.get("hidden", False)),
            form_field=bool(payload.get("formField", False)),
            external_options=bool(payload.get("externalOptions", False)),
            calculation_formula=payload.get("calculationFormula"),
            created_ms=now,
            updated_ms=now,
        )
        defn.options = self._options(defn, payload.get("options"))
        self._check_definition(object_type, defn)
        self.store.add_property(object_type, defn)
        return 201, defn.to_wire()

    def _h_props_update(self, request: Request, object_type: str, name: str):
        payload = _body(request)
        if not isinstance(payload, dict):
            raise validation_error("The request body must be an object of property fields to change")
        current = self._def(object_type, name)
        allowed = {"label", "description", "groupName", "options", "displayOrder", "hidden", "formField"}
        allowed |= {"type", "fieldType", "calculationFormula"}
        unknown = sorted(set(payload) - allowed)
        if unknown:
            raise validation_error(f"Unknown fields in property update: {', '.join(unknown)}")
        if current.read_only_definition:
            changing = {k for k in payload if k != "options"}
            if changing or current.read_only_options:
                raise validation_error(
                    f"Property '{name}' is defined by HubSpot; only its options can be changed"
                    + (" (and not even those)" if current.read_only_options else ""),
                    subCategory="READ_ONLY_DEFINITION",
                )
        updated = replace(
            current,
            label=str(payload.get("label", current.label)),
            description=str(payload.get("description", current.description)),
            group_name=str(payload.get("groupName", current.group_name)),
            display_order=int(payload.get("displayOrder", current.display_order)),
            hidden=bool(payload.get("hidden", current.hidden)),
            form_field=bool(payload.get("formField", current.form_field)),
            type=str(payload.get("type", current.type)),
            field_type=str(payload.get("fieldType", current.field_type)),
            calculation_formula=payload.get("calculationFormula", current.calculation_formula),
            updated_ms=now_ms(),
        )
        if updated.type != current.type and {updated.type, current.type} - {"string", "enumeration", "bool"}:
            raise validation_error(
                f"Cannot change property '{name}' from {current.type} to {updated.type}: "
                "the sandbox converts only between string, enumeration and bool"
            )
        # As on HubSpot, `options` replaces the whole list; leaving it out keeps the current options.
        if "options" in payload:
            updated.options = self._options(updated, payload["options"])
        elif updated.type != "enumeration" and updated.type != "bool":
            updated.options = []
        self._check_definition(object_type, updated)
        self.store.save_property(object_type, updated)
        return 200, updated.to_wire()

    def _h_props_archive(self, request: Request, object_type: str, name: str):
        current = self._def(object_type, name)
        if current.hubspot_defined or not current.archivable:
            raise validation_error(f"Property '{name}' is defined by HubSpot and cannot be archived")
        now = now_ms()
        self.store.save_property(
            object_type, replace(current, archived=True, archived_ms=now, updated_ms=now)
        )
        return 204, None

    def _options(self, defn: PropertyDef, raw) -> list[dict]:
        if raw is None:
            return [dict(o) for o in BOOL_OPTIONS] if defn.type == "bool" else []
        if not isinstance(raw, list):
            raise validation_error("options must be a list of {label, value}")
        options, seen = [], set()
        for i, item in enumerate(raw):
            if (
                not isinstance(item, dict)
                or item.get("label") in (None, "")
                or item.get("value") in (None, "")
            ):
                raise validation_error(f"options[{i}] needs a label and a value")
            value = str(item["value"])
            if value in seen:
                raise validation_error(f"options[{i}]: duplicate option value {value!r}")
            seen.add(value)
            opt = option(
                value,
                str(item["label"]),
                int(item.get("displayOrder", i) if item.get("displayOrder") is not None else i),
                description=str(item.get("description") or ""),
            )
            opt["hidden"] = bool(item.get("hidden", False))
            options.append(opt)
        return options

    def _check_definition(self, object_type: str, defn: PropertyDef) -> None:
        if defn.type not in PROPERTY_TYPES:
            raise validation_error(f"type must be one of {', '.join(PROPERTY_TYPES)}, got {defn.type!r}")
        if defn.field_type not in FIELD_TYPES[defn.type]:
            raise validation_error(
                f"fieldType {defn.field_type!r} does not fit type {defn.type!r}; "
                f"use one of {', '.join(sorted(FIELD_TYPES[defn.type]))}"
            )
        if defn.options and defn.type not in ("enumeration", "bool"):
            raise validation_error(f"options are only for enumeration and bool properties, not {defn.type}")
        if defn.has_unique_value and defn.type != "string":
            raise validation_error("hasUniqueValue is only allowed on string properties")
        if self.store.group(object_type, defn.group_name) is None:
            raise validation_error(f"Property group {defn.group_name!r} does not exist for {object_type}")

    def _h_groups_list(self, request: Request, object_type: str):
        return 200, {"results": self.store.groups(object_type)}

    def _group(self, object_type: str, name: str) -> dict:
        group = self.store.group(object_type, name)
        if group is None:
            raise HubSpotError(
                404,
                "OBJECT_NOT_FOUND",
                f"Unable to find property group '{name}' for object type {object_type}",
            )
        return group

    def _h_groups_get(self, request: Request, object_type: str, name: str):
        return 200, self._group(object_type, name)

    def _h_groups_create(self, request: Request, object_type: str):
        payload = _body(request)
        if not isinstance(payload, dict) or not payload.get("name") or not payload.get("label"):
            raise validation_error("A property group needs a name and a label")
        name = str(payload["name"])
        if not _GROUP_NAME_RE.match(name):
            raise validation_error(
                f"Group name {name!r} is invalid: use lower-case letters, digits and underscores"
            )
        if self.store.group(object_type, name) is not None:
            raise HubSpotError(
                409,
                "OBJECT_ALREADY_EXISTS",
                f"Property group named '{name}' already exists.",
                subCategory="PropertyGroupError.GROUP_EXISTS",
            )
        order = int(payload.get("displayOrder", -1))
        self.store.save_group(object_type, name, str(payload["label"]), order, create=True)
        return 201, self._group(object_type, name)

    def _h_groups_update(self, request: Request, object_type: str, name: str):
        payload = _body(request)
        if not isinstance(payload, dict):
            raise validation_error("The request body must be an object")
        group = self._group(object_type, name)
        label = str(payload.get("label", group["label"]))
        order = int(payload.get("displayOrder", group["displayOrder"]))
        self.store.save_group(object_type, name, label, order, create=False)
        return 200, self._group(object_type, name)


def _body(request: Request):
    data = request.get_data()
    if not data:
        return {}
    try:
        return json.loads(data)
    except ValueError as exc:
        raise validation_error(f"Invalid input JSON: {exc}") from None


def _detail(error: PropertyError) -> dict:
    """One ErrorDetail of a HubSpot error's `errors` list."""
    return {"message": error.message, "code": error.code, "context": {"propertyName": [error.name]}}


def _invalid_message(errors: list[PropertyError]) -> str:
    """HubSpot's "Property values were not valid: [...]" message, with the per-property JSON it embeds."""
    items = [
        {
            "isValid": False,
            "message": e.message,
            "error": e.code,
            "name": e.name,
            "localizedErrorMessage": e.message,
        }
        for e in errors
    ]
    return "Property values were not valid: " + json.dumps(items, separators=(",", ":"))


def _batch_response(results: list[dict], errors: list[dict]) -> tuple[int, dict]:
    stamp = iso_ms(now_ms())
    body: dict = {"status": "COMPLETE", "results": results, "requestedAt": stamp, "startedAt": stamp}
    body["completedAt"] = iso_ms(now_ms())
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = errors
        return 207, body
    return 200, body


def _truncated(response: Response) -> Response:
    """The `drop` fault: promise the whole body, send half, and let the server close the connection."""
    data = response.get_data()
    cut = Response(
        [data[: len(data) // 2]], status=response.status_code, headers=list(response.headers.items())
    )
    cut.headers["Content-Length"] = str(len(data))
    return cut


__all__ = ["HubSpotApp", "OBJECT_TYPES"]
