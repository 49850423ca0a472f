"""Scoring throughput and memory: learn + score + reasons on a synthetic book, beside a hand-written numpy
floor of the same profile and a naive row-by-row baseline; then a 5M book scored in chunks.

    python benchmarks/score_bench.py                                   # 1M whole, 5M chunked; human-readable
    python benchmarks/score_bench.py --accounts 200000 --chunked-accounts 0 --json   # one JSON line

Each size runs in its own process, so each peak RSS (getrusage high-water mark) is that size's alone.
- whole (--accounts): timed, median of --repeat runs: deal aggregates, club, profile, segments and scoring
  with reasons (`learn_score_s`), scoring alone (`score_s`), and the numpy floor: the fit computation for the
  learned profile written directly in numpy over columns already handed over as arrays (text as integer
  codes), with the reasons built once per distinct combination as `scoring.fit` does. `ratio_vs_floor` is
  score_s / floor_s; the floor is checked to give the same scores, tiers and reasons. Peak RSS includes the
  book (accounts and deals) and its generation.
- chunked (--chunked-accounts): the profile is learned on a 1M book, which is then dropped; the accounts come
  as a stream of --chunk-size frames (each a freshly generated book, as pages from a CRM or `iter_accounts`
  would come) through `scoring.fit.score_chunks`; each chunk's result is summarised and dropped, as a writer
  would. Scoring time excludes generating the chunks; the floor is timed on the same chunks.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sandbox.book import generate_book  # noqa: E402
from scoring.aggregates import with_aggregates  # noqa: E402
from scoring.club import select_club  # noqa: E402
from scoring.fit import TIER_NAMES, Tiers, _CompiledAttribute, _join_reasons, score, score_chunks  # noqa: E402
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


class NumpyFloor:
    """The fit computation for one profile in plain numpy, over columns handed over as arrays.

    `columns` turns a frame into those arrays (text as integer codes into its distinct values; not timed, as
    a columnar source would hand them over); `__call__` is the timed part: match degrees, the weighted
    score, tiers, and the reasons, built once per distinct combination of statuses and taken per row.
    """

    def __init__(self, profile, tiers: Tiers = Tiers(), max_len: int = 1024) -> None:  # noqa: B008
        active = sorted((a for a in profile.attributes if a.weight > 0), key=lambda a: (-a.weight, a.name))
        self.attrs = [_CompiledAttribute(a) for a in active]
        self.total = float(sum(a.weight for a in active))
        self.tiers, self.max_len = tiers, max_len

    def columns(self, accounts: pd.DataFrame) -> list[tuple[np.ndarray, list[str] | None]]:
        out = []
        for a in self.attrs:
            if a.attr.kind == "categorical":
                codes, uniques = pd.factorize(accounts[a.name])
                out.append((codes.astype(np.int64), [str(u) for u in uniques]))
            else:
                out.append((accounts[a.name].to_numpy(dtype="float64", na_value=np.nan), None))
        return out

    def __call__(self, columns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(columns[0][0])
        weighted = np.zeros(n)
        combo = np.zeros(n, dtype=np.int64)
        texts_per_attr = []
        for a, (values, uniques) in zip(self.attrs, columns, strict=True):
            if uniques is not None:
                # Status per distinct value: 0 missing, 1 + code; hit where the value is in the profile.
                norm = [u.strip().casefold() for u in uniques]
                hit = np.array([u in a.wanted for u in norm] + [False], dtype=bool)
                match = hit[values].astype(np.float64)
                status = values + 1
                texts = [f"? {a.label} unknown"] + [
                    f"+ {a.label} is {a.wanted[k]}"
                    if k in a.wanted
                    else f"- {a.label} {u.strip()} (profile: {a.profile_text})"
                    for u, k in zip(uniques, norm, strict=True)
                ]
            else:
                present = ~np.isnan(values)
                x = values
                if a.log:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        x = np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), -np.inf)
                    x[~present] = np.nan
                with np.errstate(invalid="ignore"):
                    below, above = a.lo - x, x - a.hi
                    match = np.exp2(-np.fmax(np.fmax(below, above), 0.0) / a.unit)
                    match[~present] = 0.0
                    near = match >= 0.5
                    status = np.select(
                        [~present, below > 0, above > 0], [0, np.where(near, 2, 3), np.where(near, 4, 5)], 1
                    )
                texts = a.numeric_texts
            weighted += a.weight * match
            combo = combo * len(texts) + status  # mixed radix: fits int64 for a handful of attributes
            texts_per_attr.append(texts)
        scores = np.clip(np.floor(weighted / self.total * 100.0 + 0.5), 0, 100).astype(np.int64)
        tiers = np.array(TIER_NAMES, dtype=object)[self.tiers.of(scores)]
        uniq, inverse = np.unique(combo, return_inverse=True)
        widths = [len(t) for t in texts_per_attr]
        reasons = []
        for c in uniq.tolist():
            digits = []
            for w in reversed(widths):
                c, d = divmod(c, w)
                digits.append(d)
            parts = [texts_per_attr[j][d] for j, d in enumerate(reversed(digits))]
            reasons.append(_join_reasons(parts, self.max_len))
        return scores, tiers, np.array(reasons, dtype=object)[inverse]


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_whole(args) -> dict:
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
    total_s, score_s = statistics.median(times), statistics.median(score_times)

    floor = NumpyFloor(profile)
    columns = floor.columns(book)
    floor_s = _median_time(lambda: floor(columns), args.repeat)
    f_scores, f_tiers, f_reasons = floor(columns)
    assert (scored["icp_fit_score"].to_numpy(dtype=np.int64) == f_scores).all(), "floor differs: scores"
    assert (scored["icp_tier"].to_numpy(dtype=object) == f_tiers).all(), "floor differs: tiers"
    assert (scored["icp_reasons"].to_numpy(dtype=object) == f_reasons).all(), "floor differs: reasons"

    sample = book.sample(min(args.sample, len(book)), random_state=0)
    t0 = time.perf_counter()
    # Getting the rows out of the frame is part of the row-wise approach's cost, so it is timed too.
    records = sample[[a.name for a in profile.attributes]].astype(object).to_dict("records")
    rowwise_score(records, profile)
    row_s = time.perf_counter() - t0
    per_row, per_vec = row_s / len(records), score_s / len(book)
    return {
        "accounts": args.accounts,
        "deals": len(raw.deals),
        "repeat": args.repeat,
        "generate_s": round(gen_s, 3),
        "learn_score_s_median": round(total_s, 3),
        "score_only_s_median": round(score_s, 3),
        "floor_s_median": round(floor_s, 3),
        "ratio_vs_floor": round(score_s / floor_s, 2),
        "accounts_per_s": round(args.accounts / total_s),
        "rowwise_sample": len(records),
        "rowwise_accounts_per_s": round(1 / per_row),
        "ratio_vs_rowwise": round(per_row / per_vec, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "profile_version": profile.version,
    }


def run_chunked(args) -> dict:
    learn_book = generate_book(min(args.accounts, 1_000_000), seed=args.seed)
    book = with_aggregates(learn_book.accounts, learn_book.deals)
    profile = learn_profile(book, select_club(book).ids)
    del learn_book, book
    gc.collect()
    rss_before = _peak_rss_mb()
    floor = NumpyFloor(profile)
    generate_s, floor_s, rows = 0.0, 0.0, 0
    tiers = dict.fromkeys(TIER_NAMES, 0)

    def chunks():
        nonlocal generate_s, floor_s, rows
        for i, start in enumerate(range(0, args.chunked_accounts, args.chunk_size)):
            t0 = time.perf_counter()
            size = min(args.chunk_size, args.chunked_accounts - start)
            chunk = generate_book(size, seed=args.seed + 1 + i).accounts
            generate_s += time.perf_counter() - t0
            columns = floor.columns(chunk)
            t0 = time.perf_counter()
            floor(columns)
            floor_s += time.perf_counter() - t0
            del columns
            rows += size
            yield chunk

    t0 = time.perf_counter()
    for result in score_chunks(chunks(), profile):
        for tier, count in result["icp_tier"].value_counts().items():
            tiers[tier] += int(count)
    elapsed = time.perf_counter() - t0
    score_s = elapsed - generate_s - floor_s
    return {
        "chunked_accounts": rows,
        "chunk_size": args.chunk_size,
        "score_s": round(score_s, 3),
        "floor_s": round(floor_s, 3),
        "ratio_vs_floor": round(score_s / floor_s, 2),
        "accounts_per_s": round(rows / score_s),
        "generate_s": round(generate_s, 3),
        "tiers": tiers,
        "peak_rss_mb_after_learning": round(rss_before, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "profile_version": profile.version,
    }


def _child(part: str, args) -> dict:
    cmd = [sys.executable, __file__, "--part", part, "--json"]
    for key in ("accounts", "chunked_accounts", "chunk_size", "repeat", "sample", "seed"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=1_000_000, help="accounts in the whole-book run")
    parser.add_argument(
        "--chunked-accounts", type=int, default=5_000_000, help="accounts scored in chunks (0: skip)"
    )
    parser.add_argument("--chunk-size", type=int, default=500_000, help="accounts per chunk")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the median is reported")
    parser.add_argument("--sample", type=int, default=20_000, help="accounts scored by the row-wise baseline")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--part", choices=("whole", "chunked"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.part:  # a child process: one measurement, its own peak RSS
        print(json.dumps(run_whole(args) if args.part == "whole" else run_chunked(args)))
        return
    result = {"cpus": os.cpu_count(), "pandas": pd.__version__, "whole": _child("whole", args)}
    if args.chunked_accounts:
        result["chunked"] = _child("chunked", args)
    if args.json:
        print(json.dumps(result))
        return
    w = result["whole"]
    print(f"book: {w['accounts']:,} accounts, {w['deals']:,} deals (generated in {w['generate_s']:.1f} s)")
    print(
        f"learn + score + reasons: {w['learn_score_s_median']:.2f} s median of {w['repeat']} -> "
        f"{w['accounts_per_s']:,} accounts/s"
    )
    print(
        f"score + reasons alone: {w['score_only_s_median']:.2f} s; numpy floor {w['floor_s_median']:.2f} s "
        f"(ratio {w['ratio_vs_floor']}); row-wise baseline: {w['rowwise_accounts_per_s']:,} accounts/s on "
        f"{w['rowwise_sample']:,} -> {w['ratio_vs_rowwise']}x faster"
    )
    print(f"peak RSS (whole book, generation included): {w['peak_rss_mb']:,.0f} MB")
    if "chunked" in result:
        c = result["chunked"]
        print(
            f"chunked: {c['chunked_accounts']:,} accounts in chunks of {c['chunk_size']:,}: score "
            f"{c['score_s']:.2f} s, numpy floor {c['floor_s']:.2f} s (ratio {c['ratio_vs_floor']}); "
            f"peak RSS {c['peak_rss_mb']:,.0f} MB ({c['peak_rss_mb_after_learning']:,.0f} MB after learning)"
        )


if __name__ == "__main__":
    main()
