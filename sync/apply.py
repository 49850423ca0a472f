"""Apply: send a plan's changes to the CRM in batches and record each record's outcome in state.

Values are marked pending before any batch is sent and become written as soon as the CRM confirms them, so
a run killed mid-apply leaves state that the next run can reconcile. A record the CRM rejects is kept apart
with its code and message (retried next run); it never fails the rest of its batch. Batching and retries
live in the connector (one retry policy), so this loop only books results.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from connectors.base import Connector
from sync.crm import progress_bar
from sync.plan import OWNED_FIELDS, edited_since
from sync.state import State


@dataclass
class ApplyResult:
    written: int = 0
    failed: int = 0
    failures: list[dict] = field(default_factory=list)  # record_id, code, message
    # overwrites skipped because a person changed the record's owned fields after the pull (record_id, fields)
    edited_during_run: list[dict] = field(default_factory=list)
    rereads: int = 0  # records re-read right before an overwrite
    reread_calls: int = 0  # the API calls those re-reads took
    # records someone touched between our pull and our write: written, and kept in state (`recheck`) for the
    # next incremental run to pull by id, since our write now hides that change from a pull that skips ours
    recheck: int = 0


def apply_changes(
    connector: Connector,
    state: State,
    key: str,
    changes: pd.DataFrame,
    run_id: int,
    *,
    live: pd.DataFrame | None = None,
    pulled: pd.Series | None = None,
    touched_since: pd.Timestamp | None = None,
    progress: bool = False,
    result: ApplyResult | None = None,
) -> ApplyResult:
    """Write `changes` (index = record id, the owned fields, and `kind` fill/update from the plan) batch by
    batch and book every record's outcome. Pass `result` to keep the counts of what went through when a batch
    raises (quota, retries exhausted).

    With `live` (the values the plan was made from), each batch's overwrites are re-read right before it is
    sent, and a record whose owned fields moved since the pull is left alone and reported: a rep edited it
    while this run was working. First fills are not re-read by id; with `pulled`, the query below finds
    those someone changed since the pull, and one whose owned fields a rep filled meanwhile is left alone too.

    With `pulled` (each record's change timestamp as pulled; give it when the next incremental pull skips
    our own writes), a record someone touched since the pull, in any field, is written and its id kept in
    state (`recheck`) before the batch is sent, so the next run pulls it by id. Overwrites are told by the
    re-read's timestamp; first fills by one query for the records others changed since `touched_since` (the
    CRM's clock before the pull began, less the lookback), or when that is unknown by re-reading them too.
    What no check before the write can see: a change landing between this check and the CRM applying the
    record (one Collections call; for a Bulk API 2.0 job, until the job reaches the record), which our
    write then covers. docs/architecture.md ("Incremental pulls") states that window."""
    result = result if result is not None else ApplyResult()
    if changes.empty:
        return result
    values = changes[list(OWNED_FIELDS)]
    updates = (
        changes["kind"].eq("update") if "kind" in changes.columns else pd.Series(True, index=changes.index)
    )
    size = connector.batch_size(len(values))
    jobs = _Jobs(state, key, run_id)
    with progress_bar(progress, len(values), "writing") as bar:
        for start in range(0, len(values), size):
            chunk = values.iloc[start : start + size]
            touched: list[str] = []
            if live is not None:
                kept, touched = _without_edits_since_the_pull(
                    connector, chunk, updates, live, result, pulled, touched_since
                )
                bar.update(len(chunk) - len(kept))
                chunk = kept
            if chunk.empty:
                continue
            if touched:  # committed before the batch goes: a run that dies after sending it keeps them
                result.recheck += state.add_recheck(
                    key, touched, run_id, "changed between our pull and our write"
                )
            state.mark_pending(key, chunk, run_id)
            for batch in connector.write(chunk, on_job=jobs.started):
                _book(state, key, chunk, batch, run_id, result)
                jobs.booked()
                bar.update(len(batch))
    return result


def _without_edits_since_the_pull(
    connector: Connector,
    chunk: pd.DataFrame,
    updates: pd.Series,
    live: pd.DataFrame,
    result: ApplyResult,
    pulled: pd.Series | None = None,
    touched_since: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """The batch without the overwrites whose owned fields moved since the pull (reported), and the ids of
    the records it still writes that someone touched since the pull (with `pulled` only)."""
    is_update = updates.reindex(chunk.index, fill_value=False).to_numpy(dtype=bool)
    ids = chunk.index[is_update]
    fills = chunk.index[~is_update]
    watch = pulled is not None
    # Without the CRM's clock to query from, first fills are re-read by id too (for their timestamps only).
    reread = ids if not watch or touched_since is not None else chunk.index
    stamps: list[pd.Series] = []
    moved = pd.Series(dtype="object")
    calls = connector.api_calls
    if len(reread):
        now = connector.read_owned([str(i) for i in reread], with_modstamp=watch)
        result.rereads += len(reread)
        if watch:
            stamps.append(now.pop("_modstamp"))
        now = now[now.index.isin(ids)]
        moved = edited_since(live.reindex(now.index), now)
        moved = moved[moved != ""]
    if watch and touched_since is not None and len(fills):
        filled: list[pd.DataFrame] = []
        for page in connector.iter_accounts(since=touched_since, skip_own_writes=True):
            page = page.set_index(page["id"].astype(str))
            stamps.append(page["_modstamp"])
            page = page[page.index.isin(fills)]
            if len(page):
                owned = page[[f"live_{f}" for f in OWNED_FIELDS]]
                owned.columns = list(OWNED_FIELDS)
                filled.append(owned)
        if filled:
            # a first fill whose owned fields someone filled meanwhile: theirs, left alone like an overwrite
            now = pd.concat(filled)
            now = now[~now.index.duplicated(keep="last")]
            by_rep = edited_since(live.reindex(now.index), now)
            moved = pd.concat([moved, by_rep[by_rep != ""]])
    result.reread_calls += connector.api_calls - calls
    if not moved.empty:
        result.edited_during_run += [{"record_id": rid, "fields": fields} for rid, fields in moved.items()]
        chunk = chunk.drop(index=moved.index)
    if not watch:
        return chunk, []
    return chunk, touched_since_the_pull(chunk.index, stamps, pulled)


def touched_since_the_pull(ids: pd.Index, stamps: list[pd.Series], pulled: pd.Series) -> list[str]:
    """Of `ids`, those whose change timestamp now (`stamps`, by id) is later than the one pulled."""
    now = pd.concat(stamps) if stamps else pd.Series(dtype="datetime64[ns, UTC]")
    now = pd.to_datetime(now, utc=True)
    now = now[~now.index.duplicated(keep="last")]
    now = now[now.index.isin(ids)]
    then = pd.to_datetime(pulled.reindex(now.index), utc=True)
    return [str(i) for i in now.index[(now > then).to_numpy(dtype=bool)]]


def _book(state: State, key: str, chunk: pd.DataFrame, batch, run_id: int, result: ApplyResult) -> None:
    ok = [r.record_id for r in batch if r.success]
    bad = [r for r in batch if not r.success]
    if ok:
        state.record_written(key, chunk.loc[ok], run_id)
    if bad:
        frame = pd.DataFrame(
            {"code": [r.code for r in bad], "message": [r.message for r in bad]},
            index=[r.record_id for r in bad],
        )
        state.record_failures(key, frame, run_id)
        result.failures += [{"record_id": r.record_id, "code": r.code, "message": r.message} for r in bad]
    result.written += len(ok)
    result.failed += len(bad)


class _Jobs:
    """The server-side write jobs (Bulk API 2.0) of one apply: each id is kept in state (committed) as the
    connector creates the job, before any record is uploaded, and forgotten once its results are booked (the
    connector yields a job's results as one batch). A run that dies in between leaves the id to the next
    run's `settle_open_jobs`."""

    def __init__(self, state: State, key: str, run_id: int) -> None:
        self.state, self.key, self.run_id = state, key, run_id
        self.open: list[str] = []

    def started(self, job_id: str) -> None:
        self.state.record_bulk_job(self.key, job_id, self.run_id)
        self.open.append(job_id)

    def booked(self) -> None:
        for job_id in self.open:
            self.state.forget_bulk_job(self.key, job_id)
        self.open.clear()


@dataclass
class SettleResult:
    """What `settle_open_jobs` found in the jobs dead runs left."""

    jobs: int = 0
    written: int = 0  # records the job wrote: booked as ours
    failed: int = 0  # records it rejected: kept as failures, retried by the pull that follows
    unprocessed: int = 0  # records it never reached: their pending values dropped, planned again


def settle_open_jobs(connector: Connector, state: State, key: str, run_id: int) -> SettleResult:
    """Before a run pulls and plans: finish every write job a dead run left running on the CRM (the
    connector aborts it if it is still going, waits until it is final and reads its results), then book
    its records as the run that started it would have. Successes become written with the values that run
    marked pending; rejections become failures; records the job never reached lose their pending values,
    so the plan that follows decides afresh (a rep's edit made meanwhile is then seen as the rep's)."""
    from connectors.base import UNPROCESSED

    result = SettleResult()
    for job_id in state.open_bulk_jobs(key):
        outcomes = connector.settle_job(job_id)
        ok = [r.record_id for r in outcomes if r.success]
        bad = [r for r in outcomes if not r.success and r.code != UNPROCESSED]
        skipped = [r.record_id for r in outcomes if not r.success and r.code == UNPROCESSED]
        if ok:
            values = state.pending(key, ok)  # a record without pending values was booked already
            if len(values):
                state.record_written(key, values, run_id)
            result.written += len(values)
        if bad:
            frame = pd.DataFrame(
                {"code": [r.code for r in bad], "message": [r.message for r in bad]},
                index=[r.record_id for r in bad],
            )
            state.record_failures(key, frame, run_id)
            state.drop_pending(key, frame.index)
            result.failed += len(bad)
        if skipped:
            state.drop_pending(key, skipped)
            result.unprocessed += len(skipped)
        state.forget_bulk_job(key, job_id)
        result.jobs += 1
    return result
