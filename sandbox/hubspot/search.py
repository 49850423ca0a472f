"""CRM search for the HubSpot sandbox: a `POST .../search` body becomes one parameterised SQL WHERE/ORDER BY.

HubSpot's documented limits are enforced as HubSpot answers them (400 VALIDATION_ERROR): at most 5 filter
groups, 6 filters per group and 18 in all, 200 results per page, and no paging at or past 10,000 results.
Groups are ORed, filters inside a group ANDed. Numbers, dates and datetimes compare numerically (dates given
as epoch milliseconds or ISO 8601); text compares case-insensitively, as HubSpot's search does.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from sandbox.hubspot.errors import validation_error
from sandbox.hubspot.properties import (
    ALWAYS_RETURNED,
    DEFAULT_PROPERTIES,
    PropertyDef,
    as_wire_text,
    parse_moment,
    parse_number,
)
from sandbox.hubspot.store import column

OPERATORS = (
    "EQ",
    "NEQ",
    "LT",
    "LTE",
    "GT",
    "GTE",
    "BETWEEN",
    "IN",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN",
    "NOT_CONTAINS_TOKEN",
)
MAX_GROUPS = 5
MAX_FILTERS_PER_GROUP = 6
MAX_FILTERS = 18
MAX_LIMIT = 200
DEFAULT_LIMIT = 10
MAX_RESULTS = 10_000
# What the free-text `query` looks in, per object type (HubSpot searches a few default text properties).
QUERY_PROPERTIES = {"companies": ("name", "domain"), "deals": ("dealname",)}

_COMPARE = {"EQ": "=", "NEQ": "!=", "LT": "<", "LTE": "<=", "GT": ">", "GTE": ">="}
_TOKEN_RE = re.compile(r"\w+")


@dataclass
class SearchQuery:
    where: str
    params: list
    order: str
    names: list[str]
    limit: int
    offset: int


def contains_token(value, token) -> bool:
    """SQL function behind CONTAINS_TOKEN: every word of `token` is a word of `value`; `*` is a wildcard."""
    if value is None or token is None:
        return False
    text, wanted = str(value).casefold(), str(token).casefold().strip()
    words = _TOKEN_RE.findall(text)
    if "*" in wanted:
        return fnmatch.fnmatchcase(text, wanted) or any(fnmatch.fnmatchcase(w, wanted) for w in words)
    needed = _TOKEN_RE.findall(wanted)
    return bool(needed) and set(needed) <= set(words)


def returned_names(object_type: str, requested, defs: dict[str, PropertyDef]) -> list[str]:
    """Requested properties that exist (unknown names are ignored, as HubSpot does) plus the ones always sent."""
    if not requested:
        return list(DEFAULT_PROPERTIES[object_type])
    names: list[str] = []
    for name in [*requested, *ALWAYS_RETURNED]:
        defn = defs.get(name)
        if defn is not None and not defn.archived and name not in names:
            names.append(name)
    return names


def compile_search(object_type: str, body, defs: dict[str, PropertyDef]) -> SearchQuery:
    """Validate a search body and translate it; raises HubSpotError (400) the way HubSpot refuses one."""
    if not isinstance(body, dict):
        raise validation_error("Invalid input JSON: the search request must be a JSON object")
    groups = body.get("filterGroups") or []
    if not isinstance(groups, list):
        raise validation_error("filterGroups must be a list")
    if len(groups) > MAX_GROUPS:
        raise validation_error(f"Too many filter groups: {len(groups)}; the maximum is {MAX_GROUPS}")
    total_filters = 0
    group_sql: list[str] = []
    params: list = []
    for gi, group in enumerate(groups):
        filters = group.get("filters") if isinstance(group, dict) else None
        if not isinstance(filters, list) or not filters:
            raise validation_error(f"filterGroups[{gi}].filters must be a non-empty list")
        if len(filters) > MAX_FILTERS_PER_GROUP:
            raise validation_error(
                f"Too many filters in filterGroups[{gi}]: {len(filters)}; the maximum is {MAX_FILTERS_PER_GROUP}"
            )
        total_filters += len(filters)
        parts = [
            _filter_sql(f, defs, params, f"filterGroups[{gi}].filters[{fi}]") for fi, f in enumerate(filters)
        ]
        group_sql.append("(" + " AND ".join(parts) + ")")
    if total_filters > MAX_FILTERS:
        raise validation_error(f"Too many filters: {total_filters}; the maximum is {MAX_FILTERS} in all")
    where = " OR ".join(group_sql) if group_sql else "1 = 1"

    query = body.get("query")
    if query not in (None, ""):
        escaped = str(query).lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        likes = [f"lower({column(n)}) LIKE ? ESCAPE '\\'" for n in QUERY_PROPERTIES[object_type]]
        where = f"({where}) AND ({' OR '.join(likes)})"
        params.extend(f"%{escaped}%" for _ in likes)

    limit = _int_field(body, "limit", DEFAULT_LIMIT)
    if not 0 <= limit <= MAX_LIMIT:
        raise validation_error(f"limit must be between 0 and {MAX_LIMIT}, got {limit}")
    offset = _int_field(body, "after", 0)
    if offset < 0:
        raise validation_error(f"after must not be negative, got {offset}")
    if offset >= MAX_RESULTS:
        raise validation_error(
            f"Search results are limited to {MAX_RESULTS:,}: after={offset} pages past them. "
            "Narrow the filters (e.g. on hs_lastmodifieddate) instead of paging further."
        )
    limit = min(limit, MAX_RESULTS - offset)

    requested = body.get("properties") or []
    if not isinstance(requested, list):
        raise validation_error("properties must be a list of property names")
    return SearchQuery(
        where=where,
        params=params,
        order=_order_sql(body.get("sorts") or [], defs),
        names=returned_names(object_type, [str(p) for p in requested], defs),
        limit=limit,
        offset=offset,
    )


def _int_field(body: dict, key: str, default: int) -> int:
    raw = body.get(key)
    if raw in (None, ""):
        return default
    try:
        return int(str(raw))
    except ValueError:
        raise validation_error(f"{key} must be a whole number, got {raw!r}") from None


def _property(defs: dict[str, PropertyDef], name, where: str) -> PropertyDef:
    defn = defs.get(name) if isinstance(name, str) else None
    if defn is None or defn.archived:
        raise validation_error(f"{where}: there is no property named {name!r}")
    return defn


def _filter_sql(f, defs: dict[str, PropertyDef], params: list, where: str) -> str:
    if not isinstance(f, dict):
        raise validation_error(f"{where} must be an object")
    defn = _property(defs, f.get("propertyName"), where)
    op = f.get("operator")
    if op not in OPERATORS:
        raise validation_error(f"{where}: unknown operator {op!r}; allowed: {', '.join(OPERATORS)}")
    col = column(defn.name)
    text = not defn.numeric
    nocase = " COLLATE NOCASE" if text else ""
    if op == "HAS_PROPERTY":
        return f"{col} IS NOT NULL"
    if op == "NOT_HAS_PROPERTY":
        return f"{col} IS NULL"
    if op in ("IN", "NOT_IN"):
        values = f.get("values")
        if not isinstance(values, list) or not values:
            raise validation_error(f"{where}: {op} needs a non-empty `values` list")
        params.extend(_operand(defn, v, where) for v in values)
        marks = ", ".join("?" * len(values))
        if op == "IN":
            return f"{col}{nocase} IN ({marks})"
        # Records without a value are "not in" the list, as they are "not equal" for NEQ.
        return f"({col} IS NULL OR {col}{nocase} NOT IN ({marks}))"
    if "value" not in f or f["value"] is None:
        raise validation_error(f"{where}: {op} needs a `value`")
    if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        token = as_wire_text(f["value"])
        match = f"hs_contains_token({col}, ?)"
        # A cheap substring test first, so the Python tokenizer only sees candidate rows (SQLite's lower()
        # folds ASCII only, hence only for ASCII fragments; a value folding to ASCII, "ß" for "ss", slips by).
        fragment = max(token.lower().split("*"), key=len)
        if fragment.isascii() and fragment.strip():
            match = f"(instr(lower({col}), ?) > 0 AND {match})"
            params.append(fragment)
        params.append(token)
        return match if op == "CONTAINS_TOKEN" else f"({col} IS NULL OR NOT {match})"
    if op == "BETWEEN":
        if f.get("highValue") is None:
            raise validation_error(f"{where}: BETWEEN needs `value` and `highValue`")
        params.extend([_operand(defn, f["value"], where), _operand(defn, f["highValue"], where)])
        return f"{col}{nocase} BETWEEN ? AND ?"
    params.append(_operand(defn, f["value"], where))
    if op == "NEQ":
        return f"({col} IS NULL OR {col}{nocase} != ?)"
    return f"{col}{nocase} {_COMPARE[op]} ?"


def _operand(defn: PropertyDef, raw, where: str):
    text = as_wire_text(raw)
    if defn.type == "number":
        number = parse_number(text or "")
        if number is None:
            raise validation_error(f"{where}: {text!r} is not a number (property {defn.name} is a number)")
        return number
    if defn.type in ("date", "datetime"):
        ms = parse_moment(text or "")
        if ms is None:
            raise validation_error(
                f"{where}: {text!r} is not a {defn.type}: use epoch milliseconds or ISO 8601 (property {defn.name})"
            )
        return ms
    if defn.type == "bool":
        return (text or "").lower()
    return text


def _order_sql(sorts, defs: dict[str, PropertyDef]) -> str:
    if not isinstance(sorts, list):
        raise validation_error("sorts must be a list")
    terms: list[str] = []
    for i, sort in enumerate(sorts):
        if isinstance(sort, str):
            descending = sort.startswith("-")
            name = sort.lstrip("-")
        elif isinstance(sort, dict):
            name = sort.get("propertyName")
            direction = str(sort.get("direction") or "ASCENDING").upper()
            if direction not in ("ASCENDING", "DESCENDING"):
                raise validation_error(
                    f"sorts[{i}].direction must be ASCENDING or DESCENDING, got {direction!r}"
                )
            descending = direction == "DESCENDING"
        else:
            raise validation_error(f"sorts[{i}] must be a property name or {{propertyName, direction}}")
        defn = _property(defs, name, f"sorts[{i}]")
        terms.append(f"{column(defn.name)} {'DESC' if descending else 'ASC'}")
    # Ties (and there are many: imports share timestamps) break on the id so pages never overlap.
    if "id ASC" not in terms and "id DESC" not in terms:
        terms.append("id ASC")
    return ", ".join(terms)
