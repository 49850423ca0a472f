"""The nightly job against the sandbox, night after night: the first run, a quiet night, a night after reps
changed a share of the book.

    python benchmarks/nightly_bench.py                          # 100,000 accounts; human-readable
    python benchmarks/nightly_bench.py --accounts 1000000       # the large-customer case (about 15 minutes)
    python benchmarks/nightly_bench.py --accounts 20000 --json  # one JSON object

Every process is its own: the sandbox (with its book, serving Salesforce's wire protocol), the profile
learning, and each nightly run (`job.run`, the library call `icp run` makes), so the peak RSS printed for a run
is that run's alone. Per run: wall time, accounts pulled and written, API calls (the connector's count of
HTTP requests to the CRM), write calls and peak RSS. Between the no-op rerun and the last run, a rep edits
`--edit-share` of the accounts (industry and employees, through the sandbox as a person in the UI would).
The quiet night is run `--repeat` times and its median quoted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

INDUSTRIES = ["Software", "Manufacturing", "Retail", "Healthcare", "Finance", "Logistics"]


# -- child process 1: the sandbox, which also edits records as a rep on request -------------------------------
def host(accounts: int, seed: int, db: str) -> None:
    from sandbox import Sandbox
    from sandbox.salesforce.ids import KEY_PREFIXES, make_ids

    with Sandbox(accounts=accounts, seed=seed, db=db, with_icp_fields=True) as sb:
        sf = sb.salesforce
        print(
            json.dumps(
                {
                    "SF_INSTANCE_URL": sf.instance_url,
                    "SF_ACCESS_TOKEN": sf.access_token,
                    "SF_CA_BUNDLE": sf.ca_bundle,
                }
            ),
            flush=True,
        )
        ids = make_ids(KEY_PREFIXES["Account"], 1, accounts)
        rng = random.Random(seed)
        for line in sys.stdin:
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "edit":
                picked = rng.sample(range(accounts), int(arg))
                for i in picked:
                    sb.sf.edit(
                        "Account",
                        str(ids[i]),
                        {"Industry": rng.choice(INDUSTRIES), "NumberOfEmployees": rng.randint(5, 20_000)},
                    )
                print(json.dumps({"edited": len(picked)}), flush=True)
            elif cmd == "quit":
                break


# -- child process 2: one nightly run ------------------------------------------------------------------------
def one_run(config_path: str) -> None:
    from sync import job
    from sync.config import load_config

    config = load_config(Path(config_path), env=dict(os.environ))
    t0 = time.perf_counter()
    report = job.run(config)
    wall = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "wall_s": round(wall, 2),
                "status": report.status,
                "mode": report.mode,
                "pulled": report.pulled,
                "changed": report.changed,
                "written": report.written,
                "failed": report.failed,
                "api_calls": report.api_calls,
                "write_calls": report.write_calls,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


# -- the benchmark -------------------------------------------------------------------------------------------
def run_child(args: list[str], env: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"a nightly run failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--edit-share", type=float, default=0.01, help="share of accounts reps change")
    parser.add_argument("--repeat", type=int, default=3, help="quiet nights to run (median quoted)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--host", nargs=3, metavar=("ACCOUNTS", "SEED", "DB"), help=argparse.SUPPRESS)
    parser.add_argument("--run", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.host:
        host(int(args.host[0]), int(args.host[1]), args.host[2])
        return
    if args.run:
        one_run(args.run)
        return

    out: dict = {"accounts": args.accounts, "cpus": os.cpu_count(), "edit_share": args.edit_share}
    with tempfile.TemporaryDirectory(prefix="icp-nightly-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        sandbox = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--host",
                str(args.accounts),
                str(args.seed),
                str(tmp / "sandbox.sqlite"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = sandbox.stdout.readline()
            if not line:
                raise SystemExit("the sandbox did not start")
            out["sandbox_start_s"] = round(time.perf_counter() - t0, 1)
            env = {**os.environ, **json.loads(line)}
            config = tmp / "icp.toml"
            config.write_text('[crm]\nkind = "salesforce"\n[sync]\nmax_change_ratio = 1.0\n')
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "sync.cli", "profile", "learn", "--quiet", "--config", str(config)],
                env=env,
                check=True,
                cwd=tmp,
            )
            out["learn_s"] = round(time.perf_counter() - t0, 1)
            out["first_run"] = run_child(["--run", str(config)], env)
            quiet = [run_child(["--run", str(config)], env) for _ in range(max(args.repeat, 1))]
            out["noop_rerun"] = {
                **quiet[len(quiet) // 2],
                "wall_s": round(statistics.median(q["wall_s"] for q in quiet), 2),
                "wall_s_all": [q["wall_s"] for q in quiet],
            }
            edits = round(args.accounts * args.edit_share)
            sandbox.stdin.write(f"edit {edits}\n")
            sandbox.stdin.flush()
            out["edited"] = json.loads(sandbox.stdout.readline())["edited"]
            out["edited_rerun"] = run_child(["--run", str(config)], env)
            sandbox.stdin.write("quit\n")
            sandbox.stdin.flush()
        finally:
            try:
                sandbox.wait(timeout=60)
            except subprocess.TimeoutExpired:
                sandbox.kill()

    if args.json:
        print(json.dumps(out))
        return
    n = args.accounts
    print(f"Nightly job on a {n:,}-account book in the sandbox ({out['cpus']} CPUs)")
    print(f"  sandbox start {out['sandbox_start_s']} s; profile learned from the CRM in {out['learn_s']} s")
    rows = [
        ("first run", out["first_run"]),
        (f"quiet night (median of {len(out['noop_rerun']['wall_s_all'])})", out["noop_rerun"]),
        (f"after reps edited {out['edited']:,}", out["edited_rerun"]),
    ]
    print(
        f"  {'run':<34}{'wall s':>8}{'pulled':>10}{'written':>10}{'API calls':>11}{'writes':>8}{'peak RSS MB':>13}"
    )
    for name, r in rows:
        print(
            f"  {name:<34}{r['wall_s']:>8}{r['pulled']:>10,}{r['written']:>10,}{r['api_calls']:>11}"
            f"{r['write_calls']:>8}{r['peak_rss_mb']:>13}"
        )


if __name__ == "__main__":
    main()
