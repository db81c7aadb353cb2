"""A sync's trigger_query: a cheap probe of the warehouse, run on the sync's schedule; the sync
runs only when the probe's answer differs from the one saved at its last complete run."""

from __future__ import annotations

import json

import duckdb

from ..errors import ModelFailed, WarehouseError
from ..project.loader import Project, Sync
from . import open_warehouse

MAX_ROWS = 100  # a probe answers with a row or a few: more is a mistake, compared in part


def probe_value(project: Project, sync: Sync) -> str:
    """The probe's answer now, as JSON text (every column of its first rows)."""
    assert sync.probe is not None
    warehouse = open_warehouse(project.settings.warehouse, project.root)
    con = duckdb.connect(":memory:")
    try:
        warehouse.connect(con)
        try:
            relation = warehouse.relation(con, sync.probe.sql)
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
