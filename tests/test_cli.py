"""The commands around runs: init, demo, reset, rejected, and a state file that cannot be read."""

from __future__ import annotations

import json
import subprocess
import sys


def test_init_scaffolds_a_project_that_validates_once_pointed_at_a_warehouse(tmp_path):
    from click.testing import CliRunner

    from reverse_etl.cli.commands import main

    target = tmp_path / "new"
    result = CliRunner().invoke(main, ["init", str(target)])
    assert result.exit_code == 0
    assert (target / "syncs" / "example.sql").is_file()
    assert (target / "destinations" / "example.toml").is_file()
    import duckdb

    duckdb.connect(str(target / "warehouse.duckdb")).close()
    env = {"EXAMPLE_WEBHOOK_URL": "http://127.0.0.1:1/x", "EXAMPLE_TOKEN": None}
    check = CliRunner().invoke(main, ["validate", "--project", str(target), "--json"], env=env)
    unset = json.loads(check.stdout)["errors"]  # the token is named, not sent as "Bearer "
    assert [(e["file"], e["line"]) for e in unset] == [("destinations/example.toml", 3)]
    assert "EXAMPLE_TOKEN is not set" in unset[0]["message"]
    env["EXAMPLE_TOKEN"] = "any-token"
    check = CliRunner().invoke(main, ["validate", "--project", str(target), "--json"], env=env)
    assert json.loads(check.stdout) == {"ok": True, "errors": []}


def test_demo_runs_twice_and_the_second_run_sends_only_changes(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "reverse_etl", "demo", "--json", "--project", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    runs = [json.loads(line) for line in proc.stdout.splitlines()]
    first = {r["sync"]: r for r in runs if r["round"] == 1}
    second = {r["sync"]: r for r in runs if r["round"] == 2}
    assert first["active_users"]["delivered"] == first["active_users"]["rows"] == 900
    assert second["active_users"]["delivered"] == 5  # 3 changed + 2 added (upsert: no deletes)
    assert second["active_users"]["unchanged"] == 896
    assert second["accounts"]["delivered"] == second["accounts"]["changed"] == 2


def test_a_corrupt_state_file_is_reported_and_kept(users_project):
    project = users_project(rows=5)
    project.cli("run", "users")
    state = project.root / ".reverse_etl" / "syncs" / "users.duckdb"
    state.write_bytes(b"this is not a duckdb file" * 100)
    outcome = project.command("run", "users")
    assert outcome.exit_code == 2
    assert str(state) in outcome.stderr and "Traceback" not in outcome.stderr
    assert state.read_bytes() == b"this is not a duckdb file" * 100, "never silently replaced"


def test_unknown_sync_names_the_known_ones(users_project):
    project = users_project(rows=1)
    for command in ("run", "plan", "rejected", "reset"):
        outcome = project.cli(command, "nope")
        assert outcome.exit_code == 2
        assert "nope" in outcome.stderr and "users" in outcome.stderr


def test_human_output_summarises_the_run(users_project):
    project = users_project(rows=3)
    outcome = project.cli("run", "users")
    assert outcome.exit_code == 0
    assert "users" in outcome.stdout and "success" in outcome.stdout
    rejected = project.cli("rejected", "users")
    assert "no record rejected, failed or invalid in its last finished run" in rejected.stdout
