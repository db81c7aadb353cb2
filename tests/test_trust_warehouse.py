"""The trust guarantees of tests/test_trust.py with the diff inside PostgreSQL
(`diff = "warehouse"`): key identity, what is owed, and no delete for a record the model has."""

from __future__ import annotations

from typing import Any

import pytest
from test_postgres_warehouse import pg  # noqa: F401 (the fixture)
from test_trust import Receiver


@pytest.fixture
def ci_receiver():
    with Receiver(ignore_case=True) as server:
        yield server


def people(sql, emails: list[str]) -> None:
    values = ", ".join(f"('{e}', '{e.split('@')[0]}')" for e in emails)
    sql("drop table if exists contacts")
    sql(f"create table contacts as select * from (values {values}) t(email, name)")


def email_sync(project, sql, receiver, mode: str = "mirror", **destination: Any) -> None:
    with (project.root / "config.toml").open("a") as config:
        config.write(f'state_schema = "{sql.schema}"\n')
    project.webhook("crm", receiver.url, key_identity="case_insensitive", **destination)
    project.sync(
        "people",
        {"destination": "crm", "primary_key": "email", "mode": mode, "diff": "warehouse"},
        "select email, name from contacts",
    )


def snapshot_table(admin, schema: str) -> str:
    """The name of the one snapshot table in the test's schema."""
    [(table,)] = admin.execute(
        "select table_name from information_schema.tables "
        "where table_schema = %s and table_name like 'snapshot%%'",
        (schema,),
    ).fetchall()
    return str(table)


def run(project, *args: str) -> dict[str, Any]:
    [result] = project.cli("run", "people", "--json", *args).json_lines()
    return result


def test_key_identity_in_the_warehouse_diff(pg, ci_receiver):  # noqa: F811
    project, sql = pg
    emails = [f"user{i}@example.com" for i in range(10)]
    people(sql, emails)
    email_sync(project, sql, ci_receiver, batch_size=1, max_concurrency=4)
    assert run(project)["delivered"] == 10
    people(sql, [e.upper() if i < 3 else e for i, e in enumerate(emails)])
    result = run(project)
    assert (result["changed"], result["removed"], result["delivered"]) == (3, 0, 3)
    assert ci_receiver.sent("delete") == [] and len(ci_receiver.records) == 10
    people(sql, [*emails, "User9@Example.com"])
    duplicated = run(project)
    assert (duplicated["invalid"], duplicated["removed"]) == (2, 0)
    rejected = project.cli("rejected", "people", "--json").json_lines()
    assert sorted(r["key"] for r in rejected) == ["User9@Example.com", "user9@example.com"]
    assert all("ignoring case" in r["error"] for r in rejected), rejected
    assert ci_receiver.sent("delete") == [] and len(ci_receiver.records) == 10


def test_what_was_not_acknowledged_is_owed_in_the_warehouse_diff(pg, ci_receiver):  # noqa: F811
    project, sql = pg
    people(sql, [f"u{i}@example.com" for i in range(300)])
    email_sync(project, sql, ci_receiver, max_retries=0, retry_backoff_seconds=0)
    assert run(project)["delivered"] == 300
    ci_receiver.answer = ci_receiver.down_after(1)
    resync = run(project, "--full-resync")
    assert (resync["delivered"], resync["failed"]) == (100, 200)
    ci_receiver.answer = lambda body: None
    after = run(project)
    assert (after["status"], after["delivered"]) == ("success", 200)
    assert run(project)["delivered"] == 0

    # A write that landed while its answer was lost: deleted once it leaves the mirror.
    people(sql, [f"u{i}@example.com" for i in range(300)] + ["late@example.com"])
    ci_receiver.lose_answer = lambda body: True
    assert run(project)["failed"] == 1 and "late@example.com" in ci_receiver.records
    ci_receiver.lose_answer = lambda body: False
    people(sql, [f"u{i}@example.com" for i in range(300)])
    gone = run(project)
    assert (gone["status"], gone["removed"]) == ("success", 1)
    assert ci_receiver.sent("delete") == ["late@example.com"]


