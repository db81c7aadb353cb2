"""A PostgreSQL table: each batch is one statement, so one transaction, with the whole batch
passed as ONE jsonb parameter (the records' fields texts joined into an array, never parsed
here) and turned into rows of the table's own types by jsonb_populate_record on the server.

    upsert  INSERT ... ON CONFLICT (key) DO UPDATE SET <the model's other columns>
    insert  INSERT ... ON CONFLICT (key) DO NOTHING; keys already there are Rejected
    update  UPDATE ... FROM <batch> WHERE key matches; keys not there are Rejected
    delete  DELETE ... USING <batch> WHERE key matches; keys already gone count as delivered

The key is `key_columns`, else the table's primary key (or its only unique constraint), found
in the catalog at first use: ON CONFLICT needs a unique index on exactly those columns.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr, field_validator

from ..errors import CredentialsError, DestinationError
from .base import (
    DELIVERED,
    ERROR_TEXT_LIMIT,
    Batch,
    BatchFailed,
    Destination,
    DestinationSettings,
    Rejected,
    Result,
    Retryable,
    SplitBatch,
    Unreachable,
)

if TYPE_CHECKING:  # psycopg costs ~0.2 s to import: only a run or a check that uses it pays
    import psycopg
    from psycopg import sql

# A table name as PostgreSQL reads it: name or schema.name, each part bare or double-quoted.
_PART = r'(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*|"(?:[^"]|"")+")'
_TABLE_NAME = re.compile(rf"{_PART}(?:\.{_PART})?")
_ORD = "_reverse_etl_ord"  # the record's position in the batch (1-based), in the statements

# Connection failures carry no SQLSTATE in libpq/psycopg (psycopg issues #242 and #1188), so
# refused credentials are told by libpq's and the server's (English) messages.
_REFUSED_LOGIN = (
    "password authentication failed",
    "authentication failed for user",
    "no pg_hba.conf entry",
    "pg_hba.conf rejects connection",
    "is not permitted to log in",
    "no password supplied",
)
# libpq's words for a connection string or TLS setting it cannot use: no retry will help.
_BAD_DSN = ("connection is bad", "invalid connection option", "does not support ssl")

# SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html) by what to do.
_RECORD_CLASSES = ("22", "23")  # data exception, integrity constraint violation
_RECORD_STATES = {"21000", "27000", "P0001"}  # one row twice, trigger-made change, RAISE
_RETRY_CLASSES = ("08", "40", "53", "57", "58")  # connection, rollback, resources, operator
_RETRY_STATES = {"55P03", "55006"}  # lock not available, object in use
_CREDENTIAL_STATES = {"28000", "28P01"}


class PostgresSettings(DestinationSettings):
    dsn: SecretStr = Field(
        description="libpq connection string, e.g. postgresql://loader@db.internal:5432/app "
        "(a password may come from ${VAR}, PGPASSWORD or ~/.pgpass)"
    )
    table: str | None = Field(
        default=None,
        description="the target table, name or schema.name; a sync's `object` overrides it",
    )
    key_columns: list[str] | None = Field(
        default=None,
        description="the columns matched on (a unique index must cover exactly them); "
        "default: the table's primary key, else its only unique constraint",
    )
    batch_size: int = Field(default=1000, ge=1, description="records per statement (at most 5000)")

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, dsn: SecretStr) -> SecretStr:
        text = dsn.get_secret_value().strip()
        if not (text.startswith(("postgresql://", "postgres://")) or "=" in text):
            # The value may hold a password: the message never quotes it.
            raise ValueError(
                "must be a PostgreSQL connection URI (postgresql://user@host:5432/dbname) "
                "or key=value pairs (host=... dbname=...)"
            )
        return dsn

    @field_validator("table")
    @classmethod
    def _table(cls, table: str | None) -> str | None:
        if table is not None and not _TABLE_NAME.fullmatch(table):
            raise ValueError(f"{table!r} is not a table name (table or schema.table)")
        return table

    @field_validator("key_columns")
    @classmethod
    def _key_columns(cls, columns: list[str] | None) -> list[str] | None:
        if columns is not None:
            if not columns or not all(columns):
                raise ValueError("must list at least one column")
            if len(set(columns)) != len(columns):
                raise ValueError("names a column twice")
        return columns


@dataclass(frozen=True)
class Table:
    """What the catalog says of the target table, and the statements built for it."""

    oid: int
    qualified: str  # schema.name, for messages
    schema: str
    name: str
    columns: dict[str, str]  # name → type, in the table's order
    bytea: frozenset[str]  # base64 on the wire: decoded, not taken as bytea's text form
    generated: frozenset[str]  # computed by PostgreSQL: never written
    identity_always: frozenset[str]  # GENERATED ALWAYS AS IDENTITY: needs OVERRIDING
    key: tuple[str, ...]
    statements: dict[tuple[str, tuple[str, ...]], sql.Composed] = field(default_factory=dict)

    def statement(self, operation: str, columns: tuple[str, ...]) -> sql.Composed:
        """The statement for a batch whose records have these columns (checked once)."""
        cached = self.statements.get((operation, columns))
        if cached is None:
            self._check_columns(operation, columns)
            cached = self.statements[(operation, columns)] = _statement(self, operation, columns)
        return cached

    def _check_columns(self, operation: str, columns: Sequence[str]) -> None:
        missing_key = [c for c in self.key if c not in columns]
        if missing_key:
            raise DestinationError(
                f"the key of {self.qualified} ({', '.join(self.key)}) must be among the model's "
                f"columns ({', '.join(columns)}): add {', '.join(missing_key)} to the model, or "
                "set key_columns to a unique key the model has"
            )
        if operation == "delete":  # only the key is read
            return
        unknown = [c for c in columns if c not in self.columns]
        if unknown:
            raise DestinationError(
                f"the model's column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                f"{'are' if len(unknown) > 1 else 'is'} not in {self.qualified} (its columns: "
                f"{', '.join(self.columns)}): rename them in the model (aliases) or add them "
                "to the table"
            )
        generated = [c for c in columns if c in self.generated]
        if generated:
            raise DestinationError(
                f"{', '.join(generated)} in {self.qualified} "
                f"{'are generated columns' if len(generated) > 1 else 'is a generated column'}: "
                "PostgreSQL computes them; leave them out of the model"
            )


def _statement(table: Table, operation: str, columns: tuple[str, ...]) -> sql.Composed:
    from psycopg.sql import SQL, Identifier

    target = Identifier(table.schema, table.name)
    if operation == "delete":
        columns = table.key
    cols = SQL(", ").join(Identifier(c) for c in columns)
    keys = SQL(", ").join(Identifier(c) for c in table.key)
    on_key = SQL(" AND ").join(SQL("t.{0} = s.{0}").format(Identifier(c)) for c in table.key)
    updated = [c for c in columns if c not in table.key]
    others = updated or [table.key[0]]  # a model of only the key: UPDATE still needs a SET
    source = _source(table, columns)
    overriding = SQL(
        " OVERRIDING SYSTEM VALUE" if table.identity_always.intersection(columns) else ""
    )
    if operation == "upsert":
        assign = SQL(", ").join(SQL("{0} = EXCLUDED.{0}").format(Identifier(c)) for c in others)
        action = SQL("DO UPDATE SET {}").format(assign) if updated else SQL("DO NOTHING")
        return SQL(
            "INSERT INTO {target} AS t ({cols}){overriding} SELECT {cols} FROM ({source}) AS s "
            "ON CONFLICT ({keys}) {action}"
        ).format(
            target=target,
            cols=cols,
            overriding=overriding,
            source=source,
            keys=keys,
            action=action,
        )
    if operation == "insert":  # the records not written: a row with their key was there
        # A record with a NULL key part cannot conflict (NULLs are distinct): it went in.
        present = SQL(" AND ").join(
            SQL("s.{} IS NOT NULL").format(Identifier(c)) for c in table.key
        )
        written = SQL(" AND ").join(SQL("w.{0} = s.{0}").format(Identifier(c)) for c in table.key)
        return SQL(
            "WITH s AS ({source}), w AS (INSERT INTO {target} ({cols}){overriding} "
            "SELECT {cols} FROM s ON CONFLICT ({keys}) DO NOTHING RETURNING {keys}) "
            "SELECT s.{ord} FROM s WHERE {present} AND NOT EXISTS (SELECT FROM w WHERE {written})"
        ).format(
            source=source,
            target=target,
            cols=cols,
            overriding=overriding,
            keys=keys,
            ord=Identifier(_ORD),
            present=present,
            written=written,
        )
    if operation == "update":  # the records not written: no row has their key
        assign = SQL(", ").join(SQL("{0} = s.{0}").format(Identifier(c)) for c in others)
        return SQL(
            "WITH s AS ({source}), w AS (UPDATE {target} AS t SET {assign} FROM s "
            "WHERE {on_key} RETURNING s.{ord}) "
            "SELECT s.{ord} FROM s WHERE NOT EXISTS (SELECT FROM w WHERE w.{ord} = s.{ord})"
        ).format(source=source, target=target, assign=assign, on_key=on_key, ord=Identifier(_ORD))
    if operation == "delete":
        return SQL("DELETE FROM {target} AS t USING ({source}) AS s WHERE {on_key}").format(
            target=target, source=source, on_key=on_key
        )
    raise ValueError(f"unknown operation {operation!r}")


def _source(table: Table, columns: Sequence[str]) -> sql.Composed:
    """The batch parameter as rows of the table's types, each with its position."""
    from psycopg.sql import SQL, Identifier, Literal

    values = [
        SQL("decode(e.doc ->> {}, 'base64') AS {}").format(Literal(c), Identifier(c))
        if c in table.bytea
        else SQL("r.{0} AS {0}").format(Identifier(c))
        for c in columns
    ]
    return SQL(
        "SELECT e.ord AS {ord}, {values} "
        "FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(doc, ord) "
        "CROSS JOIN LATERAL jsonb_populate_record(NULL::{target}, e.doc) AS r"
    ).format(
        ord=Identifier(_ORD),
        values=SQL(", ").join(values),
        target=Identifier(table.schema, table.name),
    )


