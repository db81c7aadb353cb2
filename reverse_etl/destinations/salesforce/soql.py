"""SOQL for looking Salesforce records up by external ID: the value of each record's external
ID as the model typed it, the values as SOQL literals (quoted and escaped), the IN lists split
into queries short enough for a request's URL, and the answer's record Ids matched back to the
values asked for."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from urllib.parse import quote

# The URI and headers of a request may hold 16,384 bytes (Salesforce Help 000386264): a lookup
# query whose IN list would be longer is split in several.
QUERY_URL_BUDGET = 10_000


class Matches:
    """Record Ids by external ID value: text matched exactly, else regardless of case (text
    external IDs are case-insensitive unless marked case-sensitive), numbers by value."""

    def __init__(self) -> None:
        self.exact: dict[Any, list[str]] = {}
        self.folded: dict[str, list[str]] = {}

    def add(self, value: Any, record_id: str) -> None:
        self.exact.setdefault(value, []).append(record_id)
        if isinstance(value, str):
            self.folded.setdefault(value.casefold(), []).append(record_id)

    def get(self, value: Any) -> list[str] | None:
        found = self.exact.get(value)
        if found is None and isinstance(value, str):
            found = self.folded.get(value.casefold())
        return found


def key_value(key: str, fields: str, field: str) -> Any:
    """The external ID as the model typed it (a number is queried unquoted), else the key."""
    value = field_value(json.loads(fields, parse_float=Decimal), field)
    return key if value is None or isinstance(value, (dict, list)) else value


def field_value(record: dict[str, Any], field: str) -> Any:
    """A field of a record, whatever the case of its name (Salesforce answers with its own)."""
    if field in record:
        return record[field]
    lowered = field.lower()
    return next((v for k, v in record.items() if k.lower() == lowered), None)


def _literal(value: Any) -> str:
    """A SOQL literal: strings quoted and escaped ("Quoted String Escape Sequences")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal, float)):
        return str(value)
    text = str(value)
    for plain, escaped in (
        ("\\", "\\\\"),
        ("'", "\\'"),
        ("\n", "\\n"),
        ("\r", "\\r"),
        ("\t", "\\t"),
    ):
        text = text.replace(plain, escaped)
    return f"'{text}'"


def lookup_queries(sobject: str, field: str, values: list[Any]) -> list[str]:
    """SELECT Id, field FROM sobject WHERE field IN (...), split to keep each URL short."""
    head = f"SELECT Id, {field} FROM {sobject} WHERE {field} IN ("
    queries: list[str] = []
    chunk: list[str] = []
    size = len(quote(head, safe=""))
    for literal in dict.fromkeys(_literal(v) for v in values):
        cost = len(quote(literal, safe="")) + 3  # and a comma
        if chunk and size + cost > QUERY_URL_BUDGET:
            queries.append(head + ",".join(chunk) + ")")
            chunk, size = [], len(quote(head, safe=""))
        chunk.append(literal)
        size += cost
    if chunk:
        queries.append(head + ",".join(chunk) + ")")
    return queries
