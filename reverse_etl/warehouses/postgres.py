"""PostgreSQL as the warehouse: the model runs there, read-only, and its result streams into
the engine's DuckDB as Arrow record batches.

ADBC's PostgreSQL driver reads the result with binary COPY in C and hands over Arrow batches,
so no row becomes a Python object (bench/bench_postgres.py measures it against `COPY ... TO
STDOUT` and a server-side cursor). DuckDB stages the batches into a temporary table (spilling to
disk past its memory limit): the diff reads the model's rows more than once, and a query cannot
be read twice.

Types map as they are: integers, floats, booleans, text, dates, timestamps (timestamptz in UTC),
intervals, bytea, uuid, json/jsonb (DuckDB JSON) and arrays (lists) through Arrow. numeric comes
as text: with a declared precision up to 38 it becomes DECIMAL(p, s), exact; otherwise it stays
its exact digits as a JSON number (DuckDB's DECIMAL stops at 38). NaN and infinities are NULL.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
from collections.abc import Iterator
from typing import Any

import duckdb

from ..encoding import quote_identifier
from ..errors import ModelFailed, WarehouseError

log = logging.getLogger("reverse_etl.warehouse")
_staged = itertools.count()
MAX_DECIMAL_PRECISION = 38  # DuckDB's DECIMAL


class PostgresWarehouse:
    dialect = "postgres"

    def __init__(self, dsn: str, statement_timeout_seconds: float | None) -> None:
        self.dsn = dsn
        self.statement_timeout_seconds = statement_timeout_seconds
        self.bytes_read = 0  # Arrow bytes that left the warehouse (for the logs and benchmarks)
        self._streams: dict[str, str] = {}  # registered name: the query streamed under it
        self._connections: list[tuple[Any, Any]] = []  # (connection, cursor) of each stream

    def connect(self, con: Any) -> None:
        """Check that the server answers and takes the credentials."""
        self._open().close()

    def columns(self, con: Any, sql: str) -> list[str]:
        """The model's output columns: planned by the server, not run (LIMIT 0)."""
        with self._query(_wrapped(sql) + " LIMIT 0") as reader:
            return list(reader.schema.names)

    def relation(self, con: Any, sql: str) -> str:
        """SQL reading the model's result as it streams from the server. A stream is read once:
        call rewind() before each read (the first included), which runs the model anew."""
        import pyarrow as pa

        name = f"__retl_pg_{next(_staged)}"
        self._streams[name] = _wrapped(sql)
        schema = self._run(self._streams[name] + " LIMIT 0").schema  # bound, not run
        con.register(name, pa.RecordBatchReader.from_batches(schema, iter(())))
        columns = ", ".join(_converted(field) for field in schema)
        return f"(SELECT {columns} FROM {name})"

    def rewind(self, con: Any) -> None:
        """Run each streamed model again, ready to be read (the previous runs are closed)."""
        import pyarrow as pa

        self.close()
        con.abort()  # a result left half-fetched (a fetchone) would block register()
        for name, sql in self._streams.items():
            reader = self._run(sql)
            con.register(
                name, pa.RecordBatchReader.from_batches(reader.schema, self._counted(reader))
            )

    def _run(self, sql: str) -> Any:
        """The record batch reader of a query, on a connection of its own (closed by close())."""
        connection = self._open()
        cursor = connection.cursor()
        try:
            cursor.execute(sql)
            reader = cursor.fetch_record_batch()
        except Exception as exc:
            with contextlib.suppress(Exception):
                cursor.close()
                connection.close()
            raise _model_error(exc) from None
        self._connections.append((connection, cursor))  # the reader lives as long as its cursor
        return reader

    def close(self) -> None:
        if self._connections and self.bytes_read:
            log.info("%s bytes (as Arrow) left the warehouse", f"{self.bytes_read:,}")
        for connection, cursor in self._connections:
            with contextlib.suppress(Exception):  # a stream not read to its end: gone anyway
                cursor.close()
                connection.close()
        self._connections.clear()

    def stage(self, con: Any, sql: str) -> str:
        """Run a query read-only and stage its result in `con`; the staged table's name."""
        import pyarrow as pa

        name = f"__retl_pg_{next(_staged)}"
        with self._query(sql) as reader:
            counted = pa.RecordBatchReader.from_batches(reader.schema, self._counted(reader))
            con.abort()  # a result left half-fetched (a fetchone) would block register()
            con.register(f"{name}_stream", counted)
            try:
                columns = ", ".join(_converted(field) for field in reader.schema)
                con.execute(f"CREATE TEMP TABLE {name} AS SELECT {columns} FROM {name}_stream")
            finally:
                con.unregister(f"{name}_stream")
        log.info("%s bytes (as Arrow) left the warehouse", f"{self.bytes_read:,}")
        return name

    @contextlib.contextmanager
    def _query(self, sql: str) -> Iterator[Any]:
        """The record batch reader of a query, closed with its connection after the block."""
        connection = self._open()
        cursor = connection.cursor()
        try:
            try:
                cursor.execute(sql)
                reader = cursor.fetch_record_batch()
            except Exception as exc:
                raise _model_error(exc) from None
            yield reader
        except duckdb.Error as exc:  # reading the stream failed: the server's error inside
            raise _model_error(exc) from None
        finally:
            with contextlib.suppress(Exception):
                cursor.close()
                connection.close()

    def _counted(self, reader: Any) -> Any:
        for batch in reader:
            self.bytes_read += batch.nbytes
            yield batch

    def writer(self) -> Any:
        """A connection that may write (the snapshot of `diff = "warehouse"`), in a
        transaction: commit() or rollback(), then close()."""
        from adbc_driver_postgresql import dbapi

        try:
            return dbapi.connect(self.dsn)
        except dbapi.Error as exc:
            raise WarehouseError(
                f"cannot connect to the PostgreSQL warehouse: {_text(exc)}"
            ) from None

    def _open(self) -> Any:
        from adbc_driver_postgresql import dbapi

        try:
            connection = dbapi.connect(self.dsn, autocommit=True)
        except dbapi.Error as exc:
            raise WarehouseError(
                f"cannot connect to the PostgreSQL warehouse: {_text(exc)}"
            ) from None
        cursor = connection.cursor()
        # Read-only for every statement of the session: a model cannot write, whatever it says.
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        timeout = self.statement_timeout_seconds
        cursor.execute(f"SET statement_timeout = {int(timeout * 1000) if timeout else 0}")
        cursor.close()
        return connection


