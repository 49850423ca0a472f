"""What the pre-write re-read costs: API calls it adds to a run that overwrites 10% of the book.

    python benchmarks/reread_bench.py                      # 100,000 accounts, 10% overwritten
    python benchmarks/reread_bench.py --accounts 20000 --share 0.1 --json

Right before a write batch overwrites existing values, the job re-reads those records' owned fields, so a rep's
edit made while the run works is kept (see README, "Edits during a run"). This script fills a sandbox book
once, then moves the industry of `--share` of the accounts (so their scores, and the values we wrote, change),
and runs the nightly job again. It prints that run's API calls, how many of them are re-read queries, and the
same run's calls without them (total minus re-reads), for both write paths: Bulk API 2.0 (the default above
`bulk_threshold`) and sObject Collections (threshold raised above the change count).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox import Sandbox  # noqa: E402
from sandbox.salesforce.store import REP_USER_ID, WriteItem  # noqa: E402
from sync import job, pipeline  # noqa: E402
from sync.config import load_config  # noqa: E402

CONFIG = """[crm]
kind = "salesforce"
[salesforce]
bulk_threshold = {threshold}
[sync]
max_change_ratio = 1.0
lookback_minutes = 0
"""


def measure(accounts: int, share: float, path: str) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="icp-reread-"))
    try:
        with Sandbox(accounts=accounts, seed=7, with_icp_fields=True) as sb:
            threshold = 100 if path == "bulk" else accounts + 1  # force one path or the other
            (workdir / "icp.toml").write_text(CONFIG.format(threshold=threshold))
            env = {
                "SF_INSTANCE_URL": sb.salesforce.instance_url,
                "SF_ACCESS_TOKEN": sb.salesforce.access_token,
                "SF_CA_BUNDLE": sb.salesforce.ca_bundle,
            }
            config = load_config(workdir / "icp.toml", env=env)
            pipeline.learn(config, pipeline.load_book(config))
            first = job.run(config)
            ids = sorted(r["Id"] for r in sb.sf.records("Account"))
            moved = ids[:: max(1, round(1 / share))][: int(accounts * share)]
            # a rep recategorises those accounts: their scores move, so the values we wrote are overwritten
            sb.sf.store.update(
                "Account",
                [WriteItem("Account", rid, {"Industry": "Agriculture"}) for rid in moved],
                user_id=REP_USER_ID,
            )
            queries_before = sb.calls.count("sf.query")
            second = job.run(config)
            queries = sb.calls.count("sf.query") - queries_before
        return {
            "path": path,
            "accounts": accounts,
            "first_run_written": first.written,
            "changed": second.changed,
            "written": second.written,
            "api_calls": second.api_calls,
            "query_calls": queries,
            "reread_records": second.rereads,
            "reread_calls": second.reread_calls,
            "api_calls_without_reread": second.api_calls - second.reread_calls,
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--share", type=float, default=0.1, help="share of the book whose values move")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [measure(args.accounts, args.share, path) for path in ("bulk", "collections")]
    if args.json:
        print(json.dumps(results))
        return
    for r in results:
        added = r["reread_calls"] / max(r["api_calls_without_reread"], 1)
        print(
            f"{r['path']:<12} {r['accounts']:,} accounts, {r['changed']:,} overwritten: {r['api_calls']:,} API calls, "
            f"of which {r['reread_calls']:,} re-read queries for {r['reread_records']:,} records "
            f"(+{added:.0%} over {r['api_calls_without_reread']:,} without them)"
        )


if __name__ == "__main__":
    main()
