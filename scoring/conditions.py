"""The condition language `{field, op, value}` shared by segment rules and club criteria.

A rule is a list of conditions, all of which must hold (AND). Evaluation is vectorised over whole columns.

Semantics, chosen so a rule never matches by accident:
- a missing value (NA, NaN, NaT, or a text that is blank after stripping) never matches, not even `!=` or
  `not_in`; only `is_missing` looks at it (`value = false` asks for a present value);
- text compares ignore case and surrounding whitespace (`" manufacturing "` == `"Manufacturing"`);
- `between` is inclusive at both ends; `contains` is a case-insensitive substring test on text fields (a list
  of values means "contains any of them");
- numeric and date fields take `< <= > >= between`; a date value may be a TOML date or an ISO string;
- a numeric ordering value may be a quantile, `"median"` or `"p75"` (0 < p < 100), resolved against the rows
  that meet the rule's *other* conditions, ignoring missing values: `[won_deals >= 1, won_amount >= "p75"]`
  reads "top quartile of won_amount among buyers". Only club criteria use them: they are learned on the whole
  book, while segments are assigned chunk by chunk, where a quantile would depend on the chunk.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from scoring.errors import ConditionError

#: The dtype of the text columns scoring builds (tiers, reasons, segments): object-backed, NA as `pd.NA`,
#: whether or not pyarrow is installed, in pandas 2 and 3 (docs/architecture.md, "String dtypes"). A
#: million reasons are a million pointers to a few thousand shared strings, never a copy of each row's text.
TEXT_DTYPE = pd.StringDtype("python")

__all__ = [
    "TEXT_DTYPE",
    "OPERATORS",
    "Condition",
    "ConditionError",
    "describe_conditions",
    "evaluate",
    "is_quantile",
    "parse_conditions",
    "resolve_conditions",
    "validate_conditions",
]

OPERATORS = ("==", "!=", "<", "<=", ">", ">=", "in", "not_in", "between", "contains", "is_missing")
_ORDERING = frozenset({"<", "<=", ">", ">="})
_KEYS = ("field", "op", "value")
_QUANTILE = re.compile(r"^\s*(?:median|p(\d{1,2}(?:\.\d+)?))\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Condition:
    """One `{field, op, value}` test. `quantile` keeps the token (e.g. "p75") a resolved value came from."""

    field: str
    op: str
    value: Any = None
    quantile: str | None = None

    @classmethod
    def from_item(cls, item: Condition | Mapping[str, Any]) -> Condition:
        """Build from a config mapping; call `validate_conditions` first for messages naming the location."""
        if isinstance(item, Condition):
            return item
        if not isinstance(item, Mapping):
            raise ConditionError(f"a condition must be a table {{field, op, value}}, got {item!r}")
        value = item.get("value", True if item.get("op") == "is_missing" else None)
        if isinstance(value, list):
            value = tuple(value)
        return cls(field=str(item.get("field")), op=str(item.get("op")), value=value)

    def to_dict(self) -> dict[str, Any]:
        """The config form (quantile tokens are kept as written)."""
        value = self.quantile if self.quantile is not None else self.value
        return {
            "field": self.field,
            "op": self.op,
            "value": list(value) if isinstance(value, tuple) else value,
        }


def is_quantile(value: Any) -> bool:
    """True for a quantile token such as "median", "p75" or "p99.5"."""
    return isinstance(value, str) and _quantile_fraction(value) is not None


def _quantile_fraction(token: str) -> float | None:
    m = _QUANTILE.match(token)
    if m is None:
        return None
    if m.group(1) is None:
        return 0.5
    q = float(m.group(1)) / 100.0
    return q if 0.0 < q < 1.0 else None


# ---------------------------------------------------------------------------------------------------------
# Validation: every problem at once, each naming its location, before any data is touched.


def validate_conditions(
    conditions: Any,
    columns: Iterable[str],
    where: str,
    *,
    allow_quantiles: bool = True,
) -> list[str]:
    """Return one message per problem in `conditions` (empty list when valid), each prefixed by its location.

    `where` names the list, e.g. "segments[2].when"; messages read `segments[2].when[0]: unknown operator ...`.
    """
    known = sorted({str(c) for c in columns})
    known_set = set(known)
    if not isinstance(conditions, Sequence) or isinstance(conditions, str | bytes):
        return [f"{where}: must be a list of conditions {{field, op, value}}, got {conditions!r}"]
    problems: list[str] = []
    for i, item in enumerate(conditions):
        loc = f"{where}[{i}]"
        if isinstance(item, Condition):
            item = item.to_dict()
        if not isinstance(item, Mapping):
            problems.append(f"{loc}: must be a table {{field, op, value}}, got {item!r}")
            continue
        for key in item:
            if key not in _KEYS:
                problems.append(f'{loc}: unknown key "{key}"; allowed: {", ".join(_KEYS)}')
        field, op = item.get("field"), item.get("op")
        if field is None:
            problems.append(f'{loc}: missing "field"')
        elif not isinstance(field, str) or field not in known_set:
            hint = difflib.get_close_matches(str(field), known, n=1)
            did_you_mean = f' (did you mean "{hint[0]}"?)' if hint else ""
            problems.append(f'{loc}: unknown field "{field}"{did_you_mean}; known fields: {", ".join(known)}')
        if op is None:
            problems.append(f'{loc}: missing "op"; allowed: {", ".join(OPERATORS)}')
        elif op not in OPERATORS:
            problems.append(f'{loc}: unknown operator "{op}"; allowed: {", ".join(OPERATORS)}')
        else:
            problem = _value_problem(op, item.get("value"), "value" in item, allow_quantiles)
            if problem:
                problems.append(f"{loc}: {problem}")
    return problems


def _value_problem(op: str, value: Any, has_value: bool, allow_quantiles: bool) -> str | None:
    if op == "is_missing":
        if has_value and not isinstance(value, bool):
            return f'"is_missing" takes value = true or false (false: the value is present), got {value!r}'
        return None
    if not has_value or value is None:
        return f'"{op}" needs a "value"'
    if isinstance(value, str) and is_quantile(value) and not allow_quantiles:
        return (
            f'quantile value "{value}" is only allowed in club criteria (segments are assigned chunk by '
            "chunk, where a quantile would change from chunk to chunk)"
        )
    if op in ("in", "not_in"):
        if not isinstance(value, list | tuple) or not value:
            return f'"{op}" needs a non-empty list of values, e.g. ["DE", "FR"], got {value!r}'
        bad = [v for v in value if not _is_scalar(v)]
        return f'"{op}" values must be plain values, got {bad[0]!r}' if bad else None
    if op == "between":
        if not isinstance(value, list | tuple) or len(value) != 2:
            return f'"between" needs [low, high], got {value!r}'
        for bound in value:
            problem = _ordering_value_problem(bound, "between")
            if problem:
                return problem
        low, high = value
        if _is_number(low) and _is_number(high) and low > high:
            return f'"between" needs low <= high, got [{low}, {high}]'
        return None
    if op in _ORDERING:
        return _ordering_value_problem(value, op)
    if op == "contains":
        texts = value if isinstance(value, list | tuple) else [value]
        if not texts or not all(isinstance(v, str) and v.strip() for v in texts):
            return f'"contains" needs a text (or a list of texts) to look for, got {value!r}'
        return None
    if not _is_scalar(value):  # == and !=
        return f'"{op}" needs a single value (use "in" / "not_in" for a list), got {value!r}'
    return None


def _ordering_value_problem(value: Any, op: str) -> str | None:
    if _is_number(value) or isinstance(value, date | datetime | pd.Timestamp):
        return None
    if isinstance(value, str):
        if is_quantile(value):
            return None
        if _parse_number(value) is not None or _parse_timestamp(value) is not None:
            return None
    return f'"{op}" needs a number, a date or a quantile such as "median" or "p75", got {value!r}'


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | date | datetime | np.generic)


def _parse_number(value: Any) -> float | None:
    try:
        number = float(str(value).replace(",", "").replace("_", ""))
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _parse_timestamp(value: Any) -> pd.Timestamp | None:
    if isinstance(value, str) and not re.match(r"^\s*\d{4}-\d{2}-\d{2}", value):
        return None  # only ISO dates: "3" or "May" must not silently become timestamps
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None
    if ts is pd.NaT:
        return None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def parse_conditions(
    conditions: Any,
    where: str = "conditions",
    *,
    columns: Iterable[str] | None = None,
    allow_quantiles: bool = True,
) -> tuple[Condition, ...]:
    """Validate (against `columns` when given) and parse; raise `ConditionError` listing every problem."""
    problems = validate_conditions(
        conditions,
        columns if columns is not None else _fields_of(conditions),
        where,
        allow_quantiles=allow_quantiles,
    )
    if problems:
        raise ConditionError("; ".join(problems) if len(problems) == 1 else "\n".join(problems))
    return tuple(Condition.from_item(c) for c in conditions)


def _fields_of(conditions: Any) -> list[str]:
    if not isinstance(conditions, Sequence) or isinstance(conditions, str):
        return []
    fields = []
    for c in conditions:
        if isinstance(c, Condition):
            fields.append(c.field)
        elif isinstance(c, Mapping) and isinstance(c.get("field"), str):
            fields.append(c["field"])
    return fields


# ---------------------------------------------------------------------------------------------------------
# Evaluation.


def evaluate(
    df: pd.DataFrame,
    conditions: Sequence[Condition | Mapping[str, Any]],
    *,
    allow_quantiles: bool = True,
    where: str = "conditions",
) -> pd.Series:
    """Rows of `df` meeting every condition, as a boolean Series aligned to `df` (an empty list matches all)."""
    resolved = resolve_conditions(df, conditions, allow_quantiles=allow_quantiles, where=where)
    mask = np.ones(len(df), dtype=bool)
    cache: dict[str, _Column] = {}
    for cond in resolved:
        mask &= _column(df, cond.field, cache).test(cond)
    return pd.Series(mask, index=df.index, dtype=bool)


def resolve_conditions(
    df: pd.DataFrame,
    conditions: Sequence[Condition | Mapping[str, Any]],
    *,
    allow_quantiles: bool = True,
    where: str = "conditions",
) -> tuple[Condition, ...]:
    """Validate against `df`'s columns and replace quantile values with the numbers they stand for in `df`.

    A quantile is taken over the rows meeting the rule's non-quantile conditions (see the module docstring);
    with no such row having a value it resolves to NaN, which no row meets.
    """
    parsed = parse_conditions(conditions, where, columns=df.columns, allow_quantiles=allow_quantiles)
    if not any(_has_quantile(c) for c in parsed):
        return parsed
    cache: dict[str, _Column] = {}
    base = np.ones(len(df), dtype=bool)
    for cond in parsed:
        if not _has_quantile(cond):
            base &= _column(df, cond.field, cache).test(cond)
    out = []
    for cond in parsed:
        if not _has_quantile(cond):
            out.append(cond)
            continue
        col = _column(df, cond.field, cache)
        if col.kind != "number":
            raise ConditionError(
                f'{where}: quantile "{cond.value}" needs a numeric field, but "{cond.field}" is {col.kind}'
            )
        sample = col.numbers[base & ~np.isnan(col.numbers)]

        def at(token: Any, sample: np.ndarray = sample) -> Any:
            if not is_quantile(token):
                return token
            q = _quantile_fraction(token)
            return float(np.quantile(sample, q)) if sample.size else float("nan")

        if cond.op == "between":
            value: Any = tuple(at(v) for v in cond.value)
            token = "..".join(str(v) for v in cond.value)
        else:
            value, token = at(cond.value), str(cond.value).strip().lower()
        out.append(replace(cond, value=value, quantile=token))
    return tuple(out)


def _has_quantile(cond: Condition) -> bool:
    values = cond.value if cond.op == "between" and isinstance(cond.value, tuple) else (cond.value,)
    return cond.op in _ORDERING | {"between"} and any(is_quantile(v) for v in values)


def describe_conditions(conditions: Sequence[Condition]) -> str:
    """Plain words for a (resolved) rule: `won_deals >= 1 and won_amount >= 41,300 (p75)`."""
    parts = []
    for c in conditions:
        if c.op == "is_missing":
            parts.append(f"{c.field} is {'missing' if c.value in (True, None) else 'present'}")
            continue
        if c.op == "between":
            text = f"{c.field} between {_fmt(c.value[0])} and {_fmt(c.value[1])}"
        elif c.op in ("in", "not_in"):
            text = f"{c.field} {'in' if c.op == 'in' else 'not in'} [{', '.join(_fmt(v) for v in c.value)}]"
        else:
            text = f"{c.field} {c.op} {_fmt(c.value)}"
        parts.append(text + (f" ({c.quantile})" if c.quantile else ""))
    return " and ".join(parts) if parts else "always"


def _fmt(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if _is_number(value):
        return f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:,.2f}"
    return str(value)


class _Column:
    """One column prepared for testing: numbers as float64 with NaN, text as codes into normalised uniques."""

    def __init__(self, name: str, series: pd.Series):
        self.name = name
        self.series = series
        dtype = series.dtype
        if pd.api.types.is_bool_dtype(dtype) or (
            pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype)
        ):
            self.kind = "number"
            self.numbers = series.to_numpy(dtype="float64", na_value=np.nan)
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            self.kind = "date"
        else:
            self.kind = "text"
            self._codes: tuple[np.ndarray, list[str]] | None = None

    @property
    def codes(self) -> np.ndarray:
        return self._text()[0]

    @property
    def uniques(self) -> list[str]:
        return self._text()[1]

    def _text(self) -> tuple[np.ndarray, list[str]]:
        if self._codes is None:
            self._codes = text_codes(self.series)
        return self._codes

    def test(self, cond: Condition) -> np.ndarray:
        op, value = cond.op, cond.value
        if op == "is_missing":
            present = self._present()
            return ~present if value in (True, None) else present
        if self.kind == "number":
            return self._test_number(op, value)
        if self.kind == "date":
            return self._test_date(op, value)
        return self._test_text(op, value)

    def _present(self) -> np.ndarray:
        if self.kind == "number":
            return ~np.isnan(self.numbers)
        if self.kind == "date":
            return self.series.notna().to_numpy(dtype=bool)
        if self._codes is None:
            present = self.series.notna().to_numpy(dtype=bool, copy=True)
            if present.sum() * 4 < len(present):
                # Sparse column (parent_id, say): checking the few values for blanks beats hashing them all.
                values = self.series.to_numpy(dtype=object)[present]
                present[present] = np.fromiter(
                    (not str(v).isspace() and v != "" for v in values), bool, len(values)
                )
                return present
        return self.codes >= 0

    def _number(self, value: Any) -> float:
        if isinstance(value, bool):
            return float(value)
        number = value if _is_number(value) else _parse_number(value)
        if number is None:
            raise ConditionError(f'"{self.name}" is numeric but the value {value!r} is not a number')
        return float(number)

    def _test_number(self, op: str, value: Any) -> np.ndarray:
        x = self.numbers
        with np.errstate(invalid="ignore"):
            if op == "between":
                low, high = (self._number(v) for v in value)
                return (x >= low) & (x <= high)
            if op in ("in", "not_in"):
                hit = np.isin(x, [self._number(v) for v in value])
                return hit if op == "in" else ~hit & ~np.isnan(x)
            if op == "contains":
                raise ConditionError(f'"contains" needs a text field, but "{self.name}" is numeric')
            v = self._number(value)
            if op == "!=":
                return (x != v) & ~np.isnan(x)
            return _COMPARE[op](x, v)

    def _test_date(self, op: str, value: Any) -> np.ndarray:
        s = self.series

        def ts(v: Any) -> pd.Timestamp:
            parsed = _parse_timestamp(v) if not isinstance(v, bool) else None
            if parsed is None:
                raise ConditionError(f'"{self.name}" is a date but the value {v!r} is not a date')
            # Compare like with like: a naive column is taken to be UTC already.
            return parsed if getattr(s.dt, "tz", None) is not None else parsed.tz_localize(None)

        if op == "between":
            low, high = (ts(v) for v in value)
            out = (s >= low) & (s <= high)
        elif op in ("in", "not_in"):
            hit = s.isin([ts(v) for v in value])
            out = hit if op == "in" else ~hit & s.notna()
        elif op == "contains":
            raise ConditionError(f'"contains" needs a text field, but "{self.name}" is a date')
        elif op == "!=":
            out = (s != ts(value)) & s.notna()
        else:
            out = _COMPARE[op](s, ts(value))
        return out.to_numpy(dtype=bool, na_value=False)

    def _test_text(self, op: str, value: Any) -> np.ndarray:
        uniques = self.uniques
        if op in _ORDERING or op == "between":
            raise ConditionError(
                f'"{op}" needs a numeric or date field, but "{self.name}" is text; use ==, in or contains'
            )
        if op == "==":
            flags = [u == normalise_text(value) for u in uniques]
        elif op == "!=":
            flags = [u != normalise_text(value) for u in uniques]
        elif op in ("in", "not_in"):
            wanted = {normalise_text(v) for v in value}
            flags = [(u in wanted) == (op == "in") for u in uniques]
        else:  # contains
            needles = [normalise_text(v) for v in (value if isinstance(value, tuple | list) else [value])]
            flags = [any(n in u for n in needles) for u in uniques]
        # The extra False at the end is what code -1 (missing) picks up.
        lookup = np.array([*flags, False], dtype=bool)
        return lookup[self.codes]


_COMPARE = {
    "==": lambda x, v: x == v,
    "<": lambda x, v: x < v,
    "<=": lambda x, v: x <= v,
    ">": lambda x, v: x > v,
    ">=": lambda x, v: x >= v,
}


def _column(df: pd.DataFrame, name: str, cache: dict[str, _Column]) -> _Column:
    if name not in cache:
        cache[name] = _Column(name, df[name])
    return cache[name]


def normalise_text(value: Any) -> str:
    """The form text is compared in: stripped and case-folded; 3.0 reads as "3", True as "true"."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value).strip().casefold()


