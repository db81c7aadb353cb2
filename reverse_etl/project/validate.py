"""`reverse-etl validate`: every problem of the project, each with its file and line."""

from __future__ import annotations

import re
from collections.abc import Sequence

import duckdb

from ..errors import ModelFailed, Problem, ReverseEtlError
from ..warehouses import Warehouse, open_warehouse
from .loader import Project, Sync
from .model import column_name_problem
from .settings import where_set

_DUCKDB_LINE = re.compile(r"LINE (\d+):")
# The name a DuckDB Catalog/Binder error is about: `Table with name x does not exist`,
# `Referenced column "x" not found`, `Scalar Function with name x does not exist`, ...
_DUCKDB_NAME = re.compile(r'with name "?([^\s"!]+)"?|column "([^"]+)"|(?:Table|table) "([^"]+)"')
_HINTS = ("Candidate bindings:", "Did you mean", "HINT:")


def model_problem(sync: Sync, exc: Exception) -> Problem:
    """A warehouse's complaint about a model, placed on the model's line in the sync file.

    The model runs wrapped as `SELECT * FROM (\\n<sql, stripped>\\n)`, so DuckDB's `LINE n`
    is line n - 1 of the stripped SQL; without one, the line is where the name the error is
    about (a missing table, column or function) appears in the model."""
    message = str(exc).strip()
    lines = message.split("\n")
    sql = sync.model.sql
    leading = sql[: len(sql) - len(sql.lstrip())].count("\n")
    # A transpiled model's lines are not the file's: find the name the error is about instead.
    found = None if sync.model.transpiled else _DUCKDB_LINE.search(message)
    named = _DUCKDB_NAME.search(lines[0])
    if found:
        line = sync.sql_line + leading + int(found.group(1)) - 2
    elif named and (relative := sync.model.line_of(next(g for g in named.groups() if g))):
        line = sync.sql_line + relative - 1
    else:
        line = sync.sql_line
    hints = [
        h.strip()
        for h in lines[1:]
        if h.strip().startswith(_HINTS) and "pg_" not in h and "duckdb_" not in h
    ]
    text = " ".join([lines[0], *hints])
    if "disabled by configuration" in text or "configuration has been locked" in text:
        text += (
            ". A model reads the warehouse and nothing else; to let models read the files of "
            "a folder, list it in config.toml [warehouse] allowed_directories, and write the "
            "paths in the model absolute (a relative path is read from the folder reverse-etl "
            "runs in)"
        )
    return Problem(sync.file, max(line, sync.sql_line), f"the model fails in the warehouse: {text}")


def column_problem(sync: Sync, columns: Sequence[str]) -> Problem | None:
    """Columns named alike (see model.column_name_problem), on the line of the first."""
    found = column_name_problem(columns)
    if found is None:
        return None
    message, name = found
    relative = None if sync.model.transpiled else sync.model.line_of(name)
    return Problem(sync.file, sync.sql_line + (relative or 1) - 1, message)


def validate_project(project: Project) -> list[Problem]:
    """Every problem: settings, each destination, each sync, and each loadable model run
    against the warehouse (its columns, the primary key among them)."""
    syncs, problems = project.load_all()
    if project.settings_problems or not project.sync_names():
        return problems
    warehouse = open_warehouse(project.settings.warehouse, project.root)
    con = duckdb.connect(":memory:")
    try:
        try:
            warehouse.connect(con)
        except ReverseEtlError as exc:
            key = "path" if project.settings.warehouse.type == "duckdb" else "dsn"
            file, line = where_set(project.root, "warehouse", key)
            return problems + [Problem(file, line, str(exc))]
        for sync in syncs:
            problems += _warehouse_problems(con, warehouse, sync)
    finally:
        con.close()
    return problems


def _warehouse_problems(
    con: duckdb.DuckDBPyConnection, warehouse: Warehouse, sync: Sync
) -> list[Problem]:
    try:
        columns = warehouse.columns(con, sync.model.sql)
    except (duckdb.Error, ModelFailed) as exc:
        return [model_problem(sync, exc)]
    problems = []
    if (named := column_problem(sync, columns)) is not None:
        problems.append(named)
    if sync.trigger_query is not None:
        try:
            warehouse.columns(con, sync.trigger_query.sql)
        except (duckdb.Error, ModelFailed) as exc:
            problems.append(
                Problem(
                    sync.file,
                    sync.header_line("trigger_query"),
                    f"trigger_query fails in the warehouse: {str(exc).strip().splitlines()[0]}",
                )
            )
    return problems + [
        Problem(
            sync.file,
            sync.header_line("primary_key"),
            f"primary key column {key!r} is not among the model's columns ({', '.join(columns)})",
        )
        for key in sync.primary_key
        if key not in columns
    ]
