"""sync.plan: desired minus live on the owned fields, manual edits, and what the safety cap counts."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.plan import OWNED_FIELDS, normalise, plan


def frame(rows: dict[str, dict]) -> pd.DataFrame:
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "id"
    return df.reindex(columns=list(OWNED_FIELDS))


def row(segment="SMB", score=80, tier="A", reasons="+ industry is X", at="2026-01-01T00:00:00Z", model="abc"):
    return {
        "segment": segment,
        "fit_score": score,
        "tier": tier,
        "reasons": reasons,
        "scored_at": at,
        "model": model,
    }


EMPTY = {k: None for k in OWNED_FIELDS}

rows_strategy = st.dictionaries(
    st.text("abcdef0123", min_size=1, max_size=6),
    st.builds(
        row,
        segment=st.sampled_from(["SMB", "Mid-market", "Enterprise", None]),
        score=st.integers(0, 100) | st.none(),
        tier=st.sampled_from(list("ABCD")),
        reasons=st.text(max_size=20),
        model=st.sampled_from(["v1", "v2"]),
    ),
    max_size=30,
)


@settings(max_examples=60)
@given(rows_strategy)
def test_plan_of_desired_against_itself_is_empty(rows):
    desired = frame(rows)
    result = plan(desired, desired.copy(), desired.copy())
    assert len(result.changes) == 0
    assert result.unchanged == len(desired)


def test_first_run_fills_every_empty_record_and_cap_counts_no_update():
    desired = frame({"a": row(), "b": row(tier="B", score=60)})
    live = frame({"a": EMPTY, "b": EMPTY})
    result = plan(desired, live)
    assert list(result.changes.index) == ["a", "b"]
    assert set(result.changes["kind"]) == {"fill"}
    assert result.change_ratio == 0


def test_normalisation_ignores_number_format_whitespace_and_empty_strings():
    desired = frame({"a": row(score=75, reasons="x")})
    live = frame({"a": row(score="75.0", reasons=" x ")})
    assert len(plan(desired, live).changes) == 0
    live2 = frame({"a": {**row(), "segment": ""}})
    desired2 = frame({"a": {**row(), "segment": None}})
    assert len(plan(desired2, live2).changes) == 0


def test_scored_at_alone_never_makes_a_change():
    desired = frame({"a": row(at="2026-02-02T00:00:00Z")})
    live = frame({"a": row(at="2026-01-01T00:00:00Z")})
    assert len(plan(desired, live).changes) == 0


def test_one_changed_field_writes_the_record_and_names_the_field():
    desired = frame({"a": row(tier="B", score=60), "b": row()})
    live = frame({"a": row(), "b": row()})
    result = plan(desired, live)
    assert list(result.changes.index) == ["a"]
    assert result.changes.loc["a", "changed"] == "fit_score,tier"
    assert result.changes.loc["a", "kind"] == "update"
    assert result.change_ratio == 0.5


def test_a_reps_edit_is_kept_and_reported_by_default():
    ours = frame({"a": row(), "b": row()})
    live = frame({"a": {**row(), "tier": "D"}, "b": row()})  # a rep set a's tier by hand
    desired = frame({"a": row(score=70, tier="B"), "b": row(score=70, tier="B")})
    result = plan(desired, live, ours)
    assert list(result.changes.index) == ["b"]
    assert list(result.manual_edits.index) == ["a"]
    assert result.manual_edits.loc["a", "fields"] == "tier"
    assert result.manual_edits.loc["a", "action"] == "kept"


def test_overwrite_mode_writes_over_the_edit_and_still_reports_it():
    ours = frame({"a": row()})
    live = frame({"a": {**row(), "segment": "Key account"}})
    result = plan(frame({"a": row(score=50, tier="B")}), live, ours, respect_manual_edits=False)
    assert list(result.changes.index) == ["a"]
    assert result.manual_edits.loc["a", "action"] == "overwritten"


def test_a_pending_write_the_crm_holds_is_not_a_manual_edit():
    ours = frame({"a": row(score=10, tier="D")})  # last confirmed write
    pending = frame({"a": row(score=80, tier="A")})  # the run was killed after the CRM took this
    live = frame({"a": row(score=80, tier="A")})
    desired = frame({"a": row(score=81, tier="A")})
    result = plan(desired, live, ours, pending=pending)
    assert len(result.manual_edits) == 0
    assert list(result.changes.index) == ["a"]


def test_values_on_a_record_we_never_wrote_are_a_persons():
    # Issue 8: a value we did not write is a rep's, history or not (a lost state stops the job first).
    live = frame({"a": row(tier="C", score=30), "b": EMPTY})
    result = plan(frame({"a": row(), "b": row(score=10)}), live, frame({}))
    assert list(result.manual_edits.index) == ["a"] and result.manual_edits.loc["a", "fields"] != ""
    assert list(result.changes.index) == ["b"]


def test_a_pending_write_that_never_landed_does_not_hide_a_reps_edit():
    # killed after marking pending; the CRM never took the batch; a rep then set the tier by hand
    pending = frame({"a": row(score=80, tier="A")})
    live = frame({"a": row(score=None, tier="D")})
    result = plan(frame({"a": row(score=80, tier="A")}), live, frame({}), pending=pending)
    assert list(result.manual_edits.index) == ["a"] and result.changes.empty
    assert result.manual_edits.loc["a", "fields"] == "fit_score,tier"


def test_a_reps_edit_after_an_accepted_pending_write_is_kept():
    ours = frame({"a": row(score=10, tier="D")})
    pending = frame({"a": row(score=80, tier="A")})  # the CRM took it, then the run was killed
    live = frame({"a": row(score=80, tier="B")})  # and a rep moved the tier
    result = plan(frame({"a": row(score=81, tier="A")}), live, ours, pending=pending)
    assert list(result.manual_edits.index) == ["a"] and result.changes.empty


def test_normalise_renders_scores_as_integers():
    out = normalise(frame({"a": row(score="42.4"), "b": row(score=None)}))
    assert out.loc["a", "fit_score"] == "42"
    assert pd.isna(out.loc["b", "fit_score"])


def test_our_previous_value_under_an_unconfirmed_write_is_rewritten_and_listed():
    # A run stopped with tier A pending; the CRM holds our previous D (the batch never landed, or a rep set
    # D back by hand: the two look the same). It is written again, and listed so a person can tell.
    ours = frame({"a": row(score=10, tier="D"), "b": row(score=10, tier="D")})
    pending = frame({"a": row(score=80, tier="A"), "b": row(score=80, tier="A")})
    live = frame({"a": row(score=10, tier="D"), "b": row(score=80, tier="A")})
    result = plan(
        frame({"a": row(score=80, tier="A"), "b": row(score=80, tier="A")}), live, ours, pending=pending
    )
    assert list(result.changes.index) == ["a"] and result.manual_edits.empty
    assert (
        list(result.unconfirmed.index) == ["a"] and result.unconfirmed.loc["a", "fields"] == "fit_score,tier"
    )