_DESCRIBE = """
SELECT c.oid, n.nspname, c.relname, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass(%s)
"""
_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod),
       coalesce(nullif(t.typbasetype, 0), a.atttypid) = 'bytea'::regtype,
       a.attgenerated <> '', a.attidentity = 'a'
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
# Unique indexes ON CONFLICT can infer (sql-insert.html, "conflict_target"): valid, not
# deferrable, no WHERE (it would need a matching predicate), plain columns, no INCLUDE ones.
_UNIQUE_KEYS = """
SELECT i.indisprimary, array_agg(a.attname::text ORDER BY k.n)
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid AND i.indimmediate
  AND i.indpred IS NULL AND i.indexprs IS NULL AND k.n <= i.indnkeyatts
GROUP BY i.indexrelid, i.indisprimary
ORDER BY i.indisprimary DESC, i.indexrelid
"""
# What each operation needs: SELECT on the key columns for all of them (ON CONFLICT, WHERE and
# RETURNING read them: https://www.postgresql.org/docs/current/sql-insert.html), and INSERT,
# UPDATE or DELETE (column-level grants count).
_PRIVILEGES = """
SELECT has_any_column_privilege(%(oid)s, 'INSERT'), has_any_column_privilege(%(oid)s, 'UPDATE'),
       has_table_privilege(%(oid)s, 'DELETE'),
       (SELECT bool_and(has_column_privilege(%(oid)s, k, 'SELECT')) FROM unnest(%(key)s::text[]) k)
"""


