"""Kill a run mid-flight, run two at once: nothing lost, nothing twice but what was in flight."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_sigkill_mid_run_loses_nothing(users_project, receiver):
    batch, concurrency = 100, 4
    killed = threading.Event()

    def hold_past_12_000(body, headers):
        # However slow this process is to send the kill, the run cannot finish first.
        if receiver.records_received() >= 12_000:
            killed.wait(60)
        return None

    receiver.intercept = hold_past_12_000
    project = users_project(rows=20_000, batch_size=batch, max_concurrency=concurrency)
    proc = project.popen("run", "users")
    wait_for(lambda: receiver.records_received() >= 8_000)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    killed.set()  # the requests held are applied, answered to no one
    wait_for(lambda: receiver.in_flight == 0)
    receiver.intercept = None
    got_before_rerun = receiver.records_received()
    assert 8_000 <= got_before_rerun < 20_000, "the kill landed mid-run"

    killed = project.cli("runs", "--json").json_lines()[0]
    assert killed["status"] == "error" and "ended before the run finished" in killed["error"]

    plan = project.cli("plan", "users", "--json").json_lines()[0]
    assert plan["unchanged"] >= got_before_rerun - batch * concurrency, (
        "plan counts what a killed run had delivered"
    )
    assert plan["added"] == 20_000 - plan["unchanged"]

    rerun = project.command("run", "users", "--json")
    assert rerun.exit_code == 0, rerun.stderr
    result = rerun.json_lines()[0]
    assert result["delivered"] == 20_000 - result["unchanged"]
    assert result["unchanged"] == plan["unchanged"]
    assert result["unchanged"] >= got_before_rerun - batch * concurrency, (
        "what was acknowledged before the kill is not sent again"
    )

    assert len(receiver.data) == 20_000
    assert all(fields["email"] == f"user{key}@example.com" for key, fields in receiver.data.items())
    twice = [key for key, count in receiver.received.items() if count > 1]
    assert len(twice) <= batch * concurrency, f"{len(twice)} keys received twice"
    assert project.cli("run", "users", "--json").json_lines()[0]["delivered"] == 0


def held_after_the_first(receiver) -> threading.Event:
    """Requests after the first wait for the event: the run is still running, however slow the
    commands run beside it are."""
    release = threading.Event()

    def hold(body, headers):
        if receiver.records_received() > 0:
            release.wait(60)
        return None

    receiver.intercept = hold
    return release


def test_a_second_run_of_a_running_sync_is_refused(users_project, receiver):
    project = users_project(rows=2_000, batch_size=50, max_concurrency=1)
    release = held_after_the_first(receiver)
    first = project.popen("run", "users", "--json")
    try:
        wait_for(lambda: receiver.records_received() >= 50)
        second = project.command("run", "users", "--json")
        plan = project.command("plan", "users")
    finally:
        release.set()
    assert second.exit_code == 2
    assert "already running" in second.stderr and "Traceback" not in second.stderr
    assert second.json_lines()[0]["status"] == "error"
    assert plan.exit_code == 2 and "already running" in plan.stderr

    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert len(receiver.data) == 2_000
    assert max(receiver.received.values()) == 1, "no record was sent twice"


def test_runs_can_be_read_while_a_sync_runs(users_project, receiver):
    project = users_project(rows=4000, batch_size=50, max_concurrency=1)
    release = held_after_the_first(receiver)
    first = project.popen("run", "users")
    try:
        wait_for(lambda: receiver.records_received() >= 50)
        runs = project.command("runs", "--json")
        rejected = project.command("rejected", "users")
    finally:
        release.set()
    assert runs.exit_code == 0
    assert runs.json_lines()[0]["status"] == "running"
    assert runs.json_lines()[0]["finished_at"] is None
    assert rejected.exit_code == 0
    first.communicate(timeout=60)
    assert project.cli("runs", "--json").json_lines()[0]["status"] == "success"


def test_run_all_runs_every_sync(project, receiver):
    project.warehouse("create table a as select range as id from range(300)")
    project.webhook("hook", receiver.url, batch_size=10)
    for name in ("one", "two", "three"):
        project.sync(
            name, {"destination": "hook", "primary_key": "id", "object": name}, "select id from a"
        )
    outcome = project.cli("run", "--all", "--json")
    assert outcome.exit_code == 0
    assert sorted(r["sync"] for r in outcome.json_lines()) == ["one", "three", "two"]
    objects = Counter()
    for request in receiver.requests:
        objects[json.loads(request["raw"])["object"]] += request["records"]
    assert objects == {"one": 300, "two": 300, "three": 300}
