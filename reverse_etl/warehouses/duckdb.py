"""The embedded DuckDB warehouse: attached read-only, so models run where the data is."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import duckdb

from ..encoding import quote_literal
from ..errors import WarehouseError

CATALOG = "__retl_warehouse"


def _path_source() -> str:
    if "REVERSE_ETL_WAREHOUSE__PATH" in os.environ:
        return "$REVERSE_ETL_WAREHOUSE__PATH"
    return "config.toml [warehouse] path"


class DuckDBWarehouse:
    dialect = "duckdb"

    def __init__(self, path: Path, shown_as: str) -> None:
        self.path = path
        self.shown_as = shown_as

    def connect(self, con: Any) -> None:
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
