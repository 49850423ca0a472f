"""The scoring package's errors: one base class, so the CLI can turn any of them into a clear message.

Every error is a `ValueError` (bad input, not a bug) and carries text a person can act on.
"""

from __future__ import annotations


class ScoringError(ValueError):
    """Input the scoring pipeline cannot work with (an empty book, a missing column, ...)."""


class ConditionError(ScoringError):
    """A condition `{field, op, value}` that is malformed or cannot be applied to the data."""


class ClubError(ScoringError):
    """The club of best customers cannot be picked (no deal data, unknown pinned ids, bad settings)."""


class ProfileError(ScoringError):
    """A profile that cannot be learned, or an `icp-profile.toml` that does not validate."""


def check_not_empty(accounts, what: str = "the book") -> None:
    """Raise `ScoringError` when there are no accounts: learning or judging from nothing is meaningless."""
    if accounts is None or len(accounts) == 0:
        raise ScoringError(f"{what} is empty: there are no accounts to learn from or score")


def require_columns(frame, columns, what: str) -> None:
    """Raise `ScoringError` naming every required column the frame lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ScoringError(
            f"{what} lacks required column(s) {', '.join(repr(c) for c in missing)}; "
            f"it has: {', '.join(map(str, frame.columns))}"
        )
