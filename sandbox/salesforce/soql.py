"""A SOQL subset for the sandbox: a tokenizer, a recursive-descent parser and a compiler to parameterised SQLite.

Supported: `SELECT f1, f2 | COUNT() | COUNT(f) FROM Account|Opportunity [WHERE ...] [ORDER BY f [ASC|DESC]
[NULLS FIRST|LAST], ...] [LIMIT n] [OFFSET n]`. Conditions: `= != <> < <= > >=`, `IN (...)`, `NOT IN (...)`,
`LIKE` (`%`, `_`, `\\%`, `\\_`), `NOT`, `AND`, `OR` and parentheses (mixing AND and OR at one level needs
parentheses, as in SOQL); literals: 'strings' with backslash escapes, numbers, true/false, null, dates
(2024-01-31) and datetimes (2024-01-31T10:00:00Z, +01:00, .000Z).

SOQL semantics kept: field and object names are case-insensitive; text compares and sorts case-insensitively
(ASCII folding, SQLite NOCASE); `!=` and `NOT IN` also match nulls; `NOT` treats an unknown (null) comparison
as false before negating it. Values are always bound as SQL parameters, never spliced into the SQL text.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from sandbox.salesforce.fields import NUMBER_TYPES, Field, format_datetime
from sandbox.salesforce.ids import normalize_id

MAX_OFFSET = 2000


class SoqlError(Exception):
    """A query Salesforce would refuse; `code` is the REST errorCode (MALFORMED_QUERY, INVALID_FIELD, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- tokens -----------------------------------------------------------------------------------------------------
KEYWORDS = {
    "SELECT",
    "FROM",
    "WHERE",
    "AND",
    "OR",
    "NOT",
    "IN",
    "LIKE",
    "ORDER",
    "BY",
    "ASC",
    "DESC",
    "NULLS",
    "FIRST",
    "LAST",
    "LIMIT",
    "OFFSET",
    "NULL",
    "TRUE",
    "FALSE",
}


@dataclass(frozen=True)
class Token:
    kind: str  # KEYWORD, IDENT, STRING, NUMBER, DATE, DATETIME, OP, LPAREN, RPAREN, COMMA, EOF
    value: object
    pos: int
    text: str = ""
    like: str | None = None  # for STRING: the SQL LIKE pattern (escape character backslash)


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})(?![\w:])
  | (?P<number>[+-]?(?:\d+\.?\d*|\.\d+))(?![\w.])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op>!=|<>|<=|>=|=|<|>)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<quote>')
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}


