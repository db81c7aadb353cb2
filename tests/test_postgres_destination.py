"""The PostgreSQL table destination against the real server (conftest.postgres_dsn), beyond the
contract suite: the exact rows each mode leaves, types, keys, one transaction per batch, the
errors a user acts on, `check`, connections, and the DSN's password kept out of every message."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from conftest import ProjectFixture
from fakes.base import running
from fakes.postgres import Fake
from fakes.project import people, write_destination

from reverse_etl.destinations.base import DELIVERED, Batch, Rejected, SplitBatch
from reverse_etl.destinations.postgres.adapter import PostgresDestination, PostgresSettings
from reverse_etl.destinations.postgres.errors import scrub


@pytest.fixture
def pg() -> Iterator[Fake]:
    """A fresh schema with `people (id integer primary key, email text check (...), name text)`
    and the log of rows written per transaction."""
    yield from running(Fake())


def destination(project: ProjectFixture, pg: Fake, **settings: Any) -> None:
    write_destination(project, "db", pg.destination(), retry_backoff_seconds=0.01, **settings)


def sync(
    project: ProjectFixture,
    sql: str = "select id, email, name from people",
    **header: Any,
) -> None:
    project.sync("people", {"destination": "db", "primary_key": "id", **header}, sql)


def run(project: ProjectFixture, *args: str, env: dict[str, str] | None = None) -> dict:
    [result] = project.cli("run", "people", "--json", *args, env=env).json_lines()
    return result


def rows(pg: Fake, statement: str = "SELECT id, email, name FROM {schema}.people") -> list:
    return sorted(pg.query(statement))


def rejected(project: ProjectFixture) -> dict[str, str]:
    return {r["key"]: r["error"] for r in project.cli("rejected", "people", "--json").json_lines()}


# -- what each mode leaves in the table --------------------------------------------------------


def test_upsert_writes_the_models_columns_and_leaves_the_others(project, pg):
    pg.query("ALTER TABLE {schema}.people ADD COLUMN note text DEFAULT 'default'")
    pg.query("INSERT INTO {schema}.people VALUES (1, 'old@x.io', 'Old', 'kept by hand')")
    people(project, 3)
    destination(project, pg)
    sync(project)
    assert run(project)["delivered"] == 3
    everything = "SELECT id, email, name, note FROM {schema}.people"
    assert rows(pg, everything) == [
        (1, "person1@example.com", "Person 1", "kept by hand"),
        (2, "person2@example.com", "Person 2", "default"),
        (3, "person3@example.com", "Person 3", "default"),
    ]
    project.warehouse("update people set name = 'Renamed' where id = 2")
    assert run(project)["delivered"] == 1
    assert rows(pg, everything)[1] == (2, "person2@example.com", "Renamed", "default")
    assert pg.batch_sizes() == [1, 3, 1]  # the row inserted here, then one batch per run


def test_insert_mode_rejects_the_keys_already_there_and_changes_nothing_of_them(project, pg):
    pg.query("INSERT INTO {schema}.people VALUES (2, 'old@x.io', 'Old')")
    people(project, 3)
    destination(project, pg)
    sync(project, mode="insert")
    result = run(project)
    assert result["status"] == "partial", result
    assert (result["delivered"], result["rejected"]) == (2, 1), result
    assert rows(pg) == [
        (1, "person1@example.com", "Person 1"),
        (2, "old@x.io", "Old"),
        (3, "person3@example.com", "Person 3"),
    ]
    assert rejected(project) == {
        "2": f"already exists: {pg.schema}.people has a row with this key (id)"
    }


def test_update_mode_rejects_the_keys_not_there_and_creates_nothing(project, pg):
    pg.query(
        "INSERT INTO {schema}.people VALUES (1, 'old1@x.io', 'Old 1'), (3, 'old3@x.io', 'Old 3')"
    )
    people(project, 4)
    destination(project, pg)
    sync(project, mode="update")
    result = run(project)
    assert (result["delivered"], result["rejected"]) == (2, 2), result
    assert rows(pg) == [
        (1, "person1@example.com", "Person 1"),
        (3, "person3@example.com", "Person 3"),
    ]
    errors = rejected(project)
    assert sorted(errors) == ["2", "4"]
    assert errors["2"] == f"not found: {pg.schema}.people has no row with this key (id)"


def test_mirror_deletes_and_a_row_already_gone_counts_as_deleted(project, pg):
    people(project, 5)
    destination(project, pg)
    sync(project, mode="mirror")
    run(project)
    pg.query("DELETE FROM {schema}.people WHERE id = 3")  # someone deleted it meanwhile
    project.warehouse("delete from people where id in (2, 3)")
    result = run(project)
    assert result["status"] == "success" and result["removed"] == 2, result
    assert [r[0] for r in rows(pg)] == [1, 4, 5]
    assert pg.batch_sizes()[-1] == 1  # one row was left to delete


def test_a_value_the_table_refuses_rejects_that_record_with_postgresqls_message(project, pg):
    pg.query("ALTER TABLE {schema}.people ADD CONSTRAINT people_email_key UNIQUE (email)")
    pg.query("INSERT INTO {schema}.people VALUES (100, 'person4@example.com', 'Taken')")
    people(project, 8)
    destination(project, pg)
    sync(project)
    result = run(project)
    assert (result["delivered"], result["rejected"]) == (7, 1), result
    assert rejected(project) == {
        "4": 'duplicate key value violates unique constraint "people_email_key" '
        "(SQLSTATE 23505): Key (email)=(person4@example.com) already exists."
    }


# -- types ---------------------------------------------------------------------------------------


def test_values_arrive_with_the_tables_types(project, pg):
    pg.query("""CREATE TABLE {schema}.typed (
        id integer PRIMARY KEY, amount numeric(38, 10), seen_at timestamptz, local_at timestamp,
        born date, active boolean, attrs jsonb, scores integer[], tags text[], note text,
        raw bytea, ref uuid)""")
    project.warehouse("""
        create table typed as
        select 1 as id, 12345678901234567.0123456789::decimal(38, 10) as amount,
               timestamptz '2024-01-02 01:04:05.123456+00' as seen_at,
               timestamp '2024-01-02 03:04:05' as local_at, date '2024-02-29' as born,
               true as active, {'plan': 'pro', 'seats': [1, 2]} as attrs, [1, 2, 3] as scores,
               ['a', 'b"c'] as tags, 'x' as note, '\\xAA\\x00\\xBB'::blob as raw,
               uuid '6f1c2b1e-1d2a-4c7e-9a1b-2c3d4e5f6a7b' as ref
        union all
        select 2, null, null, null, null, null, null, null, null, null, null, null""")
    destination(project, pg)
    sync(project, "select * from typed", object=f"{pg.schema}.typed")
    assert run(project)["delivered"] == 2
    [full, empty] = rows(pg, "SELECT * FROM {schema}.typed")
    assert full == (
        1,
        Decimal("12345678901234567.0123456789"),
        dt.datetime(2024, 1, 2, 1, 4, 5, 123456, tzinfo=dt.UTC),
        dt.datetime(2024, 1, 2, 3, 4, 5),
        dt.date(2024, 2, 29),
        True,
        {"plan": "pro", "seats": [1, 2]},
        [1, 2, 3],
        ["a", 'b"c'],
        "x",
        b"\xaa\x00\xbb",
        uuid.UUID("6f1c2b1e-1d2a-4c7e-9a1b-2c3d4e5f6a7b"),
    )
    assert empty == (2,) + (None,) * 11


# -- keys ----------------------------------------------------------------------------------------


def test_a_composite_key_and_the_syncs_object_over_the_destinations_table(project, pg):
    pg.query("""CREATE TABLE {schema}.seats (
        account_id integer, region text, seats integer, PRIMARY KEY (region, account_id))""")
    project.warehouse("""
        create table seats as
        select * from (values (1, 'eu', 5), (1, 'us', 7), (2, 'eu', 1))
            t(account_id, region, seats)""")
    destination(project, pg)  # its table is people: the sync's object wins
    project.sync(
        "people",
        {
            "destination": "db",
            "primary_key": ["account_id", "region"],
            "mode": "mirror",
            "object": f"{pg.schema}.seats",
        },
        "select account_id, region, seats from seats",
    )
    assert run(project)["delivered"] == 3
    project.warehouse("update seats set seats = 6 where account_id = 1 and region = 'eu'")
    project.warehouse("delete from seats where account_id = 1 and region = 'us'")
    result = run(project)
    assert (result["changed"], result["removed"]) == (1, 1), result
    assert rows(pg, "SELECT * FROM {schema}.seats") == [(1, "eu", 6), (2, "eu", 1)]
    assert rows(pg) == []


def test_key_columns_choose_the_unique_key_to_match_on(project, pg):
    pg.query("""CREATE TABLE {schema}.members (
        id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        email text NOT NULL UNIQUE, name text)""")
    pg.query("INSERT INTO {schema}.members (email, name) VALUES ('person2@example.com', 'Old')")
    people(project, 3)
    destination(project, pg, table=f"{pg.schema}.members")
    sync(project, "select email, name from people", primary_key="email")
    outcome = project.cli("run", "people", "--json")
    [result] = outcome.json_lines()
    assert outcome.exit_code == 2 and result["status"] == "error", result
    assert (
        f"the key of {pg.schema}.members (id) must be among the model's columns"
        in (result["error"])
    )
    destination(project, pg, table=f"{pg.schema}.members", key_columns=["email"])
    assert run(project)["delivered"] == 3
    members = rows(pg, "SELECT email, name, id = 1 FROM {schema}.members")
    assert members == [
        ("person1@example.com", "Person 1", False),
        ("person2@example.com", "Person 2", True),  # matched on email: its id kept
        ("person3@example.com", "Person 3", False),
    ]


def test_a_table_without_a_unique_index_is_refused_with_what_to_do(project, pg):
    pg.query("CREATE TABLE {schema}.plain (id integer, email text, name text)")
    people(project, 3)
    destination(project, pg, table=f"{pg.schema}.plain")
    sync(project)
    outcome = project.cli("run", "people", "--json")
    [result] = outcome.json_lines()
    assert outcome.exit_code == 2 and result["delivered"] == 0, result
    expected = f"{pg.schema}.plain has no primary key or unique constraint"
    assert expected in result["error"] and "ALTER TABLE" in result["error"], result
    check = project.cli("check", "db")
    assert check.exit_code == 2 and expected in check.stderr, check
    # key_columns must name a unique index too: people has none on email alone
    destination(project, pg, key_columns=["email"])
    [result] = project.cli("run", "people", "--json").json_lines()
    assert f"{pg.schema}.people has no unique index on exactly (email)" in result["error"]
    assert rows(pg, "SELECT * FROM {schema}.plain") == [] and rows(pg) == []


def test_a_model_column_missing_from_the_table_is_named(project, pg):
    people(project, 3)
    destination(project, pg)
    sync(project, "select id, email, name, name as nickname, 1 as tier from people")
    outcome = project.cli("run", "people", "--json")
    [result] = outcome.json_lines()
    assert outcome.exit_code == 2 and result["status"] == "error", result
    assert (
        f"the model's columns nickname, tier are not in {pg.schema}.people "
        "(its columns: id, email, name)"
    ) in result["error"], result
    assert rows(pg) == []


def test_a_missing_table_stops_the_run_saying_so(project, pg):
    people(project, 3)
    destination(project, pg, table=f"{pg.schema}.nowhere")
    sync(project)
    outcome = project.cli("run", "people", "--json")
    [result] = outcome.json_lines()
    assert outcome.exit_code == 2 and result["failed"] == 3, result
    assert (
        f"table '{pg.schema}.nowhere' (table in the destination) does not exist"
        in (result["error"])
    )


# -- one statement, one transaction, per batch ---------------------------------------------------


def adapter(pg: Fake, **settings: Any) -> PostgresDestination:
    values = {**pg.destination(), **settings}
    return PostgresDestination("db", PostgresSettings(**values), client=None)


async def send(destination: PostgresDestination, batch: Batch) -> Any:
    try:
        return await destination.send(batch)
    finally:
        await destination.aclose()


def records(*people: tuple[int, str]) -> list[tuple[str, str]]:
    return [
        (str(i), json.dumps({"id": i, "email": email, "name": f"Person {i}"}))
        for i, email in people
    ]


def test_a_batch_refused_for_one_record_leaves_nothing_half_written(pg):
    batch = records(*[(i, f"p{i}@x.io") for i in range(1, 5)], (5, "bad"), (6, "p6@x.io"))
    with pytest.raises(SplitBatch) as refused:
        asyncio.run(send(adapter(pg), Batch("people", None, "upsert", batch)))
    assert str(refused.value).startswith(
        'new row for relation "people" violates check constraint "people_email_has_at" '
        "(SQLSTATE 23514): Failing row contains (5, bad, Person 5)."
    )
    assert rows(pg) == [] and pg.batch_sizes() == []  # rows 1-4 were rolled back with row 5


def test_insert_results_follow_the_records_order(pg):
    pg.query("INSERT INTO {schema}.people VALUES (2, 'two@x.io', 'Two'), (4, 'four@x.io', 'Four')")
    batch = Batch("people", None, "insert", records(*[(i, f"p{i}@x.io") for i in range(1, 6)]))
    results = asyncio.run(send(adapter(pg), batch))
    gone = Rejected(f"already exists: {pg.schema}.people has a row with this key (id)", exists=True)
    assert results == [DELIVERED, gone, DELIVERED, gone, DELIVERED]
    assert pg.batch_sizes() == [2, 3]  # the rows inserted here, then the batch


def test_a_serialization_failure_is_retried(project, pg):
    # The first statement fails as a serialization failure would; a sequence survives the
    # rollback, so it counts the attempts.
    pg.query("""
        CREATE SEQUENCE {schema}.attempts;
        CREATE FUNCTION {schema}.conflict_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval(TG_TABLE_SCHEMA || '.attempts') = 1 THEN
                RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001';
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER conflict_once AFTER INSERT ON {schema}.people
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.conflict_once();""")
    people(project, 5)
    destination(project, pg)
    sync(project)
    result = run(project)
    assert result["status"] == "success" and result["delivered"] == 5, result
    assert pg.query("SELECT last_value FROM {schema}.attempts") == [(2,)]
    assert pg.batch_sizes() == [5]


def test_connections_are_at_most_max_concurrency_and_closed_after_the_run(project, pg):
    people(project, 120)
    destination(project, pg, batch_size=10, max_concurrency=2)
    sync(project)
    assert run(project)["delivered"] == 120
    assert len(pg.batch_sizes()) == 12
    backends = pg.backends()
    assert 1 <= len(backends) <= 2, backends
    still_open = pg.query("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", sorted(backends))
    assert still_open == []


def test_concurrent_batches_share_at_most_max_concurrency_connections(pg):
    destination = adapter(pg, max_concurrency=2)
    batches = [
        Batch("people", None, "upsert", records(*[(i, f"p{i}@x.io") for i in range(n, n + 10)]))
        for n in range(0, 60, 10)
    ]

    async def send_all() -> None:
        try:
            await asyncio.gather(*(destination.send(batch) for batch in batches))
        finally:
            await destination.aclose()

    asyncio.run(send_all())
    assert pg.batch_sizes() == [10] * 6
    assert 1 <= len(pg.backends()) <= 2, pg.backends()


# -- check, credentials, secrets -----------------------------------------------------------------


def test_check_reports_the_table_key_and_privileges_and_writes_nothing(project, pg):
    destination(project, pg)
    outcome = project.cli("check", "db", "--json")
    [answer] = outcome.json_lines()
    assert answer["ok"] is True, outcome
    assert answer["detail"] == (
        # the userinfo of a URL is blanked wherever it is written (docs/project.md, "Secrets")
        f"postgres://***@127.0.0.1:5432/test: table {pg.schema}.people, key (id), "
        "insert/update/delete allowed"
    )
    assert rows(pg) == [] and pg.batch_sizes() == []


@pytest.fixture
def limited_role(pg: Fake) -> Iterator[str]:
    """A role that may log in (trust auth) and insert and update people, but not delete."""
    role = f"reverse_etl_{uuid.uuid4().hex[:10]}"
    pg.query(f"CREATE ROLE {role} LOGIN")
    try:
        pg.query(f"GRANT USAGE ON SCHEMA {{schema}} TO {role}")
        pg.query(f"GRANT SELECT, INSERT, UPDATE ON {{schema}}.people TO {role}")
        yield role
    finally:
        pg.query(f"DROP OWNED BY {role}")
        pg.query(f"DROP ROLE {role}")


def test_missing_privileges_are_reported_by_check_and_stop_the_run(project, pg, limited_role):
    dsn = pg.dsn.replace("postgres@", f"{limited_role}@")
    destination(project, pg, dsn=dsn)
    [answer] = project.cli("check", "db", "--json").json_lines()
    assert answer["detail"].endswith(
        f"table {pg.schema}.people, key (id), insert/update allowed; "
        "delete NOT allowed (delete: mirror syncs need it)"
    ), answer
    people(project, 4)
    sync(project, mode="mirror")
    assert run(project)["delivered"] == 4
    project.warehouse("delete from people where id = 4")
    outcome = project.cli("run", "people", "--json")
    [result] = outcome.json_lines()
    assert outcome.exit_code == 2 and result["status"] == "error", result
    assert result["error"] == (
        f"{pg.schema}.people: permission denied for table people (SQLSTATE 42501): "
        f"GRANT SELECT, DELETE ON {pg.schema}.people TO {limited_role}"
    )
    assert len(rows(pg)) == 4


def test_refused_credentials_stop_the_run_and_fail_check(project, pg):
    destination(project, pg, dsn=pg.destination(good_credentials=False)["dsn"])
    bad = project.cli("check", "db")
    assert bad.exit_code == 2, bad
    assert "refused the credentials: connection failed" in bad.stderr
    assert 'role "reverse_etl_no_such_role" does not exist' in bad.stderr


def test_the_dsns_password_is_never_shown(project, pg):
    secret = "Sup3r-Secret-Pw"
    people(project, 3)
    project.destination(
        "db",
        """
        type = "postgres"
        dsn = "postgresql://postgres:${PG_PASSWORD}@127.0.0.1:1/test"
        table = "people"
        max_retries = 1
        retry_backoff_seconds = 0.01
        """,
    )
    sync(project)
    env = {"PG_PASSWORD": secret}
    check = project.cli("check", "db", env=env)
    assert check.exit_code == 2 and "Connection refused" in check.stderr, check
    outcome = project.cli("run", "people", "--json", env=env)
    [result] = outcome.json_lines()
    assert outcome.exit_code == 2 and "destination 'db' is unreachable" in result["error"], result
    history = project.cli("runs", "--json", env=env)
    listed = project.cli("rejected", "people", "--json", env=env)
    for shown in (check, outcome, history, listed):
        assert secret not in shown.stdout + shown.stderr
    # the adapter's own scrubbing, for a message that would quote the DSN
    settings = PostgresSettings(type="postgres", dsn=f"postgresql://u:{secret}@h/db", table="t")
    dsn = settings.dsn.get_secret_value()
    assert secret not in scrub(f"bad: postgresql://u:{secret}@h/db {secret}", dsn)


# -- validation ----------------------------------------------------------------------------------


def test_validation_names_the_file_and_line(project, pg):
    people(project, 1)
    project.destination(
        "db",
        """
        type = "postgres"
        dsn = "db.internal"
        table = "a.b.c"
        key_columns = []
        """,
    )
    sync(project)
    outcome = project.cli("validate")
    assert outcome.exit_code == 2
    assert "destinations/db.toml:2: dsn: must be a PostgreSQL connection URI" in outcome.stderr
    assert "destinations/db.toml:3: table: 'a.b.c' is not a table name" in outcome.stderr
    assert "destinations/db.toml:4: key_columns: must list at least one column" in outcome.stderr
    destination(project, pg, table=None)
    sync(project)
    outcome = project.cli("validate")
    assert outcome.exit_code == 2
    assert "syncs/people.sql: name the table to write to" in outcome.stderr, outcome
    sync(project, object="not a name")
    outcome = project.cli("validate")
    assert "syncs/people.sql:3: 'not a name' is not a table name" in outcome.stderr, outcome