def _wrapped(sql: str) -> str:
    # The same wrapping as the DuckDB warehouse's, so that PostgreSQL's `LINE n` maps to the
    # sync file's lines in the same way.
    return "SELECT * FROM (\n" + sql.strip().rstrip(";") + "\n) AS model"


def _model_error(exc: Exception) -> WarehouseError:
    if isinstance(exc, WarehouseError):
        return exc
    return ModelFailed(_text(exc))


def _text(exc: Exception) -> str:
    """PostgreSQL's own message, without the driver's wrapping (`NOT_FOUND: Failed to prepare
    query: ERROR:  ...`, `Query was: ...`, `SQLSTATE: ...`)."""
    text = str(exc)
    found = re.search(r"(?:ERROR|FATAL):\s+(.*)", text, re.S)
    if found:
        text = found.group(1)
    text = re.split(r"\n\s*\nQuery was:|\nQuery was:", text)[0]
    text = re.sub(r"\.? SQLSTATE: \w+\s*$", "", text.strip())
    return text.strip()


def _converted(field: Any) -> str:
    """The DuckDB expression reading one Arrow column of the model faithfully."""
    column = quote_identifier(field.name)
    metadata = field.metadata or {}
    if metadata.get(b"POSTGRESQL:type") != b"numeric":
        return column
    typmod = int(metadata.get(b"POSTGRESQL:typmod", b"-1"))
    finite = f"CASE WHEN lower({column}) NOT IN ('nan', 'infinity', '-infinity') THEN {column} END"
    if typmod >= 4:
        precision, scale = (typmod - 4) >> 16, (typmod - 4) & 0xFFFF
        if precision <= MAX_DECIMAL_PRECISION:
            return f"CAST({finite} AS DECIMAL({precision}, {scale})) AS {column}"
    return f"CAST({finite} AS JSON) AS {column}"
