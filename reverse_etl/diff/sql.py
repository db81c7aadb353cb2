"""The SQL of the diff inside the warehouse (`diff = "warehouse"`), generated with sqlglot for the
warehouse's dialect (PostgreSQL, Snowflake, BigQuery, Redshift, Databricks, ...).

The queries are written once, below, in PostgreSQL's syntax, with the model as a placeholder;
sqlglot swaps the model's own tree in and writes the whole in the target dialect (its casts,
string escapes, MD5 as hex text). Only standard pieces are used: CAST to text, REPLACE,
COALESCE, ||, MD5, COUNT(*) OVER, LEFT JOIN, NOT EXISTS.

Each row gets, in the warehouse:
    __retl_wh_key  its primary key as text (columns joined by `|`, each escaped: `\\` and `|`
                   doubled as `\\\\` and `\\|`, NULL written `\\N`), to join with the snapshot
    __retl_hash    the MD5 (hex) of the column names and of every value, escaped the same way

The snapshot table holds, per delivered record: wh_key, the wire key (computed by the engine,
which encodes the key as the local diff does), the hash, and for mirror syncs the fields sent.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlglot
from sqlglot import exp

TEMPLATE_DIALECT = "postgres"
PLACEHOLDER = "__retl_placeholder"


def _text(column: str) -> str:
    """A column's value as escaped text, never NULL (a NULL is `\\N`, a value never is)."""
    ident = exp.to_identifier(column, quoted=True).sql(TEMPLATE_DIALECT)
    return f"COALESCE(REPLACE(REPLACE(CAST(m.{ident} AS TEXT), '\\', '\\\\'), '|', '\\|'), '\\N')"


def _joined(columns: Sequence[str]) -> str:
    return " || '|' || ".join(_text(c) for c in columns)


def _key(columns: Sequence[str], fold_case: bool = False) -> str:
    """The key as text; NULL when any key column is NULL (such a row is invalid). With
    `fold_case` (a destination comparing keys ignoring case), in lower case: the record's
    identity at the destination."""
    quoted = [exp.to_identifier(c, quoted=True).sql(TEMPLATE_DIALECT) for c in columns]
    any_null = " OR ".join(f"m.{c} IS NULL" for c in quoted)
    text = f"LOWER({_joined(columns)})" if fold_case else _joined(columns)
    return f"CASE WHEN {any_null} THEN NULL ELSE {text} END"


def _literal(text: str) -> str:
    return exp.Literal.string(text).sql(TEMPLATE_DIALECT)


# A snapshot that does not exist yet (a `plan` before the first run creates nothing): empty.
_EMPTY = """(SELECT CAST(NULL AS TEXT) AS wh_key, CAST(NULL AS TEXT) AS key,
    CAST(NULL AS TEXT) AS hash, CAST(NULL AS TEXT) AS fields WHERE 1 = 0)"""

Snapshot = tuple[str, str] | None  # (schema, table), or None: none yet


def _table(snapshot: Snapshot) -> str:
    if snapshot is None:
        return _EMPTY
    schema, table = snapshot
    return exp.table_(table, db=schema, quoted=True).sql(TEMPLATE_DIALECT)


def _hash(columns: Sequence[str]) -> str:
    """The MD5 of a row: its column names and values, in the columns' name order, so that
    reordering the model's columns changes no hash."""
    ordered = sorted(columns)
    return f"MD5({_literal(','.join(ordered))} || '|' || {_joined(ordered)})"


def _legacy_hash(columns: Sequence[str]) -> str:
    """The hash of 0.2, in the model's column order: read once, to bring a snapshot over."""
    return f"MD5({_literal(','.join(columns))} || '|' || {_joined(columns)})"


def _current(
    columns: Sequence[str], key: Sequence[str], fold_case: bool = False, legacy: bool = False
) -> str:
    """The CTEs every query starts with: the model, each row's key and hash (and with `legacy`
    its 0.2 hash), and the keys more than one row has (grouped on the narrow key alone: cheaper
    than a window over whole rows)."""
    old = f"{_legacy_hash(columns)} AS __retl_old_hash, " if legacy else ""
    return f"""WITH __retl_model AS (SELECT * FROM {PLACEHOLDER}),
    __retl_current AS (
        SELECT {_key(key, fold_case)} AS __retl_wh_key,
            {_hash(columns)} AS __retl_hash, {old}m.*
        FROM __retl_model AS m),
    __retl_repeated AS (
        SELECT __retl_wh_key, COUNT(*) AS __retl_rows FROM __retl_current
        WHERE __retl_wh_key IS NOT NULL GROUP BY __retl_wh_key HAVING COUNT(*) > 1)"""


def rehash_sql(
    model: exp.Query, columns: Sequence[str], key: Sequence[str], snapshot: tuple[str, str],
    fold_case: bool = False,
) -> str:  # fmt: skip
    """Bring a snapshot hashed the 0.2 way (columns in the model's order) to today's hash,
    for the rows whose values are as they were; PostgreSQL's UPDATE ... FROM."""
    return _render(
        f"""UPDATE {_table(snapshot)} AS s SET hash = c.h
        FROM (SELECT {_key(key, fold_case)} AS k, {_legacy_hash(columns)} AS o,
                     {_hash(columns)} AS h
              FROM (SELECT * FROM {PLACEHOLDER}) AS m) AS c
        WHERE s.wh_key = c.k AND s.hash = c.o""",
        model,
        TEMPLATE_DIALECT,
    )


