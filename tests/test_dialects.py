"""Models in any dialect sqlglot knows: transpiled to the warehouse's before they run, shown by
`plan --show-sql`, and refused at validation, naming the construct, where they cannot be.

The SQL shown is checked by running it on the warehouse (DuckDB, PostgreSQL), not by its
spelling, which changes from one sqlglot release to the next."""

from __future__ import annotations

import duckdb
import psycopg
from conftest import postgres_dsn
from test_postgres_warehouse import pg  # noqa: F401 (the fixture)

SNOWFLAKE_MODEL = """
select id, iff(score > 10, 'high', 'low') as band, email
from users
qualify row_number() over (partition by email order by id) = 1"""


def users(project) -> None:
    project.warehouse("""
        create table users as
        select i as id, i * 3 as score, 'u' || (i % 4) || '@x.com' as email
        from range(1, 9) t(i)""")


def test_a_snowflake_model_runs_on_duckdb(project, receiver):
    users(project)
    project.webhook("hook", receiver.url)
    header = {"destination": "hook", "primary_key": "id", "dialect": "snowflake"}
    project.sync("users", header, SNOWFLAKE_MODEL)
    assert project.cli("validate").exit_code == 0
    [plan] = project.cli("plan", "users", "--show-sql", "--json").json_lines()
    with duckdb.connect(str(project.root / "warehouse.duckdb"), read_only=True) as con:
        shown = sorted(con.execute(plan["sql"]).fetchall())
    # IFF and QUALIFY kept their meaning: one row per email, the band by the score
    assert shown == [
        (1, "low", "u1@x.com"), (2, "low", "u2@x.com"), (3, "low", "u3@x.com"),
        (4, "high", "u0@x.com"),
    ], plan["sql"]  # fmt: skip
    text = project.cli("plan", "users", "--show-sql")
    assert f"-- the SQL that runs for users:\n{plan['sql']}\n" in text.stdout, text.stdout
    [result] = project.cli("run", "users", "--json").json_lines()
    assert result["delivered"] == 4, result  # one row per email: QUALIFY kept its meaning
    assert sorted(receiver.data, key=int) == ["1", "2", "3", "4"]
    assert receiver.data["4"]["band"] == "high" and receiver.data["1"]["band"] == "low"


def test_what_cannot_be_transpiled_is_a_validation_error_naming_it(project, receiver):
    users(project)
    project.webhook("hook", receiver.url)
    project.sync(
        "dates",
        {"destination": "hook", "primary_key": "id", "dialect": "snowflake"},
        "select id, to_char(score, '999') as padded from users",
    )
    project.sync(
        "typo",
        {"destination": "hook", "primary_key": "id", "dialect": "snowflak"},
        "select id from users",
    )
    outcome = project.cli("validate")
    assert outcome.exit_code == 2
    [said] = [line for line in outcome.stderr.splitlines() if "syncs/dates.sql:3: " in line]
    # sqlglot's own words follow ours; they name the construct and its argument
    assert "the model cannot be transpiled from snowflake to duckdb: " in said, said
    assert "ToChar" in said and "format" in said, said
    assert "syncs/typo.sql:3: dialect: unknown SQL dialect 'snowflak'" in outcome.stderr
    assert "did you mean 'snowflake'" in outcome.stderr
    assert project.cli("run", "dates").exit_code == 2 and receiver.requests == []


def test_a_bigquery_model_runs_on_postgres(pg, receiver):  # noqa: F811
    project, sql = pg
    sql("create table orders as select i as id, i * 10 as total, i % 3 as items "
        "from generate_series(1, 6) i")  # fmt: skip
    project.webhook("hook", receiver.url)
    header = {"destination": "hook", "primary_key": "id", "dialect": "bigquery"}
    project.sync("orders", header, "select id, safe_divide(total, items) as per_item from orders")
    [plan] = project.cli("plan", "orders", "--show-sql", "--json").json_lines()
    assert plan["added"] == 6, plan
    with psycopg.connect(postgres_dsn(), options=f"-csearch_path={sql.schema}") as con:
        shown = dict(con.execute(plan["sql"]).fetchall())
    # SAFE_DIVIDE kept its meaning: NULL where BigQuery's gives NULL (a division by zero)
    assert shown == {1: 10, 2: 10, 3: None, 4: 40, 5: 25, 6: None}, plan["sql"]
    [result] = project.cli("run", "orders", "--json").json_lines()
    assert result["status"] == "success", result
    assert receiver.data["3"]["per_item"] is None  # items = 0: NULL, as BigQuery says
    assert receiver.data["4"]["per_item"] == 40
    project.sync(
        "aggregated",
        header,
        "select items as id, array_agg(total ignore nulls) as totals from orders group by items",
    )
    outcome = project.cli("validate")
    assert outcome.exit_code == 2
    assert "cannot be transpiled from bigquery to postgres" in outcome.stderr
    assert "IGNORE NULLS" in outcome.stderr


def test_a_transpiled_models_warehouse_error_points_at_the_name(project, receiver):
    users(project)
    project.webhook("hook", receiver.url)
    project.sync(
        "wrong",
        {"destination": "hook", "primary_key": "id", "dialect": "snowflake"},
        "select id,\n  iff(true, 1, 2) as flag,\n  nosuch\nfrom users",
    )
    outcome = project.cli("validate")
    assert outcome.exit_code == 2 and "syncs/wrong.sql:6" in outcome.stderr, outcome.stderr
    assert "nosuch" in outcome.stderr
