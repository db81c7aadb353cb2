"""The PostgreSQL destination's "fake" is the real server (conftest.postgres_dsn): each test gets a
schema of its own with the table `people`, whose check constraint refuses an email without "@",
and statement-level triggers (run as the schema's owner, whoever writes) that log the rows each
statement wrote. A batch is one statement, so one transaction: the log of a batch that failed
is rolled back with it."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from conftest import postgres_dsn
from psycopg import sql

from fakes.base import Fake as BaseFake

MISSING_ROLE = "reverse_etl_no_such_role"  # the server refuses it: role "..." does not exist

SCHEMA_SQL = """
CREATE SCHEMA {schema};
CREATE TABLE {schema}.people (
    id integer PRIMARY KEY,
    email text CONSTRAINT people_email_has_at CHECK (email LIKE '%@%'),
    name text
);
-- One row per statement that touched people: the transaction, its backend, rows written.
CREATE TABLE {schema}.writes (
    id bigserial PRIMARY KEY,
    xact bigint NOT NULL DEFAULT txid_current(),
    pid integer NOT NULL DEFAULT pg_backend_pid(),
    operation text NOT NULL,
    rows bigint NOT NULL
);
CREATE FUNCTION {schema}.log_new() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER AS $$
BEGIN
    EXECUTE format('INSERT INTO %I.writes (operation, rows) SELECT $1, count(*) FROM new',
                   TG_TABLE_SCHEMA) USING TG_OP;
    RETURN NULL;
END $$;
CREATE FUNCTION {schema}.log_old() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER AS $$
BEGIN
    EXECUTE format('INSERT INTO %I.writes (operation, rows) SELECT $1, count(*) FROM old',
                   TG_TABLE_SCHEMA) USING TG_OP;
    RETURN NULL;
END $$;
-- A trigger with transition tables has one event (CREATE TRIGGER's rule): one per operation.
-- INSERT ... ON CONFLICT DO UPDATE fires both the INSERT and the UPDATE trigger.
CREATE TRIGGER log_insert AFTER INSERT ON {schema}.people
    REFERENCING NEW TABLE AS new FOR EACH STATEMENT EXECUTE FUNCTION {schema}.log_new();
CREATE TRIGGER log_update AFTER UPDATE ON {schema}.people
    REFERENCING NEW TABLE AS new FOR EACH STATEMENT EXECUTE FUNCTION {schema}.log_new();
CREATE TRIGGER log_delete AFTER DELETE ON {schema}.people
    REFERENCING OLD TABLE AS old FOR EACH STATEMENT EXECUTE FUNCTION {schema}.log_old();
"""


class Fake(BaseFake):
    type = "postgres"
    max_batch_size = 5000  # the adapter's cap (PostgresDestination.max_batch_size)
    batch_limit = False  # PostgreSQL has none; 5000 is the adapter's own cap
    supports_delete = True
    invalid_email_error = 'violates check constraint "people_email_has_at"'
    rate_limited = False  # a database answers as fast as it can; there is no 429

    def __init__(self) -> None:
        self.schema = f"reverse_etl_{uuid.uuid4().hex[:12]}"
        self.dsn = ""
        self.conn: psycopg.Connection[Any] | None = None

    def start(self) -> None:
        self.dsn = postgres_dsn()  # skips the test (or fails it in CI) without a server
        self.conn = psycopg.connect(self.dsn, autocommit=True)
        self.conn.execute(sql.SQL(SCHEMA_SQL).format(schema=sql.Identifier(self.schema)))

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )
            self.conn.close()
            self.conn = None

    def query(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run SQL with {schema} standing for this test's schema."""
        assert self.conn is not None
        text = sql.SQL(statement).format(schema=sql.Identifier(self.schema))  # type: ignore[arg-type]
        cursor = self.conn.execute(text, params or None)
        return cursor.fetchall() if cursor.description else []

    def destination(self, good_credentials: bool = True) -> dict[str, Any]:
        dsn = self.dsn
        if not good_credentials:
            params = psycopg.conninfo.conninfo_to_dict(dsn)
            dsn = psycopg.conninfo.make_conninfo(**{**params, "user": MISSING_ROLE})
        return {"type": "postgres", "dsn": dsn, "table": f"{self.schema}.people"}

    def stored(self) -> dict[str, dict[str, Any]]:
        rows = self.query("SELECT id, email, name FROM {schema}.people")
        return {str(id_): {"email": email, "name": name} for id_, email, name in rows}

    def batch_sizes(self) -> list[int]:
        """Rows written by each transaction that wrote any (a batch is one statement, so one
        transaction; for an upsert the INSERT and UPDATE triggers both fire)."""
        rows = self.query(
            "SELECT sum(rows) FROM {schema}.writes GROUP BY xact HAVING sum(rows) > 0 "
            "ORDER BY min(id)"
        )
        return [int(n) for (n,) in rows]

    def backends(self) -> set[int]:
        """The server processes (connections) that wrote."""
        return {pid for (pid,) in self.query("SELECT DISTINCT pid FROM {schema}.writes")}

    def throttle(self, times: int) -> None:
        raise NotImplementedError("PostgreSQL has no rate-limit answer")