def _render(sql: str, model: exp.Query, dialect: str) -> str:
    tree = sqlglot.parse_one(sql, read=TEMPLATE_DIALECT)
    for table in tree.find_all(exp.Table):
        if table.name == PLACEHOLDER:
            table.replace(exp.Subquery(this=model.copy(), alias=exp.TableAlias(this="__retl_m")))
    return tree.sql(dialect=dialect, pretty=True)


def _quoted(column: str) -> str:
    return exp.to_identifier(column, quoted=True).sql(TEMPLATE_DIALECT)


def diff_sql(
    model: exp.Query, columns: Sequence[str], key: Sequence[str], snapshot: Snapshot,
    dialect: str, send: Sequence[str], fold_case: bool = False, legacy: bool = False,
) -> str:  # fmt: skip
    """One query, one pass over the model: the rows to send (`send`: which of added, changed,
    unchanged), then one row per status with its count in __retl_count (invalid, added, changed,
    unchanged, and removed: delivered keys no longer in the model). Each row has __retl_kind
    ('row' or 'count'), __retl_count, __retl_status, __retl_wh_key, __retl_hash and every model
    column (NULL in the counts). With `send` empty: the counts alone (a plan)."""
    table = _table(snapshot)
    # a snapshot of 0.2's hash: a row as it was is unchanged (rehash_sql then rewrites it)
    legacy_too = " AND s.hash <> v.__retl_old_hash" if legacy else ""
    model_columns = ", ".join(f"st.{_quoted(c)}" for c in columns)
    nulls = ", ".join(f"NULL AS {_quoted(c)}" for c in columns)
    rows = (
        f"""SELECT 'row' AS __retl_kind, 1 AS __retl_count, st.__retl_status,
            st.__retl_wh_key, st.__retl_hash, {model_columns}
        FROM __retl_status AS st
        WHERE st.__retl_status IN ({", ".join(_literal(s) for s in send)})
        UNION ALL """
        if send
        else ""
    )
    return _render(
        f"""{_current(columns, key, fold_case, legacy)},
        __retl_status AS (
            SELECT CASE WHEN v.__retl_wh_key IS NULL OR r.__retl_wh_key IS NOT NULL THEN 'invalid'
                        WHEN s.wh_key IS NULL THEN 'added'
                        WHEN s.hash <> v.__retl_hash{legacy_too} THEN 'changed'
                        ELSE 'unchanged' END AS __retl_status, v.*
            FROM __retl_current AS v
            LEFT JOIN __retl_repeated AS r ON r.__retl_wh_key = v.__retl_wh_key
            LEFT JOIN {table} AS s ON s.wh_key = v.__retl_wh_key)
        {rows}SELECT 'count' AS __retl_kind, COUNT(*) AS __retl_count, __retl_status,
            NULL AS __retl_wh_key, NULL AS __retl_hash, {nulls}
        FROM __retl_status GROUP BY __retl_status
        UNION ALL SELECT 'count', COUNT(*), 'removed', NULL, NULL, {nulls}
        FROM {table} AS gone WHERE NOT EXISTS (
            SELECT 1 FROM __retl_current AS c WHERE c.__retl_wh_key = gone.wh_key)""",
        model,
        dialect,
    )


def removed_sql(
    model: exp.Query, key: Sequence[str], snapshot: Snapshot, dialect: str, fold_case: bool = False
) -> str:
    """Delivered records whose key left the model: wh_key, key, hash, fields."""
    table = _table(snapshot)
    return _render(
        f"""WITH __retl_model AS (SELECT * FROM {PLACEHOLDER}),
        __retl_keys AS (SELECT {_key(key, fold_case)} AS __retl_wh_key FROM __retl_model AS m)
        SELECT r.wh_key, r.key, r.hash, r.fields FROM {table} AS r
        WHERE NOT EXISTS (SELECT 1 FROM __retl_keys AS c WHERE c.__retl_wh_key = r.wh_key)""",
        model,
        dialect,
    )


def invalid_sql(
    model: exp.Query, columns: Sequence[str], key: Sequence[str], dialect: str,
    fold_case: bool = False,
) -> str:  # fmt: skip
    """Rows whose key is NULL or repeated, with __retl_rows (how many rows share the key)."""
    return _render(
        f"""{_current(columns, key, fold_case)}
        SELECT r.__retl_rows, c.* FROM __retl_current AS c
        LEFT JOIN __retl_repeated AS r ON r.__retl_wh_key = c.__retl_wh_key
        WHERE c.__retl_wh_key IS NULL OR r.__retl_wh_key IS NOT NULL""",
        model,
        dialect,
    )


def snapshot_ddl(schema: str, table: str, dialect: str) -> list[str]:
    """Create the snapshot's schema and table when missing."""
    quoted = exp.to_identifier(schema, quoted=True).sql(TEMPLATE_DIALECT)
    statements = [
        f"CREATE SCHEMA IF NOT EXISTS {quoted}",
        f"""CREATE TABLE IF NOT EXISTS {_table((schema, table))} (
            wh_key TEXT PRIMARY KEY, key TEXT NOT NULL, hash TEXT NOT NULL, fields TEXT)""",
    ]
    return [sqlglot.transpile(s, read=TEMPLATE_DIALECT, write=dialect)[0] for s in statements]
