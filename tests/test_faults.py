"""The fault suite: storms of 429s, 5xx, timeouts and dropped connections, rejected records,
repeated SIGKILLs and a SIGTERM, against a real HTTP receiver on 127.0.0.1 (tests/faults.py).
Every test ends by comparing what the receiver holds with the model, key by key.

Every random choice is seeded: REVERSE_ETL_FAULT_SEED=<n> replays a failure (the seed is in every
assertion message)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from faults import Faults, FaultyReceiver, Request

SEED = int(os.environ.get("REVERSE_ETL_FAULT_SEED", "20261127"))

# Per request: 20% 429 (half with Retry-After 0 or 1, half without), 10% 5xx, 5% no answer
# before the client's timeout, 2% dropped connections.
STORM = Faults(throttle=0.20, error=0.10, hang=0.05, drop=0.02, hang_seconds=0.8)
BATCH, CONCURRENCY = 100, 4
STORM_DESTINATION = dict(
    batch_size=BATCH,
    max_concurrency=CONCURRENCY,
    timeout_seconds=0.5,
    max_retries=3,
    retry_backoff_seconds=0.02,
    # A configured limit, so that this storm also tests its windows (random 429s alone no
    # longer pull a learned rate down: tests/test_ratelimit.py and tests/test_timeouts.py).
    requests_per_second=200,
)
# One of each fault for sure, whatever the draws: requests number 1 to 5 (whichever they are).
SCRIPT = {1: "throttle:1", 2: "throttle:-", 3: "error", 4: "hang", 5: "drop"}
COLUMNS = ("id", "email", "tier", "version")


@pytest.fixture
def faulty() -> Iterator[FaultyReceiver]:
    with FaultyReceiver(seed=SEED) as server:
        yield server


def scripted(request: Request, body: dict[str, Any]) -> str | None:
    return SCRIPT.get(request.number)


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"seed={SEED}: timed out waiting for {what}"
        time.sleep(0.005)


# -- the model, and the receiver compared with it ------------------------------------------


def warehouse(project: Any, sql: str, *params: Any) -> None:
    with duckdb.connect(str(project.root / "warehouse.duckdb")) as con:
        con.execute(sql, list(params) if params else None)


def users(project: Any, url: str, rows: int, mode: str = "upsert", **destination: Any) -> None:
    warehouse(
        project,
        f"""create or replace table users as
            select i as id, 'user' || i || '@example.com' as email, i % 3 as tier, 0 as version
            from range(1, {rows} + 1) t(i)""",
    )
    project.webhook("hook", url, **destination)
    project.sync(
        "users",
        {"destination": "hook", "primary_key": "id", "mode": mode},
        f"select {', '.join(COLUMNS)} from users",
    )


def change(project: Any, ids: list[int]) -> None:
    """New values for these keys: the receiver must end with these, not the ones before."""
    warehouse(
        project,
        """update users set version = version + 1, email = 'v' || (version + 1) || '.' || email
           where id in (select unnest($1::bigint[]))""",
        ids,
    )


def model(root: Path) -> dict[str, dict[str, Any]]:
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute(f"select {', '.join(COLUMNS)} from users").fetchall()
    return {str(row[0]): dict(zip(COLUMNS, row, strict=True)) for row in rows}


def assert_matches_model(
    project: Any,
    receiver: FaultyReceiver,
    *,
    mirror: bool = False,
    without: frozenset[str] | set[str] = frozenset(),
) -> None:
    """Every key of the model present with its latest values; in mirror mode, nothing else."""
    expected = {k: v for k, v in model(project.root).items() if k not in without}
    missing = sorted(set(expected) - set(receiver.data), key=int)
    stale = sorted(k for k in expected if k in receiver.data and receiver.data[k] != expected[k])
    assert not missing, f"seed={SEED}: {len(missing)} keys never arrived, e.g. {missing[:5]}"
    assert not stale, (
        f"seed={SEED}: {len(stale)} keys hold old values, e.g. {stale[0]}: "
        f"{receiver.data[stale[0]]} instead of {expected[stale[0]]}"
    )
    if mirror:
        extra = sorted(set(receiver.data) - set(expected), key=int)
        assert not extra, f"seed={SEED}: {len(extra)} keys left the model but remain: {extra[:5]}"
    assert not without & set(receiver.data), f"seed={SEED}: a refused record was applied"


def run_until(
    project: Any,
    done: Callable[[int, dict[str, Any]], bool],
    between: Callable[[int], None] | None = None,
    max_runs: int = 15,
) -> list[tuple[int, dict[str, Any]]]:
    """`reverse-etl run users` (a real subprocess) until `done(exit code, result)`."""
    runs = []
    for n in range(max_runs):
        outcome = project.command("run", "users", "--json")
        assert outcome.exit_code in (0, 1), f"seed={SEED}: run {n}: {outcome.stderr}"
        [result] = outcome.json_lines()
        runs.append((outcome.exit_code, result))
        if done(outcome.exit_code, result):
            return runs
        if between:
            between(n)
    summary = [(code, r["delivered"], r["failed"]) for code, r in runs]
    pytest.fail(f"seed={SEED}: not done after {max_runs} runs: {summary}")


def history(project: Any) -> list[dict[str, Any]]:
    return project.cli("runs", "users", "--json", "--limit", "100").json_lines()


def ledger(project: Any) -> list[dict[str, Any]]:
    return project.cli("rejected", "users", "--json").json_lines()


# -- storms ----------------------------------------------------------------------------------


def test_a_storm_of_faults_loses_nothing(project, faulty):
    """10,000 changes through 429s, 5xx, timeouts and dropped connections: runs until one
    succeeds; every key arrives with its latest values, and a key arrives more than once only
    when a request carrying it went unanswered (applied, then sent again) or its values changed."""
    rng = random.Random(f"{SEED}:storm")
    users(project, faulty.url, 10_000, **STORM_DESTINATION)
    victim, phase = "4242", {"run": 0}

    def first_run_fails_one_batch(request: Request, body: dict[str, Any]) -> str | None:
        if phase["run"] == 0 and victim in request.keys:
            return "error"  # every attempt: its records fail for this run
        return scripted(request, body)

    faulty.faults, faulty.rules = STORM, [first_run_fails_one_batch]
    changed: Counter[str] = Counter()

    def between(n: int) -> None:
        phase["run"] = n + 1
        if n < 3:  # values change while the storm goes on: the latest ones must win
            ids = rng.sample(range(1, 10_001), 500)
            change(project, ids)
            changed.update(str(i) for i in ids)

    runs = run_until(project, lambda code, result: code == 0, between)

    assert_matches_model(project, faulty)
    outcomes = faulty.outcomes()
    assert {"throttle", "error", "hang", "drop", "ok"} <= set(outcomes), f"seed={SEED}: {outcomes}"
    assert {r.retry_after for r in faulty.requests if r.outcome == "throttle"} >= {"1", None}
    hung: Counter[str] = Counter(k for r in faulty.requests if r.outcome == "hang" for k in r.keys)
    resent = {k: n for k, n in faulty.received.items() if n > 1 + hung[k] + changed[k]}
    assert not resent, f"seed={SEED}: sent again after it was acknowledged: {list(resent)[:5]}"

    assert ledger(project) == [], f"seed={SEED}: nothing is left undelivered"
    recorded = history(project)
    assert [r["status"] for r in recorded] == ["success"] + ["partial"] * (len(runs) - 1)
    assert len(runs) >= 2 and all(r["failed"] > 0 for r in recorded[1:]), f"seed={SEED}"
    assert recorded[-1]["delivered"] + recorded[-1]["failed"] == 10_000
    print(f"seed={SEED}: {len(runs)} runs, {len(faulty.requests)} requests, {outcomes}")


def test_rejected_records_in_a_storm_are_listed_and_the_rest_arrives(project, faulty):
    """Per-record rejections (a 2xx `errors` body) and one record that makes the destination
    refuse its whole batch with 422, in the same storm: the bad records end in `rejected` with
    the receiver's text; every other record arrives."""
    users(project, faulty.url, 10_000, **STORM_DESTINATION)
    faulty.reject = {"17": "invalid email", "5003": "plan unknown", "9999": "duplicate contact"}
    faulty.poison = {"4321": "tier 0 is out of range"}
    faulty.faults, faulty.rules = STORM, [scripted]
    bad = set(faulty.reject) | set(faulty.poison)

    runs = run_until(project, lambda code, result: result["failed"] == 0)

    code, result = runs[-1]
    assert (code, result["rejected"]) == (1, len(bad)), f"seed={SEED}: {result}"
    assert_matches_model(project, faulty, without=bad)
    listed = {entry["key"]: entry for entry in ledger(project)}
    assert set(listed) == bad, f"seed={SEED}: {listed}"
    for key, text in faulty.reject.items():
        assert listed[key]["reason"] == "rejected" and text in listed[key]["error"], listed[key]
    entry = listed["4321"]
    assert entry["reason"] == "rejected" and "HTTP 422: tier 0 is out of range" in entry["error"]
    alone = [r for r in faulty.requests if r.keys == ["4321"] and r.outcome == "422"]
    assert alone, f"seed={SEED}: the refused batch was split until the bad record was alone"


