"""The state store's bookkeeping at scale: a first run's pending and written values, a second run's reads.

    python benchmarks/state_bench.py                                # 1,000,000 accounts; human-readable
    python benchmarks/state_bench.py --accounts 100000 --json       # one JSON line
    git show <rev>:sync/state.py > /tmp/old_state.py && python benchmarks/state_bench.py --impl /tmp/old_state.py

Replays, on a fresh state directory, the `sync.state.State` calls the nightly job makes (`sync/apply.py`,
`sync/job.py`), with values shaped like the scorer's (segment, fit score, tier, reasons of 150-250 characters
drawn from --distinct-reasons texts, one scored_at and model per run; ids in pull order, not sorted):
1. first run: `mark_pending` of every change as one chunk (the Bulk API 2.0 path: `batch_size` is all of
   them), then per job's results (--jobs) `record_written` of the confirmed and `record_failures` of the
   rejected (--failures of them); the state file's size (database + WAL) with the state still open, and after
   it is closed;
2. second run: opening the file, `last_written` and `pending` for every id, `has_history`, `adopt_pending`
   (nothing pending), then a 1% rerun (1% of the book plus last run's failures get new values) written
   through the same calls;
3. a run killed after `mark_pending` of the whole book, then settled as `sync/apply.settle_open_jobs` does:
   `pending` of the job's successes, `record_written` of them, `drop_pending` of the rest;
4. a run killed after `mark_pending` of 1%, then the next run's `pending` and `adopt_pending` (half of them
   held by the CRM).
Timings are wall clock (perf_counter) on this machine, with whatever else runs on it: run it twice.
--impl loads `State` from another file (an older sync/state.py) to measure it the same way.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from connectors.owned import OWNED_FIELDS  # noqa: E402

KEY = "salesforce"
SEGMENTS = ("Enterprise", "Mid-Market", "SMB", "Startup", "Public sector")
FRAGMENTS = (
    "+ industry Software (profile: Software, Fintech)",
    "- industry Education (profile: Manufacturing)",
    "~ annual revenue 70M (profile: 85M-380M)",
    "- annual revenue below 85M (profile: 85M-380M)",
    "+ 420 employees (profile: 310-2,000)",
    "- fewer than 310 employees (profile: 310-2,000)",
    "+ country US (profile: US, CA)",
    "- country FR (profile: US, GB)",
    "? state unknown",
    "+ 3 won deals in 2 years",
    "~ last won 14 months ago",
    "- no referral deals",
)


def load_state_class(impl: str | None):
    if impl is None:
        from sync.state import State

        return State
    spec = importlib.util.spec_from_file_location("state_under_test", impl)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.State


def reasons_pool(size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` distinct reasons texts of 150-250 characters, built like the scorer's ("; "-joined parts)."""
    out = np.empty(size, dtype=object)
    for i in range(size):
        target = int(rng.integers(150, 251))
        parts, text = list(rng.permutation(len(FRAGMENTS))), ""
        while len(text) < target and parts:
            text = f"{text}; {FRAGMENTS[parts.pop()]}" if text else FRAGMENTS[parts.pop()]
        out[i] = (f"{text} #{i}")[-target:] if len(text) >= target else f"{text} #{i}".ljust(target, ".")
    return out


def book_values(
    ids: pd.Index, rng: np.random.Generator, distinct: int, scored_at: str, model: str
) -> pd.DataFrame:
    """Owned values for `ids`, shaped like `sync/job`'s `desired` (fit_score Int64, the rest strings)."""
    n = len(ids)
    if distinct:
        reasons = reasons_pool(distinct, rng)[rng.integers(0, distinct, n)]
    else:  # every record its own text: the worst case for anything that shares values
        base = reasons_pool(1000, rng)[rng.integers(0, 1000, n)]
        reasons = pd.Series(base).str.slice(0, -8) + pd.Series(np.arange(n)).map("{:08d}".format)
    frame = pd.DataFrame(
        {
            "segment": pd.array(
                np.array(SEGMENTS, dtype=object)[rng.integers(0, len(SEGMENTS), n)], dtype="string"
            ),
            "fit_score": pd.array(rng.integers(0, 101, n), dtype="Int64"),
            "tier": pd.array(np.array(list("ABCD"), dtype=object)[rng.integers(0, 4, n)], dtype="string"),
            "reasons": pd.array(np.asarray(reasons, dtype=object), dtype="string"),
            "scored_at": pd.array([scored_at] * n, dtype="string"),
            "model": pd.array([model] * n, dtype="string"),
        },
        index=ids,
    )
    return frame[list(OWNED_FIELDS)]


