"""The Python API in real hosts (docs/python-api.md): run_sync from a
thread whose event loop is running (a Prefect async flow, Jupyter); a host process that lives on
after handling a SIGTERM; a killed run whose pid is reused (pid 1 in a container); `reset` of a
`diff = "warehouse"` sync whose file is broken."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

from test_crash_and_concurrency import wait_for
from test_postgres_warehouse import pg  # noqa: F401 (the fixture)
from test_warehouse_diff import rows_of, users_table, warehouse_sync  # noqa: F401

import reverse_etl


def test_run_sync_works_inside_a_running_event_loop(users_project, receiver):
    project = users_project(rows=30, batch_size=10)

    async def flow() -> tuple[dict, dict]:  # a Prefect async flow, a Jupyter cell
        plan = reverse_etl.plan_sync(project.root, "users")
        return plan, reverse_etl.run_sync(project.root, "users")

    plan, result = asyncio.run(flow())
    assert plan["added"] == 30
    assert result["status"] == "success" and result["delivered"] == 30, result
    assert len(receiver.data) == 30
    state = project.root / ".reverse_etl" / "syncs"
    assert not list(state.glob("users.outbox*")) and not list(state.glob("users.acks"))
    project.warehouse("update users set email = 'new@example.com' where id = 3")
    again = asyncio.run(flow())[1]
    assert again["delivered"] == 1 and again["unchanged"] == 29, again


HOST = """
import json, signal, sys
import reverse_etl
from reverse_etl.run import pipeline as runner

# The host (a worker of an orchestrator) handles SIGTERM by stopping the runs in progress.
signal.signal(signal.SIGTERM, lambda signum, frame: runner.shutdown("the host got SIGTERM"))
outcome = {}
try:
    reverse_etl.run_sync(sys.argv[1], "users")
    outcome["first"] = "finished"
except reverse_etl.ReverseEtlError as exc:
    outcome["first"] = type(exc).__name__
    outcome["first_result"] = getattr(exc, "result", None)
try:
    outcome["second"] = reverse_etl.run_sync(sys.argv[1], "users")
except reverse_etl.ReverseEtlError as exc:
    outcome["second"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(outcome))
"""


def test_a_host_that_handled_a_sigterm_can_run_syncs_again(users_project, receiver, tmp_path):
    project = users_project(rows=200, batch_size=10, max_concurrency=1)
    receiver.delay = 0.2  # 20 requests: the SIGTERM comes mid-run
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent(HOST))
    host = subprocess.Popen(
        [sys.executable, str(script), str(project.root)], stdout=subprocess.PIPE, text=True
    )
    wait_for(lambda: len(receiver.requests) >= 2)
    host.send_signal(signal.SIGTERM)  # the rest stays slow: 3.6 s for the signal to land mid-run
    stdout, _ = host.communicate(timeout=120)
    outcome = json.loads(stdout)
    assert outcome["first"] == "Interrupted", outcome
    assert 0 < outcome["first_result"]["delivered"] < 200
    second = outcome["second"]
    assert isinstance(second, dict) and second["status"] == "success", second
    assert outcome["first_result"]["delivered"] + second["delivered"] >= 200
    assert len(receiver.data) == 200


def _runs(project) -> list[dict]:
    return project.command("runs", "--json").json_lines()


def test_a_killed_run_whose_pid_is_reused_is_not_shown_running(users_project, receiver):
    project = users_project(rows=200, batch_size=10, max_concurrency=1)
    receiver.delay = 0.2
    run = project.popen("run", "users")
    wait_for(lambda: len(receiver.requests) >= 1)
    [alive] = _runs(project)
    assert alive["status"] == "running", alive  # its lock is held: it is alive
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    receiver.delay = 0
    # Its pid now belongs to a live process (pid 1 in a container is always alive): this one.
    with sqlite3.connect(project.root / ".reverse_etl" / "history.sqlite") as db:
        db.execute("UPDATE runs SET pid = ? WHERE status = 'running'", (os.getpid(),))
    [dead] = _runs(project)
    assert dead["status"] == "error" and "ended before the run finished" in dead["error"], dead
    again = project.cli("run", "users", "--json")
    assert again.exit_code == 0, again
    statuses = [r["status"] for r in _runs(project)]
    assert statuses == ["success", "error"], statuses
    assert len(receiver.data) == 200


BROKEN_HEADER = '-- destination = "hook"\n-- primary_key = ["id"\n-- diff = "warehouse"\n'


def test_reset_of_a_broken_warehouse_sync_drops_its_table(pg, rows_of, receiver):  # noqa: F811
    project, sql = pg
    users_table(sql, 20)
    warehouse_sync(project, sql, receiver)
    assert project.cli("run", "users", "--json").exit_code == 0
    table = f"{sql.schema}.snapshot_users"
    assert rows_of(f"select to_regclass('{table}')")[0][0] is not None
    sync_file = project.root / "syncs" / "users.sql"
    sync_file.write_text(BROKEN_HEADER + "select id, email from users\n")  # a TOML error

    config = project.root / "config.toml"
    good = config.read_text()
    config.write_text(good.replace("127.0.0.1:5432", "127.0.0.1:1"))  # the warehouse is down
    refused = project.command("reset", "users")
    assert refused.exit_code == 2 and "Traceback" not in refused.stderr, refused
    assert f"could not drop its snapshot table {table}" in refused.stderr, refused.stderr
    assert "nothing was reset" in refused.stderr
    assert (project.root / ".reverse_etl" / "syncs" / "users.wh.duckdb").exists()
    assert _runs(project)  # the history is kept too

    config.write_text(good)
    reset = project.command("reset", "users")
    assert reset.exit_code == 0, reset
    assert f"dropped its snapshot table {table}" in reset.stdout, reset.stdout
    assert rows_of(f"select to_regclass('{table}')")[0][0] is None
    assert not (project.root / ".reverse_etl" / "syncs" / "users.wh.duckdb").exists()


def test_reset_of_a_broken_sync_whose_snapshot_is_local_drops_nothing(project, receiver):
    project.warehouse("create table users as select 1 as id")
    project.webhook("hook", receiver.url)
    project.sync("users", {"destination": "hook", "primary_key": "id"}, "select id from users")
    assert project.cli("run", "users").exit_code == 0
    (project.root / "syncs" / "users.sql").write_text(BROKEN_HEADER + "select id from users\n")
    reset = project.cli("reset", "users", "--json")
    assert reset.exit_code == 0, reset
    assert reset.json_lines() == [{"sync": "users", "reset": True, "dropped_table": None}]
    assert not (project.root / ".reverse_etl" / "syncs" / "users.duckdb").exists()