def test_mirror_under_faults_ends_with_exactly_the_model(project, faulty):
    """Mirror mode: upserts and deletes both go through the storm (every delete batch's first
    attempt fails); at the end the receiver holds exactly the model, no key that left it."""
    rng = random.Random(f"{SEED}:mirror")
    users(project, faulty.url, 3_000, mode="mirror", **STORM_DESTINATION)
    kinds = ("error", "hang", "drop", "throttle:-")

    def deletes_fail_first(request: Request, body: dict[str, Any]) -> str | None:
        if request.operation == "delete" and request.attempt == 0:
            return kinds[int(request.idempotency_key, 16) % len(kinds)]
        return scripted(request, body)

    faulty.faults, faulty.rules = STORM, [deletes_fail_first]
    run_until(project, lambda code, result: code == 0)
    assert_matches_model(project, faulty, mirror=True)

    ids = rng.sample(range(1, 3_001), 1_200)
    gone, changed = ids[:900], ids[900:]  # 30% leave: under the mass-delete rail's 50%
    warehouse(project, "delete from users where id in (select unnest($1::bigint[]))", gone)
    change(project, changed)
    warehouse(project, "insert into users select i, 'new' || i, 1, 0 from range(3001, 3301) t(i)")
    run_until(project, lambda code, result: code == 0)

    assert_matches_model(project, faulty, mirror=True)
    deletes = [r for r in faulty.requests if r.operation == "delete"]
    assert {r.outcome for r in deletes if r.attempt == 0} - {"ok"}, f"seed={SEED}"
    assert {k for r in deletes if r.outcome in ("ok", "hang") for k in r.keys} == {
        str(i) for i in gone
    }, f"seed={SEED}: every delete was retried until it was applied"
    assert ledger(project) == []


