"""PostgreSQL as the warehouse, against the real server on 127.0.0.1:5432: types mapped
faithfully onto the wire, only changes sent, models read-only and bounded by a statement
timeout, errors on the sync file's line, credentials never printed."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator

import pytest
from conftest import ProjectFixture, postgres_dsn


@pytest.fixture
def pg(project: ProjectFixture) -> Iterator[tuple[ProjectFixture, object]]:
    """The project's warehouse is a fresh schema of the test server (its search_path)."""
    import psycopg

    dsn = postgres_dsn()
    schema = f"wh_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(dsn, autocommit=True)
    admin.execute(f"CREATE SCHEMA {schema}")
    (project.root / "config.toml").write_text(
        f'[warehouse]\ntype = "postgres"\ndsn = "{dsn}?options=-csearch_path%3D{schema}"\n'
    )

    def sql(statement: str) -> None:
        admin.execute(f"SET search_path = {schema}")
        admin.execute(statement)

    sql.schema = schema  # type: ignore[attr-defined]

    try:
        yield project, sql
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def test_types_reach_the_wire_faithfully(pg, receiver):
    project, sql = pg
    sql("""
        create table things as select
            1 as id,
            12345678901234567890123456789012345678901234.567890::numeric as huge,
            -0.000000000000000001::numeric(30, 18) as tiny,
            1.50::numeric(10, 2) as price,
            'NaN'::numeric as not_a_number,
            timestamptz '2026-03-01 12:34:56.789+02' as at,
            timestamp '2026-03-01 12:34:56' as local_at,
            date '2026-02-28' as day,
            '{"nested": {"n": [1, 2.5, null]}}'::jsonb as doc,
            '[1,"x"]'::json as raw_json,
            array[1, 2, 3] as ints,
            array['a', null]::text[] as texts,
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid as uid,
            'héllo "q"' as txt,
            true as flag,
            null::integer as nothing,
            '\\x616200'::bytea as blob,
            2.5::float8 as ratio,
            'Infinity'::float8 as inf""")
    project.webhook("hook", receiver.url)
    project.sync("things", {"destination": "hook", "primary_key": "id"}, "select * from things")
    [result] = project.cli("run", "things", "--json").json_lines()
    assert result["status"] == "success", result
    raw = receiver.requests[0]["raw"].decode()
    assert '"huge":12345678901234567890123456789012345678901234.567890' in raw, raw
    assert '"tiny":-0.000000000000000001' in raw and '"price":1.50' in raw, raw
    fields = json.loads(raw)["records"][0]["fields"]
    assert fields["not_a_number"] is None and fields["inf"] is None
    assert fields["at"] == "2026-03-01T10:34:56.789+00:00"
    assert fields["local_at"] == "2026-03-01T12:34:56" and fields["day"] == "2026-02-28"
    assert fields["doc"] == {"nested": {"n": [1, 2.5, None]}} and fields["raw_json"] == [1, "x"]
    assert fields["ints"] == [1, 2, 3] and fields["texts"] == ["a", None]
    assert fields["uid"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert fields["txt"] == 'héllo "q"' and fields["flag"] is True and fields["nothing"] is None
    assert base64.b64decode(fields["blob"]) == b"ab\x00" and fields["ratio"] == 2.5


def test_only_changes_leave_postgres_for_the_destination(pg, receiver):
    project, sql = pg
    sql("create table users as select i as id, 'u' || i || '@x.com' as email "
        "from generate_series(1, 500) i")  # fmt: skip
    project.webhook("hook", receiver.url)
    project.sync("users", {"destination": "hook", "primary_key": "id", "mode": "mirror"},
                 "select id, email from users")  # fmt: skip
    assert project.cli("run", "users", "--json").json_lines()[0]["delivered"] == 500
    sql("update users set email = 'new@x.com' where id = 7; delete from users where id = 9")
    [plan] = project.cli("plan", "users", "--json").json_lines()
    assert (plan["changed"], plan["removed"], plan["unchanged"]) == (1, 1, 498), plan
    [result] = project.cli("run", "users", "--json").json_lines()
    assert result["delivered"] == 2, result
    assert receiver.data["7"]["email"] == "new@x.com" and "9" not in receiver.data


def test_models_run_read_only_and_within_the_statement_timeout(pg, receiver):
    project, sql = pg
    sql("create sequence ids; create table users as select 1 as id")
    project.webhook("hook", receiver.url)
    # sqlglot sees a plain SELECT; the server refuses the write the function would make.
    project.sync("writes", {"destination": "hook", "primary_key": "id"},
                 "select nextval('ids') as id")  # fmt: skip
    outcome = project.cli("run", "writes", "--json")
    [result] = outcome.json_lines()
    assert outcome.exit_code == 2 and "read-only transaction" in result["error"], result
    project.sync("slow", {"destination": "hook", "primary_key": "id"},
                 "select id from users, pg_sleep(3)")  # fmt: skip
    with (project.root / "config.toml").open("a") as config:
        config.write("statement_timeout_seconds = 0.5\n")
    [result] = project.cli("run", "slow", "--json").json_lines()
    assert result["status"] == "error" and "statement timeout" in result["error"], result
    assert receiver.requests == []


def test_model_errors_name_the_sync_file_line(pg, receiver):
    project, sql = pg
    sql("create table users as select 1 as id, 'a@b.c' as email")
    project.webhook("hook", receiver.url)
    project.sync("bad", {"destination": "hook", "primary_key": "id"},
                 "select id,\n  emial\nfrom users")  # fmt: skip
    project.sync("gone", {"destination": "hook", "primary_key": "id"},
                 "select id\nfrom\n  nowhere")  # fmt: skip
    outcome = project.cli("validate")
    assert outcome.exit_code == 2
    assert 'syncs/bad.sql:4: the model fails in the warehouse: column "emial" does not exist' in (
        outcome.stderr
    )
    assert (
        'syncs/gone.sql:5: the model fails in the warehouse: relation "nowhere"' in outcome.stderr
    )
    run = project.cli("run", "bad")
    assert run.exit_code == 2 and "syncs/bad.sql:4" in run.stderr


def test_an_unreachable_warehouse_is_reported_without_the_password(project, receiver):
    postgres_dsn()
    (project.root / "config.toml").write_text(
        '[warehouse]\ntype = "postgres"\n'
        'dsn = "postgresql://postgres:${WAREHOUSE_PASSWORD}@127.0.0.1:9/test"\n'
    )
    project.webhook("hook", receiver.url)
    project.sync("users", {"destination": "hook", "primary_key": "id"}, "select 1 as id")
    outcome = project.cli("validate", env={"WAREHOUSE_PASSWORD": "pw-83hd72"})
    assert outcome.exit_code == 2, outcome
    assert "config.toml:3" in outcome.stderr and "cannot connect" in outcome.stderr
    run = project.cli("run", "users", "--json", env={"WAREHOUSE_PASSWORD": "pw-83hd72"})
    assert run.exit_code == 2
    for text in (outcome.stderr, run.stdout, run.stderr):
        assert "pw-83hd72" not in text
    (project.root / "config.toml").write_text('[warehouse]\ntype = "postgres"\n')
    missing = project.cli("validate")
    assert missing.exit_code == 2 and "needs a dsn" in missing.stderr