class _Pool:
    """At most `size` connections, opened when first needed, each used by one batch at a time
    (the slots), kept open between batches (the idle ones) until close()."""

    def __init__(self, connect: Any, size: int) -> None:
        self._connect = connect
        self._slots = asyncio.Semaphore(size)
        self._idle: list[psycopg.AsyncConnection[Any]] = []

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        from psycopg.pq import TransactionStatus

        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                yield conn
            finally:
                if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
                    await conn.close()  # broken, or left mid-statement (a cancelled task)
                else:
                    self._idle.append(conn)

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop().close()


class PostgresDestination(Destination):
    type = "postgres"
    description = "rows written into a PostgreSQL table, one statement (transaction) per batch"
    settings_model = PostgresSettings
    max_batch_size = 5000  # one jsonb parameter of a few MB; a statement short enough to lock

    def __init__(self, name: str, settings: DestinationSettings, client: Any) -> None:
        super().__init__(name, settings, client)
        self._pool = _Pool(self._connect, settings.max_concurrency)
        self._tables: dict[str, Table] = {}
        self._describing = asyncio.Lock()
        self._user = "the dsn's user"  # who we connect as, once known: for GRANT hints

    @property
    def _settings(self) -> PostgresSettings:
        return self.settings  # type: ignore[return-value]

    @classmethod
    def uses_tls(cls, settings: DestinationSettings) -> bool:
        return False  # the engine's HTTP client is not used; libpq negotiates TLS itself

    @classmethod
    def sync_problems(
        cls,
        settings: DestinationSettings,
        *,
        object_name: str | None,
        mode: str,
        primary_key: tuple[str, ...],
    ) -> list[tuple[str, str]]:
        problems = super().sync_problems(
            settings, object_name=object_name, mode=mode, primary_key=primary_key
        )
        if object_name is None and getattr(settings, "table", None) is None:
            problems.append(
                (
                    "object",
                    'name the table to write to: object = "schema.table" in the sync, '
                    "or table in the destination file",
                )
            )
        elif object_name is not None and not _TABLE_NAME.fullmatch(object_name):
            problems.append(
                ("object", f"{object_name!r} is not a table name (table or schema.table)")
            )
        return problems

    async def send(self, batch: Batch) -> list[Result]:
        if not batch.records:
            return []
        columns = tuple(json.loads(batch.records[0][1]))  # the model's columns, from one record
        payload = "[" + ",".join(fields for _, fields in batch.records) + "]"
        async with self._connection() as conn:
            table = await self._table(conn, batch.object)
            statement = table.statement(batch.operation, columns)
            try:
                cursor = await conn.execute(statement, [payload])
                returned = await cursor.fetchall() if cursor.description is not None else []
            except Exception as exc:
                raise self._batch_error(exc, table, batch.operation) from None
        if not returned:
            return [DELIVERED] * len(batch.records)
        why = (
            f"already exists: {table.qualified} has a row with this {_key_name(table)}"
            if batch.operation == "insert"
            else f"not found: {table.qualified} has no row with this {_key_name(table)}"
        )
        not_written = {row[0] for row in returned}
        return [
            Rejected(why) if position in not_written else DELIVERED
            for position in range(1, len(batch.records) + 1)
        ]

    async def check(self) -> str:
        """Connect, find the table, its key and the user's privileges; nothing is written."""
        try:
            return await self._check()
        except (Retryable, SplitBatch, BatchFailed) as exc:  # no engine here to retry them
            raise DestinationError(f"cannot check {self.name!r}: {exc}") from None

    async def _check(self) -> str:
        async with self._connection() as conn:
            info = conn.info
            where = f"postgres://{info.user}@{info.host}:{info.port}/{info.dbname}"
            if self._settings.table is None:
                return f"{where}: connected (each sync names its table in `object`)"
            table = await self._table(conn, None)
            try:
                cursor = await conn.execute(_PRIVILEGES, {"oid": table.oid, "key": list(table.key)})
                row = await cursor.fetchone()
            except Exception as exc:
                raise self._batch_error(exc, table, "check") from None
        assert row is not None
        *writes, can_read_key = row
        key = ", ".join(table.key)
        if not can_read_key:
            raise DestinationError(
                f"{where}: user {info.user} may not read the key ({key}) of {table.qualified}, "
                f"which every operation does: GRANT SELECT ({key}) ON {table.qualified} "
                f"TO {info.user}"
            )
        operations = ("insert", "update", "delete")
        allowed = [op for op, ok in zip(operations, writes, strict=True) if ok]
        denied = [op for op, ok in zip(operations, writes, strict=True) if not ok]
        if not allowed:
            raise DestinationError(
                f"{where}: user {info.user} may not write to {table.qualified}: "
                f"GRANT INSERT, UPDATE, DELETE ON {table.qualified} TO {info.user}"
            )
        answer = f"{where}: table {table.qualified}, key ({key}), {'/'.join(allowed)} allowed"
        if denied:
            answer += f"; {'/'.join(denied)} NOT allowed ({_needs(denied)})"
        return answer

    async def aclose(self) -> None:
        await self._pool.close()

    # -- connections --------------------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        import psycopg

        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            if exc.sqlstate is None:  # the connection failed or broke: no server answer
                raise self._connect_error(exc) from None
            raise self._batch_error(exc, None, "connect") from None

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        import psycopg

        settings = self._settings
        try:
            conn = await psycopg.AsyncConnection.connect(
                settings.dsn.get_secret_value(),
                autocommit=True,  # each batch is one statement: its own transaction
                connect_timeout=max(2, round(settings.timeout_seconds)),
                fallback_application_name="reverse-etl",
            )
        except psycopg.Error as exc:
            raise self._connect_error(exc) from None
        self._user = conn.info.user
        try:  # a statement that outlives the destination's timeout is cancelled by the server
            await conn.execute(
                "SELECT set_config('statement_timeout', %s, false)",
                [f"{round(settings.timeout_seconds * 1000)}ms"],
            )
        except BaseException:
            await conn.close()
            raise
        return conn

    def _connect_error(self, exc: BaseException) -> Exception:
        import psycopg

        message = self._scrub(str(exc).strip())
        lowered = message.lower()
        if re.search(r'database ".*" does not exist', lowered):
            return DestinationError(f"{message}: fix dbname in the dsn")
        if any(fragment in lowered for fragment in _REFUSED_LOGIN) or re.search(
            r'role ".*" does not exist', lowered
        ):
            return CredentialsError(message)
        if isinstance(exc, psycopg.ProgrammingError) or any(
            fragment in lowered for fragment in _BAD_DSN
        ):
            return DestinationError(f"the dsn cannot be used: {message}")
        # Refused, timed out, server restarting: retried with backoff; when the retries run
        # out, the engine stops the run ("unreachable").
        return Unreachable(message)

    # -- the table ----------------------------------------------------------------------------

    async def _table(self, conn: psycopg.AsyncConnection[Any], object_name: str | None) -> Table:
        name = object_name or self._settings.table
        if name is None:  # validation reports it first; a direct caller may still get here
            raise DestinationError("no table to write to: set the sync's object or table")
        if name not in self._tables:
            async with self._describing:
                if name not in self._tables:
                    origin = "the sync's object" if object_name else "table in the destination"
                    try:
                        self._tables[name] = await self._describe(conn, name, origin)
                    except DestinationError:
                        raise
                    except Exception as exc:
                        raise self._batch_error(exc, None, "describe") from None
        return self._tables[name]

    async def _describe(self, conn: psycopg.AsyncConnection[Any], name: str, origin: str) -> Table:
        cursor = await conn.execute(_DESCRIBE, [name])
        found = await cursor.fetchone()
        if found is None:
            search_path = (await (await conn.execute("SHOW search_path")).fetchone() or [""])[0]
            raise DestinationError(
                f"table {name!r} ({origin}) does not exist in database {conn.info.dbname} "
                f"(or user {conn.info.user} may not see it; search_path: {search_path}): "
                "create it first (reverse-etl does not create tables), or fix the name"
            )
        oid, schema, relname, kind = found
        qualified = f"{_quote(schema)}.{_quote(relname)}"
        if kind not in ("r", "p"):
            raise DestinationError(f"{qualified} is not a table (relkind {kind!r}): name a table")
        rows = await (await conn.execute(_COLUMNS, [oid])).fetchall()
        columns = {row[0]: row[1] for row in rows}
        uniques = [
            (primary, tuple(cols))
            for primary, cols in await (await conn.execute(_UNIQUE_KEYS, [oid])).fetchall()
        ]
        key = self._key(qualified, columns, uniques)
        return Table(
            oid=oid,
            qualified=qualified,
            schema=schema,
            name=relname,
            columns=columns,
            bytea=frozenset(row[0] for row in rows if row[2]),
            generated=frozenset(row[0] for row in rows if row[3]),
            identity_always=frozenset(row[0] for row in rows if row[4]),
            key=key,
        )

    def _key(
        self,
        qualified: str,
        columns: dict[str, str],
        uniques: list[tuple[bool, tuple[str, ...]]],
    ) -> tuple[str, ...]:
        wanted = self._settings.key_columns
        shown = ", ".join(f"({', '.join(cols)})" for _, cols in uniques) or "none"
        if wanted is not None:
            unknown = [c for c in wanted if c not in columns]
            if unknown:
                raise DestinationError(
                    f"key_columns {', '.join(unknown)} {'are' if len(unknown) > 1 else 'is'} "
                    f"not in {qualified} (its columns: {', '.join(columns)})"
                )
            for _, cols in uniques:
                if set(cols) == set(wanted):
                    return tuple(wanted)
            raise DestinationError(
                f"{qualified} has no unique index on exactly ({', '.join(wanted)}), which "
                f"INSERT ... ON CONFLICT needs to match rows (its unique keys: {shown}): "
                f"ALTER TABLE {qualified} ADD UNIQUE ({', '.join(wanted)})"
            )
        if uniques and uniques[0][0]:
            return uniques[0][1]
        if len(uniques) == 1:
            return uniques[0][1]
        if not uniques:
            raise DestinationError(
                f"{qualified} has no primary key or unique constraint, which INSERT ... "
                "ON CONFLICT needs to match rows: add one (ALTER TABLE ... ADD PRIMARY KEY "
                "(...)), or set key_columns to columns with a unique index"
            )
        raise DestinationError(
            f"{qualified} has no primary key and several unique keys ({shown}): "
            "set key_columns to the one to match rows on"
        )

    # -- errors -------------------------------------------------------------------------------

    def _batch_error(self, exc: BaseException, table: Table | None, operation: str) -> Exception:
        """What the engine should do about a statement that failed."""
        import psycopg

        if not isinstance(exc, psycopg.Error):
            return exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
        state = exc.sqlstate
        message = self._scrub(_pg_message(exc))
        where = table.qualified if table else "the database"
        if state is None:  # the connection broke (no answer from the server)
            return Retryable(message)
        if state in _CREDENTIAL_STATES:
            return CredentialsError(message)
        if state.startswith(_RECORD_CLASSES) or state in _RECORD_STATES:
            return SplitBatch(message)
        if state == "42501" and "row-level security" in message:
            return SplitBatch(message)  # a row the table's policies refuse
        if state.startswith(_RETRY_CLASSES) or state in _RETRY_STATES:
            return Retryable(message)
        if state == "42501":
            grant = {"upsert": "INSERT, UPDATE", "insert": "INSERT", "update": "UPDATE"}.get(
                operation, operation.upper()
            )
            return DestinationError(
                f"{where}: {message}: GRANT SELECT, {grant} ON {where} TO {self._user}"
                if operation in ("upsert", "insert", "update", "delete")
                else f"{where}: {message}"
            )
        if state == "25006":
            return DestinationError(
                f"{message}: the server is read-only (a standby?): point the dsn at the primary"
            )
        if state in ("42P01", "42703", "3F000"):
            return DestinationError(
                f"{where}: {message}: the table changed while the run was sending; "
                "run the sync again"
            )
        if state.startswith(("42", "0A", "3D", "3F")):
            return DestinationError(f"{where}: {message}")
        return BatchFailed(message)

    def _scrub(self, message: str) -> str:
        """The message without the dsn or its password (libpq does not echo them, but a
        malformed dsn's fragments could be quoted)."""
        dsn = self._settings.dsn.get_secret_value()
        secrets = [dsn, os.environ.get("PGPASSWORD", "")]
        match = re.search(r"://[^:/@]*:([^@/]*)@", dsn) or re.search(
            r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn
        )
        if match:
            secrets.append(match.group(1).strip("'"))
        for secret in secrets:
            if len(secret) >= 3:
                message = message.replace(secret, "***")
        return message


def _pg_message(exc: BaseException) -> str:
    """PostgreSQL's message, its SQLSTATE and detail (e.g. the failing row)."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(exc).strip()
    state = getattr(exc, "sqlstate", None)
    text = f"{primary} (SQLSTATE {state})" if state else primary
    detail = getattr(diag, "message_detail", None)
    if detail:
        text += f": {detail}"
    return text if len(text) <= ERROR_TEXT_LIMIT else text[:ERROR_TEXT_LIMIT] + "..."


def _quote(name: str) -> str:
    """An identifier as PostgreSQL prints it: bare when that reads back the same."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def _key_name(table: Table) -> str:
    return f"key ({', '.join(table.key)})"


def _needs(denied: list[str]) -> str:
    uses = {"insert": "upsert and insert syncs", "update": "upsert and update syncs"}
    return "; ".join(f"{op}: {uses.get(op, 'mirror syncs')} need it" for op in denied)
