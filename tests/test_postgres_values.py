"""Every PostgreSQL type, read from the real server on 127.0.0.1:5432, reaches the webhook as the
table in docs/warehouses.md says: the exact JSON text of each value, through a local diff
and through `diff = "warehouse"`. And the text `diff = "warehouse"` hashes does not change with
the session's time zone (PGTZ, a role's setting): a second run sends nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import ProjectFixture, postgres_dsn

from reverse_etl.destinations.webhook.receiver import WebhookReceiver

# (column, PostgreSQL expression, the exact JSON text of its value on the wire)
VALUES = [
    ("int2", "(-32768)::int2", "-32768"),
    ("int4", "2147483647::int4", "2147483647"),
    ("int8", "(-9223372036854775807)::int8", "-9223372036854775807"),
    ("numeric_wide", "12345678901234567890123456789012345678901234.567890::numeric",
     "12345678901234567890123456789012345678901234.567890"),
    ("numeric_declared", "1.50::numeric(10, 2)", "1.50"),
    ("numeric_tiny", "-0.000000000000000001::numeric(30, 18)", "-0.000000000000000001"),
    ("numeric_nan", "'NaN'::numeric", "null"),
    ("numeric_declared_nan", "'NaN'::numeric(10, 2)", "null"),
    ("numeric_infinity", "'Infinity'::numeric", "null"),
    ("numeric_minus_infinity", "'-Infinity'::numeric", "null"),
    ("float4", "1.1::float4", "1.1"),
    ("float4_nan", "'NaN'::float4", "null"),
    ("float8", "0.1::float8", "0.1"),
    ("float8_big", "1e300::float8", "1e+300"),
    ("float8_infinity", "'Infinity'::float8", "null"),
    ("float8_minus_infinity", "'-Infinity'::float8", "null"),
    ("float8_nan", "'NaN'::float8", "null"),
    ("money", "12.34::money", "12.34"),
    ("money_negative", "(-1.5)::money", "-1.50"),
    ("bool", "true", "true"),
    ("text", """'héllo "q"'::text""", '"héllo \\"q\\""'),
    ("varchar", "'ab'::varchar(5)", '"ab"'),
    ("bpchar", "'x'::char(3)", '"x  "'),
    ("name", "'nm'::name", '"nm"'),
    ("char", """'q'::"char\"""", '"q"'),
    ("bytea", "'\\x616200'::bytea", '"YWIA"'),
    ("date", "date '2026-02-28'", '"2026-02-28"'),
    ("date_infinity", "'infinity'::date", "null"),
    ("date_minus_infinity", "'-infinity'::date", "null"),
    ("timestamp", "timestamp '2026-03-01 12:34:56.5'", '"2026-03-01T12:34:56.5"'),
    ("timestamp_infinity", "'infinity'::timestamp", "null"),
    ("timestamp_minus_infinity", "'-infinity'::timestamp", "null"),
    ("timestamptz", "timestamptz '2026-03-01 12:34:56.789+02'", '"2026-03-01T10:34:56.789+00:00"'),
    ("timestamptz_infinity", "'infinity'::timestamptz", "null"),
    ("timestamptz_minus_infinity", "'-infinity'::timestamptz", "null"),
    ("time", "time '12:34:56.5'", '"12:34:56.5"'),
    ("time_midnight_end", "time '24:00:00'", '"24:00:00"'),
    ("timetz", "timetz '12:34:56+02'", '"12:34:56+02"'),
    ("interval", "interval '1 year 2 mons 3 days 04:05:06.7'",
     '"1 year 2 months 3 days 04:05:06.7"'),
    ("uuid", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid",
     '"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"'),
    ("json", """'[1,"x"]'::json""", '[1,"x"]'),
    ("jsonb", """'{"b": [1, 2.5, null]}'::jsonb""", '{"b": [1, 2.5, null]}'),
    ("int_array", "array[1, 2, 3]", "[1,2,3]"),
    ("text_array_nulls", "array['a', null]::text[]", '["a",null]'),
    ("empty_array", "'{}'::int[]", "[]"),
    ("array_2d", "array[[1, 2], [3, 4]]", "[[1,2],[3,4]]"),
    ("array_2d_nulls", "array[[1, null], [null, 4]]", "[[1,null],[null,4]]"),
    ("array_3d", "array[[[1, 2]], [[3, 4]]]", "[[[1,2]],[[3,4]]]"),
    ("text_array_2d", "array[['a', 'b'], ['c', null]]", '[["a","b"],["c",null]]'),
    ("array_lower_bound", "'[0:1]={5,6}'::int[]", "[5,6]"),
    ("numeric_array", "array[1.5, 'NaN', 'Infinity', null]::numeric[]", "[1.5,null,null,null]"),
    ("float8_array_2d", "array[[2.5, 'NaN'], ['-Infinity', 1]]::float8[]",
     "[[2.5,null],[null,1.0]]"),
    ("money_array", "array[12.34]::money[]", "[12.34]"),
    ("date_array", "array['2020-01-02', 'infinity', '-infinity']::date[]",
     '["2020-01-02",null,null]'),
    ("timestamptz_array_2d", "array[['2020-01-01 00:00+02', 'infinity']]::timestamptz[]",
     '[["2019-12-31T22:00:00+00:00",null]]'),
    ("bytea_array_2d", "array[array['\\x6162'::bytea], array[null::bytea]]", '[["YWI="],[null]]'),
    ("interval_array", "array[interval '1 day']", '["1 day"]'),
    ("bool_array_2d", "array[[true], [false]]", "[[true],[false]]"),
    ("uuid_array", "array['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid]",
     '["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]'),
    ("jsonb_array", """array['{"a": 1}'::jsonb]""", '[{"a": 1}]'),
    ("inet_array_2d", "array[['192.168.0.1'::inet, '10.0.0.0/8']]",
     '[["192.168.0.1","10.0.0.0/8"]]'),
    ("point_array", "array[point(1, 2)]", '["(1,2)"]'),
    ("inet", "'192.168.0.1'::inet", '"192.168.0.1"'),
    ("inet_network", "'10.0.0.0/8'::inet", '"10.0.0.0/8"'),
    ("cidr", "'10.1.0.0/16'::cidr", '"10.1.0.0/16"'),
    ("macaddr", "'08:00:2b:01:02:03'::macaddr", '"08:00:2b:01:02:03"'),
    ("macaddr8", "'08:00:2b:01:02:03:04:05'::macaddr8", '"08:00:2b:01:02:03:04:05"'),
    ("bit", "B'101'::bit(3)", '"101"'),
    ("varbit", "B'1'::varbit", '"1"'),
    ("point", "point(1, 2.5)", '"(1,2.5)"'),
    ("line", "'{1,2,3}'::line", '"{1,2,3}"'),
    ("lseg", "'[(0,0),(1,1)]'::lseg", '"[(0,0),(1,1)]"'),
    ("box", "box(point(1, 2), point(3, 4))", '"(3,4),(1,2)"'),
    ("path", "'((0,0),(1,1),(2,0))'::path", '"((0,0),(1,1),(2,0))"'),
    ("polygon", "'((0,0),(1,1),(2,0))'::polygon", '"((0,0),(1,1),(2,0))"'),
    ("circle", "'<(0,0),1>'::circle", '"<(0,0),1>"'),
    ("tsvector", "'a fat cat'::tsvector", '"\'a\' \'cat\' \'fat\'"'),
    ("tsquery", "'fat & cat'::tsquery", '"\'fat\' & \'cat\'"'),
    ("enum", "'happy'::mood", '"happy"'),
    ("enum_array", "array['sad', 'happy']::mood[]", '["sad","happy"]'),
    ("int4range", "int4range(1, 5)", '"[1,5)"'),
    ("daterange", "daterange('2020-01-01', '2021-01-01')", '"[2020-01-01,2021-01-01)"'),
    ("int4multirange", "'{[1,3],[5,7]}'::int4multirange", '"{[1,4),[5,8)}"'),
    ("domain_int", "3::posint", "3"),
    ("domain_text", "'a@b.c'::email", '"a@b.c"'),
    ("composite", "row(1, 'a')::pair", '{"a":1,"b":"a"}'),
    ("record", "row(1, 'a')", '{"f1":1,"f2":"a"}'),
    ("composite_array", "array[row(1, 'a')::pair]", '[{"a":1,"b":"a"}]'),
    ("xml", "'<a>x</a>'::xml", '"<a>x</a>"'),
    ("oid", "4294967295::oid", "4294967295"),
    ("regclass", "'pg_class'::regclass", '"pg_class"'),
    ("pg_lsn", "'0/16B3748'::pg_lsn", '"0/16B3748"'),
    ("xid", "'5'::xid", '"5"'),
]  # fmt: skip

