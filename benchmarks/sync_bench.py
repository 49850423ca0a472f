"""The nightly job against the sandbox: API calls per write path, a no-op rerun, wall time and peak RSS.

    python benchmarks/sync_bench.py                       # 100,000 accounts; human-readable
    python benchmarks/sync_bench.py --accounts 20000 --json

The sandbox runs in its own process (`icp sandbox serve`), so the peak RSS printed is the job's alone.
Measured:
1. write calls for N changed accounts through sObject Collections (bulk threshold above N), on a sandbox of
   --collections-accounts accounts: the target is ceil(N / 200);
2. the nightly run of --accounts accounts (first run writes every account, through Bulk API 2.0 above the
   bulk threshold): wall time, API calls, write calls, peak RSS;
3. the rerun with nothing changed: accounts pulled (target 0: our own writes are skipped), API calls (target
   at most 10), write calls (target 0);
4. the HTTP calls one Bulk API 2.0 write makes at several sizes (target: constant).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sync import job  # noqa: E402
from sync.config import load_config  # noqa: E402


@contextmanager
def sandbox(accounts: int):
    """`icp sandbox serve --json` in a child process; yields its connection info."""
    cmd = [
        sys.executable,
        "-m",
        "sync.cli",
        "sandbox",
        "serve",
        "--json",
        "--accounts",
        str(accounts),
        "--with-fields",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"the sandbox did not start: {' '.join(cmd)}")
        yield json.loads(line)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def config_for(directory: Path, info: dict, extra: str = ""):
    sf = info["salesforce"]
    (directory / "icp.toml").write_text(
        '[crm]\nkind = "salesforce"\n[sync]\nmax_change_ratio = 1.0\n' + extra
    )
    env = {
        "SF_INSTANCE_URL": sf["instance_url"],
        "SF_ACCESS_TOKEN": sf["access_token"],
        "SF_CA_BUNDLE": sf["ca_bundle"],
    }
    return load_config(directory / "icp.toml", env=env)


def learn_elsewhere(directory: Path, info: dict) -> float:
    """Learn the profile in a child process, so this process's peak RSS is the nightly run's alone."""
    sf = info["salesforce"]
    env = {
        **os.environ,
        "SF_INSTANCE_URL": sf["instance_url"],
        "SF_ACCESS_TOKEN": sf["access_token"],
        "SF_CA_BUNDLE": sf["ca_bundle"],
    }
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sync.cli",
            "profile",
            "learn",
            "--quiet",
            "--config",
            str(directory / "icp.toml"),
        ],
        env=env,
        check=True,
    )
    return time.perf_counter() - t0


def bulk_http_calls(n: int) -> int:
    from sandbox import Sandbox
    from sync import pipeline
    from sync.config import parse_config

    with Sandbox(accounts=n, seed=7, with_icp_fields=True) as sb, tempfile.TemporaryDirectory() as d:
        env = {
            "SF_INSTANCE_URL": sb.salesforce.instance_url,
            "SF_ACCESS_TOKEN": sb.salesforce.access_token,
            "SF_CA_BUNDLE": sb.salesforce.ca_bundle,
        }
        raw = {
            "crm": {"kind": "salesforce"},
            "salesforce": {"bulk_threshold": 100},
            "sync": {"max_change_ratio": 1.0},
        }
        cfg = parse_config(raw, path=Path(d) / "icp.toml", env=env)
        pipeline.learn(cfg, pipeline.load_book(cfg))
        sb.calls.reset()
        job.run(cfg)
        return sb.calls.count("sf.bulk2.ingest")


def timed_run(config) -> tuple[job.RunReport, float]:
    t0 = time.perf_counter()
    report = job.run(config)
    return report, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--collections-accounts", type=int, default=10_000)
    parser.add_argument(
        "--bulk-sizes",
        type=int,
        nargs="*",
        default=[1_000, 10_000, 50_000],
        help="changed-account counts at which to count a Bulk API 2.0 write's HTTP calls",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out: dict = {"accounts": args.accounts, "cpus": os.cpu_count()}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 1. Collections: N changed accounts, bulk threshold above N.
        n = args.collections_accounts
        with sandbox(n) as info:
            (tmp / "c").mkdir()
            cfg = config_for(tmp / "c", info, f"[salesforce]\nbulk_threshold = {n + 1}\n")
            learn_elsewhere(tmp / "c", info)
            report, _ = timed_run(cfg)
            out["collections"] = {
                "changed": report.written,
                "write_calls": report.write_calls,
                "target": math.ceil(report.written / 200),
            }

        # 2 and 3. The nightly run at full size, then the no-op rerun.
        with sandbox(args.accounts) as info:
            (tmp / "n").mkdir()
            cfg = config_for(tmp / "n", info)
            out["learn_s"] = round(learn_elsewhere(tmp / "n", info), 2)
            first, first_s = timed_run(cfg)
            out["first_run"] = {
                "wall_s": round(first_s, 2),
                "written": first.written,
                "failed": first.failed,
                "api_calls": first.api_calls,
                "write_calls": first.write_calls,
                "path": "bulk" if first.written > cfg.salesforce.bulk_threshold else "collections",
            }
            second, second_s = timed_run(cfg)
            out["noop_rerun"] = {
                "wall_s": round(second_s, 2),
                "pulled": second.pulled,
                "changed": second.changed,
                "write_calls": second.write_calls,
                "api_calls": second.api_calls,
            }
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    # 4. HTTP calls of a Bulk API 2.0 write at growing N (in-process sandboxes, to read their counters;
    #    after the RSS reading on purpose).
    out["bulk_http_calls"] = {n: bulk_http_calls(n) for n in args.bulk_sizes}

    if args.json:
        print(json.dumps(out))
        return
    c, f, r = out["collections"], out["first_run"], out["noop_rerun"]
    print(
        f"Collections: {c['changed']:,} changed accounts in {c['write_calls']} write calls "
        f"(target ceil(N/200) = {c['target']})"
    )
    print(
        f"Nightly run of {args.accounts:,} accounts: {f['wall_s']} s, {f['written']:,} written through "
        f"{f['path']} in {f['write_calls']} write calls ({f['api_calls']} API calls in all)"
    )
    print(
        f"No-op rerun: {r['pulled']} pulled, {r['changed']} changed, {r['api_calls']} API calls, "
        f"{r['write_calls']} write calls, {r['wall_s']} s"
    )
    print(
        f"Profile learned from the CRM in {out['learn_s']} s; peak RSS of the job process {out['peak_rss_mb']} MB"
    )
    calls = ", ".join(f"{n:,} accounts: {c}" for n, c in out["bulk_http_calls"].items())
    print(f"HTTP calls of one Bulk API 2.0 write: {calls}")


if __name__ == "__main__":
    main()