def text_codes(series: pd.Series, *, merge: bool = True, display: bool = False) -> Any:
    """Factorise a text column into codes (-1 for missing or blank) and the normalised value of each code.

    Hashing happens once per column; all per-value work (normalising, matching) then runs over the distinct
    values only, and `lookup[codes]` carries the answer back to every row.

    - `merge=True`: spellings that normalise alike (" DE", "de") share a code. With `display=True` also
      returns each code's most common spelling (ties: the smallest), stripped: it depends only on which
      values occur how often, never on row order.
    - `merge=False`: one code per distinct raw spelling (normalised values may repeat); `display` gives the
      stripped spelling itself, so text built from it depends on the row alone (chunk-safe reasons).
    """
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy().astype(np.int64)
        raw = np.asarray(series.cat.categories, dtype=object)
    else:
        # NA as a value of its own (mapped to -1 below, with blanks) is ~4x faster on string columns than
        # having factorize mask missing values row by row.
        codes, uniques_raw = pd.factorize(series, use_na_sentinel=False)
        raw = np.asarray(uniques_raw, dtype=object)
    codes = np.asarray(codes, dtype=np.int64)
    if len(raw) == 0:
        return (codes, [], []) if display else (codes, [])
    missing = np.asarray(pd.isna(raw), dtype=bool)
    if all(isinstance(v, str) for v in raw[~missing]):
        # Plain comprehensions: about twice as fast as the .str accessor on object arrays.
        stripped = np.array(["" if m else v.strip() for v, m in zip(raw, missing, strict=True)], dtype=object)
        normalised = np.array([v.casefold() for v in stripped], dtype=object)
    else:  # numbers or mixed values in a text column: the slow, exact path over the uniques
        stripped = np.array(
            [
                "" if m else normalise_text(v) if isinstance(v, float | np.floating) else str(v).strip()
                for v, m in zip(raw, missing, strict=True)
            ],
            dtype=object,
        )
        normalised = np.array(
            ["" if m else normalise_text(v) for v, m in zip(raw, missing, strict=True)], dtype=object
        )
    if not merge:
        blank = normalised == ""
        renumber = np.cumsum(~blank) - 1
        renumber[blank] = -1
        out = np.append(renumber, -1)[codes]  # the extra slot is where a categorical's -1 (missing) looks
        norm_list = normalised[~blank].tolist()
        return (out, norm_list, stripped[~blank].tolist()) if display else (out, norm_list)
    merged, uniques = pd.factorize(normalised)
    uniques = np.asarray(uniques, dtype=object)
    blank = uniques == ""
    renumber = np.cumsum(~blank) - 1
    renumber[blank] = -1
    out = np.append(renumber[merged], -1)[codes]
    norm_list = uniques[~blank].tolist()
    if not display:
        return out, norm_list
    counts = np.bincount(codes[codes >= 0], minlength=len(raw))
    best = (
        pd.DataFrame({"group": merged, "count": -counts, "spelling": stripped})
        .sort_values(["group", "count", "spelling"], kind="stable")
        .drop_duplicates("group")
    )
    shown = best["spelling"].to_numpy(dtype=object)[~blank].tolist()
    return out, norm_list, shown