IN_THE_MODEL = {"record": "row(1, 'a')"}  # a table cannot hold these: the model makes them
MODEL = (
    "select *, "
    + ", ".join(
        f"case when id = 1 then {expr} end as {name}" for name, expr in IN_THE_MODEL.items()
    )
    + " from every_type"
)

TYPES = """
create type mood as enum ('sad', 'happy');
create domain posint as int check (value > 0);
create domain email as text;
create type pair as (a int, b text);
"""


def json_at(text: str, start: int) -> tuple[str, int]:
    """The JSON value's exact text at `start`, and where it ends."""
    end = json.JSONDecoder().raw_decode(text, start)[1]
    return text[start:end], end


def fields_of(raw: str, key: str) -> dict[str, str]:
    """Each field of the record `key` in a webhook body: its exact JSON text."""
    start = raw.index('"fields":', raw.index(f'"key":{json.dumps(key)}')) + len('"fields":')
    record, _ = json_at(raw, start)
    fields, at = {}, 1
    while record[at] != "}":
        name, at = json_at(record, at)
        fields[json.loads(name)], at = json_at(record, at + 1)  # after the colon
        at += record[at] == ","
    return fields


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One table with a column of each type (row 1: the values, row 2: NULLs), synced once
    diffed locally and once in the warehouse; the fields each sync's body carried, by key."""
    import psycopg

    dsn = postgres_dsn()
    schema = f"values_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(dsn, autocommit=True)
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        admin.execute(f"SET search_path = {schema}")
        admin.execute(TYPES)
        stored = [(name, expr) for name, expr, _ in VALUES if name not in IN_THE_MODEL]
        columns = ", ".join(f"{expr} AS {name}" for name, expr in stored)
        admin.execute(f"CREATE TABLE every_type AS SELECT 1 AS id, {columns}")
        admin.execute("INSERT INTO every_type (id) VALUES (2)")
        root = Path(tmp_path_factory.mktemp("values")) / "project"
        (root / "syncs").mkdir(parents=True)
        (root / "destinations").mkdir()
        project = ProjectFixture(root)
        (root / "config.toml").write_text(
            f'[warehouse]\ntype = "postgres"\nstate_schema = "{schema}"\n'
            f'dsn = "{dsn}?options=-csearch_path%3D{schema}"\n'
        )
        with WebhookReceiver() as receiver:
            project.webhook("hook", receiver.url)
            for diff in ("local", "warehouse"):
                header = {"destination": "hook", "primary_key": "id", "diff": diff}
                project.sync(diff, header, MODEL)
                [result] = project.cli("run", diff, "--json").json_lines()
                assert result["status"] == "success" and result["delivered"] == 2, result
            bodies = {json.loads(r["raw"])["sync"]: r["raw"].decode() for r in receiver.requests}
        yield {diff: {key: fields_of(raw, key) for key in "12"} for diff, raw in bodies.items()}
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.mark.parametrize("diff", ["local", "warehouse"])
@pytest.mark.parametrize(("column", "expr", "wire"), VALUES, ids=[v[0] for v in VALUES])
def test_each_postgres_type_reaches_the_wire_as_documented(delivered, diff, column, expr, wire):
    assert delivered[diff]["1"][column] == wire, expr
    assert delivered[diff]["2"][column] == "null"  # NULL of the same type