def test_a_key_written_another_way_is_a_write_not_a_delete(pg, ci_receiver):  # noqa: F811
    """A snapshot row whose key text differs from today's (as when the warehouse session's
    time zone changed a timestamptz key's text): the record is rewritten, never deleted."""
    import psycopg
    from conftest import postgres_dsn

    project, sql = pg
    people(sql, ["a@example.com", "b@example.com"])
    email_sync(project, sql, ci_receiver)
    assert run(project)["delivered"] == 2
    with psycopg.connect(postgres_dsn(), autocommit=True) as admin:
        table = snapshot_table(admin, sql.schema)
        admin.execute(
            f"update {sql.schema}.\"{table}\" set wh_key = wh_key || ' (old text)' "
            "where key = 'a@example.com'"
        )
    result = run(project)
    assert result["status"] == "success" and result["added"] == 1
    assert ci_receiver.sent("delete") == []
    assert sorted(ci_receiver.records) == ["a@example.com", "b@example.com"]
    again = run(project)
    assert (again["removed"], again["delivered"]) == (0, 0)


def test_reordered_columns_send_nothing_in_the_warehouse_diff(pg, ci_receiver):  # noqa: F811
    project, sql = pg
    people(sql, ["a@example.com", "b@example.com"])
    email_sync(project, sql, ci_receiver, mode="upsert")
    assert run(project)["delivered"] == 2
    header = {"destination": "crm", "primary_key": "email", "diff": "warehouse"}
    project.sync("people", header, "select name, email from contacts")
    [plan] = project.cli("plan", "people", "--json").json_lines()
    assert (plan["changed"], plan["unchanged"]) == (0, 2)
    assert run(project)["delivered"] == 0


def test_a_snapshot_hashed_the_0_2_way_is_brought_over_without_resending(pg, ci_receiver):  # noqa: F811
    """0.2 hashed a row's columns in the model's order: after the upgrade a row as it was is
    unchanged (plan and run agree), its hash is rewritten once, and a real change still goes."""
    import duckdb
    import psycopg
    import sqlglot
    from conftest import postgres_dsn

    from reverse_etl.diff import sql as diffsql

    project, sql = pg
    people(sql, ["a@example.com", "b@example.com", "c@example.com"])
    email_sync(project, sql, ci_receiver, mode="upsert")
    project.sync(
        "people",
        {"destination": "crm", "primary_key": "email", "diff": "warehouse"},
        "select name, email from contacts",  # not in name order: the hashes differ
    )
    assert run(project)["delivered"] == 3
    # Make it 0.2's state: the legacy hashes, and no hash scheme recorded.
    with psycopg.connect(postgres_dsn(), autocommit=True) as admin:
        table = snapshot_table(admin, sql.schema)
        model = sqlglot.parse_one(f"select name, email from {sql.schema}.contacts", read="postgres")
        forward = diffsql.rehash_sql(model, ["name", "email"], ["email"], (sql.schema, table))
        backward = forward.replace("hash = c.h", "hash = c.x").replace(
            "s.hash = c.o", "s.hash = c.h"
        )
        admin.execute(backward.replace("hash = c.x", "hash = c.o"))
    state = project.root / ".reverse_etl" / "syncs" / "people.wh.duckdb"
    with duckdb.connect(str(state)) as con:
        con.execute("delete from meta where name = 'hash_scheme'")
    sql("update contacts set name = 'changed' where email = 'c@example.com'")
    [plan] = project.cli("plan", "people", "--json").json_lines()
    assert (plan["changed"], plan["unchanged"]) == (1, 2)
    result = run(project)
    assert (result["changed"], result["unchanged"], result["delivered"]) == (1, 2, 1)
    assert ci_receiver.sent("upsert", 1) == ["c@example.com"]
    again = run(project)
    assert (again["unchanged"], again["delivered"]) == (3, 0)


def test_switching_the_diff_and_back_starts_over_each_time(pg, ci_receiver):  # noqa: F811
    """local → warehouse → local: the state of the diff left behind goes, so the last switch
    does not read a record of deliveries that went stale meanwhile."""
    project, sql = pg
    people(sql, ["a@example.com"])
    email_sync(project, sql, ci_receiver, mode="upsert")
    local = {"destination": "crm", "primary_key": "email"}
    query = "select email, name from contacts"
    project.sync("people", local, query)
    assert run(project)["delivered"] == 1
    project.sync("people", {**local, "diff": "warehouse"}, query)
    sql("update contacts set name = 'changed'")
    assert run(project)["delivered"] == 1
    assert ci_receiver.records["a@example.com"]["name"] == "changed"
    project.sync("people", local, query)
    sql("update contacts set name = 'a'")
    assert run(project)["delivered"] == 1
    assert ci_receiver.records["a@example.com"]["name"] == "a"
    project.sync("people", {**local, "diff": "warehouse"}, query)
    sql("update contacts set name = 'changed'")
    assert run(project)["delivered"] == 1
    assert ci_receiver.records["a@example.com"]["name"] == "changed"
