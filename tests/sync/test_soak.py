"""Three seeded rounds of the randomised soak (benchmarks/soak.py runs the long one): kill -9 at random write
batches, reps editing at random times, both write paths. A failing round names its seed; rerun it with
`python benchmarks/soak.py --seed N --rounds 1 --nights 1 --accounts 800`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from soak import BULK, COLLECTIONS, soak_round  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "path"), [(11, COLLECTIONS), (12, BULK), (13, COLLECTIONS)])
def test_soak_round_loses_no_edit_and_repeats_no_write(seed, path, learned_profile):
    result = soak_round(seed, accounts=800, path=path, nights=1, profile=learned_profile)
    assert result.ok, f"seed {seed} ({path}): {result.problems}"
    assert result.kills == 1 and result.rep_edits >= 4
    assert result.lost_edits == 0 and result.identical_rewrites == 0
    assert result.final_written == 0
