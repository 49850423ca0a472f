"""Sandbox speed through the unmodified SDKs: REST paging, Bulk API 2.0 query, HubSpot paging.

    python benchmarks/sandbox_bench.py                  # 100,000 accounts by REST, 1,000,000 by Bulk 2.0
    python benchmarks/sandbox_bench.py --rest 20000 --bulk 100000 --json

Targets (issue 3): 100,000 accounts through REST paging in under 20 s; a Bulk API 2.0 query of 1,000,000
in under 60 s. The HubSpot figure pulls --rest companies 100 per page through basic_api.get_page.
Sandbox start-up (book generation and seeding both CRMs) is timed separately and not included.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402
from hubspot import HubSpot  # noqa: E402
from simple_salesforce import Salesforce  # noqa: E402

from sandbox import Sandbox  # noqa: E402

FIELDS = (
    "Id, Name, Website, Industry, NumberOfEmployees, AnnualRevenue, BillingCountry, BillingState, "
    "BillingCity, ParentId, Type, CreatedDate, SystemModstamp"
)


def salesforce(sb: Sandbox) -> Salesforce:
    session = requests.Session()
    session.verify = sb.salesforce.ca_bundle
    session.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would override session.verify
    return Salesforce(
        instance_url=sb.salesforce.instance_url, session_id=sb.salesforce.access_token, session=session
    )


def timed(fn):
    t0 = time.perf_counter()
    n = fn()
    return n, round(time.perf_counter() - t0, 2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rest", type=int, default=100_000, help="accounts pulled by REST paging (and HubSpot)"
    )
    parser.add_argument("--bulk", type=int, default=1_000_000, help="accounts pulled by a Bulk API 2.0 query")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out: dict = {}

    t0 = time.perf_counter()
    with Sandbox(accounts=args.rest, seed=7, hubspot_rate_limit=10**9) as sb:
        out["rest_startup_s"] = round(time.perf_counter() - t0, 2)
        sf = salesforce(sb)
        n, s = timed(lambda: sum(1 for _ in sf.query_all_iter(f"SELECT {FIELDS} FROM Account")))
        out["rest"] = {"records": n, "seconds": s, "target_s": 20}
        companies = HubSpot(
            access_token=sb.hubspot.access_token, host=sb.hubspot.base_url
        ).crm.companies.basic_api

        def hubspot_pull() -> int:
            after, count = None, 0
            while True:
                page = companies.get_page(limit=100, after=after, properties=["name", "domain", "industry"])
                count += len(page.results)
                if page.paging is None:
                    return count
                after = page.paging.next.after

        n, s = timed(hubspot_pull)
        out["hubspot_get_page"] = {"records": n, "seconds": s}

    t0 = time.perf_counter()
    with Sandbox(accounts=args.bulk, seed=7) as sb:
        out["bulk_startup_s"] = round(time.perf_counter() - t0, 2)
        sf = salesforce(sb)

        def bulk_pull() -> int:
            rows = 0
            for page in sf.bulk2.Account.query(f"SELECT {FIELDS} FROM Account", wait=0):
                rows += page.count("\n") - 1
            return rows

        n, s = timed(bulk_pull)
        out["bulk2_query"] = {"records": n, "seconds": s, "target_s": 60}

    if args.json:
        print(json.dumps(out))
        return
    print(
        f"REST query_all_iter: {out['rest']['records']:,} accounts in {out['rest']['seconds']} s (target < 20 s)"
    )
    print(
        f"HubSpot get_page: {out['hubspot_get_page']['records']:,} companies in {out['hubspot_get_page']['seconds']} s"
    )
    print(
        f"Bulk API 2.0 query: {out['bulk2_query']['records']:,} accounts in {out['bulk2_query']['seconds']} s "
        f"(target < 60 s)"
    )
    print(
        f"sandbox start-up: {out['rest_startup_s']} s for {args.rest:,}, {out['bulk_startup_s']} s for {args.bulk:,}"
    )


if __name__ == "__main__":
    main()
