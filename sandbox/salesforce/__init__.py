"""The sandbox's Salesforce org: a WSGI app speaking Salesforce's wire protocols over SQLite.

Surface: SOAP partner login, OAuth 2.0 token flows and `oauth2/userinfo`; REST `query`/`queryAll` (a SOQL
subset, paged with `nextRecordsUrl`, over Account, Opportunity and the User setup object), `describe`, single-record GET/PATCH/DELETE, sObject Collections update, `limits` and the
`Sforce-Limit-Info` header; Bulk API 2.0 ingest (update; run in the background, 200 records a chunk,
abortable) and query jobs; Metadata API CustomField create/update/upsert/read/delete. Faults from the shared
`Faults` registry apply to every request and, for writes, to every record.
"""

from sandbox.salesforce.app import SalesforceApp

__all__ = ["SalesforceApp"]
