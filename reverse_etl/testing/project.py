"""A reverse-etl project in a temporary folder, for destination tests: a real DuckDB warehouse
file, sync and destination files written as users write them, and the CLI run in-process."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Outcome:
    """What a command did: its exit code (0 success, 1 some records not delivered, 2 the
    command could not do its work), and its stdout and stderr, kept apart."""

    exit_code: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        """stdout of a `--json` command: one JSON object per line."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


@dataclass
class ProjectFolder:
    """A project at `root`: `syncs/`, `destinations/`, and the warehouse `warehouse.duckdb`
    (the default of config.toml, which it does not write)."""

    root: Path

    def warehouse(self, sql: str) -> None:
        """Run SQL against the project's DuckDB warehouse file (created on first use)."""
        import duckdb

        with duckdb.connect(str(self.root / "warehouse.duckdb")) as con:
            con.execute(sql)

    def people(self, rows: int) -> None:
        """The warehouse table `people (id integer, email varchar, name varchar)`: person i is
        'person<i>@example.com', named 'Person <i>', for i from 1 to `rows`."""
        self.warehouse(f"""
            create or replace table people as
            select i::integer as id, 'person' || i || '@example.com' as email,
                   'Person ' || i as name
            from range(1, {int(rows)} + 1) t(i)""")

    def sync(self, name: str, header: Mapping[str, Any], sql: str) -> Path:
        """Write `syncs/<name>.sql`: a `-- key = value` line for each header key (values as
        JSON), then the model's SQL."""
        lines = [f"-- {key} = {json.dumps(value)}" for key, value in header.items()]
        path = self.root / "syncs" / f"{name}.sql"
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n".join(lines) + "\n" + textwrap.dedent(sql).strip() + "\n")
        return path

    def destination(self, name: str, values: Mapping[str, Any]) -> Path:
        """Write `destinations/<name>.toml` with these keys (a dict is an inline table; a
        None value leaves its key out)."""
        path = self.root / "destinations" / f"{name}.toml"
        path.parent.mkdir(exist_ok=True)
        text = "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items() if v is not None)
        path.write_text(text)
        return path

    def cli(self, *args: str) -> Outcome:
        """`reverse-etl ARGS --project ROOT`, run in this process (as fast as a function call;
        an installed plugin's adapter is found as the CLI finds it)."""
        from click.testing import CliRunner

        from ..cli.commands import main

        result = CliRunner().invoke(
            main, [*args, "--project", str(self.root)], catch_exceptions=False
        )
        return Outcome(result.exit_code, result.stdout, result.stderr)


def new_project(root: Path) -> ProjectFolder:
    """An empty project at `root` (created)."""
    (root / "syncs").mkdir(parents=True)
    (root / "destinations").mkdir()
    return ProjectFolder(root)


def toml_value(value: Any) -> str:
    """A TOML value: JSON's spelling of strings, numbers and booleans is TOML's; a mapping
    becomes an inline table, a list an array."""
    if isinstance(value, Mapping):
        inner = ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)
