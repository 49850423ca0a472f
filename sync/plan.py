"""Plan: what to write to the CRM, as desired values minus live values, on the owned fields only.

Pure pandas, no I/O: the job hands in the scores it wants (desired), the values the CRM holds now (live) and
what this tool last wrote (from state), and gets back a `Plan` of changes, manual edits it will keep, and the
numbers the safety cap needs. `plan(desired, desired)` is empty by construction.

Rules:
- a record changes when any *compared* field differs after normalisation (a score of 75 equals "75.0",
  whitespace and empty-vs-missing do not count). `scored_at` is written with every change but never causes
  one by itself, else every record would change every night;
- a rep's manual edit is a live value that is neither what we last wrote nor what we were writing when a run
  stopped (pending: a run killed after the CRM accepted a batch but before state recorded it); a non-empty
  value on a record we hold no history for is a person's too. With `respect_manual_edits` (the default) such
  a record is left alone and reported; otherwise it is overwritten and reported;
- the safety cap counts overwrites of records that already hold a value, not first fills of empty fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# The owned fields and which of them make a change come from the one owned-field table.
from connectors.owned import COMPARED_FIELDS, OWNED_FIELDS

__all__ = ["COMPARED_FIELDS", "OWNED_FIELDS", "Plan", "edited_since", "normalise", "plan"]


@dataclass
class Plan:
    """`changes`: one row per record to write, indexed by record id, columns OWNED_FIELDS (desired values),
    plus `kind` ("fill" or "update") and `changed` (the compared fields that differ, comma-separated).
    `manual_edits`: records whose owned fields a person changed since our last write (index id, columns
    `fields`, `action` "kept" or "overwritten"). `unchanged`: how many records need nothing.
    `unconfirmed`: records written again whose live value is what we wrote *before* a run that stopped with
    their new value unconfirmed (pending): most often that batch never reached the CRM, but a person who set
    the field back to our previous value by hand looks the same, so they are listed (index id, `fields`)."""

    changes: pd.DataFrame
    manual_edits: pd.DataFrame
    unchanged: int
    total: int
    respect_manual_edits: bool = True
    notes: list[str] = field(default_factory=list)
    unconfirmed: pd.DataFrame = field(default_factory=lambda: pd.DataFrame({"fields": []}))

    @property
    def updates(self) -> int:
        return int((self.changes["kind"] == "update").sum()) if len(self.changes) else 0

    @property
    def fills(self) -> int:
        return int((self.changes["kind"] == "fill").sum()) if len(self.changes) else 0

    @property
    def change_ratio(self) -> float:
        """Overwrites of existing values as a share of the records considered (what the safety cap checks)."""
        return self.updates / self.total if self.total else 0.0

    def summary(self) -> dict:
        return {
            "records": self.total,
            "changes": len(self.changes),
            "fills": self.fills,
            "updates": self.updates,
            "unchanged": self.unchanged,
            "manual_edits": len(self.manual_edits),
            "manual_edits_kept": int((self.manual_edits["action"] == "kept").sum())
            if len(self.manual_edits)
            else 0,
            "change_ratio": round(self.change_ratio, 4),
        }


def normalise(frame: pd.DataFrame, fields: Sequence[str] = COMPARED_FIELDS) -> pd.DataFrame:
    """Comparable text for each field: numbers as integers, text stripped, empty and missing both NA."""
    out = {}
    for name in fields:
        col = frame[name] if name in frame.columns else pd.Series(pd.NA, index=frame.index, dtype="object")
        if name == "fit_score":
            num = pd.to_numeric(col.astype("string").str.strip(), errors="coerce")
            text = num.round().astype("Int64").astype("string")
        elif name == "scored_at":
            ts = pd.to_datetime(col.astype("string"), utc=True, errors="coerce", format="mixed")
            text = ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ").astype("string")
        else:
            text = col.astype("string").str.strip()
        out[name] = text.mask(text == "", pd.NA)
    return pd.DataFrame(out, index=frame.index)


def _differs(a: pd.DataFrame, b: pd.DataFrame, fields: Sequence[str]) -> pd.DataFrame:
    """Elementwise 'not the same value', where NA equals NA."""
    diffs = {}
    for name in fields:
        x, y = a[name], b[name]
        both_na = x.isna() & y.isna()
        same = (x == y).fillna(False) | both_na
        diffs[name] = ~same.astype(bool)
    return pd.DataFrame(diffs, index=a.index)


def plan(
    desired: pd.DataFrame,
    live: pd.DataFrame,
    last_written: pd.DataFrame | None = None,
    *,
    pending: pd.DataFrame | None = None,
    respect_manual_edits: bool = True,
) -> Plan:
    """Diff `desired` (index = record id, OWNED_FIELDS columns) against `live` (same shape, what the CRM holds).

    `last_written` and `pending` (same shape, from state; any subset of ids) say what this tool wrote, or was
    writing when a run stopped; they are only used to tell a person's edit from ours. Pass neither for a
    plain diff that judges no edit.
    """
    if not desired.index.is_unique:
        dupes = desired.index[desired.index.duplicated()].unique()[:5]
        raise ValueError(f"desired has duplicate record ids: {', '.join(map(str, dupes))}")
    live = live.reindex(desired.index)
    want = normalise(desired)
    have = normalise(live)
    diff = _differs(want, have, COMPARED_FIELDS)
    changed = diff.any(axis=1)
    empty = have[list(COMPARED_FIELDS)].isna().all(axis=1)

    edited, edited_fields = _edits(have, empty, last_written, pending)
    manual = edited & changed
    manual_edits = pd.DataFrame(
        {"fields": edited_fields[manual], "action": "kept" if respect_manual_edits else "overwritten"},
        index=desired.index[manual.to_numpy()],
    )
    to_write = changed & ~manual if respect_manual_edits else changed
    changes = desired.loc[to_write.to_numpy(), list(OWNED_FIELDS)].copy()
    changes["kind"] = np.where(empty[to_write].to_numpy(), "fill", "update")
    changes["changed"] = _field_lists(diff[to_write]).to_numpy()
    unconfirmed = _unconfirmed(have, empty, last_written, pending) & to_write
    return Plan(
        changes=changes,
        unconfirmed=pd.DataFrame(
            {"fields": edited_since(pending.reindex(desired.index), live)[unconfirmed]}
            if unconfirmed.any()
            else {"fields": []}
        ),
        manual_edits=manual_edits,
        unchanged=int((~changed).sum()),
        total=len(desired),
        respect_manual_edits=respect_manual_edits,
    )


def edited_since(before: pd.DataFrame, now: pd.DataFrame) -> pd.Series:
    """For each record of `now` (re-read right before a write): the compared fields that moved since
    `before` (the values the plan was made from), comma-separated; "" where none did."""
    then = normalise(before.reindex(now.index))
    return _field_lists(_differs(normalise(now), then, COMPARED_FIELDS))


def _edits(
    have: pd.DataFrame, empty: pd.Series, last_written: pd.DataFrame | None, pending: pd.DataFrame | None
) -> tuple[pd.Series, pd.Series]:
    """Which live values are a person's, and which fields: a value that is neither what we last wrote nor
    what we were writing when a run stopped. A record we hold no history for and whose owned fields are not
    empty was not filled by us either (the job stops before trusting a state that lost its history)."""
    index = have.index
    compared = list(COMPARED_FIELDS)
    if last_written is None and pending is None:  # a plain diff: no history given, nothing to judge by
        return pd.Series(False, index=index), pd.Series("", index=index, dtype="object")
    matches = pd.Series(False, index=index)
    reference = pd.DataFrame(pd.NA, index=index, columns=have.columns, dtype="string")  # NA: no history
    for known in (pending, last_written):  # the last confirmed write wins as the reference shown
        if known is None or not len(known):
            continue
        ours = normalise(known.reindex(index))
        has = ours[compared].notna().any(axis=1)
        matches |= has & ~_differs(have, ours, COMPARED_FIELDS).any(axis=1)
        reference.loc[has.to_numpy()] = ours.loc[has.to_numpy(), list(have.columns)]
    edited = ~empty & ~matches
    edited_fields = _field_lists(_differs(have, reference, COMPARED_FIELDS).where(edited, False))
    return edited, edited_fields


def _unconfirmed(
    have: pd.DataFrame, empty: pd.Series, last_written: pd.DataFrame | None, pending: pd.DataFrame | None
) -> pd.Series:
    """Live equals what we last confirmed writing, not what a stopped run was writing (pending)."""
    index = have.index
    if last_written is None or pending is None or not len(last_written) or not len(pending):
        return pd.Series(False, index=index)
    ours, pend = normalise(last_written.reindex(index)), normalise(pending.reindex(index))
    has_w = ours[list(COMPARED_FIELDS)].notna().any(axis=1)
    has_p = pend[list(COMPARED_FIELDS)].notna().any(axis=1)
    return (
        has_w
        & has_p
        & ~empty
        & ~_differs(have, ours, COMPARED_FIELDS).any(axis=1)
        & _differs(have, pend, COMPARED_FIELDS).any(axis=1)
    )


def _field_lists(flags: pd.DataFrame) -> pd.Series:
    """'segment,tier' per row from a boolean frame (vectorised over the handful of columns)."""
    out = pd.Series("", index=flags.index, dtype="object")
    for name in flags.columns:
        mark = flags[name].to_numpy(dtype=bool)
        out[mark] = np.where(out[mark] == "", name, out[mark] + "," + name)
    return out