# -- kills -------------------------------------------------------------------------------------


def settled(receiver: FaultyReceiver) -> Callable[[], bool]:
    """Every request the receiver took has been handled (a killed client's included)."""
    return lambda: all(r.answered is not None for r in list(receiver.requests))


def test_repeated_sigkills_lose_nothing(project, faulty):
    """Five `run`s killed with SIGKILL at random moments mid-delivery, then a clean run: nothing
    lost; each kill leaves at most the batches in flight (batch_size x max_concurrency records)
    received but not acknowledged, and only such records are ever received twice.

    A key in flight at one kill is not necessarily sent again by the very next run: the outbox
    is not in key order, and that run may be killed before it gets there. So the bound on keys
    received twice is cumulative: never more than the records left in flight by the kills so far.
    """
    rng = random.Random(f"{SEED}:sigkill")
    rows = 10_000
    faulty.delay = 0.05  # about 8,000 records a second: a kill lands mid-run
    users(project, faulty.url, rows, batch_size=BATCH, max_concurrency=CONCURRENCY)
    before: Counter[str] = Counter()
    acknowledged = 0  # keys of the model the snapshot holds, as `plan` counts them
    left_in_flight = 0  # records received but not acknowledged, over all the kills so far

    def unchanged() -> int:
        return project.cli("plan", "users", "--json").json_lines()[0]["unchanged"]

    for kill in range(5):
        target = faulty.records_received() + rng.randint(100, 1_000)
        killed = threading.Event()

        def hold(request: Request, body: dict[str, Any]) -> None:
            # Requests 2,000 records past the target wait for the kill: however slow this
            # process is to send it, the run cannot end first (the kill lands mid-run).
            if faulty.records_received() >= target + 2_000:  # noqa: B023
                killed.wait(60)  # noqa: B023
            return None

        faulty.rules = [hold]
        proc = project.popen("run", "users")
        wait_for(
            lambda: faulty.records_received() >= target or proc.poll() is not None,  # noqa: B023
            what=f"{target} records",
        )
        time.sleep(rng.uniform(0, 0.05))  # anywhere in the request/acknowledgement cycle
        assert proc.poll() is None, f"seed={SEED}: kill {kill}: the run ended before the kill"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        killed.set()
        wait_for(settled(faulty), what="the killed run's requests")  # answered to no one
        [killed] = history(project)[:1]
        assert killed["status"] == "error" and "ended before the run finished" in killed["error"]

        window = {k for k, n in faulty.received.items() if n > before[k]}
        now_acknowledged = unchanged()
        in_flight = len(window) - (now_acknowledged - acknowledged)
        assert 0 <= in_flight <= BATCH * CONCURRENCY, (
            f"seed={SEED}: kill {kill}: {in_flight} records received but not acknowledged"
        )
        assert now_acknowledged < rows, f"seed={SEED}: kill {kill} landed after the last batch"
        twice = sum(n - 1 for n in faulty.received.values() if n > 1)
        assert twice <= left_in_flight, (
            f"seed={SEED}: kill {kill}: {twice} records received twice, but only "
            f"{left_in_flight} were in flight at the kills before"
        )
        left_in_flight += in_flight
        acknowledged, before = now_acknowledged, Counter(faulty.received)
    faulty.rules = []

    clean = project.command("run", "users", "--json")
    assert clean.exit_code == 0, f"seed={SEED}: {clean.stderr}"
    [result] = clean.json_lines()
    assert (result["unchanged"], result["delivered"]) == (acknowledged, rows - acknowledged)
    twice = sum(n - 1 for n in faulty.received.values() if n > 1)
    assert twice <= left_in_flight <= 5 * BATCH * CONCURRENCY, f"seed={SEED}: {twice} twice"
    assert_matches_model(project, faulty)
    assert project.cli("run", "users", "--json").json_lines()[0]["delivered"] == 0
    assert [r["status"] for r in history(project)][:7] == ["success", "success"] + ["error"] * 5


