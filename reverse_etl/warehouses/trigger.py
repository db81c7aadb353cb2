"""A sync's trigger_query: a cheap query of the warehouse, run on the sync's schedule; the sync
runs only when its answer differs from the one saved at the sync's last complete run."""

from __future__ import annotations

import json

import duckdb

from ..errors import ModelFailed, WarehouseError
from ..project.loader import Project, Sync
from . import open_warehouse

MAX_ROWS = 100  # a trigger query answers with a row or a few: more is a mistake, compared in part


def trigger_answer(project: Project, sync: Sync) -> str:
    """The trigger query's answer now, as JSON text (every column of its first rows)."""
    assert sync.trigger_query is not None
    warehouse = open_warehouse(project.settings.warehouse, project.root)
    con = duckdb.connect(":memory:")
    try:
        warehouse.connect(con)
        try:
            relation = warehouse.relation(con, sync.trigger_query.sql)
            warehouse.rewind(con)
            rows = con.sql(f"SELECT * FROM {relation} LIMIT {MAX_ROWS}").fetchall()
        except (duckdb.Error, ModelFailed) as exc:
            first = str(exc).strip().splitlines()[0]
            raise WarehouseError(
                f"{sync.file}: trigger_query fails in the warehouse: {first}"
            ) from None
    finally:
        warehouse.close()
        con.close()
    return json.dumps(rows, default=str)
