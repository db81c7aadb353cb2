"""The target PostgreSQL table as its catalog describes it: its columns (and which are bytea,
generated or identity), the unique key rows are matched on, and the connected user's
privileges on it; and whether a model's columns can be written to it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...errors import DestinationError
from .statements import statement

if TYPE_CHECKING:  # psycopg costs ~0.2 s to import: only a run or a check that uses it pays
    import psycopg
    from psycopg import sql

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
            cached = self.statements[(operation, columns)] = statement(self, operation, columns)
        return cached

    def _check_columns(self, operation: str, columns: Sequence[str]) -> None:
        missing_key = [c for c in self.key if c not in columns]
        if missing_key:
            raise DestinationError(
                f"the key of {self.qualified} ({', '.join(self.key)}) must be among the model's "
                f"columns ({', '.join(columns)}): add {', '.join(missing_key)} to the model, or "
                "set key_columns to a unique key the model has"
            )
        if operation in ("delete", "lookup"):  # only the key is read
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


async def describe_table(
    conn: psycopg.AsyncConnection[Any],
    name: str,
    origin: str,
    key_columns: list[str] | None,
) -> Table:
    """The table `name` (from `origin`, for messages) and its key: `key_columns`, else its
    primary key, else its only unique constraint."""
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
    key = _key(qualified, columns, uniques, key_columns)
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


async def privileges(
    conn: psycopg.AsyncConnection[Any], table: Table
) -> tuple[bool, bool, bool, bool]:
    """Whether the connected user may insert, update, delete, and read the key columns."""
    cursor = await conn.execute(_PRIVILEGES, {"oid": table.oid, "key": list(table.key)})
    row = await cursor.fetchone()
    assert row is not None
    may_insert, may_update, may_delete, can_read_key = row
    return may_insert, may_update, may_delete, can_read_key


def _key(
    qualified: str,
    columns: dict[str, str],
    uniques: list[tuple[bool, tuple[str, ...]]],
    wanted: list[str] | None,
) -> tuple[str, ...]:
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


def _quote(name: str) -> str:
    """An identifier as PostgreSQL prints it: bare when that reads back the same."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'
