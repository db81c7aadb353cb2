"""The one SQL statement per batch that writes to a PostgreSQL table, built for an operation
and the model's columns: the batch is ONE jsonb parameter, turned into rows of the table's own
types by jsonb_populate_record; insert and update return the positions of the records they did
not write, and `lookup` (no write) those whose key the table holds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # psycopg costs ~0.2 s to import: only a run or a check that uses it pays
    from psycopg import sql

    from .table import Table

_ORD = "_reverse_etl_ord"  # the record's position in the batch (1-based), in the statements


def statement(table: Table, operation: str, columns: tuple[str, ...]) -> sql.Composed:
    """The statement for `operation` on records with these columns (already checked against
    the table); its one parameter is the batch, a jsonb array of the records' fields."""
    from psycopg.sql import SQL, Identifier

    target = Identifier(table.schema, table.name)
    if operation in ("delete", "lookup"):
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
    if operation == "lookup":  # the records whose key the table holds (an unknown outcome)
        return SQL(
            "WITH s AS ({source}) SELECT s.{ord} FROM s "
            "WHERE EXISTS (SELECT FROM {target} AS t WHERE {on_key})"
        ).format(source=source, target=target, on_key=on_key, ord=Identifier(_ORD))
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