def tokenize(soql: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(soql):
        match = _TOKEN.match(soql, pos)
        if not match:
            raise _malformed(soql, pos, f"unexpected token: '{soql[pos : pos + 10].split()[0]}'")
        kind = match.lastgroup
        text = match.group()
        if kind == "quote":
            token, pos = _read_string(soql, pos)
            tokens.append(token)
            continue
        if kind == "ident":
            upper = text.upper()
            if upper in KEYWORDS:
                tokens.append(Token("KEYWORD", upper, pos, text))
            else:
                tokens.append(Token("IDENT", text, pos, text))
        elif kind == "number":
            number = float(text) if "." in text else int(text)
            tokens.append(Token("NUMBER", number, pos, text))
        elif kind == "date":
            try:
                tokens.append(Token("DATE", dt.date.fromisoformat(text).isoformat(), pos, text))
            except ValueError:
                raise _malformed(
                    soql, pos, f"line 1:{pos} no viable alternative at character '{text}'"
                ) from None
        elif kind == "datetime":
            try:
                moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise _malformed(
                    soql, pos, f"line 1:{pos} no viable alternative at character '{text}'"
                ) from None
            tokens.append(Token("DATETIME", format_datetime(moment), pos, text))
        elif kind != "ws":
            tokens.append(Token(kind.upper(), text, pos, text))
        pos = match.end()
    tokens.append(Token("EOF", None, len(soql), ""))
    return tokens


def _read_string(soql: str, start: int) -> tuple[Token, int]:
    """A quoted literal: its value (escapes resolved) and its LIKE pattern (`\\%`/`\\_` stay literal)."""
    value: list[str] = []
    like: list[str] = []
    pos = start + 1
    while True:
        if pos >= len(soql):
            raise _malformed(soql, start, f"line 1:{start} mismatched character '<EOF>' expecting '''")
        char = soql[pos]
        if char == "'":
            pos += 1
            break
        if char == "\\":
            if pos + 1 >= len(soql):
                raise _malformed(soql, pos, "Invalid string literal: unterminated escape")
            nxt = soql[pos + 1]
            if nxt in ("%", "_"):
                value.append(nxt)
                like.append("\\" + nxt)
            elif nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", soql[pos + 2 : pos + 6]):
                char = chr(int(soql[pos + 2 : pos + 6], 16))
                value.append(char)
                like.append("\\\\" if char == "\\" else char)
                pos += 4
            elif nxt in _ESCAPES:
                char = _ESCAPES[nxt]
                value.append(char)
                like.append("\\\\" if char == "\\" else char)
            else:
                raise _malformed(
                    soql,
                    pos,
                    f"Invalid string literal '{soql[start : pos + 2]}'. Illegal escape sequence '\\{nxt}'",
                )
            pos += 2
            continue
        value.append(char)
        like.append(char)
        pos += 1
    return Token("STRING", "".join(value), start, soql[start:pos], "".join(like)), pos


def _malformed(soql: str, pos: int, message: str) -> SoqlError:
    return SoqlError("MALFORMED_QUERY", _located(soql, pos, message))


def _located(soql: str, pos: int, message: str) -> str:
    """Salesforce's error layout: the query, a caret under the culprit, `ERROR at Row:1:Column:N`, the reason."""
    line_start = soql.rfind("\n", 0, pos) + 1
    row = soql.count("\n", 0, pos) + 1
    column = pos - line_start + 1
    line = soql.splitlines()[row - 1] if soql.strip() else ""
    return f"\n{line}\n{' ' * (column - 1)}^\nERROR at Row:{row}:Column:{column}\n{message}"


# -- syntax tree ------------------------------------------------------------------------------------------------
@dataclass
class FieldRef:
    name: str
    pos: int


@dataclass
class Literal:
    kind: str  # STRING, NUMBER, DATE, DATETIME, NULL, BOOLEAN
    value: object
    pos: int
    like: str | None = None


@dataclass
class Comparison:
    field: FieldRef
    op: str  # = != < <= > >= LIKE IN NOT IN
    value: Literal | list[Literal]


@dataclass
class Junction:
    op: str  # AND / OR
    terms: list


@dataclass
class Negation:
    term: object


@dataclass
class OrderItem:
    field: FieldRef
    descending: bool = False
    nulls_last: bool | None = None


@dataclass
class Query:
    text: str
    fields: list[FieldRef]
    sobject: FieldRef
    count: str | None = None  # "rows" for COUNT(), "field" for COUNT(f)
    count_field: FieldRef | None = None
    where: object | None = None
    order: list[OrderItem] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None


class Parser:
    def __init__(self, soql: str) -> None:
        self.soql = soql
        self.tokens = tokenize(soql)
        self.i = 0

    # helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def at_keyword(self, *words: str) -> bool:
        return self.tok.kind == "KEYWORD" and self.tok.value in words

    def expect_keyword(self, word: str) -> Token:
        if not self.at_keyword(word):
            raise self.unexpected()
        return self.advance()

    def expect(self, kind: str) -> Token:
        if self.tok.kind != kind:
            raise self.unexpected()
        return self.advance()

    def unexpected(self) -> SoqlError:
        token = self.tok
        shown = "<EOF>" if token.kind == "EOF" else token.text
        return _malformed(self.soql, token.pos, f"unexpected token: '{shown}'")

    # grammar
    def parse(self) -> Query:
        if not self.soql.strip():
            raise SoqlError("MALFORMED_QUERY", "unexpected token: <EOF>")
        self.expect_keyword("SELECT")
        fields: list[FieldRef] = []
        count = None
        count_field = None
        if (
            self.tok.kind == "IDENT"
            and self.tok.value.upper() == "COUNT"
            and self.tokens[self.i + 1].kind == "LPAREN"
        ):
            self.advance()
            self.advance()
            if self.tok.kind == "RPAREN":
                count = "rows"
            else:
                ident = self.expect("IDENT")
                count, count_field = "field", FieldRef(ident.value, ident.pos)
            self.expect("RPAREN")
        else:
            fields.append(self.field_ref())
            while self.tok.kind == "COMMA":
                self.advance()
                fields.append(self.field_ref())
        self.expect_keyword("FROM")
        sobject_tok = self.expect("IDENT")
        query = Query(self.soql, fields, FieldRef(sobject_tok.value, sobject_tok.pos), count, count_field)
        if self.at_keyword("WHERE"):
            self.advance()
            query.where = self.condition()
        if self.at_keyword("ORDER"):
            self.advance()
            self.expect_keyword("BY")
            query.order.append(self.order_item())
            while self.tok.kind == "COMMA":
                self.advance()
                query.order.append(self.order_item())
        if self.at_keyword("LIMIT"):
            self.advance()
            query.limit = self.non_negative_int()
        if self.at_keyword("OFFSET"):
            self.advance()
            query.offset = self.non_negative_int()
        if self.tok.kind != "EOF":
            raise self.unexpected()
        return query

    def field_ref(self) -> FieldRef:
        if self.tok.kind != "IDENT":
            raise self.unexpected()
        token = self.advance()
        return FieldRef(token.value, token.pos)

    def non_negative_int(self) -> int:
        token = self.tok
        if token.kind != "NUMBER" or not isinstance(token.value, int) or token.value < 0:
            raise self.unexpected()
        self.advance()
        return token.value

    def order_item(self) -> OrderItem:
        item = OrderItem(self.field_ref())
        if self.at_keyword("ASC", "DESC"):
            item.descending = self.advance().value == "DESC"
        if self.at_keyword("NULLS"):
            self.advance()
            if not self.at_keyword("FIRST", "LAST"):
                raise self.unexpected()
            item.nulls_last = self.advance().value == "LAST"
        return item

    def condition(self):
        terms = [self.unary()]
        op = None
        while self.at_keyword("AND", "OR"):
            word = self.tok.value
            if op is not None and word != op:
                # SOQL refuses `a AND b OR c`: the grouping must be written out.
                raise self.unexpected()
            op = word
            self.advance()
            terms.append(self.unary())
        return terms[0] if op is None else Junction(op, terms)

    def unary(self):
        if self.at_keyword("NOT"):
            self.advance()
            return Negation(self.unary())
        if self.tok.kind == "LPAREN":
            self.advance()
            inner = self.condition()
            self.expect("RPAREN")
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        ref = self.field_ref()
        if self.at_keyword("NOT"):
            self.advance()
            self.expect_keyword("IN")
            return Comparison(ref, "NOT IN", self.literal_list())
        if self.at_keyword("IN"):
            self.advance()
            return Comparison(ref, "IN", self.literal_list())
        if self.at_keyword("LIKE"):
            self.advance()
            if self.tok.kind != "STRING":
                raise self.unexpected()
            return Comparison(ref, "LIKE", self.literal())
        if self.tok.kind == "OP":
            op = self.advance().value
            return Comparison(ref, "!=" if op == "<>" else op, self.literal())
        raise self.unexpected()

    def literal_list(self) -> list[Literal]:
        self.expect("LPAREN")
        values = [self.literal()]
        while self.tok.kind == "COMMA":
            self.advance()
            values.append(self.literal())
        self.expect("RPAREN")
        return values

    def literal(self) -> Literal:
        token = self.tok
        if token.kind in ("STRING", "NUMBER", "DATE", "DATETIME"):
            self.advance()
            return Literal(token.kind, token.value, token.pos, token.like)
        if self.at_keyword("NULL"):
            self.advance()
            return Literal("NULL", None, token.pos)
        if self.at_keyword("TRUE", "FALSE"):
            self.advance()
            return Literal("BOOLEAN", token.value == "TRUE", token.pos)
        raise self.unexpected()


def parse(soql: str) -> Query:
    return Parser(soql).parse()


# -- compiling to SQL -------------------------------------------------------------------------------------------
@dataclass
class Compiled:
    """A checked query: what to select, and the SQL pieces to find the matching rows."""

    sobject: object  # store.SObjectType
    fields: list[Field]  # selected, in query order (empty for COUNT())
    where_sql: str
    params: list
    order_sql: str
    limit: int | None
    offset: int | None
    count: str | None
    count_field: Field | None = None

    def rowid_sql(self, table: str, include_deleted: bool) -> tuple[str, list]:
        """SQL listing the matching rows' rowids in result order (the query's snapshot)."""
        where = self.where_sql if include_deleted else f'"IsDeleted" = 0 AND ({self.where_sql})'
        sql = f"SELECT _row FROM {table} WHERE {where} ORDER BY {self.order_sql}"
        params = list(self.params)
        if self.limit is not None or self.offset:
            sql += " LIMIT ? OFFSET ?"
            params += [-1 if self.limit is None else self.limit, self.offset or 0]
        return sql, params


def compile_query(query: Query, resolve_type: Callable[[str], object | None]) -> Compiled:
    sobject = resolve_type(query.sobject.name)
    if sobject is None:
        raise SoqlError(
            "INVALID_TYPE",
            _located(
                query.text,
                query.sobject.pos,
                f"sObject type '{query.sobject.name}' is not supported. If you are attempting to use a custom "
                "object, be sure to append the '__c' after the entity name. Please reference your WSDL or the "
                "describe call for the appropriate names.",
            ),
        )
    ctx = _Context(query.text, sobject)
    fields: list[Field] = []
    seen: set[str] = set()
    for ref in query.fields:
        resolved = ctx.field(ref)
        if resolved.name in seen:
            raise SoqlError(
                "MALFORMED_QUERY", _located(query.text, ref.pos, f"duplicate field selected: {resolved.name}")
            )
        seen.add(resolved.name)
        fields.append(resolved)
    count_field = ctx.field(query.count_field) if query.count_field else None
    params: list = []
    where_sql = ctx.condition(query.where, params) if query.where is not None else "1"
    order_parts = []
    for item in query.order:
        resolved = ctx.field(item.field)
        if not resolved.sortable:
            raise SoqlError(
                "INVALID_FIELD",
                _located(
                    query.text, item.field.pos, f"field '{resolved.name}' can not be sorted in a query call"
                ),
            )
        column = f'"{resolved.name}"' + (" COLLATE NOCASE" if resolved.case_insensitive else "")
        nulls_last = item.nulls_last if item.nulls_last is not None else item.descending
        order_parts.append(
            f"{column} {'DESC' if item.descending else 'ASC'} NULLS {'LAST' if nulls_last else 'FIRST'}"
        )
    # Ties keep insertion order so a result (and its pages) is the same every time the query runs; ordering
    # by Id (unique) already has no ties, and leaving it last lets SQLite walk an (X, Id) index instead of sorting.
    if not any(ctx.field(item.field).name == "Id" for item in query.order):
        order_parts.append("_row ASC")
    if query.offset is not None and query.offset > MAX_OFFSET:
        raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE", f"Maximum SOQL offset allowed is {MAX_OFFSET}")
    return Compiled(
        sobject=sobject,
        fields=fields,
        where_sql=where_sql,
        params=params,
        order_sql=", ".join(order_parts),
        limit=query.limit,
        offset=query.offset,
        count=query.count,
        count_field=count_field,
    )


class _Context:
    def __init__(self, text: str, sobject) -> None:
        self.text = text
        self.sobject = sobject

    def field(self, ref: FieldRef) -> Field:
        name = ref.name
        if "." in name:
            head, _, rest = name.partition(".")
            if head.lower() == self.sobject.name.lower() and "." not in rest:
                name = rest  # `Account.Name` in a query FROM Account means Name
            else:
                raise SoqlError(
                    "INVALID_FIELD",
                    _located(
                        self.text,
                        ref.pos,
                        f"Didn't understand relationship '{head}' in field path. If you are attempting to use a "
                        "custom relationship, be sure to append the '__r' after the custom relationship name. "
                        "Please reference your WSDL or the describe call for the appropriate names.",
                    ),
                )
        resolved = self.sobject.field(name)
        if resolved is None:
            raise SoqlError(
                "INVALID_FIELD",
                _located(
                    self.text,
                    ref.pos,
                    f"No such column '{name}' on entity '{self.sobject.name}'. If you are attempting to use a "
                    "custom field, be sure to append the '__c' after the custom field name. Please reference "
                    "your WSDL or the describe call for the appropriate names.",
                ),
            )
        return resolved

    def condition(self, node, params: list) -> str:
        if isinstance(node, Junction):
            return "(" + f" {node.op} ".join(self.condition(t, params) for t in node.terms) + ")"
        if isinstance(node, Negation):
            # SQL's NOT keeps an unknown (null) comparison unknown; SOQL treats it as false, then negates.
            return f"(NOT COALESCE({self.condition(node.term, params)}, 0))"
        return self.comparison(node, params)

    def comparison(self, node: Comparison, params: list) -> str:
        fld = self.field(node.field)
        if not fld.filterable:
            raise SoqlError(
                "INVALID_FIELD",
                _located(
                    self.text, node.field.pos, f"field '{fld.name}' can not be filtered in a query call"
                ),
            )
        column = f'"{fld.name}"'
        nocase = " COLLATE NOCASE" if fld.case_insensitive else ""
        if node.op in ("IN", "NOT IN"):
            values = [self.value(fld, lit) for lit in node.value]
            non_null = [v for v in values if v is not None]
            has_null = len(non_null) < len(values)
            params.extend(non_null)
            marks = ", ".join("?" for _ in non_null) or "NULL"
            if node.op == "IN":
                sql = f"{column}{nocase} IN ({marks})"
                return f"({sql} OR {column} IS NULL)" if has_null else sql
            sql = f"{column}{nocase} NOT IN ({marks})"
            return f"({sql} AND {column} IS NOT NULL)" if has_null else f"({column} IS NULL OR {sql})"
        literal: Literal = node.value
        if node.op == "LIKE":
            if not fld.is_text:
                raise SoqlError(
                    "INVALID_QUERY_FILTER_OPERATOR",
                    _located(self.text, node.field.pos, f"invalid operator on field '{fld.name}': LIKE"),
                )
            params.append(literal.like)
            return f"{column} LIKE ? ESCAPE '\\'"
        value = self.value(fld, literal)
        if value is None:
            if node.op == "=":
                return f"{column} IS NULL"
            if node.op == "!=":
                return f"{column} IS NOT NULL"
            raise SoqlError(
                "MALFORMED_QUERY",
                _located(self.text, literal.pos, f"invalid operator on null: {node.op} null"),
            )
        if fld.type == "boolean" and node.op not in ("=", "!="):
            raise SoqlError(
                "INVALID_QUERY_FILTER_OPERATOR",
                _located(self.text, node.field.pos, f"invalid operator on boolean field: {node.op}"),
            )
        params.append(value)
        if node.op == "!=":
            # SOQL's != also matches records where the field is null.
            return f"({column} IS NULL OR {column}{nocase} != ?)"
        return f"{column}{nocase} {node.op} ?"

    def value(self, fld: Field, literal: Literal) -> object:
        kind = literal.kind
        if kind == "NULL":
            return None
        if fld.type in ("id", "reference"):
            if kind != "STRING":
                raise self.type_error(fld, literal.pos, "string")
            normalized = normalize_id(literal.value)
            if normalized is None:
                raise SoqlError(
                    "INVALID_QUERY_FILTER_OPERATOR",
                    _located(self.text, literal.pos, f"invalid ID field: {literal.value}"),
                )
            return normalized
        if fld.is_text:
            if kind != "STRING":
                raise self.type_error(fld, literal.pos, "string")
            return literal.value
        if fld.type in NUMBER_TYPES or fld.type == "int":
            if kind != "NUMBER":
                raise self.type_error(fld, literal.pos, "number")
            return literal.value
        if fld.type == "boolean":
            if kind != "BOOLEAN":
                raise self.type_error(fld, literal.pos, "boolean")
            return int(literal.value)
        if fld.type == "datetime":
            if kind != "DATETIME":
                raise self.type_error(fld, literal.pos, "dateTime")
            return literal.value
        if fld.type == "date":
            if kind != "DATE":
                raise self.type_error(fld, literal.pos, "date")
            return literal.value
        raise self.type_error(fld, literal.pos, fld.type)

    def type_error(self, fld: Field, pos: int, expected: str) -> SoqlError:
        quoted = (
            "should be enclosed in quotes" if expected == "string" else "should not be enclosed in quotes"
        )
        return SoqlError(
            "INVALID_FIELD",
            _located(
                self.text,
                pos,
                f"value of filter criterion for field '{fld.name}' must be of type {expected} and {quoted}",
            ),
        )
