"""SQL that DuckDB evaluates to encode rows for the wire (docs/wire-format.md).

`json_text(expr, type)` is an expression giving the JSON text of one value, never NULL:
numbers as JSON numbers (decimals exact: their text, never a float), dates `YYYY-MM-DD`,
timestamps ISO 8601 (`+00:00` for time-zone-aware ones; the connection runs in UTC), lists and
structs as arrays and objects, UUIDs and intervals as strings, binary as base64, NaN and
infinities as null. The row encoders below build on it, so no value passes through Python.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

_INTEGERS = {
    "tinyint",
    "smallint",
    "integer",
    "bigint",
    "hugeint",
    "utinyint",
    "usmallint",
    "uinteger",
    "ubigint",
    "uhugeint",
    "varint",
    "bignum",
}
# Types whose plain text is their JSON (a key of such a type needs no quotes in `fields`).
BARE_JSON = _INTEGERS | {"decimal", "boolean"}
_TIMESTAMPS = {"timestamp", "timestamp_s", "timestamp_ms", "timestamp_ns"}


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _string(expr: str) -> str:
    return f"CAST(to_json(CAST({expr} AS VARCHAR)) AS VARCHAR)"


def scalar_text(expr: str, dtype: Any) -> str:
    """A value as plain text (a string key): timestamps ISO 8601, binary base64, others cast."""
    kind = dtype.id
    if kind in _TIMESTAMPS:
        return f"replace(CAST({expr} AS VARCHAR), ' ', 'T')"
    if kind == "timestamp with time zone":
        return f"replace(CAST(CAST({expr} AS TIMESTAMP) AS VARCHAR), ' ', 'T') || '+00:00'"
    if kind == "blob":
        return f"to_base64({expr})"
    return f"CAST({expr} AS VARCHAR)"


def json_text(expr: str, dtype: Any, depth: int = 0) -> str:
    return f"coalesce({_json_text(expr, dtype, depth)}, 'null')"


def _json_text(expr: str, dtype: Any, depth: int) -> str:
    kind = dtype.id
    if str(dtype) == "JSON":
        return f"CAST({expr} AS VARCHAR)"
    if kind in _INTEGERS or kind == "decimal":
        return f"CAST({expr} AS VARCHAR)"
    if kind in ("float", "double"):
        return f"CASE WHEN isfinite({expr}) THEN CAST({expr} AS VARCHAR) END"
    if kind == "boolean":
        return f"CASE WHEN {expr} THEN 'true' WHEN NOT {expr} THEN 'false' END"
    if kind in ("list", "array"):
        child = dict(dtype.children)["child"]
        var = f"e{depth}"
        inner = json_text(var, child, depth + 1)
        return f"'[' || array_to_string(list_transform({expr}, lambda {var}: {inner}), ',') || ']'"
    if kind == "struct":
        parts = [
            f"{quote_literal(json.dumps(name) + ':')} || "
            f"{json_text(f'struct_extract({expr}, {quote_literal(name)})', child, depth)}"
            for name, child in dtype.children
        ]
        body = " || ',' || ".join(parts) if parts else "''"
        return f"CASE WHEN {expr} IS NOT NULL THEN '{{' || {body} || '}}' END"
    if kind == "map":
        children = dict(dtype.children)
        var = f"e{depth}"
        key = _string(scalar_text(f"{var}.key", children["key"]))
        value = json_text(f"{var}.value", children["value"], depth + 1)
        pairs = f"list_transform(map_entries({expr}), lambda {var}: {key} || ':' || {value})"
        return f"'{{' || array_to_string({pairs}, ',') || '}}'"
    return _string(scalar_text(expr, dtype))


# Types whose DuckDB to_json() text is already the wire format's: encoded in one call, which
# is about twice as fast as building their text piece by piece. Decimals (through a double),
# floats (NaN), timestamps (a space, not a T), blobs, JSON (re-parsed) and the rest are not.
_TO_JSON_EXACT = _INTEGERS - {"varint", "bignum"} | {"varchar", "boolean", "date", "uuid"}


def _exact_in_to_json(dtype: Any) -> bool:
    kind = dtype.id
    if str(dtype) == "JSON":
        return False
    if kind in ("list", "array"):
        return _exact_in_to_json(dict(dtype.children)["child"])
    if kind == "struct":
        return all(_exact_in_to_json(child) for _, child in dtype.children)
    return kind in _TO_JSON_EXACT


def fields_json(columns: Sequence[str], types: Sequence[Any], table: str = "") -> str:
    """An expression giving the JSON object of a row's columns (the wire format's `fields`)."""
    prefix = f"{table}." if table else ""
    exact = [(n, t) for n, t in zip(columns, types, strict=True) if _exact_in_to_json(t)]
    other = [(n, t) for n, t in zip(columns, types, strict=True) if not _exact_in_to_json(t)]
    parts = [
        quote_literal(json.dumps(name) + ":")
        + " || "
        + json_text(prefix + quote_identifier(name), t)
        for name, t in other
    ]
    if not exact:
        return "'{' || " + " || ',' || ".join(parts) + " || '}'" if parts else "'{}'"
    packed = ", ".join(
        f"{quote_identifier(name)} := {prefix}{quote_identifier(name)}" for name, _ in exact
    )
    head = f"CAST(to_json(struct_pack({packed})) AS VARCHAR)"
    if not parts:
        return head
    # `{"a":1,"b":2}` + the others: drop its closing brace, add theirs.
    return f"left({head}, -1) || ',' || " + " || ',' || ".join(parts) + " || '}'"


def key_text(key_columns: Sequence[str], types: Sequence[Any]) -> str:
    """The wire key: the value as text for one column, the JSON array of the values for several.
    NULL when any key column is NULL."""
    refs = [quote_identifier(c) for c in key_columns]
    if len(refs) == 1:
        return scalar_text(refs[0], types[0])
    array = " || ',' || ".join(json_text(r, t) for r, t in zip(refs, types, strict=True))
    any_null = " OR ".join(f"{r} IS NULL" for r in refs)
    return f"CASE WHEN {any_null} THEN NULL ELSE '[' || {array} || ']' END"


def _type_class(dtype: Any) -> str:
    """What of a column's type shapes its wire text: integers of any width are written alike,
    and so are decimals of one scale (12.50 as DECIMAL(14,2) or (18,2)); the rest as named."""
    kind = dtype.id
    if kind in _INTEGERS:
        return "integer"
    if kind == "decimal":
        return f"decimal scale {dict(dtype.children)['scale']}"
    if kind in ("float", "double"):
        return "float"
    return str(dtype)


def _hashed_value(column: str, dtype: Any) -> str:
    """What the row hash reads of a column. DuckDB's hash() takes an empty list for NULL, a
    struct of NULLs for a NULL struct and `[[], [1]]` for `[NULL, [1]]`, where the wire format
    does not: nested values are hashed as the JSON text they are sent as."""
    ref = quote_identifier(column)
    if dtype.id not in ("list", "array", "struct", "map"):
        return ref
    if _exact_in_to_json(dtype):
        return f"CAST(to_json({ref}) AS VARCHAR)"
    return json_text(ref, dtype)


def row_hash(columns: Sequence[str], types: Sequence[Any]) -> str:
    """A 64-bit hash of what a row sends: its values and, salted in, its column names and the
    type classes that shape their text, so a renamed column or a number turned text counts as
    a change. Columns are taken in name order and widened types hash alike: reordering the
    model's columns, or widening DECIMAL(14,2) to (18,2), changes nothing that is sent."""
    ordered = sorted(zip(columns, types, strict=True), key=lambda pair: pair[0])
    refs = ", ".join(_hashed_value(name, dtype) for name, dtype in ordered)
    salt = ";".join(f"{name}:{_type_class(dtype)}" for name, dtype in ordered)
    return f"xor(hash({refs}), hash({quote_literal(salt)}))"
