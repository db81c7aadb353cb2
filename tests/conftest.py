"""Shared fixtures: real projects in temporary folders (a real DuckDB warehouse file), a real
webhook receiver on 127.0.0.1, and the CLI run as users run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from reverse_etl.cli.commands import main
from reverse_etl.destinations.webhook.receiver import WebhookReceiver

# The destination contract suite and its fixtures, as a plugin's tests enable them.
pytest_plugins = ["reverse_etl.testing"]
# The example plugin is a package of its own: tests/test_plugin_example.py installs it and runs
# its tests in their own pytest process.
collect_ignore = ["plugin_example"]


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    return json.dumps(value)


@dataclass
class ProjectFixture:
    root: Path

    def warehouse(self, sql: str) -> None:
        """Run SQL against the project's warehouse file."""
        with duckdb.connect(str(self.root / "warehouse.duckdb")) as con:
            con.execute(sql)

    def sync(self, name: str, header: dict[str, Any], sql: str) -> Path:
        lines = [f"-- {key} = {json.dumps(value)}" for key, value in header.items()]
        path = self.root / "syncs" / f"{name}.sql"
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n".join(lines) + "\n" + textwrap.dedent(sql).strip() + "\n")
        return path

    def destination(self, name: str, text: str) -> Path:
        path = self.root / "destinations" / f"{name}.toml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(textwrap.dedent(text).strip() + "\n")
        return path

    def webhook(self, name: str, url: str, **settings: Any) -> Path:
        lines = ['type = "webhook"', f'url = "{url}"']
        lines += [f"{key} = {toml_value(value)}" for key, value in settings.items()]
        return self.destination(name, "\n".join(lines))

    def cli(self, *args: str, env: dict[str, str] | None = None) -> Outcome:
        """The CLI in this process (fast); stdout and stderr kept apart."""
        runner = CliRunner()
        result = runner.invoke(
            main, [*args, "--project", str(self.root)], env=env, catch_exceptions=False
        )
        return Outcome(result.exit_code, result.stdout, result.stderr)

    def command(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> Outcome:
        """The CLI as a real subprocess, the way users and schedulers run it."""
        proc = subprocess.run(
            [sys.executable, "-m", "reverse_etl", *args, "--project", str(self.root)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )
        return Outcome(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "reverse_etl", *args, "--project", str(self.root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )


@pytest.fixture
def project(tmp_path: Path) -> ProjectFixture:
    root = tmp_path / "project"
    (root / "syncs").mkdir(parents=True)
    (root / "destinations").mkdir()
    return ProjectFixture(root)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def users_project(
    project: ProjectFixture, receiver: WebhookReceiver
) -> Callable[..., ProjectFixture]:
    """A project with a `users` table of n rows and a sync `users` to the receiver."""

    def make(
        rows: int = 100, mode: str = "upsert", batch_size: int = 100, **destination: Any
    ) -> ProjectFixture:
        project.warehouse(f"""
            create or replace table users as
            select i as id, 'user' || i || '@example.com' as email, i % 3 as tier,
                   (i * 1.5)::decimal(10, 2) as score
            from range(1, {rows} + 1) t(i)""")
        project.webhook("hook", receiver.url, batch_size=batch_size, **destination)
        project.sync(
            "users",
            {"destination": "hook", "primary_key": "id", "mode": mode},
            "select id, email, tier, score from users",
        )
        return project

    return make


POSTGRES_DSN = os.environ.get(
    "REVERSE_ETL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)


def postgres_dsn() -> str:
    """The test PostgreSQL server's DSN. Without a server the test is skipped, saying why,
    unless REVERSE_ETL_REQUIRE_SERVICES=1 (CI), where it fails."""
    import psycopg

    try:
        psycopg.connect(POSTGRES_DSN, connect_timeout=3).close()
    except psycopg.Error as exc:
        reason = f"PostgreSQL is not reachable at {POSTGRES_DSN}: {str(exc).strip()}"
        if os.environ.get("REVERSE_ETL_REQUIRE_SERVICES") == "1":
            pytest.fail(reason + " (REVERSE_ETL_REQUIRE_SERVICES=1)")
        pytest.skip(reason + " (set REVERSE_ETL_TEST_POSTGRES to a server's DSN)")
    return POSTGRES_DSN
