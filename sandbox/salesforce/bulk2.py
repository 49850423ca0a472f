"""Bulk API 2.0 for the sandbox: ingest jobs (update) and query jobs, with CSV in and out.

Ingest jobs run asynchronously, as on Salesforce: when the client marks a job UploadComplete, a background
thread takes it to InProgress and processes its rows 200 at a time (one transaction each), then JobComplete
(or Failed, when the upload cannot be read). A client polls the job meanwhile, and a job goes on running after
its client died. Aborting a job (PATCH state Aborted) stops it before its next chunk; the rows it had not
reached are its `unprocessedRecords`. Before each chunk the thread asks the shared `Faults` under the label
`sf.bulk2.ingest.chunk`: `slow` delays the chunk, `hold` parks it until `release()`, so a test can keep a job
in flight and act at a known point. `Sandbox.stop` ends the threads before their next chunk.

A query job takes its result snapshot when created. Jobs live in memory only: a restarted sandbox forgets
them, as it forgets query cursors.

Result pages are streamed in chunks from SQLite through the csv module, so a 1,000,000-row query never
holds more than one chunk of rendered CSV.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from werkzeug.wrappers import Request, Response

from sandbox.salesforce.fields import format_ms
from sandbox.salesforce.ids import KEY_PREFIXES, make_id
from sandbox.salesforce.responses import ApiError, json_response, read_json
from sandbox.salesforce.soql import Compiled
from sandbox.salesforce.store import API_USER_ID, Store, WriteItem

DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^", "BACKQUOTE": "`"}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
INGEST_CHUNK = 200  # Salesforce processes an ingest job's records in chunks of 200, one transaction each
CHUNK_LABEL = "sf.bulk2.ingest.chunk"  # what `Faults.delay` / `Faults.park` are asked before each chunk
RESULT_CHUNK = 5000  # rows rendered per streamed piece of a query result page
DEFAULT_MAX_RECORDS = 50000
MAX_JOBS = 50  # jobs kept (with their results); older ones are forgotten, as Salesforce purges old jobs
# One upload's CSV, in bytes as received: Salesforce takes 150 MB once base64-encoded, i.e. 100 MB raw; this
# is simple-salesforce's own check (`MAX_INGEST_JOB_FILE_SIZE` = 100 MiB, which it applies before sending).
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
# What the sandbox answers to a bigger upload (400 and this errorCode). Salesforce's own answer is not
# documented anywhere we found; this one is explicit so a client that cuts its uploads wrongly fails a test.
UPLOAD_TOO_LARGE = "EXCEEDED_MAX_SIZE_REQUEST"
CSV_TYPE = "text/csv; charset=UTF-8"
FINAL_STATES = ("JobComplete", "Aborted", "Failed")
ABORTABLE_STATES = ("Open", "UploadComplete", "InProgress")


@dataclass
class Job:
    id: str
    operation: str
    object: str
    version: str
    line_ending: str
    column_delimiter: str
    created: str
    state: str
    shown_state: str  # what a query job reports now (a new one shows UploadComplete until the next GET)
    kind: str  # "ingest" or "query"
    error_message: str | None = None
    started: float = field(default_factory=time.monotonic)
    processing_ms: int = 0
    # ingest: `changed` guards every field below once the job is closed (its thread and the requests share it)
    changed: threading.Condition = field(default_factory=threading.Condition, repr=False)
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] | None = None
    uploaded_bytes: int = 0  # the size of the upload's body
    reached: int = 0  # rows the processing thread has gone through (processed, or failed as unreadable)
    successes: list[tuple[str, list[str]]] = field(default_factory=list)
    failures: list[tuple[str, str, list[str]]] = field(default_factory=list)
    unprocessed: list[list[str]] = field(default_factory=list)
    # query
    query: str = ""
    compiled: Compiled | None = None
    rowids: np.ndarray | None = None

    def info(self) -> dict:
        data = {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": API_USER_ID,
            "createdDate": self.created,
            "systemModstamp": self.created,
            "state": self.shown_state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.version),
            "lineEnding": self.line_ending,
            "columnDelimiter": self.column_delimiter,
        }
        if self.kind == "ingest":
            data["jobType"] = "V2Ingest"
            data["contentUrl"] = f"services/data/v{self.version}/jobs/ingest/{self.id}/batches"
            data["numberRecordsProcessed"] = len(self.successes) + len(self.failures)
            data["numberRecordsFailed"] = len(self.failures)
        else:
            data["jobType"] = "V2Query"
            data["numberRecordsProcessed"] = 0 if self.rowids is None else len(self.rowids)
        data.update(
            retries=0, totalProcessingTime=self.processing_ms, apiActiveProcessingTime=self.processing_ms
        )
        if self.error_message:
            data["errorMessage"] = self.error_message
        return data


class Bulk2:
    def __init__(self, store: Store, compile_soql, *, upload_limit: int = MAX_UPLOAD_BYTES) -> None:
        self.store = store
        self.compile = compile_soql
        self.upload_limit = upload_limit  # bytes one upload may carry (`SandboxOptions`; lower in tests)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._seq = 0
        self._threads: list[threading.Thread] = []  # one per ingest job being processed
        self._stopping = threading.Event()

    def _new_id(self) -> str:
        with self._lock:
            self._seq += 1
            return make_id(KEY_PREFIXES["BulkJob"], self._seq)

    def _keep(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job
            # The oldest finished jobs are forgotten first; a job still open or running is kept.
            finished = [j.id for j in self._jobs.values() if j.kind == "query" or j.state in FINAL_STATES]
            for old in finished[: max(0, len(self._jobs) - MAX_JOBS)]:
                self._jobs.pop(old)

    def job(self, job_id: str, kind: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.kind != kind:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return job

    def _job_options(self, body: dict) -> tuple[str, str]:
        line_ending = body.get("lineEnding", "LF")
        delimiter = body.get("columnDelimiter", "COMMA")
        if line_ending not in LINE_ENDINGS:
            raise ApiError(400, "INVALIDJOB", f"Invalid lineEnding: {line_ending}")
        if delimiter not in DELIMITERS:
            raise ApiError(400, "INVALIDJOB", f"Invalid columnDelimiter: {delimiter}")
        return line_ending, delimiter

    def list_jobs(self, kind: str) -> Response:
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.kind == kind]
        infos = []
        for j in jobs:
            with j.changed:
                infos.append(j.info())
        return json_response({"done": True, "records": infos, "nextRecordsUrl": None})

    def delete_job(self, job_id: str, kind: str) -> Response:
        job = self.job(job_id, kind)
        with job.changed:
            if job.state not in FINAL_STATES:
                raise ApiError(
                    400, "INVALIDJOBSTATE", f"Job {job_id} must be complete, failed or aborted to be deleted"
                )
        with self._lock:
            self._jobs.pop(job_id, None)
        return Response(status=204)

    # -- for tests and Sandbox.stop -------------------------------------------------------------------------
    def ingest_jobs(self) -> list[dict]:
        """Every ingest job the org remembers, oldest first: `id`, `state`, `uploaded` (rows), `uploaded_bytes`
        (its upload's body), `processed` (the record ids its chunks went through, in order, whether written or
        rejected) and `unprocessed`."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.kind == "ingest"]
        out = []
        for j in jobs:
            with j.changed:
                processed = [rid for rid, _ in j.successes] + [rid for rid, _, _ in j.failures]
                out.append(
                    {
                        "id": j.id,
                        "state": j.state,
                        "uploaded": len(j.rows or []),
                        "uploaded_bytes": j.uploaded_bytes,
                        "processed": processed,
                        "unprocessed": len(j.unprocessed),
                    }
                )
        return out

    def wait_for_state(self, job_id: str, states: tuple[str, ...], timeout: float | None = None) -> bool:
        """Block until the ingest job is in one of `states`; False on timeout or if there is no such job."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return False
        with job.changed:
            return job.changed.wait_for(lambda: job.state in states, timeout)

    def close(self, faults) -> None:
        """Stop every processing thread before its next chunk and wait for it (a chunk being written is
        finished first). Chunks parked by `faults.hold` are released so that they can stop."""
        self._stopping.set()
        faults.release()
        with self._lock:
            threads, self._threads = self._threads, []
            jobs = list(self._jobs.values())
        for job in jobs:
            with job.changed:
                job.changed.notify_all()
        for thread in threads:
            thread.join(timeout=10)

    # -- ingest -------------------------------------------------------------------------------------------
    def create_ingest(self, request: Request, version: str) -> Response:
        body = read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        operation = body.get("operation")
        if operation != "update":
            raise ApiError(
                400,
                "INVALIDJOB",
                f"The sandbox's Bulk API 2.0 supports the update operation only, not {operation!r}",
            )
        sobject = self.store.type(str(body.get("object", "")))
        if sobject is None:
            raise ApiError(
                400, "INVALIDENTITY", f"Entity '{body.get('object')}' is not supported by the Bulk API."
            )
        if body.get("contentType", "CSV") != "CSV":
            raise ApiError(400, "INVALIDJOB", "Only the CSV content type is supported")
        line_ending, delimiter = self._job_options(body)
        now = format_ms(self.store.clock.now_ms())
        job = Job(
            self._new_id(),
            operation,
            sobject.name,
            version,
            line_ending,
            delimiter,
            now,
            "Open",
            "Open",
            "ingest",
        )
        self._keep(job)
        return json_response(job.info())

    def upload(self, request: Request, job_id: str) -> Response:
        job = self.job(job_id, "ingest")
        body = request.get_data()
        if len(body) > self.upload_limit:
            # Refused whole, before anything is read: the job stays Open and empty, as before the upload.
            raise ApiError(
                400,
                UPLOAD_TOO_LARGE,
                f"The upload is {len(body):,} bytes; a job's data may be at most {self.upload_limit:,} bytes "
                "of CSV (150 MB once base64-encoded)",
            )
        text = body.decode("utf-8-sig", errors="replace")
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=DELIMITERS[job.column_delimiter])
        rows = [row for row in reader if row]
        with job.changed:
            if job.state != "Open" or job.rows is not None:
                raise ApiError(409, "INVALIDJOBSTATE", f"Job {job_id} is not open for data upload")
            if not rows:
                raise ApiError(400, "INVALIDJOB", "The uploaded data has no header row")
            job.header, job.rows = rows[0], rows[1:]
            job.uploaded_bytes = len(body)
        return Response(status=201)

    def set_ingest_state(self, request: Request, job_id: str, faults) -> Response:
        job = self.job(job_id, "ingest")
        state = _requested_state(request)
        if state == "UploadComplete":
            with job.changed:
                if job.state != "Open":
                    raise ApiError(400, "INVALIDJOBSTATE", f"Job {job_id} is not open")
                self._set_state(job, "UploadComplete")
                info = job.info()
            self._start(job, faults)
            return json_response(info)
        if state == "Aborted":
            with job.changed:  # waits for a chunk being written: an abort lands between chunks
                if job.state not in ABORTABLE_STATES:
                    raise ApiError(
                        400, "INVALIDJOBSTATE", f"Job {job_id} is {job.state} and can no longer be aborted"
                    )
                job.unprocessed = list((job.rows or [])[job.reached :])
                self._set_state(job, "Aborted")
                return json_response(job.info())
        raise ApiError(400, "INVALIDJOBSTATE", f"Cannot change the job state to {state}")

    def get_job(self, job_id: str, kind: str) -> Response:
        job = self.job(job_id, kind)
        with job.changed:
            info = job.info()
            job.shown_state = job.state  # a new query job shows UploadComplete once, then its real state
        info["state"] = job.state
        return json_response(info)

    @staticmethod
    def _set_state(job: Job, state: str) -> None:
        """Under `job.changed`: the new state, for requests and for `wait_for_state`."""
        job.state = job.shown_state = state
        job.changed.notify_all()

    def _start(self, job: Job, faults) -> None:
        """Process a closed job on its own thread, as Salesforce does after UploadComplete."""
        thread = threading.Thread(
            target=self._process, args=(job, faults), name=f"sandbox-bulk2-{job.id}", daemon=True
        )
        with self._lock:
            if self._stopping.is_set():
                return  # the sandbox is stopping: the job stays UploadComplete, as a server going down leaves it
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _process(self, job: Job, faults) -> None:
        started = time.monotonic()
        sobject = self.store.types[job.object]
        with job.changed:
            if job.state != "UploadComplete":
                return  # aborted before it started
            rows, header = job.rows, job.header
            if rows is None:
                self._fail(job, "InvalidBatch : No data was uploaded to this job")
                return
            unknown = [
                name
                for name in header
                if name.strip().lower() != "id" and sobject.field(name.strip()) is None
            ]
            if unknown:
                self._fail(job, f"InvalidBatch : Field name not found : {unknown[0]}")
                return
            self._set_state(job, "InProgress")
        id_column = next((i for i, name in enumerate(header) if name.strip().lower() == "id"), None)

        def stopped() -> bool:  # under `job.changed`: aborted (the rows from `reached` on are unprocessed)
            return self._stopping.is_set() or job.state != "InProgress"  # or the sandbox is stopping

        for start in range(0, len(rows), INGEST_CHUNK):
            pause = faults.delay(CHUNK_LABEL)
            with job.changed:
                if pause:  # an abort or the sandbox stopping cuts the delay short
                    job.changed.wait_for(stopped, pause)
                if stopped():
                    return
            faults.park(CHUNK_LABEL)  # a test's `hold` keeps the job here, in flight, until `release()`
            with job.changed:
                if stopped():
                    return
                self._process_chunk(job, rows[start : start + INGEST_CHUNK], header, id_column, faults)
                job.reached = min(len(rows), start + INGEST_CHUNK)
                job.processing_ms = int((time.monotonic() - started) * 1000)
                job.changed.notify_all()
        with job.changed:
            if job.state == "InProgress":
                job.processing_ms = int((time.monotonic() - started) * 1000)
                self._set_state(job, "JobComplete")

    def _process_chunk(
        self, job: Job, chunk: list[list[str]], header: list[str], id_column: int | None, faults
    ) -> None:
        """One chunk in one transaction; each row's outcome goes to the job's successes or failures."""
        items, positions = [], []
        for row in chunk:
            if len(row) != len(header):
                job.failures.append(
                    (
                        "",
                        f"INVALID_FIELD:Row has {len(row)} values but the header has {len(header)}:--",
                        row,
                    )
                )
                continue
            record_id = row[id_column] if id_column is not None else None
            values = {
                name.strip(): value
                for i, (name, value) in enumerate(zip(header, row, strict=True))
                if i != id_column
            }
            items.append(WriteItem(job.object, record_id, values))
            positions.append(row)
        results = self.store.update(
            job.object,
            items,
            user_id=API_USER_ID,
            faults=faults,
            fault_label="sf.bulk2.ingest",
            from_csv=True,
            reject_duplicates=False,
        )
        for row, result in zip(positions, results, strict=True):
            if result.success:
                job.successes.append((result.id, row))
            else:
                error = result.errors[0]
                fields = ",".join(error["fields"])
                job.failures.append(
                    (result.id or "", f"{error['statusCode']}:{error['message']}:{fields} --", row)
                )

    def _fail(self, job: Job, message: str) -> None:
        """Under `job.changed`: the upload cannot be processed; every row is unprocessed."""
        job.error_message = message
        job.unprocessed = list(job.rows or [])
        self._set_state(job, "Failed")

    def ingest_results(self, job_id: str, which: str) -> Response:
        job = self.job(job_id, "ingest")
        buffer = io.StringIO()
        writer = self._writer(job, buffer)
        with job.changed:  # what the job has reached so far, consistent with its counts
            if which == "successfulResults":
                writer.writerow(["sf__Id", "sf__Created", *job.header])
                writer.writerows([record_id, "false", *row] for record_id, row in job.successes)
            elif which == "failedResults":
                writer.writerow(["sf__Id", "sf__Error", *job.header])
                writer.writerows([record_id, error, *row] for record_id, error, row in job.failures)
            else:
                writer.writerow(job.header)
                writer.writerows(job.unprocessed)
        return Response(buffer.getvalue(), content_type=CSV_TYPE)

    @staticmethod
    def _writer(job: Job, buffer: io.StringIO):
        return csv.writer(
            buffer,
            delimiter=DELIMITERS[job.column_delimiter],
            lineterminator=LINE_ENDINGS[job.line_ending],
            quoting=csv.QUOTE_ALL,
        )

    # -- query --------------------------------------------------------------------------------------------
    def create_query(self, request: Request, version: str) -> Response:
        body = read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        operation = body.get("operation", "query")
        if operation not in ("query", "queryAll"):
            raise ApiError(400, "INVALIDJOB", f"Invalid operation for a query job: {operation}")
        soql = body.get("query")
        if not isinstance(soql, str) or not soql.strip():
            raise ApiError(400, "INVALIDJOB", "A query job needs a query")
        compiled = self.compile(soql)
        if compiled.count:
            raise ApiError(400, "INVALIDJOB", "Aggregate queries are not supported by Bulk API 2.0")
        if compiled.offset:
            raise ApiError(400, "INVALIDJOB", "OFFSET is not supported by Bulk API 2.0")
        line_ending, delimiter = self._job_options(body)
        started = time.monotonic()
        sql, params = compiled.rowid_sql(compiled.sobject.table, include_deleted=operation == "queryAll")
        now = format_ms(self.store.clock.now_ms())
        job = Job(
            self._new_id(),
            operation,
            compiled.sobject.name,
            version,
            line_ending,
            delimiter,
            now,
            "JobComplete",
            "UploadComplete",
            "query",
            query=soql,
            compiled=compiled,
        )
        job.rowids = self.store.rowids(sql, params)
        job.processing_ms = int((time.monotonic() - started) * 1000)
        self._keep(job)
        return json_response(job.info())

    def set_query_state(self, request: Request, job_id: str) -> Response:
        job = self.job(job_id, "query")
        if _requested_state(request) != "Aborted":
            raise ApiError(400, "INVALIDJOBSTATE", "A query job can only be aborted")
        if job.state == "JobComplete" and job.shown_state == "JobComplete":
            raise ApiError(400, "INVALIDJOBSTATE", f"Job {job_id} is complete and can no longer be aborted")
        job.state = job.shown_state = "Aborted"
        return json_response(job.info())

    def query_results(self, request: Request, job_id: str) -> Response:
        job = self.job(job_id, "query")
        if job.state != "JobComplete":
            raise ApiError(400, "INVALIDJOBSTATE", f"Job {job_id} is {job.state}; results are not available")
        max_text = request.args.get("maxRecords", str(DEFAULT_MAX_RECORDS))
        if not max_text.isdigit() or int(max_text) < 1:
            raise ApiError(400, "INVALIDREQUEST", f"Invalid maxRecords: {max_text}")
        start = _decode_locator(request.args.get("locator"))
        total = len(job.rowids)
        if start > total:
            raise ApiError(400, "INVALIDLOCATOR", "Invalid locator")
        end = min(total, start + int(max_text))
        locator = _encode_locator(end) if end < total else "null"
        headers = {"Sforce-NumberOfRecords": str(end - start), "Sforce-Locator": locator}
        return Response(self._stream(job, start, end), content_type=CSV_TYPE, headers=headers)

    def _stream(self, job: Job, start: int, end: int) -> Iterator[bytes]:
        fields = job.compiled.fields
        expressions = [_csv_expression(f) for f in fields]
        buffer = io.StringIO()
        writer = self._writer(job, buffer)
        writer.writerow([f.name for f in fields])
        for chunk_start in range(start, end, RESULT_CHUNK):
            rowids = job.rowids[chunk_start : min(end, chunk_start + RESULT_CHUNK)]
            # The lock is taken per chunk, so a long download never blocks other requests for long.
            writer.writerows(self.store.fetch(job.object, rowids, expressions))
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
        if buffer.tell():
            yield buffer.getvalue().encode("utf-8")


def _requested_state(request: Request) -> str:
    body = read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("state"), str):
        raise ApiError(400, "JSON_PARSER_ERROR", 'The request body must be {"state": ...}')
    return body["state"]


def _csv_expression(f) -> str:
    """SQL rendering a column as Bulk API CSV text: booleans true/false, datetimes with a Z offset."""
    column = f't."{f.name}"'
    if f.type == "boolean":
        return f"CASE {column} WHEN 1 THEN 'true' WHEN 0 THEN 'false' END"
    if f.type == "datetime":
        return f"substr({column}, 1, 23) || 'Z'"
    return column


def _encode_locator(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode().rstrip("=")


def _decode_locator(locator: str | None) -> int:
    if not locator or locator == "null":
        return 0
    try:
        text = base64.b64decode(locator + "=" * (-len(locator) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        text = ""
    if not text.isdigit():
        raise ApiError(400, "INVALIDLOCATOR", f"Invalid locator: {locator}")
    return int(text)
