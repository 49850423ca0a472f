"""Apply: send a plan's changes to the CRM in batches and record each record's outcome in state.

Values are marked pending before any batch is sent and become written as soon as the CRM confirms them, so
a run killed mid-apply leaves state that the next run can reconcile. A record the CRM rejects is kept apart
with its code and message (retried next run); it never fails the rest of its batch. Batching and retries
live in the connector (one retry policy), so this loop only books results.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from sync.crm import progress_bar
from sync.plan import OWNED_FIELDS
from sync.state import State


@dataclass
class ApplyResult:
    written: int = 0
    failed: int = 0
    failures: list[dict] = field(default_factory=list)  # record_id, code, message


def apply_changes(
    connector,
    state: State,
    key: str,
    changes: pd.DataFrame,
    run_id: int,
    *,
    progress: bool = False,
    result: ApplyResult | None = None,
) -> ApplyResult:
    """Write `changes` (index = record id, the owned fields) and book every record's outcome. Pass `result`
    to keep the counts of what went through when a batch raises (quota, retries exhausted)."""
    result = result if result is not None else ApplyResult()
    if changes.empty:
        return result
    values = changes[list(OWNED_FIELDS)]
    state.mark_pending(key, values, run_id)
    with progress_bar(progress, len(values), "writing") as bar:
        for batch in connector.write(values):
            ok = [r.record_id for r in batch if r.success]
            bad = [r for r in batch if not r.success]
            if ok:
                state.record_written(key, values.loc[ok], run_id)
            if bad:
                frame = pd.DataFrame(
                    {"code": [r.code for r in bad], "message": [r.message for r in bad]},
                    index=[r.record_id for r in bad],
                )
                state.record_failures(key, frame, run_id)
                result.failures += [
                    {"record_id": r.record_id, "code": r.code, "message": r.message} for r in bad
                ]
            result.written += len(ok)
            result.failed += len(bad)
            bar.update(len(batch))
    return result