@pytest.fixture
def throwaway_role() -> Iterator[tuple[str, str, Any]]:
    """A schema and a login role of its own (dropped after), whose settings a test may change:
    (schema, the role's DSN, an admin connection)."""
    import psycopg

    dsn = postgres_dsn()
    suffix = uuid.uuid4().hex[:10]
    schema, role = f"tz_{suffix}", f"retl_tz_{suffix}"
    admin = psycopg.connect(dsn, autocommit=True)
    admin.execute(f"CREATE ROLE {role} LOGIN")
    admin.execute(f"CREATE SCHEMA {schema} AUTHORIZATION {role}")
    # CREATE SCHEMA IF NOT EXISTS (the snapshot's) asks for it even when the schema exists
    admin.execute(f"GRANT CREATE ON DATABASE {admin.info.dbname} TO {role}")
    server = urlsplit(dsn)
    try:
        yield schema, f"postgresql://{role}@{server.hostname}:{server.port}{server.path}", admin
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.execute(f"DROP OWNED BY {role}")
        admin.execute(f"DROP ROLE {role}")
        admin.close()


def test_the_session_time_zone_and_styles_change_nothing(project, receiver, throwaway_role):
    """PGTZ and PGDATESTYLE in the environment, then the role's own TimeZone, DateStyle,
    IntervalStyle, extra_float_digits and bytea_output: no row looks changed, locally diffed
    (tstzrange and composites are cast to text and JSON in PostgreSQL) or in the warehouse
    (which hashes each value's text)."""
    import psycopg

    schema, dsn, admin = throwaway_role
    with psycopg.connect(f"{dsn}?options=-csearch_path%3D{schema}", autocommit=True) as owner:
        owner.execute("""create table events as select i as id,
            timestamptz '2026-03-01 12:34:56.789+02' + i * interval '1 hour' as at,
            tstzrange('2026-01-01 00:00+00', '2026-01-02 00:00+00') as period,
            interval '1 day 02:03:04.5' * i as span, 0.1::float8 * i as ratio,
            '\\x00ff'::bytea as blob, date '2026-02-28' + i as day,
            array[timestamptz '2026-01-01 00:00+00'] as ats
            from generate_series(1, 50) i""")
    (project.root / "config.toml").write_text(
        f'[warehouse]\ntype = "postgres"\nstate_schema = "{schema}"\n'
        f'dsn = "{dsn}?options=-csearch_path%3D{schema}"\n'
    )
    project.webhook("hook", receiver.url)
    model = "select *, row(at, ratio, span) as pair from events"
    for diff in ("local", "warehouse"):
        project.sync(diff, {"destination": "hook", "primary_key": "id", "diff": diff}, model)
        [first] = project.cli("run", diff, "--json").json_lines()
        assert first["status"] == "success" and first["delivered"] == 50, json.dumps(first)
    first_body = receiver.requests[0]["raw"].decode()
    assert '"at":"2026-03-01T11:34:56.789+00:00"' in first_body, first_body
    assert '"period":"[\\"2026-01-01 00:00:00+00\\",\\"2026-01-02 00:00:00+00\\")"' in (
        first_body
    ), first_body

    def nothing_changed(env: dict[str, str] | None = None) -> None:
        for diff in ("local", "warehouse"):
            [plan] = project.cli("plan", diff, "--json", env=env).json_lines()
            assert (plan["changed"], plan["unchanged"]) == (0, 50), (diff, env, plan)
            [again] = project.cli("run", diff, "--json", env=env).json_lines()
            assert again["status"] == "success" and again["delivered"] == 0, (diff, again)

    nothing_changed({"PGTZ": "America/New_York", "PGDATESTYLE": "SQL, DMY"})
    role = urlsplit(dsn).username
    for setting, value in [
        ("TimeZone", "Asia/Kolkata"),
        ("DateStyle", "German"),
        ("IntervalStyle", "iso_8601"),
        ("extra_float_digits", "-3"),
        ("bytea_output", "escape"),
    ]:
        admin.execute(f"ALTER ROLE {role} SET {setting} = '{value}'")
    with psycopg.connect(dsn) as check:  # the role's sessions do start with them
        assert check.execute("SHOW TimeZone").fetchone() == ("Asia/Kolkata",)
    nothing_changed()
    assert len(receiver.requests) == 2  # the first runs' only
