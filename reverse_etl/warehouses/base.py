"""The warehouse protocol: make a model's result readable inside the engine's DuckDB connection.

The engine diffs in DuckDB. A warehouse either lets DuckDB read it in place (the embedded DuckDB
warehouse is attached read-only) or streams the model's result in as Arrow record batches; in
neither case does a row become a Python object.

`Warehouse` names every method the engine calls to read models (the run, `plan`, `validate`, a
trigger_query); `SnapshotWarehouse` adds what `diff = "warehouse"` calls on a warehouse that
holds the snapshot and runs the diff itself (docs/state.md, "The diff inside the warehouse").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection


class Warehouse(Protocol):
    dialect: str  # sqlglot's name of the warehouse's SQL dialect

    def connect(self, con: DuckDBPyConnection, engine_files: Sequence[Path] = ()) -> None:
        """Prepare `con` (a duckdb connection) to run models; WarehouseError if unreachable.
        A warehouse that runs models on `con` itself sandboxes it: afterwards `con` reaches no
        file but `engine_files` (those the engine's own later statements write and read)."""

    def relation(self, con: DuckDBPyConnection, sql: str) -> str:
        """SQL text usable in a FROM clause of `con` that yields the model's rows, after each
        rewind(). Errors: duckdb.Error, or ModelFailed, whose messages keep `LINE n:`."""

    def rewind(self, con: DuckDBPyConnection) -> None:
        """Make the relation readable (again): a streamed result is read once."""

    def close(self) -> None:
        """Release what reading the model holds (connections)."""

    def columns(self, con: DuckDBPyConnection, sql: str) -> list[str]:
        """The model's output columns, without running it."""


class SnapshotWarehouse(Warehouse, Protocol):
    """A warehouse that can hold a sync's snapshot and run its diff (`diff = "warehouse"`)."""

    def stage(self, con: DuckDBPyConnection, sql: str) -> str:
        """Run a read-only query (in the warehouse's dialect) and stage its result in `con` as
        a temporary table; the table's name. Errors as relation()'s."""

    def writer(self) -> Any:
        """A DB-API connection (ADBC's: its cursors have `adbc_ingest`) that may write, in a
        transaction: commit() or rollback(), then close(). WarehouseError if unreachable."""