def salesforce_ids(n: int, rng: np.random.Generator) -> pd.Index:
    """18-character Account ids, in pull order (by modstamp, so not by id)."""
    numbers = pd.Series(rng.permutation(n)).map("{:012d}".format)
    return pd.Index("001Ax" + numbers + "AAA", dtype="string", name=None).astype(object)


def size_mb(directory: Path) -> float:
    total = sum(p.stat().st_size for p in directory.glob("state.sqlite*"))
    return round(total / 1e6, 1)


class Clock:
    """Wall time per step, and this process's CPU time (less swayed by what else runs on a shared machine;
    SQLite's fsyncs are in the wall time only)."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self.cpu = 0.0

    @contextmanager
    def step(self, name: str):
        t0, c0 = time.perf_counter(), time.process_time()
        yield
        self.steps[name] = round(self.steps.get(name, 0.0) + time.perf_counter() - t0, 3)
        self.cpu = round(self.cpu + time.process_time() - c0, 3)


def book_results(state, chunk: pd.DataFrame, failed: pd.Index, jobs: int, run_id: int, clock: Clock) -> None:
    """What `sync/apply._book` does with each job's results: the confirmed become written, the rest failures."""
    for part in np.array_split(np.arange(len(chunk)), jobs):
        ids = chunk.index[part]
        bad = ids[ids.isin(failed)]
        ok = ids[~ids.isin(failed)]
        with clock.step("record_written"):
            state.record_written(KEY, chunk.loc[ok], run_id)
        if len(bad):
            frame = pd.DataFrame(
                {
                    "code": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                    "message": "Tier can't be set on a closed account",
                },
                index=bad,
            )
            with clock.step("record_failures"):
                state.record_failures(KEY, frame, run_id)


