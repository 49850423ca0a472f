"""The HubSpot-compatible half of the sandbox: CRM v3 objects (companies, deals), search, batch read/update,
properties and groups, v3/v4 deal-company associations, private-app rate limits and injected faults.

`app.py` holds the request path, `store.py` the SQLite layout, `search.py` the filter translation,
`properties.py` the seeded catalogue, `ratelimit.py` the limits. Choices where HubSpot leaves room:

- `industry` is HubSpot's enumeration (COMPUTER_SOFTWARE, ...); `properties.INDUSTRY_VALUES` maps the book's
  industries to it. `type` uses HubSpot's options plus CUSTOMER. Countries stay ISO codes as in the book.
- Deal lead source is a custom enumeration `lead_source` with the book's values; `hs_analytics_source` is web
  attribution and is not seeded. Stages map onto the default pipeline (closedwon, closedlost, ...).
- With no `properties`, companies return createdate, domain, hs_lastmodifieddate, hs_object_id, name (deals:
  amount, closedate, createdate, dealname, dealstage, hs_lastmodifieddate, hs_object_id, pipeline). With
  `properties`, those requested (null when empty) plus createdate, hs_lastmodifieddate, hs_object_id.
- `associations=companies` lists each company twice (deal_to_company and deal_to_company_unlabeled), and v4
  gives type 5 "Primary" and 341: clients de-duplicate ids, as they must on HubSpot.
- Search: text compares case-insensitively; NEQ, NOT_IN and NOT_CONTAINS_TOKEN also match records without
  a value; ties in any sort break on the id; paging at or past 10,000 is a 400. Search has its own 5/s
  window (`SandboxOptions.hubspot_search_rate_limit` if the lead adds it) and skips the burst window.
- The daily quota counts every authenticated request not answered 429; DAILY 429s carry no Retry-After.
- `drop` serves the request (a write is applied) and then cuts the response body half way.
"""

from sandbox.hubspot.app import HubSpotApp

__all__ = ["HubSpotApp"]
