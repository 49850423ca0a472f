"""A rep's edit is never lost: after a killed run, while a run writes, and after the state is lost.

Each case is driven as it was found, through the real SDK against the sandbox, with the sandbox's `hold`
fault to stop a run at a known write batch instead of a moment guessed from the clock."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading

import pandas as pd
import pytest
from click.testing import CliRunner

from sandbox import Sandbox
from sync import job
from sync.cli import main
from sync.config import load_config
from sync.job import RunOptions, StateWithoutHistory
from sync.state import State

from .conftest import in_background, session_env
from .test_faults import fast
from .test_job import writes

CONFIG = """[crm]
kind = "salesforce"
[salesforce]
bulk_threshold = 100000
[sync]
max_change_ratio = 1.0
lookback_minutes = 0
"""


def _setup(tmp_path, sb, learned_profile, extra: str = "") -> tuple[dict, object]:
    shutil.copy(learned_profile, tmp_path / "icp-profile.toml")
    (tmp_path / "icp.toml").write_text(CONFIG + extra)
    env = session_env(sb)
    return env, load_config(tmp_path / "icp.toml", env=env)


def _tiers(sb) -> dict[str, str | None]:
    return {r["Id"]: r["ICP_Tier__c"] for r in sb.sf.records("Account")}


def _other_tier(tier: str | None) -> str:
    return "D" if tier != "D" else "C"


def test_a_reps_edit_after_a_killed_run_is_kept_and_reported(tmp_path, learned_profile):
    n = 1000
    with Sandbox(accounts=n, seed=7, with_icp_fields=True) as sb:
        env, config = _setup(tmp_path, sb, learned_profile)
        sb.faults.hold(only="sf.composite", after=2)  # two batches land, the third is taken and parked
        proc = subprocess.Popen(
            [sys.executable, "-m", "sync.cli", "run", "--config", str(tmp_path / "icp.toml")],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while not sb.faults.wait_parked(timeout=0.2):
                assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before its third batch"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        before = {rid for rid, tier in _tiers(sb).items() if tier}
        sb.faults.release()  # the parked batch is applied though its client is dead: accepted, not booked
        assert sb.calls.wait_idle(timeout=60)
        accepted = sorted(rid for rid, tier in _tiers(sb).items() if tier and rid not in before)
        assert len(accepted) == 200 and len(before) == 400

        # A rep then sets the tier on one record of the accepted batch.
        target = accepted[17]
        rep_value = _other_tier(_tiers(sb)[target])
        sb.sf.edit("Account", target, {"ICP_Tier__c": rep_value})

        rerun = job.run(config, policy=fast())
        assert _tiers(sb)[target] == rep_value  # kept
        assert rerun.skipped_manual_edits == 1 and rerun.adopted_after_interrupt == 199
        assert rerun.written == n - 600  # the dead run's accepted batch is not written again
        kept = pd.read_csv(rerun.files["manual_edits_csv"], dtype=str)
        assert list(kept["record_id"]) == [target] and "tier" in kept.loc[0, "fields"]
        again = job.run(config, RunOptions(full=True), policy=fast())
        assert again.written == 0 and again.skipped_manual_edits == 1 and _tiers(sb)[target] == rep_value


def test_edits_made_while_a_run_writes_are_kept_and_reported(tmp_path, learned_profile):
    n = 1000
    with Sandbox(accounts=n, seed=7, with_icp_fields=True) as sb:
        # First night with high tier thresholds; the second, with the defaults, moves many tiers: updates.
        env, first_config = _setup(tmp_path, sb, learned_profile, "[scoring.tiers]\na = 95\nb = 90\nc = 85\n")
        assert job.run(first_config, policy=fast()).written == n
        (tmp_path / "icp.toml").write_text(CONFIG)
        config = load_config(tmp_path / "icp.toml", env=env)
        preview = job.run(config, RunOptions(dry_run=True), policy=fast())
        planned = pd.read_csv(preview.files["plan_csv"], dtype=str)
        assert set(planned["kind"]) == {"update"} and len(planned) > 605, len(planned)
        # Records of the 4th batch (batches of 200, in plan order): re-read after the edits below.
        late = list(planned["record_id"][600:605])

        sb.faults.hold(only="sf.composite", after=2)
        done: dict = {}
        runner = threading.Thread(target=lambda: done.setdefault("report", job.run(config, policy=fast())))
        runner.start()
        try:
            assert sb.faults.wait_parked(timeout=60), "the run never reached its third batch"
            reps = {rid: f"rep note {i}" for i, rid in enumerate(late)}
            for rid, note in reps.items():
                sb.sf.edit("Account", rid, {"ICP_Reasons__c": note})
        finally:
            sb.faults.release()
            runner.join(timeout=120)
        report = done["report"]
        stored = {r["Id"]: r["ICP_Reasons__c"] for r in sb.sf.records("Account")}
        assert {rid: stored[rid] for rid in reps} == reps  # every edit survived
        assert report.edited_during_run == len(reps)
        listed = pd.read_csv(report.files["manual_edits_csv"], dtype=str).set_index("record_id")
        assert set(reps) <= set(listed.index)
        assert set(listed.loc[list(reps), "action"]) == {"kept (edited during the run)"}
        assert set(listed.loc[list(reps), "fields"]) == {"reasons"}
        assert report.written == len(planned) - len(reps)
        nxt = job.run(config, RunOptions(full=True), policy=fast())
        assert nxt.written == 0 and nxt.skipped_manual_edits == len(reps)  # still theirs, still reported


def test_each_bulk_job_re_reads_its_own_records_right_before_it_is_sent(tmp_path, learned_profile):
    n = 1000
    with Sandbox(accounts=n, seed=7, with_icp_fields=True) as sb:
        bulk = "[salesforce]\nbulk_threshold = 50\nbulk_job_records = 200\n"
        tiers = "[scoring.tiers]\na = 95\nb = 90\nc = 85\n"
        env, first_config = _setup(tmp_path, sb, learned_profile, tiers)
        assert job.run(first_config, policy=fast()).written == n
        text = CONFIG.replace("[salesforce]\nbulk_threshold = 100000\n", bulk)
        (tmp_path / "icp.toml").write_text(text)
        config = load_config(tmp_path / "icp.toml", env=env)
        preview = job.run(config, RunOptions(dry_run=True), policy=fast())
        planned = pd.read_csv(preview.files["plan_csv"], dtype=str)
        assert set(planned["kind"]) == {"update"} and len(planned) > 405, len(planned)
        late = list(planned["record_id"][400:405])  # the third job's (jobs of 200, in plan order)

        # Parked: the second job's upload. The third job's records are edited meanwhile; they are re-read
        # right before the third job, so the edits are seen and kept (one re-read before the first job of the
        # lot would have missed them).
        sb.faults.hold(only="sf.bulk2.ingest.upload", after=1)
        with in_background(sb, lambda: job.run(config, policy=fast())) as done:
            assert sb.faults.wait_parked(timeout=60), "the run never reached its second job"
            reps = {rid: f"rep note {i}" for i, rid in enumerate(late)}
            for rid, note in reps.items():
                sb.sf.edit("Account", rid, {"ICP_Reasons__c": note})
        report = done["value"]
        stored = {r["Id"]: r["ICP_Reasons__c"] for r in sb.sf.records("Account")}
        assert {rid: stored[rid] for rid in reps} == reps
        assert report.edited_during_run == len(reps) and report.written == len(planned) - len(reps)
        assert report.write_calls >= len(planned) // 200  # one Bulk job per 200 records


def test_a_lost_state_stops_before_writing_and_says_how_to_go_on(tmp_path, learned_profile):
    n = 300
    with Sandbox(accounts=n, seed=7, with_icp_fields=True) as sb:
        _, config = _setup(tmp_path, sb, learned_profile)
        assert job.run(config, policy=fast()).written == n
        target = sorted(_tiers(sb))[3]
        rep_value = _other_tier(_tiers(sb)[target])
        sb.sf.edit("Account", target, {"ICP_Tier__c": rep_value})
        state_file = config.state_dir / "state.sqlite"
        for suffix in ("", "-wal", "-shm"):
            state_file.with_name(state_file.name + suffix).unlink(missing_ok=True)
        state_file.write_bytes(b"")  # truncated to nothing: a new, empty state

        before = writes(sb)
        with pytest.raises(StateWithoutHistory, match="--adopt-live.*--keep-live"):
            job.run(config, policy=fast())
        assert writes(sb) == before  # nothing written over the rep's value

        kept = job.run(config, RunOptions(keep_live=True), policy=fast())
        assert kept.written == 0 and kept.skipped_manual_edits >= 1 and _tiers(sb)[target] == rep_value
        # from now on the state has a history; the values are still the reps', night after night
        again = job.run(config, RunOptions(full=True), policy=fast())
        assert again.written == 0 and _tiers(sb)[target] == rep_value


def test_adopt_live_takes_the_crms_values_as_ours(tmp_path, learned_profile):
    n = 200
    with Sandbox(accounts=n, seed=7, with_icp_fields=True) as sb:
        _, config = _setup(tmp_path, sb, learned_profile)
        assert job.run(config, policy=fast()).written == n
        shutil.rmtree(config.state_dir)
        adopted = job.run(config, RunOptions(adopt_live=True), policy=fast())
        assert adopted.adopted_live == n and adopted.written == 0
        with State.open(config.state_dir, lock=False) as st:
            assert len(st.last_written("salesforce")) == n
        # a rep's edit after that is detected as usual
        target = sorted(_tiers(sb))[0]
        sb.sf.edit("Account", target, {"ICP_Tier__c": _other_tier(_tiers(sb)[target])})
        assert job.run(config, RunOptions(full=True), policy=fast()).skipped_manual_edits == 1


def test_the_cli_explains_a_lost_damaged_or_read_only_state_with_exit_2(tmp_path, learned_profile):
    with Sandbox(accounts=50, seed=7, with_icp_fields=True) as sb:
        env, config = _setup(tmp_path, sb, learned_profile)
        job.run(config, policy=fast())
        runner = CliRunner()
        args = ["run", "--config", str(tmp_path / "icp.toml")]
        state_file = config.state_dir / "state.sqlite"

        shutil.rmtree(config.state_dir)
        lost = runner.invoke(main, args, env=env)
        assert lost.exit_code == 2 and "--adopt-live" in lost.output and "Traceback" not in lost.output

        shutil.rmtree(config.state_dir)
        config.state_dir.mkdir()
        state_file.write_bytes(b"this is not a database" * 200)
        damaged = runner.invoke(main, args, env=env)
        assert damaged.exit_code == 2, damaged.output
        assert f"cannot use the state file {state_file}" in damaged.output and "damaged" in damaged.output
        assert damaged.exception is None or isinstance(damaged.exception, SystemExit)

        both = runner.invoke(main, [*args, "--adopt-live", "--keep-live"], env=env)
        assert both.exit_code == 2 and "exclude each other" in both.output

        shutil.rmtree(config.state_dir)
        assert runner.invoke(main, [*args, "--adopt-live"], env=env).exit_code == 0
        if shutil.which("chattr") is None:
            return
        frozen = [state_file, config.state_dir]
        if subprocess.run(["chattr", "+i", *map(str, frozen)], capture_output=True).returncode != 0:
            return  # a file system without immutable files: nothing more to try here
        try:
            read_only = runner.invoke(main, args, env=env)
        finally:
            subprocess.run(["chattr", "-i", *map(str, frozen)], check=True)
        assert read_only.exit_code == 2 and "cannot use the state file" in read_only.output
        assert read_only.exception is None or isinstance(read_only.exception, SystemExit)