def test_sigterm_stops_gracefully_and_the_next_run_sends_the_rest(project, faulty):
    """SIGTERM mid-run: no new batch goes out, the requests in flight finish and what they
    delivered is recorded; one of them never answers, and is given up at timeout_seconds; the
    run ends `error` ("... SIGTERM") with exit 2 while that request is still unanswered. The
    next run sends exactly the rest: only keys in flight at the signal arrive twice."""
    rng = random.Random(f"{SEED}:sigterm")
    rows, batch, timeout, concurrency = 3_000, 50, 2.0, 4
    faulty.delay = 0.4  # slow answers: requests are in flight when the signal comes
    hung = rng.randint(8, 20)  # this request is applied but never answered
    faulty.faults = Faults(hang_seconds=timeout + 60)  # the run must not wait for it
    faulty.rules = [lambda request, body: "hang" if request.number == hung else None]
    users(
        project,
        faulty.url,
        rows,
        batch_size=batch,
        max_concurrency=concurrency,
        timeout_seconds=timeout,
    )
    proc = project.popen("run", "users", "--json")
    wait_for(lambda: len(faulty.requests) > hung, what=f"request {hung}")
    time.sleep(rng.uniform(0, faulty.delay / 2))
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 2, f"seed={SEED}: exit {proc.returncode}: {err}"
    assert faulty.requests[hung].answered is None, f"seed={SEED}: the hung request was awaited"
    # Requests unanswered at the signal, or arriving after it, were all started before it if no
    # new batch went out: at most the max_concurrency in flight, however late they arrived.
    after = [r for r in faulty.requests if r.answered is None or r.answered >= signalled]
    assert len(after) <= concurrency, f"seed={SEED}: {len(after)} requests after SIGTERM"
    in_flight = {k for r in after for k in r.keys}  # answered after the signal, or never
    hung_keys = set(faulty.requests[hung].keys)
    assert hung_keys < in_flight, f"seed={SEED}: the signal came while requests were in flight"
    recorded = history(project)[0]
    assert recorded["status"] == "error" and "SIGTERM" in recorded["error"], recorded
    assert '"status": "error"' in out and "SIGTERM" in out
    delivered = set(faulty.received) - hung_keys  # the hung batch was applied, not answered
    plan = project.cli("plan", "users", "--json").json_lines()[0]
    assert plan["unchanged"] == len(delivered), f"seed={SEED}: what was delivered is recorded"
    failed = {e["key"] for e in ledger(project) if e["reason"] == "failed"}
    assert failed == {str(i) for i in range(1, rows + 1)} - delivered, f"seed={SEED}"

    faulty.delay = 0
    rerun = project.command("run", "users", "--json")
    assert rerun.exit_code == 0, f"seed={SEED}: {rerun.stderr}"
    assert rerun.json_lines()[0]["delivered"] == rows - len(delivered)
    assert_matches_model(project, faulty)
    twice = {k for k, n in faulty.received.items() if n > 1}
    assert hung_keys <= twice <= in_flight, f"seed={SEED}: {sorted(twice - in_flight)[:5]}"
    assert ledger(project) == []


