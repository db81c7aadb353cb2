"""PostgreSQL as the warehouse: the model runs there, read-only, and its result streams into
the engine's DuckDB as Arrow record batches.

ADBC's PostgreSQL driver reads the result with binary COPY in C and hands over Arrow batches,
so no row becomes a Python object (bench/bench_postgres.py measures it against `COPY ... TO
STDOUT` and a server-side cursor). DuckDB stages the batches into a temporary table (spilling to
disk past its memory limit): the diff reads the model's rows more than once, and a query cannot
be read twice.

Values reach the wire as docs/warehouses.md ("PostgreSQL") says. The driver reads some types
wrongly (money as its integer cents, ±infinity dates and timestamps as dates 5 million years BC,
arrays of 2 or more dimensions flattened, oid as a signed integer) and others as their binary
format (inet, bit, geometric types, ...). So the query sent is wrapped, driven by the result's
column types (asked of the server first, not run): such columns are cast in PostgreSQL (to
text, numeric, bigint, JSON; infinities to NULL), arrays carry their dimensions beside them and
are nested again in DuckDB, and numeric's text becomes an exact number there.

Every connection runs with the same session settings (UTC, ISO dates, ...): the text of a value,
which `diff = "warehouse"` hashes, must not depend on PGTZ or on a role's or database's defaults.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb

from ..diff.encoding import _exact_in_to_json, json_text, quote_identifier, quote_literal
from ..errors import ModelFailed, WarehouseError

log = logging.getLogger("reverse_etl.warehouse")
_staged = itertools.count()
MAX_DECIMAL_PRECISION = 38  # DuckDB's DECIMAL
MAX_DIMENSIONS = 6  # of a PostgreSQL array (MAXDIM)
_DIMS = "__retl_dims_"  # the column beside array column i holding its dimensions: _DIMS + str(i)

# Session settings that change the text of values (what `diff = "warehouse"` hashes, and what
# casts to text send): the same on every connection, whatever PGTZ, the role or the database say.
SESSION_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}


class PostgresWarehouse:
    dialect = "postgres"

    def __init__(self, dsn: str, statement_timeout_seconds: float | None) -> None:
        self.dsn = dsn
        self.statement_timeout_seconds = statement_timeout_seconds
        self.bytes_read = 0  # Arrow bytes that left the warehouse (for the logs and benchmarks)
        self._streams: dict[str, str] = {}  # registered name: the query streamed under it
        self._connections: list[tuple[Any, Any]] = []  # (connection, cursor) of each stream

    def connect(self, con: Any, engine_files: Sequence[Path] = ()) -> None:
        """Check that the server answers and takes the credentials (models run there, not on
        `con`: nothing to sandbox)."""
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
        connection = self._open()
        try:
            self._streams[name], schema = _faithful(connection, _wrapped(sql))
        finally:
            connection.close()
        con.register(name, pa.RecordBatchReader.from_batches(schema, iter(())))
        return f"(SELECT {_select_list(con, schema)} FROM {name})"

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
        with self._query(sql, faithful=True) as reader:
            columns = _select_list(con, reader.schema)
            counted = pa.RecordBatchReader.from_batches(reader.schema, self._counted(reader))
            con.abort()  # a result left half-fetched (a fetchone) would block register()
            con.register(f"{name}_stream", counted)
            try:
                con.execute(f"CREATE TEMP TABLE {name} AS SELECT {columns} FROM {name}_stream")
            finally:
                con.unregister(f"{name}_stream")
        log.info("%s bytes (as Arrow) left the warehouse", f"{self.bytes_read:,}")
        return name

    @contextlib.contextmanager
    def _query(self, sql: str, faithful: bool = False) -> Iterator[Any]:
        """The record batch reader of a query (`faithful`: wrapped by _faithful()), closed with
        its connection after the block."""
        connection = self._open()
        cursor = connection.cursor()
        try:
            try:
                cursor.execute(_faithful(connection, sql)[0] if faithful else sql)
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
            connection = dbapi.connect(self.dsn)
        except dbapi.Error as exc:
            raise WarehouseError(
                f"cannot connect to the PostgreSQL warehouse: {_text(exc)}"
            ) from None
        try:
            cursor = connection.cursor()
            cursor.execute(_settings_sql(SESSION_SETTINGS))
            cursor.close()
            connection.commit()  # so that a rollback of the caller's work keeps them
            return connection
        except dbapi.Error as exc:
            connection.close()
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
        timeout = self.statement_timeout_seconds
        settings = {
            # Read-only for every statement of the session: a model cannot write, whatever it
            # says (as SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY).
            "default_transaction_read_only": "on",
            "statement_timeout": str(int(timeout * 1000) if timeout else 0),
            **SESSION_SETTINGS,
        }
        try:
            cursor = connection.cursor()
            cursor.execute(_settings_sql(settings))  # one round trip
            cursor.close()
        except dbapi.Error as exc:
            connection.close()
            raise WarehouseError(
                f"cannot set up the PostgreSQL warehouse's session: {_text(exc)}"
            ) from None
        return connection


def _faithful(connection: Any, sql: str) -> tuple[str, Any]:
    """The query wrapped so that each column arrives readable and faithful (see the module's
    docstring), and the Arrow schema it will have: planned by the server, not run."""
    cursor = connection.cursor()
    try:
        wrapped = _cast_in_postgres(sql, cursor.adbc_execute_schema(sql))
        return wrapped, cursor.adbc_execute_schema(wrapped)
    except Exception as exc:
        raise _model_error(exc) from None
    finally:
        cursor.close()


def _settings_sql(settings: dict[str, str]) -> str:
    calls = ", ".join(
        f"set_config({quote_literal(name)}, {quote_literal(value)}, false)"
        for name, value in settings.items()
    )
    return f"SELECT {calls}"


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


# -- making each column faithful ------------------------------------------------------------
#
# In PostgreSQL (_cast_in_postgres), from the column types of the model's result; then in
# DuckDB (_select_list), from the Arrow types of what arrives.

_INFINITE = ("date", "timestamp", "timestamptz")  # their ±infinity: NULL, as the wire says


def _pg_type(field: Any) -> str:
    return (field.metadata or {}).get(b"POSTGRESQL:type", b"").decode()


def _opaque(arrow_type: Any) -> str | None:
    """The PostgreSQL type the driver left in its binary format (or numeric's text), if any."""
    import pyarrow as pa

    if isinstance(arrow_type, pa.BaseExtensionType) and arrow_type.extension_name == "arrow.opaque":
        return str(arrow_type.type_name)
    return None


def _cast_in_postgres(sql: str, schema: Any) -> str:
    """`sql` wrapped in a SELECT giving each column a form the driver reads faithfully, with
    each array's dimensions beside it (NULL for 0 or 1); `sql` itself when nothing needs it.
    Columns are taken by position, so repeated names do not matter."""
    import pyarrow as pa

    select, dims, changed = [], [], False
    for i, field in enumerate(schema):
        ref = f'__retl_q."__retl_c{i}"'
        value = _pg_value(ref, field)
        changed |= value != ref
        select.append(f"{value} AS {quote_identifier(field.name)}")
        if pa.types.is_list(field.type) and not value.startswith("to_json("):
            lengths = ", ".join(f"array_length({ref}, {d})" for d in range(1, MAX_DIMENSIONS + 1))
            dims.append(
                f"CASE WHEN array_ndims({ref}) > 1 THEN array_remove(ARRAY[{lengths}], NULL) END"
                f' AS "{_DIMS}{i}"'
            )
    if not changed:
        return sql
    aliases = ", ".join(f'"__retl_c{i}"' for i in range(len(schema)))
    # No newline before the model: PostgreSQL's `LINE n` stays the sync file's. One after it:
    # a `--` comment on its last line ends there.
    return f"SELECT {', '.join(select + dims)} FROM ({sql}\n) AS __retl_q({aliases})"


def _pg_value(ref: str, field: Any) -> str:
    """The PostgreSQL expression of one column in the form the driver reads faithfully."""
    import pyarrow as pa

    kind, arrow_type = _pg_type(field), field.type
    if pa.types.is_struct(arrow_type) or kind == "record":
        return f"to_json({ref})"  # a composite type: its JSON object, as PostgreSQL writes it
    if pa.types.is_list(arrow_type):
        child = arrow_type.value_type
        if pa.types.is_struct(child) or kind == "_record":
            return f"to_json({ref})"
        flat = f"({ref})[:]"  # lower bounds 1: the driver reads no other
        element = kind.removeprefix("_")
        if element in _INFINITE:
            return f"array_replace(array_replace({flat}, 'infinity', NULL), '-infinity', NULL)"
        cast = {"money": "numeric[]", "oid": "int8[]"}.get(element)
        if cast:
            return f"CAST({flat} AS {cast})"
        if _opaque(child) not in (None, "numeric"):
            # Each element's text as PostgreSQL's output function writes it (array_out then
            # array_in: a cast of the elements to text would write inet's netmask always).
            return f"CAST(CAST({flat} AS text) AS text[])"
        return flat
    if kind in _INFINITE:
        return f"CASE WHEN isfinite({ref}) THEN {ref} END"
    if kind == "money":
        return f"CAST({ref} AS numeric)"
    if kind == "oid":
        return f"CAST({ref} AS int8)"
    if kind == "inet":
        return f"abbrev({ref})"  # its output function's text (a cast writes the netmask always)
    if _opaque(arrow_type) not in (None, "numeric"):
        return f"CAST({ref} AS text)"  # its output function's text (for these types, the same)
    return ref


def _select_list(con: Any, schema: Any) -> str:
    """DuckDB's select list reading the Arrow columns of `schema` (from _cast_in_postgres's
    query): numeric's text as an exact number, arrays nested again as JSON."""
    import pyarrow as pa

    probe = f"__retl_schema_{next(_staged)}"
    con.register(probe, pa.RecordBatchReader.from_batches(schema, iter(())))
    try:
        types = con.sql(f"SELECT * FROM {probe}").types
    finally:
        con.unregister(probe)
    names = set(schema.names)
    columns = []
    for i, (field, dtype) in enumerate(zip(schema, types, strict=True)):
        if field.name.startswith(_DIMS):
            continue
        column = quote_identifier(field.name)
        if pa.types.is_list(field.type) and f"{_DIMS}{i}" in names:
            dims = quote_identifier(f"{_DIMS}{i}")
            columns.append(f"{_nested(column, dims, field, dtype)} AS {column}")
        elif _opaque(field.type) == "numeric":
            columns.append(f"{_numeric(column, field)} AS {column}")
        else:
            columns.append(column)
    return ", ".join(columns)


def _numeric_text(expr: str) -> str:
    """numeric's text as JSON number text; NULL for NaN and ±infinity (the driver writes them
    `nan`, `inf`, `-inf`; PostgreSQL itself `NaN`, `Infinity`, `-Infinity`)."""
    specials = "'nan', 'inf', '-inf', 'infinity', '-infinity'"
    return f"CASE WHEN lower({expr}) NOT IN ({specials}) THEN {expr} END"


def _numeric(column: str, field: Any) -> str:
    """Exact: DECIMAL(p, s) when its declared precision fits DuckDB's, else its digits as JSON."""
    typmod = int((field.metadata or {}).get(b"POSTGRESQL:typmod", b"-1"))
    if typmod >= 4:
        precision, scale = (typmod - 4) >> 16, (typmod - 4) & 0xFFFF
        if precision <= MAX_DECIMAL_PRECISION:
            return f"CAST({_numeric_text(column)} AS DECIMAL({precision}, {scale}))"
    return f"CAST({_numeric_text(column)} AS JSON)"


def _nested(column: str, dims: str, field: Any, dtype: Any) -> str:
    """An array as JSON text, nested as in PostgreSQL: `dims` holds its dimensions' lengths
    when it has 2 or more (the driver hands over the elements flat, in row-major order)."""
    child = dict(dtype.children)["child"]

    def element(expr: str) -> str:
        if _opaque(field.type.value_type) == "numeric":
            return f"coalesce({_numeric_text(expr)}, 'null')"
        return json_text(expr, child, depth=1)

    elements = f"list_transform({column}, lambda __retl_e: {element('__retl_e')})"
    flat = f"'[' || array_to_string({elements}, ',') || ']'"
    if _exact_in_to_json(dtype) and _opaque(field.type.value_type) is None:
        flat = f"CAST(to_json({column}) AS VARCHAR)"  # the same text, about 3 times faster
    # Element i opens one bracket per inner dimension k it starts (i divisible by the product
    # of the lengths from k on) and closes one per dimension it ends.
    inner = f"range(2, len({dims}) + 1)"
    span = f"CAST(list_product({dims}[__retl_k:]) AS BIGINT)"
    starts = f"len(list_filter({inner}, lambda __retl_k: __retl_i % {span} = 0))"
    ends = f"len(list_filter({inner}, lambda __retl_k: (__retl_i + 1) % {span} = 0))"
    nested = (
        f"list_transform(range(len({column})), lambda __retl_i: repeat('[', {starts}) || "
        f"{element(f'{column}[__retl_i + 1]')} || repeat(']', {ends}))"
    )
    nested = f"'[' || array_to_string({nested}, ',') || ']'"
    return f"CAST(CASE WHEN {dims} IS NULL THEN {flat} ELSE {nested} END AS JSON)"
