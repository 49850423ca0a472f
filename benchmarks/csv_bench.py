"""The CSV path end to end, as `icp score` runs it on a CSV book: read, aggregates, score, guard, write.

    python benchmarks/csv_bench.py                                # 1,000,000 accounts; human-readable
    python benchmarks/csv_bench.py --accounts 200000 --json       # one JSON line

The book is the demo's dirty CRM export (`sync.demo.write_demo`: vendor headers, "1,200", "$2.5M", URLs for
domains) with its deals, generated once into --dir by a child process (so its memory is not counted) and
reused by later runs; the profile is learned once, untimed (`icp profile learn`). Each timed run is
`icp score`'s library calls: `load_book` (read + deal aggregates), `read_profile`, `score_book`,
`write_output` (copies the accounts file's plain lines, parses and guards the others, appends the
score cells), `score_summary`.
Reported: the median of --repeat runs for each step and end to end (wall and CPU seconds; CPU time is
less disturbed by other work on the machine), a one-off breakdown of the load step (CSV parsing and
conforming vs aggregates) and the formula guard alone over every cell of the file, and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from connectors import csvfile  # noqa: E402
from scoring.aggregates import with_aggregates  # noqa: E402
from sync import pipeline  # noqa: E402
from sync.config import load_config  # noqa: E402


def ensure_book(directory: Path, accounts: int, seed: int) -> Path:
    """The demo book of `accounts` accounts in `directory` (written by a child process if not there yet)."""
    config = directory / "icp.toml"
    if not (config.exists() and (directory / "accounts.csv").exists() and (directory / "deals.csv").exists()):
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); from sync.demo import write_demo; "
            "write_demo(sys.argv[2], accounts=int(sys.argv[3]), seed=int(sys.argv[4]))"
        )
        root = str(Path(__file__).resolve().parents[1])
        subprocess.run(
            [sys.executable, "-c", code, root, str(directory), str(accounts), str(seed)], check=True
        )
    return config


class Clock:
    """Wall and CPU seconds of each named step."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def step(self, name: str, fn):
        w, c = time.perf_counter(), time.process_time()
        result = fn()
        self.wall[name] = time.perf_counter() - w
        self.cpu[name] = time.process_time() - c
        return result


def icp_score(config, out: Path, scored_at: pd.Timestamp) -> Clock:
    """One `icp score` run, step by step (sync/cli.py `score`)."""
    clock = Clock()
    w, c = time.perf_counter(), time.process_time()
    book = clock.step("load", lambda: pipeline.load_book(config))
    profile = clock.step("read_profile", lambda: pipeline.read_profile(config))
    scored = clock.step("score", lambda: pipeline.score_book(config, book, profile, scored_at=scored_at))
    clock.step("write", lambda: pipeline.write_output(config, scored, out))
    clock.step("summary", lambda: pipeline.score_summary(scored, profile))
    clock.wall["end_to_end"] = time.perf_counter() - w
    clock.cpu["end_to_end"] = time.process_time() - c
    return clock


def breakdown(config) -> Clock:
    """The load step split into reading the CSV files and the deal aggregates, and the guard alone."""
    c = config.csv
    clock = Clock()
    raw = clock.step(
        "read_csv_and_conform",
        lambda: csvfile.read_book(
            c.accounts,
            c.deals,
            c.account_columns,
            c.deal_columns,
            {"won": list(c.won_stages), "lost": list(c.lost_stages)},
        ),
    )
    clock.step("aggregates", lambda: with_aggregates(raw.accounts, raw.deals, None))
    layout = csvfile._inspect(c.accounts, "accounts")
    columns = [
        chunk.iloc[:, i].to_numpy(dtype=object)
        for chunk in csvfile._chunks(layout)
        for i in range(chunk.shape[1])
    ]
    cells = [pd.Series(np.where(pd.isna(col), "", col).astype(object)) for col in columns]
    clock.step("guard_every_cell", lambda: [csvfile.neutralize_formulas(col) for col in cells])
    return clock


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the median is reported")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the book is kept between runs [default: a temp dir]"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()

    directory = args.dir or Path(tempfile.gettempdir()) / f"icp-csv-bench-{args.accounts}-{args.seed}"
    directory.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    config_path = ensure_book(directory, args.accounts, args.seed)
    prepare_s = time.perf_counter() - t0
    config = load_config(config_path)
    if not config.profile_path.exists():
        pipeline.learn(config, pipeline.load_book(config))

    scored_at = pd.Timestamp("2026-01-01T00:00:00Z")
    out = directory / "accounts-scored.csv"
    runs = [icp_score(config, out, scored_at) for _ in range(args.repeat)]
    parts = breakdown(config)
    steps = list(runs[0].wall)
    result = {
        "accounts": args.accounts,
        "accounts_csv_mb": round((directory / "accounts.csv").stat().st_size / 2**20, 1),
        "deals_csv_mb": round((directory / "deals.csv").stat().st_size / 2**20, 1),
        "repeat": args.repeat,
        "wall_s_median": {s: round(statistics.median(r.wall[s] for r in runs), 2) for s in steps},
        "cpu_s_median": {s: round(statistics.median(r.cpu[s] for r in runs), 2) for s in steps},
        "breakdown_wall_s": {k: round(v, 2) for k, v in parts.wall.items()},
        "breakdown_cpu_s": {k: round(v, 2) for k, v in parts.cpu.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "prepare_s": round(prepare_s, 1),
        "cpus": os.cpu_count(),
        "pandas": pd.__version__,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"book: {args.accounts:,} accounts ({result['accounts_csv_mb']} MB) and deals "
        f"({result['deals_csv_mb']} MB) in {directory}"
    )
    print(f"icp score, median of {args.repeat} (wall / CPU s):")
    for s in steps:
        print(f"  {s:<13} {result['wall_s_median'][s]:7.2f} / {result['cpu_s_median'][s]:6.2f}")
    print("load step and guard, one run (wall / CPU s):")
    for k in parts.wall:
        print(f"  {k:<21} {result['breakdown_wall_s'][k]:7.2f} / {result['breakdown_cpu_s'][k]:6.2f}")
    print(f"peak RSS: {result['peak_rss_mb']:,.0f} MB")


if __name__ == "__main__":
    main()
