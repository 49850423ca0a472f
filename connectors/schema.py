"""The canonical account/deal schema and the value parsers every connector shares.

Connectors (the CSV reader and every CRM connector) hand raw CRM values to `conform`, which returns frames in
the shape docs/architecture.md ("Data model") describes, plus a `ParseReport` of the values it had to leave missing; `scoring/`
only ever sees the canonical shape. Missing stays missing (`pd.NA`/`NaT`), never a silent 0.

Every parser reads a whole column at once and returns a `Parsed` pair: the parsed values and a mask of cells
that held something but could not be read, so callers can count them. Columns that repeat (numbers, dates,
booleans) are parsed once per distinct text; columns that rarely do (ids, names, domains) in one pass per cell.
Either way the work is on plain Python strings (compiled regexes, `float`), whatever the column's string dtype,
and text comes out as `TEXT_DTYPE`.
Choices worth knowing (tests pin each one):

* Placeholders `""`, `n/a`, `N/A`, `na`, `n.a.`, `-`, `--`, dashes, `none`, `null`, `nil`, `nan`, `#N/A` are
  missing on purpose: they become NA and are *not* counted as unparseable.
* Numbers accept grouping (`1,200`, `1 200`, `1.200,50`), a currency symbol or ISO code (`$`, `€`, `USD`;
  dropped, no FX: a CRM amount is in one currency), a unit `k`/`m`/`mm`/`mn`/`b`/`bn` (`$2.5M`, `2.5k`), a
  sign or accounting parentheses, and an exponent on ungrouped digits (`1.5E+06`, as Excel writes).
* Percentages (`12%`) are unparseable: no canonical column is a ratio, and reading `12%` as 12 or 0.12 would
  both be a silent guess. Ranges (`50-100`), bounds (`500+`) and prose (`about 50`) are unparseable too.
* Decimal convention: `1,200` reads 1200 with `.` as decimal point (US/UK) and 1.2 with `,` (most of Europe).
  With `decimal="auto"` a column's convention is voted by its cells that can only be read one way
  (`1,200.50`, `12.5`, `1.200.000` ...); no such cell means the caller's `fallback` (`.` unless told). Cells that only read in the losing
  convention, and, on a tie, every cell whose value depends on the convention, are left NA and counted: a
  column that mixes `1.200,50` and `1,200.50` is not one we can trust. Pass `decimal="."` or `","` to pin it
  (a chunked reader should, since each chunk votes on its own).
* Datetimes are ISO 8601 only (`YYYY-MM-DD`, optionally `THH:MM[:SS[.fff]]`, `Z` or `+HH:MM`); `03/04/2024`
  is unparseable because day-first and month-first both read it. Naive values are taken as UTC (what CRM
  APIs and their exports use).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

Kind = Literal["string", "domain", "int", "number", "datetime", "boolean"]
Decimal = Literal["auto", ".", ","]

#: The text dtype of canonical columns: object-backed, NA as `pd.NA`, the same with or without pyarrow and in
#: pandas 2 and 3 (docs/architecture.md, "String dtypes").
TEXT_DTYPE = pd.StringDtype("python")

#: pandas dtype each kind of column ends up with.
KIND_DTYPES: dict[str, str] = {
    "string": "string[python]",
    "domain": "string[python]",
    "int": "Int64",
    "number": "Float64",
    "datetime": "datetime64[us, UTC]",
    "boolean": "boolean",
}

#: Canonical account columns, in output order (docs/architecture.md, "Data model").
ACCOUNT_SCHEMA: dict[str, Kind] = {
    "id": "string",
    "name": "string",
    "domain": "domain",
    "industry": "string",
    "employees": "int",
    "annual_revenue": "number",
    "country": "string",
    "state": "string",
    "city": "string",
    "parent_id": "string",
    "account_type": "string",
    "created_at": "datetime",
    "modified_at": "datetime",
}

#: Canonical deal columns, in output order; `is_won`/`is_closed` come from the stage mapping in CSV books.
DEAL_SCHEMA: dict[str, Kind] = {
    "id": "string",
    "account_id": "string",
    "amount": "number",
    "stage": "string",
    "is_won": "boolean",
    "is_closed": "boolean",
    "created_at": "datetime",
    "closed_at": "datetime",
    "lead_source": "string",
}

ACCOUNT_COLUMNS: tuple[str, ...] = tuple(ACCOUNT_SCHEMA)
DEAL_COLUMNS: tuple[str, ...] = tuple(DEAL_SCHEMA)

# Cells that mean "no value" in exports; lower-cased, compared after stripping.
NA_TOKENS = frozenset(
    {"", "n/a", "na", "n.a.", "none", "null", "nil", "nan", "#n/a", "-", "--", "\u2013", "\u2014"}
)

_SP = "[ \u00a0\u202f]"  # space, no-break space, narrow no-break space: all used as thousands separators
_CURRENCY = (
    r"(?:[a-z]{0,2}\$|€|£|¥|₹|₩|₽|₺"
    r"|usd|eur|gbp|chf|cad|aud|nzd|jpy|cny|sek|nok|dkk|pln|czk|huf|brl|inr|mxn|zar)"
)
# Shape of a number cell (matched on the lower-cased, stripped text); the body's separators are judged after.
_NUMBER_SHAPE = (
    r"^(?P<open>\()?\s*(?P<sign>[-+\u2212])?\s*(?:" + _CURRENCY + r")?\s*(?P<sign2>[-+\u2212])?\s*"
    r"(?P<body>[0-9.,\u00a0\u202f ]*[0-9])(?P<exp>e[-+]?[0-9]+)?"
    r"\s*(?P<unit>k|mm|mn|m|bn|b)?\s*(?:" + _CURRENCY + r")?\s*(?P<close>\))?$"
)
# Thousands groups never lead with 0: "0.500" and "0,500" are decimals, not 500.
_BODY_POINT = (
    r"^(?:[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?|[1-9]\d{0,2}(?:" + _SP + r"\d{3})+(?:\.\d+)?|\d*\.\d+|\d+)$"
)
_BODY_COMMA = (
    r"^(?:[1-9]\d{0,2}(?:\.\d{3})+(?:,\d+)?|[1-9]\d{0,2}(?:" + _SP + r"\d{3})+(?:,\d+)?|\d*,\d+|\d+)$"
)
_BODY_PLAIN = r"^(?:\d+|\d*[.,]\d+)$"  # the only bodies an exponent may follow
_PLAIN_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
_DOT_GROUPED_RE = re.compile(r"-?[1-9]\d{0,2}\.\d{3}")
_UNITS = {"k": 1e3, "m": 1e6, "mm": 1e6, "mn": 1e6, "b": 1e9, "bn": 1e9}
_MAX_EXACT_INT = 2**53  # beyond this a float no longer holds every integer

# A host that needs no rewriting: ASCII labels, the last one not all digits (so no IP address).
_BARE_HOST = r"[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z0-9-]*[a-z][a-z0-9-]*"
_ISO_DATETIME_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[t ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?\s*(?:z|[+-]\d{2}(?::?\d{2})?)?$"
)
# A bare host, or one behind a scheme and "www." with a path after it: the host needs no other rewriting.
# Possessive groups (?:...)?+ never give "www." back, so "www.com" is not read as the host "www.com" here
# (the step-by-step rewriting makes it "com", no host).
_PLAIN_URL_RE = re.compile(r"(?:[a-z][a-z0-9+.\-]*://)?+(?:www\d*\.)?+(" + _BARE_HOST + r")(?:[/?#].*)?")
# The same over a text of one cell per line: group 1 is the host, or "" for a line that is not a plain URL.
_PLAIN_URL_LINES_RE = re.compile(r"^(?:" + _PLAIN_URL_RE.pattern + r"|.*)$", re.MULTILINE)
_HOST_REWRITES = tuple(
    re.compile(p)
    for p in (
        r"^[a-z][a-z0-9+.\-]*://",  # scheme
        r"^mailto:",
        r"[/?#].*$",  # path, query, fragment
        r"^.*@",  # e-mail local part or URL user info
        r":\d+$",  # port
        r"^www\d*\.",
    )
)
_VALID_HOST_RE = re.compile(r"[^\s./:@,;]+(?:\.[^\s./:@,;]+)+")
_NUMERIC_TAIL_RE = re.compile(r"\.\d+$")  # an IP address or a decimal is no domain

_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


class Parsed(NamedTuple):
    """A parsed column and the mask of cells that held a value we could not read (left missing)."""

    values: pd.Series
    unparseable: pd.Series


# ---------------------------------------------------------------------------------------------------------
# Value parsers


def _cells(raw: pd.Series) -> np.ndarray:
    """The column's cells as an object array of str, None where missing.

    Non-text cells (an API's numbers, say) become the text `astype("string")` gives them. Parsers then work on
    plain Python strings whatever the column's dtype (object, `str`, `string[python]` or Arrow-backed).
    """
    if raw.dtype == object:
        values = raw.to_numpy()
        if pd.api.types.infer_dtype(values, skipna=False) == "string":
            return values  # every cell a str, none missing: the common case, taken without a copy
    values = raw.to_numpy(dtype=object, na_value=None)
    if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
        values = raw.astype(TEXT_DTYPE).to_numpy(dtype=object, na_value=None)
    return values


def _take(values: np.ndarray, codes: np.ndarray, fill: Any) -> np.ndarray:
    """Spread per-distinct-value results back over the column; code -1 (NA) gets `fill`."""
    out = np.full(len(codes), fill, dtype=values.dtype if len(values) else object)
    present = codes >= 0
    out[present] = values[codes[present]]
    return out


def clean_string(raw: pd.Series) -> pd.Series:
    """Strip surrounding whitespace and turn empty cells into NA; Unicode is kept exactly as written."""
    # One strip per cell beats hashing every cell to strip the distinct ones: ids and names rarely repeat.
    out = [None if v is None else (v.strip() or None) for v in _cells(raw).tolist()]
    return pd.Series(pd.array(out, dtype=TEXT_DTYPE), index=raw.index)


def _distinct(raw: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The column as codes into its distinct stripped texts (placeholders and NA -> -1), those texts (object
    array), and the mask of placeholder cells (NA, empty, `n/a`, `-` ...), which are not errors."""
    codes, raw_uniques = pd.factorize(_cells(raw))
    stripped = [v.strip() for v in raw_uniques.tolist()]
    placeholder = np.array([v.lower() in NA_TOKENS for v in stripped], dtype=bool)
    kept = np.array(stripped, dtype=object)
    kept[placeholder] = None
    merged, uniques = pd.factorize(kept)  # " 12" and "12" are one text
    return (
        np.append(merged, -1)[codes],
        np.asarray(uniques, dtype=object),
        np.append(placeholder, True)[codes],
    )


def _as_float(texts: Sequence[str], ok: np.ndarray) -> np.ndarray:
    """float() of each text where `ok` (exact, correctly rounded in every pandas version), else NaN."""
    out = np.full(len(ok), np.nan)
    at = np.flatnonzero(ok)
    chosen = texts if len(at) == len(texts) else [texts[i] for i in at.tolist()]
    try:
        out[at] = np.fromiter(map(float, chosen), dtype=float, count=len(chosen))
    except ValueError:
        out[at] = [_float_or_nan(x) for x in chosen]
    return out


def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


class _Readings(NamedTuple):
    """Each distinct cell read with "." and with "," as decimal mark (unsigned), and its sign x unit factor."""

    point_ok: np.ndarray
    comma_ok: np.ndarray
    point_val: np.ndarray
    comma_val: np.ndarray
    factor: np.ndarray


def _read_numbers(distinct: np.ndarray) -> _Readings:
    n = len(distinct)
    texts = distinct.tolist()
    point_ok, comma_ok = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    point_val, comma_val = np.full(n, np.nan), np.full(n, np.nan)
    factor = np.ones(n)

    # Fast path for what most cells are, "1200" or "1087000.0": one regex and float() per distinct text.
    plain, grouping = _PLAIN_NUMBER_RE.fullmatch, _DOT_GROUPED_RE.fullmatch
    simple = np.fromiter((plain(x) is not None for x in texts), dtype=bool, count=n)
    if simple.any():
        fast = [x for x, ok in zip(texts, simple.tolist(), strict=True) if ok]
        value = _as_float(fast, np.ones(len(fast), dtype=bool))
        no_dot = np.fromiter(("." not in x for x in fast), dtype=bool, count=len(fast))
        # "1.200" is also 1200 with a decimal comma; "1087000.0" and "12.5" read only one way.
        grouped = np.fromiter((grouping(x) is not None for x in fast), dtype=bool, count=len(fast))
        point_ok[simple], point_val[simple] = True, value
        comma_ok[simple] = no_dot | grouped
        # Only read where comma_ok: "1.200" without its point.
        comma_val[simple] = np.where(no_dot, value, _as_float([x.replace(".", "") for x in fast], grouped))
    rest = ~simple
    if not rest.any():
        return _Readings(point_ok, comma_ok, point_val, comma_val, factor)

    u = pd.Series(distinct[rest], dtype=TEXT_DTYPE)
    parts = u.str.lower().str.extract(_NUMBER_SHAPE)
    body, exp, unit = parts["body"], parts["exp"], parts["unit"]
    has = parts.notna()
    shaped = (
        body.notna()
        & (has["open"] == has["close"])  # "(12" is not accounting notation
        & ~(has["sign"] & has["sign2"])
        & ~(has["open"] & (has["sign"] | has["sign2"]))
        & ~(has["exp"] & has["unit"])
        & ~(has["exp"] & ~body.str.fullmatch(_BODY_PLAIN).fillna(False).astype(bool))
    ).to_numpy(dtype=bool)
    p = shaped & body.str.fullmatch(_BODY_POINT).fillna(False).to_numpy(dtype=bool)
    c = shaped & body.str.fullmatch(_BODY_COMMA).fillna(False).to_numpy(dtype=bool)
    exp_text = exp.fillna("")
    point_ok[rest], comma_ok[rest] = p, c
    point_text = body.str.replace(r"[,\s\u00a0\u202f]", "", regex=True) + exp_text
    comma_text = (
        body.str.replace(r"[.\s\u00a0\u202f]", "", regex=True).str.replace(",", ".", regex=False) + exp_text
    )
    point_val[rest] = _as_float(point_text.tolist(), p)
    comma_val[rest] = _as_float(comma_text.tolist(), c)
    negative = (
        parts["sign"].isin(["-", "\u2212"]).to_numpy(dtype=bool)
        | parts["sign2"].isin(["-", "\u2212"]).to_numpy(dtype=bool)
        | has["open"].to_numpy(dtype=bool)
    )
    factor[rest] = np.where(negative, -1.0, 1.0) * unit.map(_UNITS).to_numpy(dtype=float, na_value=1.0)
    return _Readings(point_ok, comma_ok, point_val, comma_val, factor)


def parse_number(raw: pd.Series, *, decimal: Decimal = "auto", fallback: Literal[".", ","] = ".") -> Parsed:
    """Parse a column of human-written numbers into Float64; see the module docstring for what is read.

    `fallback` is the decimal mark `decimal="auto"` assumes when no cell of the column settles it.
    """
    if decimal not in ("auto", ".", ",") or fallback not in (".", ","):
        raise ValueError(
            f'decimal must be "auto", "." or "," and fallback "." or ",", not {decimal!r}/{fallback!r}'
        )
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        # Already numbers (an API connector): only non-finite values are unreadable.
        values = pd.array(raw.to_numpy(dtype=float, na_value=np.nan), dtype="Float64")
        bad = pd.Series(np.isinf(raw.to_numpy(dtype=float, na_value=np.nan)), index=raw.index)
        return Parsed(pd.Series(values, index=raw.index).mask(bad), bad)

    codes, u, placeholder = _distinct(raw)
    r = _read_numbers(u)
    p, c = r.point_ok, r.comma_ok
    if decimal == ".":
        chosen = np.where(p, r.point_val, np.nan)
    elif decimal == ",":
        chosen = np.where(c, r.comma_val, np.nan)
    else:
        # Vote with the cells that read only one way; "1,200" and "1.200" read both ways and abstain.
        counts = np.bincount(codes[codes >= 0], minlength=len(u))
        point_votes, comma_votes = int(counts[p & ~c].sum()), int(counts[c & ~p].sum())
        if comma_votes > point_votes or (comma_votes == point_votes == 0 and fallback == ","):
            chosen = np.where(c, r.comma_val, np.nan)
        elif point_votes > comma_votes or point_votes == 0:
            chosen = np.where(p, r.point_val, np.nan)
        else:
            # A tie between conventions: keep only cells whose value does not depend on it ("1200", "1 200").
            same = p & c & (r.point_val == r.comma_val)
            chosen = np.where(same, r.point_val, np.nan)
    with np.errstate(over="ignore", invalid="ignore"):
        distinct = chosen * r.factor
    distinct[~np.isfinite(distinct)] = np.nan
    values = _take(distinct, codes, np.nan).astype(float)
    parsed = pd.Series(pd.array(values, dtype="Float64"), index=raw.index)
    return Parsed(parsed, pd.Series(~placeholder & parsed.isna().to_numpy(dtype=bool), index=raw.index))


def parse_int(raw: pd.Series, *, decimal: Decimal = "auto", fallback: Literal[".", ","] = ".") -> Parsed:
    """Parse a column of counts into Int64; a number that is not whole (`12.5`, `1.5`) is unparseable."""
    number, bad = parse_number(raw, decimal=decimal, fallback=fallback)
    v = number.to_numpy(dtype=float, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(v) & (np.floor(v) == v) & (np.abs(v) <= _MAX_EXACT_INT)
    not_whole = pd.Series(~whole & ~np.isnan(v), index=raw.index)
    values = pd.Series(pd.array(np.where(whole, v, np.nan), dtype="Float64"), index=raw.index).astype("Int64")
    return Parsed(values, (bad | not_whole).astype(bool))


def parse_datetime(raw: pd.Series) -> Parsed:
    """Parse ISO 8601 dates/datetimes into UTC (`datetime64[us, UTC]`); naive values are taken as UTC."""
    dtype = KIND_DTYPES["datetime"]
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        dt = raw if getattr(raw.dt, "tz", None) is not None else raw.dt.tz_localize("UTC")
        return Parsed(dt.dt.tz_convert("UTC").astype(dtype), pd.Series(False, index=raw.index))
    codes, u, placeholder = _distinct(raw)  # dates repeat a lot: parse each distinct text once
    iso_match = _ISO_DATETIME_RE.fullmatch
    iso = np.fromiter((iso_match(x.lower()) is not None for x in u.tolist()), dtype=bool, count=len(u))
    texts = pd.Series(u, dtype=TEXT_DTYPE).where(iso)
    distinct = pd.to_datetime(texts, format="ISO8601", utc=True, errors="coerce").astype(dtype)
    parsed = pd.Series(distinct.array.take(codes, allow_fill=True), index=raw.index)
    return Parsed(parsed, pd.Series(~placeholder & parsed.isna().to_numpy(dtype=bool), index=raw.index))


def normalize_domain(raw: pd.Series) -> Parsed:
    """Reduce websites and e-mail addresses to a bare lower-case host: `https://www.Acme.com/about` -> `acme.com`.

    A cell that is not a host name afterwards (no dot, spaces, several domains in one cell) is unparseable.
    """
    # Domains rarely repeat, so each cell is read once: most are a bare host ("acme.com") or a plain URL
    # ("https://www.acme.com/about"), which one regex settles, run over the whole column as one text (a line
    # per cell); only the others are rewritten step by step (_host_of).
    cells = _cells(raw)
    missing = pd.isna(cells)
    if missing.any():
        cells = np.where(missing, "", cells)  # "" is a placeholder, as NA is: missing, not unparseable
    text = "\n".join(map(str.strip, cells.tolist())).lower()
    hosts: list[str] = []
    one_per_line = text.count("\n") == len(cells) - 1
    if one_per_line:
        hosts = _PLAIN_URL_LINES_RE.findall(text)  # "" where the line is not a plain URL
        one_per_line = len(hosts) == len(cells)
    if not one_per_line:  # a cell holding a line break: one cell at a time
        hosts = [_plain_host(cell.strip().lower()) for cell in cells.tolist()]
    values = np.array(hosts, dtype=object)
    bad = np.zeros(len(values), dtype=bool)
    others = np.flatnonzero(values == "")
    if len(others):
        lows = text.split("\n") if one_per_line else [cell.strip().lower() for cell in cells.tolist()]
        for i in others.tolist():
            low = lows[i]
            host = None if low in NA_TOKENS else _host_of(low)
            values[i] = host
            bad[i] = host is None and low not in NA_TOKENS
    return Parsed(
        pd.Series(pd.array(values, dtype=TEXT_DTYPE), index=raw.index),
        pd.Series(bad, index=raw.index),
    )


def _plain_host(low: str) -> str:
    """The host of a bare host or plain URL, "" for any other cell."""
    m = _PLAIN_URL_RE.fullmatch(low)
    return m.group(1) if m else ""


def _host_of(low: str) -> str | None:
    """The host of a lower-cased cell that is not a plain URL: scheme, `mailto:`, path, user info, port and
    `www.` dropped, in that order; None when what is left is not a host name."""
    host = low
    for pattern in _HOST_REWRITES:
        host = pattern.sub("", host)
    host = host.rstrip(".")
    if _VALID_HOST_RE.fullmatch(host) and not _NUMERIC_TAIL_RE.search(host):
        return host
    return None


def parse_bool(raw: pd.Series) -> Parsed:
    """Parse `true/false`, `yes/no`, `y/n`, `t/f`, `1/0` (any case) into the nullable boolean dtype."""
    if pd.api.types.is_bool_dtype(raw.dtype):
        return Parsed(raw.astype("boolean"), pd.Series(False, index=raw.index))
    codes, u, placeholder = _distinct(raw)
    lowered = [x.lower() for x in u.tolist()]
    is_true = _take(np.array([x in _TRUE for x in lowered], dtype=bool), codes, False).astype(bool)
    is_false = _take(np.array([x in _FALSE for x in lowered], dtype=bool), codes, False).astype(bool)
    values = pd.Series(pd.NA, index=raw.index, dtype="boolean")
    values[is_true] = True
    values[is_false] = False
    return Parsed(values, pd.Series(~placeholder & ~is_true & ~is_false, index=raw.index))


# ---------------------------------------------------------------------------------------------------------
# Parse report


@dataclass
class Tally:
    """How many cells or records something happened to, with up to `EXAMPLES` (row, raw value) examples.

    For CSV books a row is the spreadsheet row (header = row 1, an int); API connectors label a record by its
    id (a str), shown as `record <id>`.
    """

    count: int = 0
    examples: list[tuple[int | str, str]] = field(default_factory=list)

    EXAMPLES = 3

    def add(
        self, rows: Sequence[int | str] | pd.Series | np.ndarray, values: Sequence[Any] | pd.Series
    ) -> None:
        rows, values = list(rows), list(values)
        self.count += len(rows)
        room = self.EXAMPLES - len(self.examples)
        if room > 0:
            self.examples.extend(
                (r if isinstance(r, str) else int(r), "" if _is_missing(v) else str(v))
                for r, v in zip(rows[:room], values[:room], strict=True)
            )

    def merge(self, other: Tally) -> None:
        self.count += other.count
        self.examples.extend(other.examples[: max(0, self.EXAMPLES - len(self.examples))])

    def describe_examples(self) -> str:
        return "; ".join(
            f'{"record" if isinstance(row, str) else "row"} {row}: "{value}"' for row, value in self.examples
        )


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


@dataclass
class ParseReport:
    """What reading a book left missing or set aside, for the run summary. Nothing here stops a run.

    `unparseable` is keyed `"<table>.<column>"` (e.g. `"accounts.employees"`); `unknown_stages` maps each deal
    stage that is in neither the won nor the lost list (so treated as open) to its number of deals.
    """

    rows: dict[str, int] = field(default_factory=dict)
    unparseable: dict[str, Tally] = field(default_factory=dict)
    orphan_deals: Tally = field(default_factory=Tally)
    unknown_parents: Tally = field(default_factory=Tally)
    unknown_stages: dict[str, int] = field(default_factory=dict)

    def note_unparseable(self, key: str, mask: pd.Series, raw: pd.Series, rows: pd.Series) -> None:
        """Count the cells of `raw` under `mask` as unreadable for column `key`."""
        mask = mask.to_numpy(dtype=bool)
        if mask.any():
            self.unparseable.setdefault(key, Tally()).add(rows[mask], raw[mask])

    @property
    def unparseable_total(self) -> int:
        return sum(t.count for t in self.unparseable.values())

    def merge(self, other: ParseReport) -> ParseReport:
        """Fold `other` (e.g. the next chunk, or the deals file) into this report; returns self."""
        for table, n in other.rows.items():
            self.rows[table] = self.rows.get(table, 0) + n
        for key, tally in other.unparseable.items():
            self.unparseable.setdefault(key, Tally()).merge(tally)
        self.orphan_deals.merge(other.orphan_deals)
        self.unknown_parents.merge(other.unknown_parents)
        for stage, n in other.unknown_stages.items():
            self.unknown_stages[stage] = self.unknown_stages.get(stage, 0) + n
        return self

    def lines(self) -> list[str]:
        """One plain sentence per finding, for the run summary."""
        out = []
        for key, t in sorted(self.unparseable.items()):
            out.append(f"{key}: {t.count} unreadable value(s) left missing (e.g. {t.describe_examples()})")
        if self.orphan_deals.count:
            t = self.orphan_deals
            out.append(
                f"deals: {t.count} deal(s) name an account id not in the accounts file and are left out "
                f"(e.g. {t.describe_examples()})"
            )
        if self.unknown_parents.count:
            t = self.unknown_parents
            out.append(
                f"accounts.parent_id: {t.count} parent id(s) match no account; kept as written "
                f"(e.g. {t.describe_examples()})"
            )
        if self.unknown_stages:
            listed = ", ".join(
                f'"{stage}" ({n})'
                for stage, n in sorted(self.unknown_stages.items(), key=lambda kv: (-kv[1], kv[0]))
            )
            out.append(
                f"deals.stage: {len(self.unknown_stages)} stage(s) are neither won nor lost, "
                f"so their deals count as open: {listed}"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for `--json` output."""

        def tally(t: Tally) -> dict[str, Any]:
            return {
                "count": t.count,
                "examples": [
                    {"record" if isinstance(r, str) else "row": r, "value": v} for r, v in t.examples
                ],
            }

        return {
            "rows": dict(self.rows),
            "unparseable": {k: tally(t) for k, t in sorted(self.unparseable.items())},
            "orphan_deals": tally(self.orphan_deals),
            "unknown_parents": tally(self.unknown_parents),
            "unknown_stages": dict(sorted(self.unknown_stages.items())),
        }


# ---------------------------------------------------------------------------------------------------------
# Conforming a raw frame to the schema


def empty_column(kind: Kind, index: pd.Index) -> pd.Series:
    """An all-missing column of the kind's dtype (an unmapped canonical column)."""
    if kind == "datetime":
        return pd.Series(pd.NaT, index=index, dtype=KIND_DTYPES[kind])
    return pd.Series(pd.NA, index=index, dtype=KIND_DTYPES[kind])


def parse_column(
    raw: pd.Series, kind: Kind, *, decimal: Decimal = "auto", fallback: Literal[".", ","] = "."
) -> Parsed:
    """Parse one raw column as `kind`."""
    if kind in ("string",):
        return Parsed(clean_string(raw), pd.Series(False, index=raw.index))
    if kind == "domain":
        return normalize_domain(raw)
    if kind == "int":
        return parse_int(raw, decimal=decimal, fallback=fallback)
    if kind == "number":
        return parse_number(raw, decimal=decimal, fallback=fallback)
    if kind == "datetime":
        return parse_datetime(raw)
    if kind == "boolean":
        return parse_bool(raw)
    raise ValueError(f"unknown column kind {kind!r}")


def conform(
    raw: pd.DataFrame,
    schema: Mapping[str, Kind],
    *,
    table: str,
    rows: pd.Series | None = None,
    decimal: Decimal = "auto",
    fallback: Literal[".", ","] = ".",
) -> tuple[pd.DataFrame, ParseReport]:
    """Turn raw values, already named canonically, into the schema's columns and dtypes.

    Canonical columns come first in schema order (all-missing when `raw` lacks them); any other column of
    `raw` is an extra mapped attribute, kept as a stripped string under its own name. `rows` labels each
    record in the report (defaults to the frame's index).
    """
    rows = pd.Series(raw.index, index=raw.index) if rows is None else rows
    report = ParseReport(rows={table: len(raw)})
    out: dict[str, pd.Series] = {}
    for column, kind in schema.items():
        if column not in raw.columns:
            out[column] = empty_column(kind, raw.index)
            continue
        values, bad = parse_column(raw[column], kind, decimal=decimal, fallback=fallback)
        report.note_unparseable(f"{table}.{column}", bad, raw[column], rows)
        out[column] = values
    for column in raw.columns:
        if column not in schema:
            out[column] = clean_string(raw[column])
    return pd.DataFrame(out, index=raw.index), report
