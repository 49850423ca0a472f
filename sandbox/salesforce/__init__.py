"""The sandbox's Salesforce org: a WSGI app speaking Salesforce's wire protocols over SQLite.

Surface: SOAP partner login and OAuth 2.0 token flows; REST `query`/`queryAll` (a SOQL subset, paged with
`nextRecordsUrl`), `describe`, single-record GET/PATCH/DELETE, sObject Collections update, `limits` and the
`Sforce-Limit-Info` header; Bulk API 2.0 ingest (update; run in the background, 200 records a chunk,
abortable) and query jobs; Metadata API CustomField create/update/upsert/read/delete. Faults from the shared
`Faults` registry apply to every request and, for writes, to every record.
"""

from sandbox.salesforce.app import SalesforceApp

__all__ = ["SalesforceApp"]
