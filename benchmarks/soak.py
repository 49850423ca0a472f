"""Randomised soak: kill -9 at random points and reps editing at random times, both write paths.

    python benchmarks/soak.py                          # 50 rounds, alternating Collections and Bulk API 2.0
    python benchmarks/soak.py --rounds 10 --seed 100 --accounts 2000 --json

Each round is seeded (`--seed` + round number), so a failing round reruns exactly with `--seed N --rounds 1`.
A round runs `--nights` nightly cycles on a fresh sandbox book. Each night the tier thresholds move at random
(so hundreds of records are overwritten), then:
1. a rep edits a few random records;
2. `icp run` starts as a real subprocess and is killed with SIGKILL at a random write batch (Collections) or
   at a random chunk of its Bulk API 2.0 job, held there by the sandbox, so the kill point is exact;
3. the killed run's in-flight work lands as it would (the parked Collections batch is applied; the Bulk job is
   left running for the next run to settle) and a rep edits a few records the dead run has already written;
4. the next run starts; on the Collections path a rep edits records of later batches while that run is
   stopped at a random batch (the pre-write re-read must catch them);
5. runs follow until one has nothing left to write.
After each round it checks, from the sandbox's own write journal: every rep edit is still in the CRM (kept, and
reported by the last run), every other record holds the desired value (a final full run writes nothing), and
no record was written with the values it already held (an identical rewrite: work repeated for nothing).
Edits inside the window the README names (between the pre-write re-read and the CRM applying that batch, or on a
record a dead run's job reaches before the next run aborts it) are not made: no tool can keep those.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from connectors.owned import BY_NAME, COMPARED_FIELDS  # noqa: E402
from connectors.retry import RetryPolicy  # noqa: E402
from sandbox import Sandbox  # noqa: E402
from sandbox.salesforce.store import API_USER_ID  # noqa: E402
from sync import job, pipeline  # noqa: E402
from sync.config import load_config  # noqa: E402
from sync.job import RunOptions  # noqa: E402

COLLECTIONS, BULK = "collections", "bulk"
WRITE_LABEL = {COLLECTIONS: "sf.composite", BULK: "sf.bulk2.ingest.chunk"}
COMPARED_NAMES = [BY_NAME[f].salesforce for f in COMPARED_FIELDS]
BATCH = 200  # Collections records per call; Bulk API 2.0 chunk size in the sandbox


@dataclass
class RoundResult:
    seed: int
    path: str
    accounts: int
    nights: int
    kills: int = 0
    rep_edits: int = 0
    lost_edits: int = 0  # overwritten and never reported
    reported_overwrites: int = 0  # overwritten, listed in unconfirmed.csv (a revert to our previous value)
    identical_rewrites: int = 0
    api_writes: int = 0
    final_written: int = 0
    final_manual_edits: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _fast() -> RetryPolicy:
    return RetryPolicy(attempts=6, initial_wait=0.01, max_wait=0.05)


def _config_text(rng: random.Random, path: str) -> str:
    c = rng.randint(5, 45)
    b = rng.randint(c + 5, 70)
    a = rng.randint(b + 5, 95)
    threshold = 1 if path == BULK else 1_000_000
    return (
        f'[crm]\nkind = "salesforce"\n[salesforce]\nbulk_threshold = {threshold}\n'
        "[sync]\nmax_change_ratio = 1.0\nlookback_minutes = 0\n"
        f"[scoring.tiers]\na = {a}\nb = {b}\nc = {c}\n"
    )


class Round:
    def __init__(
        self, sb: Sandbox, workdir: Path, rng: random.Random, path: str, result: RoundResult
    ) -> None:
        self.sb, self.workdir, self.rng, self.path, self.result = sb, workdir, rng, path, result
        self.env = {
            "SF_INSTANCE_URL": sb.salesforce.instance_url,
            "SF_ACCESS_TOKEN": sb.salesforce.access_token,
            "SF_CA_BUNDLE": sb.salesforce.ca_bundle,
        }
        self.rep: dict[tuple[str, str], str] = {}  # (record id, field) -> the rep's latest value
        self.phases: dict[tuple[str, str], str] = {}  # ... and when it was made, for a failure's message
        self.ids = sorted(r["Id"] for r in sb.sf.records("Account"))

    @property
    def config(self):
        return load_config(self.workdir / "icp.toml", env=self.env)

    # -- reps ---------------------------------------------------------------------------------------------
    def edit(self, candidates: list[str], k: int, phase: str = "") -> None:
        pool = sorted(set(candidates))
        for rid in self.rng.sample(pool, min(k, len(pool))):
            name = self.rng.choice(["ICP_Tier__c", "ICP_Reasons__c", "ICP_Segment__c"])
            current = self.sb.sf.store.record("Account", rid)[name]
            if name == "ICP_Tier__c":
                value = self.rng.choice([t for t in "ABCD" if t != current])
            elif name == "ICP_Segment__c":
                value = self.rng.choice([s for s in ("SMB", "Mid-market", "Enterprise") if s != current])
            else:
                value = f"rep note {self.rng.randint(0, 10**6)}"
            self.sb.sf.edit("Account", rid, {name: value})
            self.rep[(rid, name)] = value
            self.phases[(rid, name)] = phase
            self.result.rep_edits += 1

    # -- runs ---------------------------------------------------------------------------------------------
    def plan_order(self) -> list[str]:
        preview = job.run(self.config, RunOptions(dry_run=True), policy=_fast())
        if "plan_csv" not in preview.files:
            return []
        return list(pd.read_csv(preview.files["plan_csv"], dtype=str)["record_id"])

    def killed_run(self) -> None:
        order = self.plan_order()
        batches = max(1, -(-len(order) // BATCH))
        after = self.rng.randint(0, max(0, batches - 1))
        self.sb.faults.hold(only=WRITE_LABEL[self.path], after=after)
        proc = subprocess.Popen(
            [sys.executable, "-m", "sync.cli", "run", "--quiet", "--config", str(self.workdir / "icp.toml")],
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        parked = False
        try:
            while proc.poll() is None:
                if self.sb.faults.wait_parked(timeout=0.2):
                    parked = True
                    break
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        self.result.kills += int(parked)
        if not parked or self.path == COLLECTIONS:
            # The parked batch arrived whole: the org applies it though its client is dead.
            self.sb.faults.release()
            if not self.sb.calls.wait_idle(timeout=120):
                self.result.problems.append("a sandbox request never finished")
            # A rep then edits records the dead run had written (it never booked the last batch).
            self.edit(order[: (after + 1) * BATCH], 3, "after the kill")
            self.next_run(order=None)
            return
        # Bulk: the dead run's job is still in flight, held at chunk `after`. A rep edits records it has
        # already written (records it has not reached would be overwritten when it resumes: the window).
        jobs = self.sb.sf.bulk2.ingest_jobs()
        done = [
            rid
            for j in jobs
            if j["state"] not in ("JobComplete", "Aborted", "Failed")
            for rid in j["processed"]
        ]
        self.edit(done, 3, "after the kill, job in flight")
        live_job = next(j["id"] for j in jobs if j["state"] not in ("JobComplete", "Aborted", "Failed"))
        # The next run settles it first (aborts it); the sandbox lets the held chunk go once the abort is in.
        outcome: dict = {}
        runner = threading.Thread(target=lambda: outcome.setdefault("report", self._run_or_error()))
        runner.start()
        if not self.sb.sf.bulk2.wait_for_state(live_job, ("Aborted", "JobComplete", "Failed"), timeout=120):
            self.result.problems.append(f"the dead run's job {live_job} was never aborted")
        self.sb.faults.release()
        runner.join(timeout=300)
        if isinstance(outcome.get("report"), BaseException):
            self.result.problems.append(f"the run after a kill failed: {outcome['report']!r}")

    def _run_or_error(self):
        try:
            return job.run(self.config, policy=_fast())
        except BaseException as exc:  # reported by the round, not raised in a thread
            return exc

    def next_run(self, order: list[str] | None) -> None:
        """The run after a kill. On Collections, a rep edits records of later batches while it is stopped."""
        if self.path == BULK:
            report = self._run_or_error()
            if isinstance(report, BaseException):
                self.result.problems.append(f"the run after a kill failed: {report!r}")
            return
        order = self.plan_order()
        batches = -(-len(order) // BATCH)
        if batches < 2:
            self._run_or_error()
            return
        after = self.rng.randint(0, batches - 2)
        self.sb.faults.hold(only="sf.composite", after=after)
        outcome: dict = {}
        runner = threading.Thread(target=lambda: outcome.setdefault("report", self._run_or_error()))
        runner.start()
        try:
            if self.sb.faults.wait_parked(timeout=120):
                self.edit(order[(after + 1) * BATCH :], 3, "during the next run")  # re-read before each batch
        finally:
            self.sb.faults.release()
            runner.join(timeout=300)
        if isinstance(outcome.get("report"), BaseException):
            self.result.problems.append(f"a run failed: {outcome['report']!r}")

    def until_clean(self) -> job.RunReport:
        report = None
        for _ in range(4):
            report = job.run(self.config, RunOptions(full=True), policy=_fast())
            if report.changed == 0:
                return report
        self.result.problems.append(f"still {report.changed} changes after 4 runs")
        return report

    # -- checks -------------------------------------------------------------------------------------------
    def check(self, journal) -> None:
        final = job.run(self.config, RunOptions(full=True), policy=_fast())
        self.result.final_written = final.written
        self.result.final_manual_edits = final.skipped_manual_edits
        if final.written or final.changed:
            self.result.problems.append(f"a final full run still wrote {final.written} records")
        records = {r["Id"]: r for r in self.sb.sf.records("Account")}
        lost = [
            (rid, name, v, records[rid][name], self.phases[(rid, name)])
            for (rid, name), v in self.rep.items()
            if records[rid][name] != v
        ]
        # A rep who sets a field back to the value icp-sync wrote before a run that was killed mid-batch looks
        # exactly like that batch never landing: the next run writes it again and lists it in unconfirmed.csv.
        listed = set()
        for path in Path(self.config.state_dir, "runs").glob("*/unconfirmed.csv"):
            listed |= set(pd.read_csv(path, dtype=str)["record_id"])
        self.result.reported_overwrites = sum(1 for item in lost if item[0] in listed)
        lost = [item for item in lost if item[0] not in listed]
        self.result.lost_edits = len(lost)
        if lost:
            rid, name = lost[0][0], lost[0][1]
            trail = [
                ("api" if e.user_id == API_USER_ID else "rep", e.before.get(name), e.after.get(name))
                for e in journal
                if e.record_id == rid and name in e.after
            ]
            self.result.problems.append(
                f"{len(lost)} rep edits lost, e.g. {lost[:3]}; writes of the first: {trail}"
            )
        # Every rep-edited record is now either reported by this run (its value differs from the desired one:
        # kept, in manual-edits.csv) or equal to the desired value (no conflict, nothing to report), since the
        # run had nothing else left to write: `final.changed == 0` above.
        ours = [e for e in journal if e.user_id == API_USER_ID and e.sobject == "Account"]
        self.result.api_writes = len(ours)
        identical = [e for e in ours if _same(e.before, e.after)]
        self.result.identical_rewrites = len(identical)
        if identical:
            self.result.problems.append(f"{len(identical)} identical rewrites, e.g. {identical[0].record_id}")


def _same(before: dict, after: dict) -> bool:
    """The write set every compared owned field to the value it already held."""
    for name in COMPARED_NAMES:
        if name not in after:
            continue
        a, b = before.get(name), after.get(name)
        if isinstance(a, int | float) or isinstance(b, int | float):
            try:
                if float(a) != float(b):
                    return False
            except (TypeError, ValueError):
                return False
        elif (a or None) != (b or None):
            return False
    return True


def soak_round(
    seed: int, *, accounts: int, path: str, nights: int, profile: Path | None = None
) -> RoundResult:
    """One seeded round on a fresh sandbox; `profile` (an icp-profile.toml) skips learning one."""
    rng = random.Random(seed)
    result = RoundResult(seed=seed, path=path, accounts=accounts, nights=nights)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix=f"icp-soak-{seed}-"))
    try:
        with Sandbox(accounts=accounts, seed=7, with_icp_fields=True) as sb:
            (workdir / "icp.toml").write_text(_config_text(rng, path))
            r = Round(sb, workdir, rng, path, result)
            if profile is not None:
                shutil.copy(profile, workdir / "icp-profile.toml")
            else:
                pipeline.learn(r.config, pipeline.load_book(r.config))
            journal = sb.sf.store.start_journal()
            job.run(r.config, policy=_fast())  # the first night fills every record
            for _ in range(nights):
                (workdir / "icp.toml").write_text(_config_text(rng, path))
                r.edit(r.ids, 4, "before the run")
                r.killed_run()
                r.until_clean()
            r.check(journal)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result.seconds = round(time.monotonic() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1, help="the first round's seed; round i uses seed + i")
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--nights", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    for i in range(args.rounds):
        path = (COLLECTIONS, BULK)[i % 2]
        res = soak_round(args.seed + i, accounts=args.accounts, path=path, nights=args.nights)
        results.append(res)
        if not args.json:
            status = "ok" if res.ok else "FAIL: " + "; ".join(res.problems)
            print(
                f"round {i + 1:>3} seed {res.seed:<5} {res.path:<11} kills {res.kills} rep edits {res.rep_edits:>3} "
                f"lost {res.lost_edits} reported {res.reported_overwrites} identical rewrites {res.identical_rewrites} "
                f"({res.api_writes:,} record writes) {res.seconds:>5.1f} s  {status}",
                flush=True,
            )
    totals = {
        "rounds": len(results),
        "failed_rounds": sum(not r.ok for r in results),
        "kills": sum(r.kills for r in results),
        "rep_edits": sum(r.rep_edits for r in results),
        "lost_edits": sum(r.lost_edits for r in results),
        "reported_overwrites": sum(r.reported_overwrites for r in results),
        "identical_rewrites": sum(r.identical_rewrites for r in results),
        "record_writes": sum(r.api_writes for r in results),
        "median_round_s": sorted(r.seconds for r in results)[len(results) // 2] if results else 0,
    }
    if args.json:
        print(json.dumps({"totals": totals, "rounds": [asdict(r) for r in results]}))
    else:
        print(
            f"\n{totals['rounds']} rounds ({totals['failed_rounds']} failed): {totals['kills']} kills, "
            f"{totals['rep_edits']} rep edits, {totals['lost_edits']} lost, {totals['reported_overwrites']} overwritten "
            f"and reported (unconfirmed.csv), {totals['identical_rewrites']} identical "
            f"rewrites in {totals['record_writes']:,} record writes; median round {totals['median_round_s']} s"
        )
    sys.exit(1 if totals["failed_rounds"] else 0)


if __name__ == "__main__":
    main()
