"""Scoring throughput: learn + score + reasons on a synthetic book, against a naive row-by-row baseline.

    python benchmarks/score_bench.py --accounts 1000000            # human-readable
    python benchmarks/score_bench.py --accounts 1000000 --json     # one JSON line

What is timed (median of --repeat runs): deal aggregates, club selection, profile learning, segments, and
scoring with reasons for every account. The baseline scores a sample of accounts one row at a time in plain
Python (the obvious loop a first version would write), and the ratio compares time per account for scoring.
Peak RSS is the whole process's high-water mark (book generation included), from getrusage.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from sandbox.book import generate_book  # noqa: E402
from scoring.aggregates import with_aggregates  # noqa: E402
from scoring.club import select_club  # noqa: E402
from scoring.fit import score  # noqa: E402
from scoring.profile import learn_profile  # noqa: E402
from scoring.segments import assign_segments  # noqa: E402


def pipeline(accounts: pd.DataFrame, deals: pd.DataFrame):
    book = with_aggregates(accounts, deals)
    club = select_club(book)
    profile = learn_profile(book, club.ids)
    segments = assign_segments(book)
    scored = score(book, profile)
    return book, profile, scored, segments


def rowwise_score(records: list[dict], profile) -> list[tuple[int, str, str]]:
    """The naive baseline: one account at a time, one attribute at a time, in Python."""
    total = sum(a.weight for a in profile.attributes)
    out = []
    for rec in records:
        points, reasons = 0.0, []
        for a in profile.attributes:
            v = rec.get(a.name)
            if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
                reasons.append(f"? {a.name} unknown")
                continue
            if a.kind == "categorical":
                ok = str(v).strip().lower() in {x.lower() for x in a.values}
                points += a.weight if ok else 0.0
                reasons.append(f"{'+' if ok else '-'} {a.name} is {v}")
            else:
                x = float(v)
                if a.low <= x <= a.high:
                    m = 1.0
                elif a.log:
                    edge = a.low if x < a.low else a.high
                    dist = abs(math.log(max(x, 1e-9)) - math.log(max(edge, 1e-9)))
                    m = 0.5 ** (dist / math.log(a.half_life))
                else:
                    edge = a.low if x < a.low else a.high
                    m = 0.5 ** (abs(x - edge) / a.half_life)
                points += a.weight * m
                reasons.append(f"{'+' if m == 1 else '-'} {a.name} {x:,.0f}")
        s = int(round(100 * points / total))
        tier = "A" if s >= 75 else "B" if s >= 50 else "C" if s >= 25 else "D"
        out.append((s, tier, "; ".join(reasons)[:1024]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=1_000_000, help="accounts in the synthetic book")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the median is reported")
    parser.add_argument("--sample", type=int, default=20_000, help="accounts scored by the row-wise baseline")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()

    t0 = time.perf_counter()
    raw = generate_book(args.accounts, seed=args.seed)
    gen_s = time.perf_counter() - t0

    times, score_times = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        book, profile, scored, _ = pipeline(raw.accounts, raw.deals)
        times.append(time.perf_counter() - t0)
        t1 = time.perf_counter()
        score(book, profile)
        score_times.append(time.perf_counter() - t1)
    total_s = statistics.median(times)
    score_s = statistics.median(score_times)

    sample = book.sample(min(args.sample, len(book)), random_state=0)
    t0 = time.perf_counter()
    # Getting the rows out of the frame is part of the row-wise approach's cost, so it is timed too.
    records = sample[[a.name for a in profile.attributes]].astype(object).to_dict("records")
    rowwise_score(records, profile)
    row_s = time.perf_counter() - t0
    per_row = row_s / len(records)
    per_vec = score_s / len(book)

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    result = {
        "accounts": args.accounts,
        "deals": len(raw.deals),
        "repeat": args.repeat,
        "generate_s": round(gen_s, 3),
        "learn_score_s_median": round(total_s, 3),
        "score_only_s_median": round(score_s, 3),
        "accounts_per_s": round(args.accounts / total_s),
        "rowwise_sample": len(records),
        "rowwise_accounts_per_s": round(1 / per_row),
        "ratio_vs_rowwise": round(per_row / per_vec, 1),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "cpus": os.cpu_count(),
        "profile_version": profile.version,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"book: {args.accounts:,} accounts, {len(raw.deals):,} deals (generated in {gen_s:.1f} s)")
    print(
        f"learn + score + reasons: {total_s:.2f} s median of {args.repeat} -> "
        f"{result['accounts_per_s']:,} accounts/s"
    )
    print(
        f"score + reasons alone: {score_s:.2f} s; row-wise baseline: {result['rowwise_accounts_per_s']:,} "
        f"accounts/s on {len(records):,} -> {result['ratio_vs_rowwise']}x faster"
    )
    print(f"peak RSS: {peak_rss_mb:,.0f} MB")


if __name__ == "__main__":
    main()
