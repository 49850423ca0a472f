"""The sandbox's REST API handlers: SOQL query with paging, describe, single-record and sObject Collections
updates, limits. Routing, authentication, faults and usage counting happen in `app.py` before these run.

A query runs once: the matching rows' rowids are kept as the result's snapshot (like Salesforce's server-side
query locator), and every page, first or `nextRecordsUrl`, reads the current field values of its slice.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
from werkzeug.wrappers import Request, Response

from sandbox.salesforce.fields import Field
from sandbox.salesforce.ids import KEY_PREFIXES, make_id, normalize_id
from sandbox.salesforce.responses import ApiError, json_response, not_found, read_json
from sandbox.salesforce.soql import Compiled, SoqlError, compile_query, parse
from sandbox.salesforce.store import API_USER_ID, SObjectType, Store, WriteItem

MAX_COLLECTION = 200
LOCATOR_TTL_S = 15 * 60  # Salesforce drops a query cursor after 15 minutes without use
MAX_OPEN_LOCATORS = 10  # Salesforce keeps at most 10 open query cursors per user; the oldest goes first


@dataclass
class QueryCursor:
    locator: str
    sobject: SObjectType
    fields: list[Field]
    rowids: np.ndarray
    batch_size: int
    touched: float = field(default_factory=time.monotonic)


class RestApi:
    def __init__(self, store: Store, options) -> None:
        self.store = store
        self.options = options
        self._cursors: dict[str, QueryCursor] = {}
        self._lock = threading.Lock()
        self._locator_seq = 0

    # -- query --------------------------------------------------------------------------------------------
    def compile(self, soql: str) -> Compiled:
        try:
            return compile_query(parse(soql), self.store.type)
        except SoqlError as exc:
            raise ApiError(400, exc.code, exc.message) from None

    def query(self, request: Request, version: str, include_deleted: bool) -> Response:
        soql = request.args.get("q")
        if soql is None:
            raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        compiled = self.compile(soql)
        table = compiled.sobject.table
        sql, params = compiled.rowid_sql(table, include_deleted)
        if compiled.count == "rows":
            total = self.store.count(f"SELECT COUNT(*) FROM ({sql})", params)
            return json_response({"totalSize": total, "done": True, "records": []})
        if compiled.count == "field":
            column = compiled.count_field.name
            total = self.store.count(
                f'SELECT COUNT(t."{column}") FROM {table} AS t WHERE t._row IN ({sql})', params
            )
            record = {"attributes": {"type": "AggregateResult"}, "expr0": total}
            return json_response({"totalSize": 1, "done": True, "records": [record]})
        rowids = self.store.rowids(sql, params)
        cursor = QueryCursor("", compiled.sobject, compiled.fields, rowids, self._batch_size(request))
        return json_response(self._page(cursor, 0, version, "queryAll" if include_deleted else "query"))

    def query_more(self, version: str, locator: str, include_deleted: bool) -> Response:
        cursor_id, _, start = locator.rpartition("-")
        with self._lock:
            self._expire()
            cursor = self._cursors.get(cursor_id)
            if cursor is not None:
                cursor.touched = time.monotonic()
        if cursor is None or not start.isdigit() or int(start) > len(cursor.rowids):
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return json_response(
            self._page(cursor, int(start), version, "queryAll" if include_deleted else "query")
        )

    def _batch_size(self, request: Request) -> int:
        # Sforce-Query-Options: batchSize=N is honoured within Salesforce's 200-2000 range.
        options = request.headers.get("Sforce-Query-Options", "")
        for part in options.split(","):
            key, _, value = part.strip().partition("=")
            if key.strip() == "batchSize" and value.strip().isdigit():
                return max(200, min(2000, int(value)))
        return self.options.page_size

    def _page(self, cursor: QueryCursor, start: int, version: str, endpoint: str) -> dict:
        end = min(start + cursor.batch_size, len(cursor.rowids))
        records = self.render(cursor.sobject, cursor.fields, cursor.rowids[start:end], version)
        body: dict = {"totalSize": len(cursor.rowids), "done": end >= len(cursor.rowids)}
        if not body["done"]:
            if not cursor.locator:
                self._register(cursor)
            body["nextRecordsUrl"] = f"/services/data/v{version}/{endpoint}/{cursor.locator}-{end}"
        elif cursor.locator:
            with self._lock:
                self._cursors.pop(cursor.locator, None)
        body["records"] = records
        return body

    def _register(self, cursor: QueryCursor) -> None:
        with self._lock:
            self._expire()
            self._locator_seq += 1
            cursor.locator = make_id(KEY_PREFIXES["QueryLocator"], self._locator_seq)
            self._cursors[cursor.locator] = cursor
            while len(self._cursors) > MAX_OPEN_LOCATORS:
                # The oldest open cursor goes first, as on Salesforce.
                self._cursors.pop(next(iter(self._cursors)))

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, c in self._cursors.items() if now - c.touched > LOCATOR_TTL_S]:
            del self._cursors[key]

    def render(self, sobject: SObjectType, fields: list[Field], rowids, version: str) -> list[dict]:
        if len(rowids) == 0:
            return []
        expressions = ['t."Id"'] + [f't."{f.name}"' for f in fields]
        rows = self.store.fetch(sobject.name, rowids, expressions)
        url = f"/services/data/v{version}/sobjects/{sobject.name}/"
        names = [f.name for f in fields]
        booleans = [i for i, f in enumerate(fields, start=1) if f.type == "boolean"]
        out = []
        for row in rows:
            record = {"attributes": {"type": sobject.name, "url": url + row[0]}}
            values = list(row)
            for i in booleans:
                if values[i] is not None:
                    values[i] = bool(values[i])
            record.update(zip(names, values[1:], strict=True))
            out.append(record)
        return out

    # -- describe -----------------------------------------------------------------------------------------
    def describe_global(self, version: str) -> Response:
        return json_response(
            {
                "encoding": "UTF-8",
                "maxBatchSize": 200,
                "sobjects": [t.global_entry(version) for t in self.store.types.values()],
            }
        )

    def sobject_type(self, name: str) -> SObjectType:
        sobject = self.store.type(name)
        if sobject is None:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return sobject

    def describe(self, version: str, name: str) -> Response:
        return json_response(self.sobject_type(name).describe(version))

    def sobject_info(self, version: str, name: str) -> Response:
        sobject = self.sobject_type(name)
        return json_response({"objectDescribe": sobject.global_entry(version), "recentItems": []})

    # -- single records -----------------------------------------------------------------------------------
    def _live_record(self, name: str, record_id: str):
        """(sobject type, normalised id, record) of an existing, undeleted record, else the vendor's 404."""
        sobject = self.sobject_type(name)
        normalized = normalize_id(record_id)
        if normalized is None or not normalized.startswith(sobject.key_prefix):
            raise not_found()
        record = self.store.record(sobject.name, normalized)
        if record is None:
            raise not_found()
        if record["IsDeleted"]:
            raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted", [])
        return sobject, normalized, record

    def get_record(self, version: str, name: str, record_id: str, fields_param: str | None) -> Response:
        sobject, normalized, record = self._live_record(name, record_id)
        if fields_param:
            wanted = [sobject.field(n.strip()) for n in fields_param.split(",")]
            if any(f is None for f in wanted):
                raise ApiError(400, "INVALID_FIELD", f"No such column on sobject of type {sobject.name}")
            record = {f.name: record[f.name] for f in wanted}
        url = f"/services/data/v{version}/sobjects/{sobject.name}/{normalized}"
        return json_response({"attributes": {"type": sobject.name, "url": url}, **record})

    def patch_record(self, request: Request, name: str, record_id: str, faults) -> Response:
        sobject = self.sobject_type(name)
        body = read_json(request)
        if not isinstance(body, dict):
            raise ApiError(
                400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from the request body"
            )
        values = {k: v for k, v in body.items() if k != "attributes"}
        normalized = normalize_id(record_id)
        if normalized is None:
            raise ApiError(
                400, "MALFORMED_ID", f"{sobject.label} ID: id value of incorrect type: {record_id}", ["Id"]
            )
        [result] = self.store.update(
            sobject.name,
            [WriteItem(sobject.name, normalized, values)],
            user_id=self._user(),
            faults=faults,
            fault_label="sf.sobject.patch",
        )
        if result.success:
            return Response(status=204)
        first = result.errors[0]["statusCode"]
        if (
            first in ("INVALID_CROSS_REFERENCE_KEY",)
            and result.errors[0]["message"] == "invalid cross reference id"
        ):
            raise not_found()
        status = 404 if first == "ENTITY_IS_DELETED" else 400
        return json_response(
            [
                {"message": e["message"], "errorCode": e["statusCode"], "fields": e["fields"]}
                for e in result.errors
            ],
            status,
        )

    def delete_record(self, name: str, record_id: str) -> Response:
        sobject, normalized, _ = self._live_record(name, record_id)
        self.store.delete(sobject.name, normalized, self._user())
        return Response(status=204)

    # -- sObject Collections ------------------------------------------------------------------------------
    def composite_update(self, request: Request, faults) -> Response:
        body = read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise ApiError(
                400, "JSON_PARSER_ERROR", "The request body must be an object with a records array"
            )
        records = body["records"]
        all_or_none = body.get("allOrNone", False)
        if not isinstance(all_or_none, bool):
            raise ApiError(400, "JSON_PARSER_ERROR", "allOrNone must be true or false")
        if len(records) > MAX_COLLECTION:
            raise ApiError(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {MAX_COLLECTION} records into this call",
            )
        if not records:
            raise ApiError(400, "INVALID_FIELD", "No records to process")
        items = []
        for record in records:
            if not isinstance(record, dict):
                raise ApiError(400, "JSON_PARSER_ERROR", "Each record must be a JSON object")
            attributes = record.get("attributes")
            sobject = attributes.get("type") if isinstance(attributes, dict) else None
            record_id = next((v for k, v in record.items() if k.lower() == "id"), None)
            values = {k: v for k, v in record.items() if k != "attributes" and k.lower() != "id"}
            items.append(WriteItem(sobject, record_id, values))
        results = self.store.update(
            None,
            items,
            user_id=self._user(),
            all_or_none=all_or_none,
            faults=faults,
            fault_label="sf.composite.sobjects",
        )
        out = []
        for result in results:
            entry: dict = {}
            if result.id is not None:
                entry["id"] = result.id
            entry["success"] = result.success
            entry["errors"] = result.errors
            out.append(entry)
        return json_response(out)

    @staticmethod
    def _user() -> str:
        return API_USER_ID

    # -- org information ----------------------------------------------------------------------------------
    @staticmethod
    def limits(used: int, limit: int) -> Response:
        def pair(maximum: int, remaining: int) -> dict:
            return {"Max": maximum, "Remaining": remaining}

        return json_response(
            {
                "DailyApiRequests": pair(limit, max(0, limit - used)),
                "DailyBulkApiBatches": pair(15000, 15000),
                "DailyBulkV2QueryFileStorageMB": pair(976562, 976562),
                "DailyBulkV2QueryJobs": pair(10000, 10000),
                "DataStorageMB": pair(1024, 1024),
                "FileStorageMB": pair(1024, 1024),
                "SingleEmail": pair(5000, 5000),
            }
        )

    @staticmethod
    def versions(base_url: str) -> Response:
        return json_response(
            [
                {"label": f"Release {v}", "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
                for v in range(55, 63)
            ]
        )

    @staticmethod
    def resources(version: str) -> Response:
        base = f"/services/data/v{version}"
        return json_response(
            {
                "sobjects": f"{base}/sobjects",
                "query": f"{base}/query",
                "queryAll": f"{base}/queryAll",
                "limits": f"{base}/limits",
                "composite": f"{base}/composite",
                "jobs": f"{base}/jobs",
            }
        )