def measure(args: argparse.Namespace) -> dict:
    State = load_state_class(args.impl)
    rng = np.random.default_rng(args.seed)
    n = args.accounts
    t0 = time.perf_counter()
    ids = salesforce_ids(n, rng)
    first = book_values(ids, rng, args.distinct_reasons, "2026-03-01T02:00:00Z", "5c90886a9f42")
    failed = ids[rng.choice(n, min(args.failures, n), replace=False)]
    moved = ids[rng.choice(n, max(1, n // 100), replace=False)]
    rerun_ids = moved.union(failed, sort=False)
    rerun = book_values(rerun_ids, rng, args.distinct_reasons, "2026-03-02T02:00:00Z", "5c90886a9f42")
    generate_s = time.perf_counter() - t0

    root = Path(tempfile.mkdtemp(prefix="icp-state-bench-", dir=args.dir))
    out: dict = {"accounts": n, "impl": args.impl or "sync/state.py", "generate_s": round(generate_s, 1)}
    try:
        # 1. the first run
        directory = root / "first"
        first_run = Clock()
        with State.open(directory) as st:
            run = st.start_run(KEY, "full", pd.Timestamp.now(tz="UTC"))
            with first_run.step("mark_pending"):
                st.mark_pending(KEY, first, run)
            out["size_mb_pending"] = size_mb(directory)
            book_results(st, first, failed, args.jobs, run, first_run)
            with first_run.step("finish_run"):
                st.finish_run(run, "ok", {"written": n - len(failed)})
            out["size_mb_open"] = size_mb(directory)
        out["size_mb_closed"] = size_mb(directory)
        out["first_run"] = first_run.steps
        out["first_run_total_s"] = round(sum(first_run.steps.values()), 2)
        out["first_run_cpu_s"] = round(first_run.cpu, 2)

        # 2. the second run: reads for every id, then 1% (and the failures) written again
        second = Clock()
        with ExitStack() as stack:
            with second.step("open"):  # an older layout is migrated here
                st = stack.enter_context(State.open(directory))
            run = st.start_run(KEY, "full", pd.Timestamp.now(tz="UTC"))
            all_ids = list(ids)
            with second.step("last_written"):
                last = st.last_written(KEY, all_ids)
            with second.step("pending"):
                pend = st.pending(KEY, all_ids)
            with second.step("has_history"):
                st.has_history(KEY)
            with second.step("adopt_pending"):
                st.adopt_pending(KEY, last, run)
            # a rejected record keeps its pending values until this run's adopt_pending drops them
            assert len(last) == n - len(failed) and len(pend) == len(failed), (len(last), len(pend))
            with second.step("mark_pending"):
                st.mark_pending(KEY, rerun, run)
            book_results(st, rerun, pd.Index([]), args.jobs, run, second)
            with second.step("failures"):
                assert st.failures(KEY).empty
        out["second_run"] = second.steps
        out["second_run_reads_s"] = round(second.steps["last_written"] + second.steps["pending"], 2)
        out["rerun_1pct_s"] = round(second.steps["mark_pending"] + second.steps["record_written"], 2)
        out["size_mb_after_rerun"] = size_mb(directory)
        shutil.rmtree(directory)

        if not args.skip_crash:
            # 3. killed while the whole book's job ran; the next run settles the job
            directory = root / "settle"
            settle = Clock()
            with State.open(directory) as st:
                run = st.start_run(KEY, "full", pd.Timestamp.now(tz="UTC"))
                with settle.step("mark_pending"):
                    st.mark_pending(KEY, first, run)
            with State.open(directory) as st:
                run = st.start_run(KEY, "full", pd.Timestamp.now(tz="UTC"))
                ok = list(ids[~ids.isin(failed)])
                with settle.step("pending_of_ok"):
                    values = st.pending(KEY, ok)
                with settle.step("record_written"):
                    st.record_written(KEY, values, run)
                with settle.step("drop_pending"):
                    st.drop_pending(KEY, failed)
                assert st.pending(KEY).empty and len(st.last_written(KEY)) == n - len(failed)
            out["settle"] = settle.steps
            out["size_mb_after_settle"] = size_mb(directory)
            shutil.rmtree(directory)

            # 4. killed after marking 1% pending; the next run reads pending and adopts what the CRM holds
            directory = root / "adopt"
            adopt = Clock()
            with State.open(directory) as st:
                run = st.start_run(KEY, "full", pd.Timestamp.now(tz="UTC"))
                st.mark_pending(KEY, first.loc[moved], run)
            live = first.loc[moved].astype("string")
            live.iloc[len(live) // 2 :, list(OWNED_FIELDS).index("tier")] = "Z"  # a rep's, not ours
            with State.open(directory) as st:
                run = st.start_run(KEY, "full", pd.Timestamp.now(tz="UTC"))
                with adopt.step("pending"):
                    st.pending(KEY, list(moved))
                with adopt.step("adopt_pending"):
                    adopted = st.adopt_pending(KEY, live, run)
                assert adopted == len(moved) - len(moved) // 2, adopted
            out["adopt"] = adopt.steps
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out["cpus"] = os.cpu_count()
    out["load_average"] = round(os.getloadavg()[0], 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=1, help="Bulk API jobs the first run's results come in")
    parser.add_argument("--failures", type=int, default=1000, help="records the CRM rejects in the first run")
    parser.add_argument(
        "--distinct-reasons",
        type=int,
        default=20_000,
        help="distinct reasons texts (0: every record its own)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", default=None, help="where the state files go (default: the temp dir)")
    parser.add_argument("--impl", default=None, help="a sync/state.py to measure instead of this tree's")
    parser.add_argument("--skip-crash", action="store_true", help="only the first and second run")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    result = measure(args)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['impl']}: {result['accounts']:,} accounts (values generated in {result['generate_s']} s; "
        f"{result['cpus']} CPUs, load average {result['load_average']} at the end)"
    )
    steps = ", ".join(f"{k} {v:.2f} s" for k, v in result["first_run"].items())
    print(
        f"first run bookkeeping: {result['first_run_total_s']:.2f} s ({steps}); "
        f"{result['first_run_cpu_s']:.2f} s CPU"
    )
    print(
        f"state file: {result['size_mb_pending']} MB with everything pending, {result['size_mb_open']} MB after "
        f"the run (database + WAL, still open), {result['size_mb_closed']} MB closed"
    )
    steps = ", ".join(f"{k} {v:.2f} s" for k, v in result["second_run"].items())
    print(f"second run: {steps}; {result['size_mb_after_rerun']} MB after the 1% rerun")
    if "settle" in result:
        steps = ", ".join(f"{k} {v:.2f} s" for k, v in result["settle"].items())
        print(
            f"killed while the whole book was pending, then settled: {steps}; {result['size_mb_after_settle']} MB"
        )
        steps = ", ".join(f"{k} {v:.2f} s" for k, v in result["adopt"].items())
        print(f"killed with 1% pending, then adopted: {steps}")


if __name__ == "__main__":
    main()
