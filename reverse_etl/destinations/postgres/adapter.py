"""A PostgreSQL table: each batch is one statement, so one transaction, with the whole batch
passed as ONE jsonb parameter (the records' fields texts joined into an array, never parsed
here) and turned into rows of the table's own types by jsonb_populate_record on the server.

    upsert  INSERT ... ON CONFLICT (key) DO UPDATE SET <the model's other columns>
    insert  INSERT ... ON CONFLICT (key) DO NOTHING; keys already there are Rejected
    update  UPDATE ... FROM <batch> WHERE key matches; keys not there are Rejected
    delete  DELETE ... USING <batch> WHERE key matches; keys already gone count as delivered

An insert whose outcome is unknown (the connection broke before the answer came) is not sent
again blindly: `reconcile` selects the batch's keys the table holds, which count as delivered.

The key is `key_columns`, else the table's primary key (or its only unique constraint), found
in the catalog at first use: ON CONFLICT needs a unique index on exactly those columns.

This module is the settings and the adapter; beside it: pg_pool (the connections), pg_table
(the table's description in the catalog), pg_statements (the SQL per operation) and pg_errors
(what a failure means to the engine).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr, field_validator

from ...errors import DestinationError
from ..base import (
    DELIVERED,
    Batch,
    BatchFailed,
    Destination,
    DestinationSettings,
    Rejected,
    Result,
    Retryable,
    SplitBatch,
    SyncTarget,
)
from .errors import batch_error, connect_error
from .pool import ConnectionPool
from .table import Table, describe_table, privileges

if TYPE_CHECKING:  # psycopg costs ~0.2 s to import: only a run or a check that uses it pays
    import psycopg

# A table name as PostgreSQL reads it: name or schema.name, each part bare or double-quoted.
_PART = r'(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*|"(?:[^"]|"")+")'
_TABLE_NAME = re.compile(rf"{_PART}(?:\.{_PART})?")


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


class PostgresDestination(Destination):
    contract_version = 1
    type = "postgres"
    description = "rows written into a PostgreSQL table, one statement (transaction) per batch"
    settings_model = PostgresSettings
    idempotent_operations = frozenset({"upsert", "update", "delete"})
    reconcilable_operations = frozenset({"insert"})  # a SELECT of the keys finds out
    max_batch_size = 5000  # one jsonb parameter of a few MB; a statement short enough to lock
    speaks_http = False  # libpq (which negotiates its own TLS): a rate-limit slot per call

    def __init__(self, name: str, settings: DestinationSettings, client: Any) -> None:
        super().__init__(name, settings, client)
        self._pool = ConnectionPool(self._connect, settings.max_concurrency)
        self._tables: dict[str, Table] = {}
        self._describing = asyncio.Lock()
        self._user = "the dsn's user"  # who we connect as, once known: for GRANT hints

    @property
    def _settings(self) -> PostgresSettings:
        return self.settings  # type: ignore[return-value]

    @classmethod
    def sync_problems(
        cls, settings: DestinationSettings, sync: SyncTarget
    ) -> list[tuple[str, str]]:
        problems = super().sync_problems(settings, sync)
        object_name = sync.object
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
        exists = batch.operation == "insert"  # refused because a row with the key is there
        return [
            Rejected(why, exists=exists) if position in not_written else DELIVERED
            for position in range(1, len(batch.records) + 1)
        ]

    async def reconcile(self, batch: Batch) -> list[Result | None]:
        """After an unknown outcome of an insert: the records whose key the table holds count
        as delivered; the others are sent again."""
        if not batch.records:
            return []
        payload = "[" + ",".join(fields for _, fields in batch.records) + "]"
        async with self._connection() as conn:
            table = await self._table(conn, batch.object)
            statement = table.statement("lookup", table.key)
            try:
                cursor = await conn.execute(statement, [payload])
                present = {row[0] for row in await cursor.fetchall()}
            except Exception as exc:
                raise self._batch_error(exc, table, "lookup") from None
        return [
            DELIVERED if position in present else None
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
                *writes, can_read_key = await privileges(conn, table)
            except Exception as exc:
                raise self._batch_error(exc, table, "check") from None
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
                raise connect_error(exc, self._dsn) from None
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
            raise connect_error(exc, self._dsn) from None
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
                        self._tables[name] = await describe_table(
                            conn, name, origin, self._settings.key_columns
                        )
                    except DestinationError:
                        raise
                    except Exception as exc:
                        raise self._batch_error(exc, None, "describe") from None
        return self._tables[name]

    # -- errors -------------------------------------------------------------------------------

    def _batch_error(self, exc: BaseException, table: Table | None, operation: str) -> Exception:
        """What the engine should do about a statement that failed."""
        return batch_error(
            exc,
            where=table.qualified if table else "the database",
            operation=operation,
            user=self._user,
            dsn=self._dsn,
        )

    @property
    def _dsn(self) -> str:
        return self._settings.dsn.get_secret_value()


def _key_name(table: Table) -> str:
    return f"key ({', '.join(table.key)})"


def _needs(denied: list[str]) -> str:
    uses = {"insert": "upsert and insert syncs", "update": "upsert and update syncs"}
    return "; ".join(f"{op}: {uses.get(op, 'mirror syncs')} need it" for op in denied)
