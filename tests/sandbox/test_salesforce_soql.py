"""The sandbox's SOQL tokenizer, parser and SQL compiler, without HTTP."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.salesforce.fields import account_fields
from sandbox.salesforce.soql import Comparison, Junction, Negation, SoqlError, compile_query, parse, tokenize
from sandbox.salesforce.store import SObjectType

ACCOUNT = SObjectType("Account", account_fields())


def resolve(name: str):
    return ACCOUNT if name.lower() == "account" else None


def compiled(soql: str):
    return compile_query(parse(soql), resolve)


def quote(text: str) -> str:
    """A SOQL string literal for `text`."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_any_text_survives_quoting(text):
    [token] = [t for t in tokenize(quote(text)) if t.kind == "STRING"]
    assert token.value == text


def test_literals():
    kinds = [
        (t.kind, t.value)
        for t in tokenize("'a\\'b' 12 -3.5 2024-01-31 2024-01-31T10:00:00.5+01:00 true null")
    ]
    assert kinds == [
        ("STRING", "a'b"),
        ("NUMBER", 12),
        ("NUMBER", -3.5),
        ("DATE", "2024-01-31"),
        ("DATETIME", "2024-01-31T09:00:00.500+0000"),
        ("KEYWORD", "TRUE"),
        ("KEYWORD", "NULL"),
        ("EOF", None),
    ]


def test_like_keeps_escaped_wildcards_literal():
    [token] = [t for t in tokenize("'50\\%_x'") if t.kind == "STRING"]
    assert token.value == "50%_x" and token.like == "50\\%_x"


def test_precedence_and_structure():
    where = parse("SELECT Id FROM Account WHERE NOT Name = 'a' AND (Type = 'b' OR Type = 'c')").where
    assert isinstance(where, Junction) and where.op == "AND"
    assert isinstance(where.terms[0], Negation) and isinstance(where.terms[1], Junction)
    assert isinstance(where.terms[0].term, Comparison)


@pytest.mark.parametrize(
    "soql",
    [
        "",
        "SELECT FROM Account",
        "SELECT Id Account",
        "SELECT Id FROM Account WHERE Name = 'x' AND Type = 'y' OR Industry = 'z'",
        "SELECT Id FROM Account WHERE Name IN ()",
        "SELECT Id FROM Account WHERE Name LIKE 5",
        "SELECT Id FROM Account ORDER BY Name NULLS",
        "SELECT Id FROM Account LIMIT 1.5",
        "SELECT Id FROM Account WHERE Name = 'bad \\q escape'",
        "SELECT Id FROM Account WHERE CreatedDate > 2024-13-01",
        "SELECT Id FROM Account trailing",
    ],
)
def test_malformed(soql):
    with pytest.raises(SoqlError) as err:
        compiled(soql)
    assert err.value.code == "MALFORMED_QUERY"


def test_values_are_bound_never_spliced():
    query = compiled("SELECT Id FROM Account WHERE Name = 'x\\'; DROP TABLE sf_Account; --'")
    assert "DROP" not in query.where_sql
    assert query.params == ["x'; DROP TABLE sf_Account; --"]


def test_compiled_sql_runs_on_sqlite_and_follows_soql_null_rules():
    conn = sqlite3.connect(":memory:")
    conn.execute(
        'CREATE TABLE t (_row INTEGER PRIMARY KEY, "IsDeleted" INTEGER, "Name" TEXT, "Industry" TEXT)'
    )
    conn.executemany(
        'INSERT INTO t ("IsDeleted", "Name", "Industry") VALUES (0, ?, ?)',
        [("A", "Retail"), ("B", None), ("C", "retail"), ("D", "Energy")],
    )

    def names(where: str) -> list[str]:
        query = compiled(f"SELECT Name FROM Account WHERE {where}")
        sql, params = query.rowid_sql("t", include_deleted=False)
        return [
            conn.execute('SELECT "Name" FROM t WHERE _row = ?', (r,)).fetchone()[0]
            for (r,) in conn.execute(sql, params)
        ]

    assert names("Industry = 'RETAIL'") == ["A", "C"]
    assert names("Industry != 'Retail'") == ["B", "D"]
    assert names("Industry NOT IN ('Energy')") == ["A", "B", "C"]
    assert names("Industry IN ('Energy', null)") == ["B", "D"]
    assert names("NOT Industry = 'Energy'") == ["A", "B", "C"]
    assert names("Industry < 'S'") == ["A", "C", "D"]  # text order ignores case; nulls never compare
