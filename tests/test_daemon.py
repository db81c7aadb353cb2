"""`reverse-etl daemon` started as a real subprocess on a temporary project: schedules, `after`
chains, trigger queries, the status server, reloading, the CLI beside it, and stopping."""

from __future__ import annotations

import signal
import socket
import threading
import time
from datetime import datetime

import duckdb
import pytest
from conftest import ProjectFixture
from daemon import DEADLINE, DaemonProcess

from reverse_etl.destinations.webhook.receiver import WebhookReceiver

USERS = """
    create or replace table users as
    select i as id, 'user' || i || '@example.com' as email from range(1, {rows} + 1) t(i)"""


@pytest.fixture
def base(project: ProjectFixture, receiver: WebhookReceiver) -> ProjectFixture:
    project.warehouse(USERS.format(rows=5))
    project.webhook("hook", receiver.url)
    return project


def write_warehouse(project: ProjectFixture, sql: str, timeout: float = DEADLINE) -> None:
    """Write the warehouse while the daemon may be reading it: DuckDB lets one process write a
    file that no other process has open, so wait for a moment between the daemon's reads."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            project.warehouse(sql)
            return
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def spans(runs: list[dict]) -> list[tuple[datetime, datetime]]:
    return sorted(
        (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
        for r in runs
        if r["finished_at"]
    )


def test_a_sync_every_second_runs_on_schedule_and_never_overlaps(base, receiver):
    # Each run sends one request that takes 1.1 s to answer: longer than the interval, so
    # ticks arrive while the sync runs; they must wait (one run after) and never overlap.
    receiver.delay = 1.1
    base.sync(
        "ticks",
        {"destination": "hook", "primary_key": "id", "schedule": "every 1s"},
        "select id, email, now()::varchar as seen from users where id = 1",
    )
    with DaemonProcess(base.root) as daemon:
        [first] = daemon.wait_for(lambda e: e.get("event") == "run_started")
        daemon.finished("ticks", count=3)
        runs = base.command("runs", "ticks", "--json")  # another process, while it runs
        assert runs.exit_code == 0, runs.stderr
        history = runs.json_lines()
        assert len([r for r in history if r["status"] == "success"]) >= 3, history
        assert all(r["delivered"] == 1 for r in history if r["status"] == "success")
        assert daemon.named("deferred", "ticks"), "a tick during a run must say it waits"
    periods = spans(history)
    for (_, finished), (started, _) in zip(periods, periods[1:], strict=False):
        assert started >= finished, periods
    assert receiver.max_in_flight == 1
    assert first["why"] == "schedule"


def test_a_run_asked_for_during_a_run_starts_when_that_run_finishes(base, receiver):
    """A request for a run while the sync runs is kept, and runs once the run finishes: proved
    by the order of events, with no schedule that could start the second run instead (the
    contacts sync runs only after accounts, and accounts runs only by hand)."""
    hook = {"destination": "hook", "primary_key": "id"}
    base.sync("accounts", hook, "select id from users")  # no schedule: run by hand
    base.sync("contacts", {**hook, "after": ["accounts"]}, "select id, email from users")
    release = threading.Event()

    def hold_the_first_run_of_contacts(body, headers):
        if body["sync"] == "contacts" and not release.is_set():
            release.wait(DEADLINE)  # answered once the second request for a run was made
        return None

    receiver.intercept = hold_the_first_run_of_contacts
    try:
        with DaemonProcess(base.root) as daemon:
            assert base.command("run", "accounts").exit_code == 0
            daemon.wait_for(lambda e: e.get("event") == "run_started" and e["sync"] == "contacts")
            assert base.command("run", "accounts").exit_code == 0  # while contacts runs
            [deferred] = daemon.wait_for(lambda e: e.get("event") == "deferred")
            release.set()
            first, second = daemon.finished("contacts", count=2)
            events = [e for e in daemon.events if e.get("sync") == "contacts"]
    finally:
        release.set()
    assert deferred["why"] == "after accounts", deferred
    order = [e["event"] for e in events if e["event"] in ("run_started", "run_finished")]
    assert order == ["run_started", "run_finished", "run_started", "run_finished"], order
    assert events.index(deferred) < events.index(first)  # asked for while the first ran
    assert first["status"] == second["status"] == "success" and second["why"] == "after accounts"
    assert receiver.max_in_flight == 1


def test_after_chains_and_fan_in_run_in_order(base, receiver):
    hook = {"destination": "hook", "primary_key": "id"}
    base.sync("accounts", {**hook, "schedule": "every 1s"}, "select id from users")
    base.sync("contacts", {**hook, "after": ["accounts"]}, "select id, email from users")
    base.sync("deals", {**hook, "after": ["accounts", "contacts"]}, "select id from users")
    with DaemonProcess(base.root) as daemon:
        daemon.finished("deals", count=2)
        order = [e["sync"] for e in daemon.named("run_started")][:6]
        finished = {e["sync"]: e for e in daemon.named("run_finished")}
    assert order == ["accounts", "contacts", "deals"] * 2, order
    assert all(e["status"] == "success" for e in finished.values())
    assert [e["why"] for e in daemon.named("run_started", "deals")][:2] == ["after contacts"] * 2


def test_a_trigger_query_sync_runs_only_after_the_probed_table_changes(base, receiver):
    base.sync(
        "probed",
        {
            "destination": "hook",
            "primary_key": "id",
            "schedule": "every 1s",
            "trigger_query": "select count(*), max(id) from users",
        },
        "select id, email from users",
    )
    with DaemonProcess(base.root) as daemon:
        [run] = daemon.finished("probed")
        assert run["delivered"] == 5
        daemon.wait_for(lambda e: e.get("reason") == "unchanged", count=3)
        assert len(daemon.named("run_finished")) == 1  # three ticks, the probe unchanged
        write_warehouse(base, "insert into users values (6, 'six@example.com')")
        _, second = daemon.finished("probed", count=2)
        assert second["delivered"] == 1 and second["added"] == 1, second
        skipped = len(daemon.named("skipped"))
        daemon.wait_for(lambda e: e.get("reason") == "unchanged", count=skipped + 1)
    assert sorted(receiver.data) == [str(i) for i in range(1, 7)]
    assert set(receiver.received.values()) == {1}


def test_the_status_server_answers_healthz_syncs_and_metrics(base, receiver):
    base.webhook("limited", receiver.url, requests_per_second=50, batch_size=2)
    base.sync(
        "users",
        {"destination": "limited", "primary_key": "id", "schedule": "every 1h"},
        "select id, email from users",
    )
    base.sync("manual", {"destination": "hook", "primary_key": "id"}, "select id from users")
    with DaemonProcess(base.root) as daemon:
        daemon.finished("users")
        health = daemon.get("/healthz")
        syncs = daemon.get("/syncs")
        metrics = daemon.get("/metrics")
        missing = daemon.get("/nothing")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["syncs_scheduled"] == 1
    listed = {s["sync"]: s for s in syncs.json()["syncs"]}
    users = listed["users"]
    assert users["schedule"] == "every 1h" and users["state"] == "idle"
    next_run = datetime.fromisoformat(users["next_run"])
    assert 3500 < (next_run - datetime.now(next_run.tzinfo)).total_seconds() <= 3600
    assert users["last_run"]["status"] == "success" and users["last_run"]["delivered"] == 5
    assert listed["manual"]["schedule"] is None and listed["manual"]["next_run"] is None
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'reverse_etl_runs_total{status="success",sync="users"} 1.0' in text, text
    assert 'reverse_etl_records_total{outcome="delivered",sync="users"} 5.0' in text
    assert 'reverse_etl_run_duration_seconds_count{sync="users"} 1.0' in text
    assert 'reverse_etl_sync_running{sync="users"} 0.0' in text
    assert 'reverse_etl_rate_limit_wait_seconds_total{destination="limited"}' in text
    assert 'reverse_etl_rate_limited_responses_total{destination="limited"} 0.0' in text
    assert "reverse_etl_project_problems 0.0" in text
    assert missing.status_code == 404 and "/metrics" in missing.json()["pages"]


def test_sigterm_in_a_slow_run_exits_in_time_and_the_next_run_loses_nothing(base, receiver):
    base.warehouse(USERS.format(rows=60))
    receiver.delay = 0.4  # 12 requests of 5, one at a time
    base.webhook("slow_hook", receiver.url, batch_size=5, max_concurrency=1, timeout_seconds=120)
    base.sync(
        "slow",
        {"destination": "slow_hook", "primary_key": "id", "schedule": "every 1h"},
        "select id, email from users",
    )
    base.sync("other", {"destination": "hook", "primary_key": "id"}, "select id from users")
    env = {"REVERSE_ETL_DAEMON__SHUTDOWN_TIMEOUT_SECONDS": "10"}
    release = threading.Event()

    def hold_the_third(body, headers):  # the run is mid-way however slow the commands are
        if len(receiver.requests) >= 2:
            release.wait(DEADLINE)
        return None

    receiver.intercept = hold_the_third
    try:
        with DaemonProcess(base.root, env) as daemon:
            daemon.wait_for(lambda e: e.get("event") == "run_started")
            while not (len(receiver.arrivals) == 3 and receiver.in_flight == 1):  # the third
                time.sleep(0.05)
            refused = base.command("run", "slow")  # the daemon is running it
            assert refused.exit_code == 2
            running = f"already running (the reverse-etl daemon, pid {daemon.proc.pid})"
            assert running in refused.stderr
            assert base.command("plan", "other").exit_code == 0  # a sync it is not running
            assert base.command("rejected", "slow").exit_code == 0
            arrived = len(receiver.arrivals)
            daemon.signal(signal.SIGTERM)
            # The run says it stops (it takes no new batch from then on); only then is the
            # request in flight answered.
            daemon.wait_for(lambda e: e.get("message", "").startswith("slow: stopping"))
            release.set()
            code = daemon.proc.wait(DEADLINE)
            [stopped] = daemon.finished("slow")
            [gone] = daemon.wait_for(lambda e: e.get("event") == "daemon_stopped")
    finally:
        release.set()
    # In time: the run stopped by itself within shutdown_timeout_seconds (exit 0, nothing
    # abandoned), finishing the request in flight and taking no new batch after the signal.
    assert code == 0 and gone["abandoned"] == [], (code, gone)
    assert len(receiver.arrivals) == arrived, len(receiver.arrivals) - arrived
    assert stopped["status"] == "error" and "SIGTERM" in stopped["error"], stopped
    assert 0 < stopped["delivered"] < 60 and stopped["failed"] == 60 - stopped["delivered"]
    first = set(receiver.data)
    receiver.delay, receiver.intercept = 0, None
    again = base.command("run", "slow", "--json")
    [result] = again.json_lines()
    assert result["status"] == "success" and result["delivered"] == 60 - len(first), result
    assert sorted(receiver.data, key=int) == [str(i) for i in range(1, 61)]
    assert set(receiver.received.values()) == {1}  # nothing acknowledged was sent twice


def test_a_hung_request_does_not_stop_the_daemon_from_exiting_in_time(base, receiver):
    receiver.delay = 40  # far beyond the shutdown timeout, however slow the machine
    base.webhook("hung", receiver.url, timeout_seconds=60)
    base.sync(
        "stuck",
        {"destination": "hung", "primary_key": "id", "schedule": "every 1h"},
        "select id, email from users",
    )
    env = {"REVERSE_ETL_DAEMON__SHUTDOWN_TIMEOUT_SECONDS": "1.5"}
    with DaemonProcess(base.root, env) as daemon:
        while not receiver.in_flight:
            time.sleep(0.05)
        stopping = time.monotonic()
        daemon.signal(signal.SIGINT)
        code = daemon.proc.wait(DEADLINE)
        elapsed = time.monotonic() - stopping
        unanswered = receiver.in_flight
        [stopped] = daemon.wait_for(lambda e: e.get("event") == "daemon_stopped")
    # It waited shutdown_timeout_seconds for the run, then exited without the answer: the
    # receiver still held the request when the process was gone.
    assert code == 2 and elapsed >= 1.5 and unanswered == 1, (code, elapsed, unanswered)
    assert stopped["abandoned"] == ["stuck"]
    receiver.delay = 0
    result = base.command("run", "stuck", "--json").json_lines()[0]
    assert result["status"] == "success", result
    assert sorted(receiver.data, key=int) == [str(i) for i in range(1, 6)]


def test_changed_files_are_picked_up_without_a_restart(base, receiver):
    hook = {"destination": "hook", "primary_key": "id"}
    base.sync("first", {**hook, "schedule": "every 1s"}, "select id from users")
    with DaemonProcess(base.root) as daemon:
        daemon.finished("first")
        base.sync("added", {**hook, "schedule": "every 1s"}, "select id, email from users")
        daemon.finished("added")
        (base.root / "syncs" / "broken.sql").write_text(
            '-- destination = "hook"\n-- primary_key = \n-- schedule = "every 1s"\nselect 1\n'
        )
        [problem] = daemon.wait_for(lambda e: e.get("file") == "syncs/broken.sql")
        assert problem["line"] == 2 and problem["level"] == "error", problem
        count = len(daemon.named("run_finished", "first"))
        daemon.finished("first", count=count + 2)  # the rest keeps running
        status = daemon.get("/syncs").json()
        assert status["broken"] == ["syncs/broken.sql"]
        assert daemon.get("/healthz").json()["problems"] == 1
        (base.root / "syncs" / "added.sql").unlink()
        daemon.wait_for(lambda e: e.get("event") == "unscheduled" and e["sync"] == "added")
        daemon.signal(signal.SIGHUP)
        daemon.wait_for(lambda e: e.get("event") == "reloaded" and e["why"] == "SIGHUP")
    assert not daemon.named("run_started", "broken")


def test_secrets_never_reach_the_logs_or_the_run_history(base, receiver):
    token = "tok-3f9a1c77"

    def echo_token(body, headers):  # a vendor answering 401 with the header it got
        return 401, {}, f"invalid credentials: {headers['authorization']}".encode()

    receiver.intercept = echo_token
    base.webhook("crm", receiver.url, headers={"Authorization": "Bearer ${CRM_TOKEN}"})
    base.sync(
        "contacts",
        {"destination": "crm", "primary_key": "id", "schedule": "every 1h"},
        "select id, email from users",
    )
    with DaemonProcess(base.root, {"CRM_TOKEN": token}) as daemon:
        [run] = daemon.finished("contacts")
        status = daemon.get("/syncs").text
    assert run["status"] == "error" and "refused the credentials" in run["error"], run
    assert run["error"].endswith("invalid credentials: ***"), run  # the header's value, blanked
    history = base.command("runs", "--json").stdout
    rejected = base.command("rejected", "contacts", "--json").stdout
    for text in ("\n".join(daemon.lines), status, history, rejected):
        assert token not in text
    assert len(receiver.requests) == 1  # credentials refused: nothing more was sent


def test_max_concurrent_syncs_bounds_the_syncs_running_at_once(base, receiver):
    receiver.delay = 1.0  # each run: one request of one second
    for name in ("one", "two", "three"):
        base.sync(
            name,
            {"destination": "hook", "primary_key": "id", "schedule": "every 1h"},
            f"select id, '{name}' as source from users where id = 1",
        )
    env = {"REVERSE_ETL_SCHEDULER__MAX_CONCURRENT_SYNCS": "2"}
    with DaemonProcess(base.root, env) as daemon:
        runs = daemon.finished(count=3)
    assert {r["sync"] for r in runs} == {"one", "two", "three"}
    assert all(r["status"] == "success" for r in runs)
    assert receiver.max_in_flight == 2  # two at once, the third waited its turn


def test_the_daemon_refuses_to_start_on_a_taken_port_or_a_broken_config(base):
    base.sync("users", {"destination": "hook", "primary_key": "id", "schedule": "every 1h"},
              "select id from users")  # fmt: skip
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        outcome = base.command("daemon", env={"REVERSE_ETL_DAEMON__PORT": str(port)}, timeout=30)
    assert outcome.exit_code == 2, outcome
    assert (
        f"cannot listen on 127.0.0.1:{port}" in outcome.stderr and "[daemon] port" in outcome.stderr
    )
    (base.root / "config.toml").write_text("[daemon]\nshutdown_timeout_seconds = -1\n")
    outcome = base.command("daemon", timeout=30)
    assert outcome.exit_code == 2 and "config.toml:2" in outcome.stderr, outcome
    assert "Traceback" not in outcome.stderr


def test_a_run_from_another_process_starts_the_syncs_after_it(base, receiver):
    hook = {"destination": "hook", "primary_key": "id"}
    base.sync("accounts", hook, "select id from users")  # no schedule: run by hand
    base.sync("contacts", {**hook, "after": ["accounts"]}, "select id, email from users")
    with DaemonProcess(base.root) as daemon:
        assert base.command("run", "accounts").exit_code == 0  # e.g. an Airflow task
        [run] = daemon.finished("contacts")
        [followed] = daemon.named("finished_elsewhere", "accounts")
    assert run["status"] == "success" and run["why"] == "after accounts", run
    assert followed["pid"] != daemon.proc.pid
