"""`reverse-etl validate`: every problem of the project, each with its file and line."""

from __future__ import annotations

import re

import duckdb

from .errors import Problem, ReverseEtlError
from .project import Project, Sync
from .warehouses import open_warehouse

_DUCKDB_LINE = re.compile(r"LINE (\d+):")


def model_problem(sync: Sync, exc: Exception) -> Problem:
    """A warehouse's complaint about a model, placed on the model's line in the sync file.
    The model runs wrapped as `SELECT * FROM (\\n<sql>\\n)`, hence the offset of one line."""
    message = str(exc).strip()
    found = _DUCKDB_LINE.search(message)
    line = sync.sql_line + int(found.group(1)) - 2 if found else sync.sql_line
    first = message.split("\n")[0]
    return Problem(sync.file, max(line, sync.sql_line), f"the model fails in the warehouse: {first}")


def validate_project(project: Project) -> list[Problem]:
    problems = project.problems()
    broken = {p.file for p in problems}
    syncs = [project.sync(n) for n in project.sync_names() if f"syncs/{n}.sql" not in broken]
    if not syncs:
        return problems
    warehouse = open_warehouse(project.settings.warehouse, project.root)
    con = duckdb.connect(":memory:")
    try:
        warehouse.connect(con)
    except ReverseEtlError as exc:
        return problems + [Problem("config.toml", None, str(exc))]
    try:
        for sync in syncs:
            try:
                columns = con.sql(f"SELECT * FROM {warehouse.relation(con, sync.model.sql)}").columns
            except duckdb.Error as exc:
                problems.append(model_problem(sync, exc))
                continue
            for key in sync.primary_key:
                if key not in columns:
                    problems.append(Problem(
                        sync.file, sync.header_line("primary_key"),
                        f"primary key column {key!r} is not among the model's columns "
                        f"({', '.join(columns)})"))
    finally:
        con.close()
    return problems
