"""The warehouse protocol: make a model's result readable inside the engine's DuckDB connection.

The engine diffs in DuckDB. A warehouse either lets DuckDB read it in place (the embedded DuckDB
warehouse is attached read-only) or streams the model's result in as Arrow record batches; in
neither case does a row become a Python object.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol


class Warehouse(Protocol):
    dialect: str

    def connect(self, con: Any, engine_files: Sequence[Path] = ()) -> None:
        """Prepare `con` (a duckdb connection) to run models; WarehouseError if unreachable.
        A warehouse that runs models on `con` itself sandboxes it: afterwards `con` reaches no
        file but `engine_files` (those the engine's own later statements write and read)."""

    def relation(self, con: Any, sql: str) -> str:
        """SQL text usable in a FROM clause of `con` that yields the model's rows, after each
        rewind(). Errors: duckdb.Error, or ModelFailed, whose messages keep `LINE n:`."""

    def rewind(self, con: Any) -> None:
        """Make the relation readable (again): a streamed result is read once."""

    def close(self) -> None:
        """Release what reading the model holds (connections)."""

    def columns(self, con: Any, sql: str) -> list[str]:
        """The model's output columns, without running it."""
