"""The embedded DuckDB warehouse: attached read-only, so models run where the data is.

A model reads the warehouse and nothing else (docs/warehouses.md, "DuckDB"). Once the warehouse
is attached, the connection's external access is turned off and its configuration locked, so a
model can neither read a file (`read_text('/proc/self/environ')` would expose every token the
process holds), write one (COPY), attach another database, load an extension, nor turn access
back on. What stays readable: the attached databases, the directories listed in `[warehouse]
allowed_directories` (opt-in) and the files the engine itself writes and reads on the same
connection (the run's outbox: `engine_files`). Spilling to the temporary directory set when the
connection was opened still works."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from ..diff.encoding import quote_literal
from ..errors import WarehouseError

CATALOG = "__retl_warehouse"


def _path_source() -> str:
    if "REVERSE_ETL_WAREHOUSE__PATH" in os.environ:
        return "$REVERSE_ETL_WAREHOUSE__PATH"
    return "config.toml [warehouse] path"


def _list(values: Sequence[str]) -> str:
    return "[" + ", ".join(quote_literal(v) for v in values) + "]"


class DuckDBWarehouse:
    dialect = "duckdb"

    def __init__(self, path: Path, shown_as: str, allowed_directories: Sequence[Path] = ()) -> None:
        self.path = path
        self.shown_as = shown_as
        self.allowed_directories = list(allowed_directories)

    def connect(self, con: Any, engine_files: Sequence[Path] = ()) -> None:
        """Attach the warehouse read-only to `con`, then sandbox `con` (see the module's doc):
        after this, `con` reads and writes files only in `engine_files` and the allowed
        directories. Anything to attach or SET must be done before."""
        if not self.path.is_file():
            raise WarehouseError(
                f"warehouse file {self.shown_as} not found (set by {_path_source()}, "
                f"relative to the project folder)"
            )
        try:
            con.execute(f"ATTACH {quote_literal(str(self.path))} AS {CATALOG} (READ_ONLY)")
            con.execute(f"USE {CATALOG}")  # the model's unqualified names are the warehouse's
        except duckdb.Error as exc:
            raise WarehouseError(f"cannot open warehouse {self.shown_as}: {exc}") from None
        sandbox(con, [str(f) for f in engine_files], self.allowed_directories)

    def relation(self, con: Any, sql: str) -> str:
        return "(\n" + sql.strip().rstrip(";") + "\n)"

    def rewind(self, con: Any) -> None:
        """Nothing to do: the model is a query over the attached file, run by each read."""

    def close(self) -> None:
        pass

    def columns(self, con: Any, sql: str) -> list[str]:
        """The model's output columns as it names them (a subquery would rename a repeated
        name): bound and planned, not run."""
        con.sql(f"SELECT * FROM {self.relation(con, sql)} LIMIT 0")  # its errors keep lines
        return list(con.sql(sql.strip().rstrip(";")).columns)


def sandbox(con: Any, files: Sequence[str], directories: Sequence[Path]) -> None:
    """Turn `con`'s external access off for good: only `files` and `directories` (and the
    databases already attached) stay reachable, and no statement can change that back."""
    # a trailing separator: DuckDB matches directories as prefixes ('/data' would allow '/data2')
    folders = [os.path.join(str(d.resolve()), "") for d in directories]
    con.execute(f"SET allowed_paths = {_list(files)}")
    con.execute(f"SET allowed_directories = {_list(folders)}")
    con.execute("SET enable_external_access = false")
    # Nor may a model name a Python variable of the engine's (DuckDB's replacement scans).
    con.execute("SET python_enable_replacements = false")
    con.execute("SET lock_configuration = true")
