"""Bulk API 2.0 uploads at the real limit: how the connector cuts a million changes, and what the SDK would do.

    python benchmarks/bulk_split_bench.py                              # 1,000,000 changes, cut only
    python benchmarks/bulk_split_bench.py --accounts 200000 --json     # one JSON line
    python benchmarks/bulk_split_bench.py --accounts 400000 --post     # also write them into a sandbox

Builds the write batch a first nightly run of `--accounts` accounts makes (every owned field, reasons of
150-250 characters with commas, double quotes and non-ASCII letters, as scoring writes them) and runs the
connector's `_bulk_uploads` twice at the real limits: with the default settings (`bulk_upload_bytes` 90 MB,
`bulk_job_records` 100,000), and with the byte limit alone (records uncapped), which is the case the byte
count must get right. For each: uploads, records and bytes of the largest, against Salesforce's 100 MB and the
SDK's 104,857,600 bytes, and the time to render and cut. Beside it, what simple-salesforce's own split would
send as its first chunk (it sizes rows by `",".join(fields)`, without quotes, line ends or header).

`--post` also seeds an in-process sandbox (its upload limit the real one) with that many accounts and writes
the batch through the connector by the byte limit alone, so every upload crosses HTTPS to a server that
refuses anything over 104,857,600 bytes. The sandbox processes ingest jobs 200 records a chunk in SQLite and
keeps each job's rows in memory: measured at 400,000 on a busy 2-core box, seeding 44 s, writing 87 s (two
jobs, 90.0 MB and 27.7 MB), peak RSS 2.7 GB; so it is off by default, and at 1,000,000 expect ~6 minutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from connectors.salesforce import SalesforceConnector, SalesforceSettings, _bulk_cells  # noqa: E402

SDK_LIMIT = 104_857_600  # simple_salesforce.bulk2.MAX_INGEST_JOB_FILE_SIZE
SDK_TARGET = SDK_LIMIT - 1024 * 1024  # the chunk size its `_split_csv` aims at
PHRASES = [
    'Industry "Software", like 8 of 10 best customers',
    "size 50–999 employees (Mid-market)",
    'country Österreich, "verified" by the club',
    "annual revenue ≥ $10M, above the club's median",
    'no won deal yet, but 3 "open" opportunities',
    "HQ in São Paulo, Brasil",
    "parent account in the club (Zürich, CH)",
    'lead source "Partner", as 4 of 10 best customers',
]
SEGMENTS = ["SMB", "Mid-market", "Enterprise", "Unknown size"]  # the sandbox's picklist values


def build_changes(n: int, seed: int = 7) -> pd.DataFrame:
    """A first run's write batch for `n` accounts: index = Account id, the six owned fields."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(PHRASES), size=(n, 8))
    reasons = []
    for row, target in zip(picks.tolist(), rng.integers(150, 251, size=n).tolist(), strict=True):
        text = PHRASES[row[0]]
        for j in row[1:]:
            if len(text) >= target:
                break
            longer = f"{text}; {PHRASES[j]}"
            if len(longer) > 250:
                text += "…"  # cut on a whole reason, as scoring does
                break
            text = longer
        reasons.append(text)
    fit = rng.integers(0, 101, size=n)
    return pd.DataFrame(
        {
            "segment": np.asarray(SEGMENTS, dtype=object)[rng.integers(0, len(SEGMENTS), size=n)],
            "fit_score": pd.array(fit, dtype="Int64"),
            "tier": np.where(fit >= 75, "A", np.where(fit >= 50, "B", np.where(fit >= 25, "C", "D"))),
            "reasons": reasons,
            "scored_at": "2024-05-01T10:00:00Z",
            "model": "p-3f9a2c7e51d0",
        },
        index=pd.Index([f"001{i:012d}AAA" for i in range(n)], name="id"),
    )


def connector(**settings) -> SalesforceConnector:
    # Only `_bulk_uploads` runs: no call is made, so any credentials do.
    secrets = {"SF_INSTANCE_URL": "https://127.0.0.1:9", "SF_ACCESS_TOKEN": "unused"}
    return SalesforceConnector(SalesforceSettings(**settings), secrets)


def cut(changes: pd.DataFrame, **settings) -> dict:
    started = time.perf_counter()
    uploads = [(len(ids), len(data.encode())) for ids, data in connector(**settings)._bulk_uploads(changes)]
    seconds = time.perf_counter() - started
    records, sizes = zip(*uploads, strict=True)
    return {
        "uploads": len(uploads),
        "records": sum(records),
        "max_upload_records": max(records),
        "max_upload_bytes": max(sizes),
        "total_bytes": sum(sizes),
        "under_100MB": max(sizes) <= 100_000_000,
        "under_sdk_limit": max(sizes) <= SDK_LIMIT,
        "seconds": round(seconds, 2),
    }