def test_a_second_signal_exits_at_once_and_loses_nothing(project, faulty):
    """SIGINT while a request hangs (timeout_seconds 60): the run waits for it, as a graceful
    stop does; a second SIGINT exits at once, exit 2, saying so, while the request is still
    unanswered; the next run sends what was not acknowledged."""
    rows = 40
    faulty.faults = Faults(hang_seconds=120)
    faulty.rules = [lambda request, body: "hang" if request.number == 1 else None]
    users(project, faulty.url, rows, batch_size=10, max_concurrency=1, timeout_seconds=60)
    proc = project.popen("run", "users", "--json")
    wait_for(lambda: len(faulty.requests) > 1, what="the hung request")
    proc.send_signal(signal.SIGINT)
    assert proc.stderr is not None
    told = proc.stderr.readline()  # the first signal handled: the run waits for the request
    assert "SIGINT: stopping once the requests in flight are answered" in told, told
    assert proc.poll() is None and len(faulty.requests) == 2  # no new batch meanwhile
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "SIGINT again: exiting now" in err, err
    assert faulty.requests[1].answered is None  # it exited without waiting for the answer

    faulty.rules = []
    rerun = project.command("run", "users", "--json")
    assert rerun.exit_code == 0, rerun.stderr
    assert_matches_model(project, faulty)
    assert history(project)[1]["status"] == "error"  # the abandoned run, closed as killed
