"""Segments (docs/architecture.md, "Scoring"): ordered rules over account columns, first match wins, a default last.

Runs on every account before scoring; the result is written to the CRM's segment field. Each rule is one
vectorised mask, so the cost is (number of rules) x (a few column passes), whatever the book size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scoring.conditions import TEXT_DTYPE, Condition, evaluate, parse_conditions, validate_conditions
from scoring.errors import ConditionError

__all__ = [
    "DEFAULT_SEGMENTS",
    "SegmentRule",
    "assign_segments",
    "rules_from_config",
    "validate_rules",
]


@dataclass(frozen=True)
class SegmentRule:
    """A named segment: accounts meeting every condition in `when` (an empty `when` matches everyone)."""

    name: str
    when: tuple[Condition, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConditionError(f"a segment needs a non-empty name, got {self.name!r}")
        object.__setattr__(self, "when", tuple(Condition.from_item(c) for c in self.when))


#: The size bands used when no rules are configured; accounts with no employee count are "Unknown size".
DEFAULT_SEGMENTS = (
    SegmentRule("SMB", ({"field": "employees", "op": "<", "value": 50},)),
    SegmentRule("Mid-market", ({"field": "employees", "op": "between", "value": [50, 999]},)),
    SegmentRule("Enterprise", ({"field": "employees", "op": ">=", "value": 1000},)),
)
DEFAULT_SEGMENT_FALLBACK = "Unknown size"


def validate_rules(rules: Any, columns: Iterable[str], where: str = "segments") -> list[str]:
    """Every problem in a list of segment rules (config tables or `SegmentRule`s), each naming its location."""
    if not isinstance(rules, Sequence) or isinstance(rules, str):
        return [f"{where}: must be a list of segments, each {{name, when = [conditions]}}"]
    columns = list(columns)
    problems: list[str] = []
    for i, rule in enumerate(rules):
        loc = f"{where}[{i}]"
        if isinstance(rule, SegmentRule):
            rule = {"name": rule.name, "when": [c.to_dict() for c in rule.when]}
        if not isinstance(rule, Mapping):
            problems.append(f"{loc}: must be a table {{name, when}}, got {rule!r}")
            continue
        extra = sorted(set(rule) - {"name", "when"})
        if extra:
            problems.append(f'{loc}: unknown key "{extra[0]}"; allowed: name, when')
        name = rule.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(f'{loc}: missing "name" (the segment written to the CRM)')
        problems += validate_conditions(rule.get("when", []), columns, f"{loc}.when", allow_quantiles=False)
    return problems


def rules_from_config(
    items: Any, columns: Iterable[str] | None = None, where: str = "segments"
) -> list[SegmentRule]:
    """Parse `[[segments]]` tables into rules; raise `ConditionError` listing every problem at once.

    Without `columns`, field names are not checked (call `validate_rules` once the book's columns are known).
    """
    if columns is None:
        columns = {
            c.get("field")
            for rule in (items if isinstance(items, Sequence) else [])
            if isinstance(rule, Mapping)
            for c in rule.get("when", [])
            if isinstance(c, Mapping) and isinstance(c.get("field"), str)
        }
    problems = validate_rules(items, columns, where)
    if problems:
        raise ConditionError("\n".join(problems))
    return [SegmentRule(r["name"], parse_conditions(r.get("when", []), where)) for r in items]


def assign_segments(
    df: pd.DataFrame,
    rules: Sequence[SegmentRule] | None = None,
    default: str = "Other",
) -> pd.Series:
    """The segment of every row: the first rule it meets, else `default`.

    With no rules, the default size bands: SMB (< 50 employees), Mid-market (50-999), Enterprise (>= 1000),
    and "Unknown size" when the employee count is missing (or there is no `employees` column at all).
    """
    if not rules:
        if "employees" not in df.columns:
            return pd.Series(DEFAULT_SEGMENT_FALLBACK, index=df.index, dtype=TEXT_DTYPE)
        rules, default = DEFAULT_SEGMENTS, DEFAULT_SEGMENT_FALLBACK
    names = [default, *(r.name for r in rules)]
    # Walk the rules last to first, so where several match the first one's code is written last and wins.
    codes = np.zeros(len(df), dtype=np.int64)
    for k in range(len(rules), 0, -1):
        rule = rules[k - 1]
        mask = evaluate(df, rule.when, allow_quantiles=False, where=f"segments[{k - 1}].when")
        codes[mask.to_numpy()] = k
    labels = np.array(names, dtype=object)[codes]
    return pd.Series(pd.array(labels, dtype=TEXT_DTYPE), index=df.index, name="segment")
