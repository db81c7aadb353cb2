"""The Python API orchestrators call: reverse_etl.run_sync() and plan_sync() return what
`run --json` and `plan --json` print, typed for type checkers (RunSummary, PlanSummary), and
raise typed errors where the CLI exits with 2."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any, Literal

import pytest

import reverse_etl
from reverse_etl.state.locks import SyncLock


def conforms(value: dict[str, Any], typed: Any) -> None:
    """`value` is what the TypedDict `typed` says: its required keys, no key it does not
    declare, each value of its declared type (a Literal: one of its values)."""
    hints = typing.get_type_hints(typed)
    assert typed.__required_keys__ <= set(value) <= set(hints), set(value) ^ set(hints)
    for key, item in value.items():
        declared = hints[key]
        if typing.get_origin(declared) is Literal:
            assert item in typing.get_args(declared), (key, item)
        else:
            assert isinstance(item, declared) and not isinstance(item, bool), (key, item)


def test_run_sync_returns_the_fields_run_json_prints(users_project, receiver):
    project = users_project(rows=30)
    plan = reverse_etl.plan_sync(project.root, "users")
    assert plan == {**plan, "sync": "users", "added": 30, "changed": 0, "removed": 0}
    conforms(dict(plan), reverse_etl.PlanSummary)
    result = reverse_etl.run_sync(str(project.root), "users")
    assert result["status"] == "success" and result["delivered"] == 30, result
    conforms(dict(result), reverse_etl.RunSummary)
    assert len(receiver.data) == 30
    project.warehouse("update users set email = 'new@example.com' where id = 7")
    [cli] = project.cli("run", "users", "--json").json_lines()
    assert set(cli) == set(result)
    assert cli["delivered"] == 1 and receiver.data["7"]["email"] == "new@example.com"


def test_run_sync_raises_typed_errors(users_project, receiver):
    project = users_project(rows=5)
    with pytest.raises(reverse_etl.ProjectError) as unknown:
        reverse_etl.run_sync(project.root, "nobody")
    assert unknown.value.problems[0].file == "syncs/nobody.sql"

    held = SyncLock(project.root / ".reverse_etl", "users", "an Airflow task")
    with held, pytest.raises(reverse_etl.SyncRunningError, match="an Airflow task"):
        reverse_etl.run_sync(project.root, "users")

    receiver.intercept = lambda body, headers: (401, {}, b"bad token")
    with pytest.raises(reverse_etl.CredentialsError, match="bad token") as refused:
        reverse_etl.run_sync(project.root, "users")
    assert isinstance(refused.value, reverse_etl.DestinationError)
    assert refused.value.result["status"] == "error"
    assert refused.value.result["failed"] == 5
    conforms(refused.value.result, reverse_etl.RunSummary)  # with `error`
    receiver.intercept = None
    assert reverse_etl.run_sync(project.root, "users")["delivered"] == 5

    project.sync("broken", {"destination": "hook", "primary_key": "id"}, "select id from nowhere")
    with pytest.raises(reverse_etl.WarehouseError, match="nowhere") as failed:
        reverse_etl.run_sync(project.root, "broken")
    assert failed.value.result["sync"] == "broken"


def test_type_checkers_see_the_result_types(tmp_path: Path):
    """mypy (run where no config of ours applies) types run_sync's result as RunSummary, not
    Any: right uses pass, and a misspelt key and a status compared to a number are reported."""
    snippet = tmp_path / "orchestrate.py"
    snippet.write_text(
        textwrap.dedent("""\
            import reverse_etl

            result: reverse_etl.RunSummary = reverse_etl.run_sync("/srv/syncs", "users")
            status: reverse_etl.RunStatus = result["status"]
            plan: reverse_etl.PlanSummary = reverse_etl.plan_sync("/srv/syncs", "users")
            owed: int = result["rejected"] + result["failed"] + plan["removed"]
            seconds: float = result["duration_seconds"]
            why: str | None = result.get("reason")
            print(result["statuss"])
            print(result["status"] == 2)
            """)
    )
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--disallow-any-expr", snippet.name],
        cwd=tmp_path,  # no pyproject.toml there: mypy's defaults, not this project's config
        capture_output=True,
        text=True,
        timeout=120,
    )
    reported = re.findall(r"^orchestrate\.py:(\d+): error: .*\[([a-z-]+)\]$", checked.stdout, re.M)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    # Lines 1-8 are clean, no expression of type Any among them (--disallow-any-expr); the
    # misspelt key (whose value is then Any) and the comparison are reported.
    assert {line for line, _ in reported} == {"9", "10"}, checked.stdout
    assert ("9", "typeddict-item") in reported, checked.stdout
    assert ("10", "comparison-overlap") in reported, checked.stdout