def sdk_first_chunk(changes: pd.DataFrame) -> dict:
    """The first chunk simple-salesforce's `_split_csv` would cut from the same rows, as it estimates it and
    as it is once written as CSV (quotes, doubled quotes, LF, header) by this connector's writer."""
    columns = list(changes.columns)
    cells = [changes.index.astype(str).tolist(), *(_bulk_cells(changes[c], c) for c in columns)]
    estimate = np.fromiter((len(",".join(row).encode()) for row in zip(*cells, strict=True)), dtype=np.int64)
    over = np.flatnonzero(np.cumsum(estimate) > SDK_TARGET)
    rows = int(over[0]) if len(over) else len(changes)
    [(_, data)] = list(
        connector(bulk_job_records=10**9, bulk_upload_bytes=10**12)._bulk_uploads(changes[:rows])
    )
    sent = len(data.encode())
    return {
        "records": rows,
        "estimated_bytes": int(estimate[:rows].sum()),
        "bytes": sent,
        "over_sdk_limit": sent > SDK_LIMIT,
    }


def post(changes: pd.DataFrame) -> dict:
    """Write the batch into an in-process sandbox at the real upload limit, by the byte limit alone."""
    from sandbox import Sandbox

    started = time.perf_counter()
    with Sandbox(accounts=len(changes), seed=7, with_icp_fields=True) as sb:
        seeded = time.perf_counter() - started
        ids = [r["Id"] for r in sb.sf.records("Account")]
        batch = changes.set_axis(pd.Index(ids, name="id"))
        settings = SalesforceSettings(
            ca_bundle=sb.salesforce.ca_bundle, bulk_threshold=1, bulk_job_records=10**9, bulk_poll_s=0.2
        )
        secrets = {
            "SF_INSTANCE_URL": sb.salesforce.instance_url,
            "SF_ACCESS_TOKEN": sb.salesforce.access_token,
        }
        c = SalesforceConnector(settings, secrets)
        started = time.perf_counter()
        results = [r for results in c.write(batch) for r in results]
        seconds = time.perf_counter() - started
        jobs = sb.sf.bulk2.ingest_jobs()
        return {
            "jobs": len(jobs),
            "upload_bytes": [j["uploaded_bytes"] for j in jobs],
            "uploads_refused": sb.calls.count("sf.bulk2.ingest.upload") - len(jobs),
            "written": sum(r.success for r in results),
            "seed_seconds": round(seeded, 1),
            "write_seconds": round(seconds, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--post", action="store_true", help="also write the batch into an in-process sandbox")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    changes = build_changes(args.accounts)
    lengths = changes["reasons"].str.len()
    result = {
        "accounts": args.accounts,
        "reasons_chars": [int(lengths.min()), round(float(lengths.mean()), 1), int(lengths.max())],
        "build_seconds": round(time.perf_counter() - started, 2),
        "default": cut(changes),
        "bytes_only": cut(changes, bulk_job_records=10**9),
        "sdk_first_chunk": sdk_first_chunk(changes),
    }
    if args.post:
        result["post"] = post(changes)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{args.accounts:,} changes, reasons {result['reasons_chars'][0]}-{result['reasons_chars'][2]} characters "
        f"(mean {result['reasons_chars'][1]}), built in {result['build_seconds']} s"
    )
    for name, label in (
        ("default", "default settings (90 MB, 100,000 records)"),
        ("bytes_only", "bytes only (90 MB)"),
    ):
        r = result[name]
        print(
            f"  {label}: {r['uploads']} uploads, largest {r['max_upload_bytes']:,} bytes / "
            f"{r['max_upload_records']:,} records (limit {SDK_LIMIT:,}: {'under' if r['under_sdk_limit'] else 'OVER'}), "
            f"{r['total_bytes']:,} bytes in all, cut in {r['seconds']} s"
        )
    s = result["sdk_first_chunk"]
    print(
        f"  simple-salesforce's own split: first chunk {s['records']:,} records, estimated "
        f"{s['estimated_bytes']:,} bytes, sent {s['bytes']:,} ({'OVER' if s['over_sdk_limit'] else 'under'} "
        f"{SDK_LIMIT:,})"
    )
    if "post" in result:
        p = result["post"]
        print(
            f"  posted to a sandbox at the real limit: {p['jobs']} jobs of {', '.join(f'{b:,}' for b in p['upload_bytes'])} "
            f"bytes, {p['uploads_refused']} refused, {p['written']:,} written in {p['write_seconds']} s "
            f"(seeding {p['seed_seconds']} s)"
        )
    print(f"  peak RSS {result['peak_rss_mb']:,} MB")


if __name__ == "__main__":
    main()
