"""The diff's SQL for each warehouse dialect, checked against expected files (data-driven, as
sqlglot tests its own transpilations): each case is a model and a primary key; for every
dialect, the generated queries must mean what tests/data/warehouse_diff/<case>.<dialect>.sql
says. Both are parsed with sqlglot in that dialect and written back normalised, statement by
statement, so that a sqlglot release spelling the same query differently (spaces, line
breaks, `NOT EXISTS(` or `NOT EXISTS (`, the case of keywords and unquoted names) passes, and
any other change fails: another function, operator, literal, quoted name, join or clause.
PostgreSQL's are also run for real by test_warehouse_diff.py.

After a deliberate change to the generator, rewrite the files with
    REVERSE_ETL_REGENERATE=1 .venv/bin/python -m pytest tests/test_diffsql.py
and review the diff of tests/data/ like any other change."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from reverse_etl.diff import sql as diffsql

DATA = Path(__file__).parent / "data" / "warehouse_diff"
DIALECTS = ["postgres", "snowflake", "bigquery", "redshift", "databricks"]
CASES = {
    # name: (model in the dialect sqlglot reads it in, its columns, its primary key)
    "one_key": ("select id, email, plan from users where active", ["id", "email", "plan"], ["id"]),
    "composite_key": (
        "select account_id, region, seats from accounts",
        ["account_id", "region", "seats"],
        ["account_id", "region"],
    ),
    "odd_names": (
        'select "User Id", "e|mail" from "My Schema"."users"',
        ["User Id", "e|mail"],
        ["User Id"],
    ),
}
SNAPSHOT = ("reverse_etl", "snapshot_users")


def generated(case: str, dialect: str) -> str:
    sql, columns, key = CASES[case]
    model = sqlglot.parse_one(sql, read="postgres")
    parts = [
        (
            "a run: the rows to send and the counts",
            diffsql.diff_sql(model, columns, key, SNAPSHOT, dialect, ["added", "changed"]),
        ),
        ("a plan: the counts", diffsql.diff_sql(model, columns, key, SNAPSHOT, dialect, [])),
        ("removed", diffsql.removed_sql(model, key, SNAPSHOT, dialect)),
        ("invalid", diffsql.invalid_sql(model, columns, key, dialect)),
        (
            "a first plan (no snapshot yet)",
            diffsql.diff_sql(model, columns, key, None, dialect, []),
        ),
        *(("snapshot table", ddl) for ddl in diffsql.snapshot_ddl(*SNAPSHOT, dialect)),
    ]
    return "".join(f"-- {title}\n{sql};\n\n" for title, sql in parts)


def statements(text: str, dialect: str) -> list[exp.Expression]:
    return [s for s in sqlglot.parse(text, read=dialect) if s is not None]


def normalised(statement: exp.Expression, dialect: str) -> str:
    """One statement as this sqlglot release writes it: one line, unquoted names in lower
    case, comments left out."""
    return statement.sql(dialect=dialect, normalize=True, pretty=False, comments=False)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_diff_sql_for_each_dialect(case: str, dialect: str) -> None:
    path = DATA / f"{case}.{dialect}.sql"
    text = generated(case, dialect)
    if os.environ.get("REVERSE_ETL_REGENERATE") == "1":
        path.write_text(text)
    assert path.exists(), f"no expected SQL yet: run with REVERSE_ETL_REGENERATE=1 ({path})"
    made, expected = statements(text, dialect), statements(path.read_text(), dialect)
    assert len(made) == len(expected) == 7, (len(made), len(expected))
    for number, (got, want) in enumerate(zip(made, expected, strict=True), 1):
        if normalised(got, dialect) != normalised(want, dialect):
            shown = [s.sql(dialect=dialect, pretty=True).splitlines() for s in (want, got)]
            diff = "\n".join(difflib.unified_diff(*shown, str(path), "generated", lineterm=""))
            pytest.fail(f"statement {number} of the {dialect} SQL of {case} changed:\n{diff}")
    for statement in made[:5]:
        assert isinstance(statement, exp.Query)  # each reads; none writes


def test_separators_and_nulls_cannot_collide_in_postgres() -> None:
    """`a|b`,`c` and `a`,`b|c` give different keys and hashes, and a NULL key is no key at all
    (not the text `\\N`): run on the real server."""
    import psycopg
    from conftest import postgres_dsn

    model = sqlglot.parse_one(
        "select * from (values ('a|b', 'c'), ('a', 'b|c'), ('\\N', 'x'), (null, 'x'), "
        "('a\\', '|c')) as v (a, b)",
        read="postgres",
    )
    sql = diffsql.diff_sql(model, ["a", "b"], ["a", "b"], None, "postgres", ["added"])
    with psycopg.connect(postgres_dsn()) as connection:
        rows = connection.execute(
            f"select a, b, __retl_wh_key, __retl_hash from ({sql}) q where __retl_kind = 'row'"
        ).fetchall()
    assert sorted((a, b) for a, b, _, _ in rows) == [
        ("\\N", "x"), ("a", "b|c"), ("a\\", "|c"), ("a|b", "c"),
    ]  # fmt: skip
    assert len({key for _, _, key, _ in rows}) == 4 and len({h for *_, h in rows}) == 4
