"""The Python API orchestrators call: reverse_etl.run_sync() and plan_sync() return what
`run --json` and `plan --json` print, and raise typed errors where the CLI exits with 2."""

from __future__ import annotations

import pytest

import reverse_etl
from reverse_etl.state.locks import SyncLock


def test_run_sync_returns_the_fields_run_json_prints(users_project, receiver):
    project = users_project(rows=30)
    plan = reverse_etl.plan_sync(project.root, "users")
    assert plan == {**plan, "sync": "users", "added": 30, "changed": 0, "removed": 0}
    result = reverse_etl.run_sync(str(project.root), "users")
    assert result["status"] == "success" and result["delivered"] == 30, result
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
    receiver.intercept = None
    assert reverse_etl.run_sync(project.root, "users")["delivered"] == 5

    project.sync("broken", {"destination": "hook", "primary_key": "id"}, "select id from nowhere")
    with pytest.raises(reverse_etl.WarehouseError, match="nowhere") as failed:
        reverse_etl.run_sync(project.root, "broken")
    assert failed.value.result["sync"] == "broken"
