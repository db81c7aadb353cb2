"""Rate limits: the limiter on a simulated clock, then the engine against a receiver that
enforces its own limit (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import statistics
import time
from collections import deque

import pytest

from reverse_etl.delivery.ratelimit import (
    RateHeaders,
    RateLimiter,
    SharedWindows,
    Window,
    requests_left,
)
from reverse_etl.destinations.hubspot.adapter import HubSpotDestination
from reverse_etl.destinations.webhook.receiver import RollingLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drive(limiter: RateLimiter, clock: Clock, seconds: float, jitter: float = 0.0) -> list[float]:
    """Send as fast as the limiter allows for `seconds` of simulated time; the send times."""
    sent, end = [], clock.now + seconds
    rng = random.Random(7)
    while clock.now < end:
        wait = limiter.try_acquire()
        if wait > 0:
            clock.now += wait + rng.uniform(0, jitter)  # callers wake up late, never early
        else:
            sent.append(clock.now)
    return sent


def most_in_any_window(times: list[float], seconds: float) -> int:
    window: deque[float] = deque()
    most = 0
    for t in times:
        window.append(t)
        while window[0] <= t - seconds:
            window.popleft()
        most = max(most, len(window))
    return most


def assert_paced(arrivals: list[float], per_second: int, in_flight: int) -> None:
    """A server's arrival times (`time.monotonic()`) of an engine limited to `per_second` with
    at most `in_flight` requests started and not yet answered. Whatever the delay between the
    engine starting a request and the server stamping it (a loaded machine delays some more
    than others), a request stamped within an interval was started in it or was in flight when
    it began. So no second holds more than per_second + in_flight, and of n requests stamped
    over L seconds at least n - in_flight were started within those L seconds, which the
    engine's even pace (README: rate limits) allows only if n - in_flight <= per_second * L + 1."""
    times = sorted(arrivals)
    busiest = most_in_any_window(times, 1.0)
    assert busiest <= per_second + in_flight, (
        f"{busiest} requests in one second: more than {per_second} + {in_flight} in flight"
    )
    span = times[-1] - times[0]
    assert len(times) - in_flight <= per_second * span + 1, (
        f"{len(times)} requests in {span:.2f} s: faster than {per_second} per second"
    )


@pytest.mark.parametrize("jitter", [0.0, 0.003])
def test_no_rolling_window_is_ever_exceeded(jitter):
    clock = Clock()
    windows = [Window(10, 1.0), Window(60, 10.0), Window(300, 60.0)]
    sent = drive(RateLimiter(windows, clock=clock), clock, 180, jitter)
    for window in windows:
        assert most_in_any_window(sent, window.seconds) <= window.limit, window
    assert len(sent) >= 0.9 * 300 * 3, "at least 90% of the tightest long-run limit is used"


def test_no_burst_at_start():
    clock = Clock()
    sent = drive(RateLimiter([Window(100, 10.0)], clock=clock), clock, 2)
    assert most_in_any_window(sent, 1.0) <= 10, "100 per 10 s is paced, not spent at once"


def test_a_day_limit_is_a_total_not_a_pace():
    clock = Clock()
    sent = drive(RateLimiter([Window(50, 86_400.0)], clock=clock), clock, 60)
    assert len(sent) == 47  # 95% of 50, as fast as asked, then nothing for the rest of the day


def test_429_halves_and_success_recovers():
    clock = Clock()
    limiter = RateLimiter([Window(20, 1.0)], clock=clock)
    limiter.throttled(retry_after=2.0)  # one 429 saying when to retry: a pause, not a cut
    assert limiter.try_acquire() == pytest.approx(2.0)
    clock.now += 2.0
    assert limiter.scale == 1.0
    limiter.throttled(retry_after=None)  # no Retry-After: the only hint is to slow down
    assert limiter.scale == 0.5
    assert len(drive(limiter, clock, 1.0)) <= 10
    for _ in range(10):
        limiter.succeeded()
    assert limiter.scale == 1.0


def test_unconfigured_limiter_learns_the_server_limit():
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    server_limit = 30  # per second, enforced below on a rolling window
    accepted: list[float] = []
    throttles = 0
    end = clock.now + 60
    while clock.now < end:
        wait = limiter.try_acquire()
        if wait > 0:
            clock.now += wait
            continue
        recent = [t for t in accepted if t > clock.now - 1.0]
        if len(recent) >= server_limit:
            limiter.throttled(None)
            throttles += 1
        else:
            accepted.append(clock.now)
            limiter.succeeded()
        clock.now += 0.001  # each request takes a millisecond
    late = [t for t in accepted if t > end - 30]
    assert 0.7 * server_limit <= len(late) / 30 <= server_limit, "settles near the limit"
    assert throttles < 0.1 * len(accepted)


def test_rate_headers_slow_down_before_a_429():
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limiter.observe(requests_left({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "3"}))
    assert limiter.try_acquire() == pytest.approx(3.0)
    clock.now += 3.0
    assert limiter.try_acquire() == 0.0
    limiter.observe(requests_left({"ratelimit-remaining": "4", "ratelimit-reset": "2"}))
    assert limiter.try_acquire() == pytest.approx(0.5)  # 4 left over 2 s: one each 0.5 s


def test_limits_hold_across_limiters_that_share_one_file(tmp_path):
    """Two processes of one project (two limiters, each with its own connection to the
    destination's file) share 10 per minute: together they never make more than 10 in any
    60 s, and use most of it (each alone, they made 10 each)."""
    clock = Clock()
    windows = [Window(10, 60.0)]
    path = tmp_path / "ratelimits" / "hook.sqlite"
    limiters = [RateLimiter(windows, clock=clock, shared=SharedWindows(path)) for _ in range(2)]
    sent: list[float] = []
    by: list[int] = []
    end = clock.now + 600
    while clock.now < end:
        waits = []
        for n in (0, 1) if len(sent) % 2 else (1, 0):  # each goes first in turn
            limiter = limiters[n]
            if (wait := limiter.try_acquire()) > 0:
                waits.append(wait)
            else:
                sent.append(clock.now)
                by.append(n)
        if len(waits) == len(limiters):
            clock.now += min(waits)
    assert most_in_any_window(sent, 60.0) <= 10
    assert len(sent) >= 85, "9 of 10 per minute (the 5% margin) over 10 minutes"
    assert set(by) == {0, 1}, "both processes took slots"


def test_a_wall_clock_set_back_does_not_block_the_shared_windows(tmp_path):
    clock = Clock()
    clock.now = 1.8e9  # a wall clock (time.time), as the shared windows use
    shared = SharedWindows(tmp_path / "hook.sqlite")
    limiter = RateLimiter([Window(2, 60.0)], clock=clock, shared=shared)
    assert limiter.try_acquire() == 0.0
    clock.now -= 3600  # NTP stepped the clock back an hour
    assert limiter.try_acquire() == 0.0, "not an hour's wait for sends 'in the future'"


def storm(limiter: RateLimiter, clock: Clock, batches: int, seed: int = 5) -> tuple[int, float]:
    """The engine's loop on a simulated clock, 4 requests in flight, against a server that
    answers 12% 429 (Retry-After 1), 10% 5xx, 2% no answer within the 2 s timeout and 3%
    dropped connections, at random whatever the rate. (requests made, least rate learned)."""
    rng = random.Random(seed)
    free_at = [clock.now] * 4  # when each of the 4 in flight can send again
    done = requests = 0
    least = math.inf
    while done < batches:
        worker = min(range(4), key=free_at.__getitem__)
        clock.now = max(clock.now, free_at[worker])
        if (wait := limiter.try_acquire()) > 0:
            free_at[worker] = clock.now + wait
            continue
        requests += 1
        draw = rng.random()
        if draw < 0.12:
            limiter.throttled(1.0)
            free_at[worker] = clock.now + 0.01
        elif draw < 0.22:  # 5xx: the batch backs off
            free_at[worker] = clock.now + 0.01 + rng.uniform(0.5, 1.0)
        elif draw < 0.24:  # hang: cut at the timeout
            free_at[worker] = clock.now + 2.0
        elif draw < 0.27:  # dropped
            free_at[worker] = clock.now + 0.005
        else:
            limiter.succeeded()
            done += 1
            free_at[worker] = clock.now + 0.05
        if limiter.learned is not None:
            least = min(least, limiter.learned)
    return requests, least


@pytest.mark.parametrize("seed", [1, 6, 16])  # seeds whose draws make a stream now and then
def test_random_429s_do_not_collapse_the_learned_rate(seed):
    """Random 429s with successes around them are not a rate limit: a 429 with Retry-After is
    obeyed by the pause, only a stream of them cuts the rate, and no cut goes below half the
    best rate the server accepted (before: the rate fell to its minimum, 0.1 request/s, with
    every seed, and the 5,000-record storm took over 400 s)."""
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    requests, least = storm(limiter, clock, batches=300, seed=seed)
    assert least >= 1.0, f"the learned rate fell to {least:.2f} requests/s"
    assert requests < 300 / 0.73 * 1.3, "no more requests than the faults explain"


def test_a_sustained_429_stream_still_slows_down():
    """A server that refuses everything past a real limit: the floor falls with the successes,
    so the rate learned comes down to the limit (the floor is no licence to hammer)."""
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    accepted: deque[float] = deque()
    throttles = 0
    for _ in range(3000):
        if (wait := limiter.try_acquire()) > 0:
            clock.now += wait
            continue
        while accepted and accepted[0] <= clock.now - 1.0:
            accepted.popleft()
        if len(accepted) >= 5:  # 5 per second, rolling
            limiter.throttled(None)
            throttles += 1
        else:
            accepted.append(clock.now)
            limiter.succeeded()
        clock.now += 0.001
    assert limiter.learned is not None and limiter.learned <= 8, limiter.describe()
    assert limiter.floor() <= 5


def test_a_stated_window_is_obeyed_from_the_first_answer():
    """Configured for HubSpot's default 100 per 10 s, the app is limited to 20 per 10 s and
    says so in its first answer: from then on no 10 s holds more than 20."""
    clock = Clock()
    limiter = RateLimiter([Window(100, 10.0)], clock=clock)
    sent: list[float] = []
    end = clock.now + 60
    while clock.now < end:
        if (wait := limiter.try_acquire()) > 0:
            clock.now += wait
            continue
        sent.append(clock.now)
        headers = {
            "X-HubSpot-RateLimit-Max": "20",
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            "X-HubSpot-RateLimit-Remaining": str(20 - len(sent)),
        }
        limiter.observe(HubSpotDestination.requests_left(headers))
    assert most_in_any_window(sent, 10.0) <= 20
    assert len(sent) >= 100, "most of the 20 per 10 s is used"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # draft-ietf-httpapi-ratelimit-headers 08 and later
        (
            {"ratelimit-policy": '"burst";q=100;w=60, "day";q=1000;w=86400'},
            RateHeaders((Window(100, 60.0), Window(1000, 86400.0))),
        ),
        (
            {"ratelimit-policy": '"default";q=20;w=10', "ratelimit": '"default";r=3;t=4'},
            RateHeaders((Window(20, 10.0),), 3.0, 4.0),
        ),
        # draft 07, and the drafts before
        (
            {"ratelimit-policy": "10;w=1, 50;w=60", "ratelimit": "limit=10, remaining=0, reset=2"},
            RateHeaders((Window(10, 1.0), Window(50, 60.0)), 0.0, 2.0),
        ),
        ({"ratelimit-remaining": "4", "ratelimit-reset": "2"}, RateHeaders((), 4.0, 2.0)),
        ({"x-ratelimit-remaining": "7", "x-ratelimit-reset": "30"}, RateHeaders((), 7.0, 30.0)),
        # what is not a finite number says nothing
        ({"x-ratelimit-remaining": "nan", "x-ratelimit-reset": "inf"}, None),
        ({"ratelimit-policy": "lots;w=forever"}, None),
        ({"x-ratelimit-limit": "100"}, None),
    ],
)
def test_rate_limit_headers_are_read(headers, expected):
    assert requests_left(headers) == expected


def test_a_reset_far_away_pauses_no_longer_than_max_pause():
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limiter.max_pause = 300
    limiter.observe(requests_left({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "86400"}))
    assert limiter.try_acquire() == pytest.approx(300)


# -- against a receiver that enforces its own limit ------------------------------------------


def test_a_configured_limit_is_kept_as_the_server_counts(users_project, receiver):
    """Configured for 20 requests per second with 4 in flight, against a server refusing past
    20 + 4 in any rolling second: no 429. A request the server counts in a second was started
    in it (at most 20) or was in flight when it began (at most 4), so this holds however late
    a loaded machine stamps some requests; at exactly 20 a request stamped a few milliseconds
    late made a 429. The pace itself is read from the arrivals (assert_paced)."""
    per_second, in_flight = 20, 4
    limit = RollingLimit(per_second + in_flight, retry_after="1")
    receiver.intercept = limit
    project = users_project(
        rows=1200, batch_size=20, requests_per_second=per_second, max_concurrency=in_flight
    )
    assert project.cli("run", "users").exit_code == 0
    assert limit.throttled == 0
    assert len(receiver.data) == 1200
    assert_paced(receiver.arrivals, per_second, in_flight)
    # Most of the budget is used: it paces at 19 per second (5% under the limit), a request
    # every 53 ms. A stall of a loaded machine lengthens a few gaps, not the median one.
    arrivals = sorted(receiver.arrivals)
    gap = statistics.median(b - a for a, b in itertools.pairwise(arrivals))
    assert gap <= 1 / (0.7 * per_second), f"a request every {gap * 1000:.0f} ms"


def test_without_a_configured_limit_the_engine_settles_near_the_servers(users_project, receiver):
    limit = RollingLimit(25)
    receiver.intercept = limit
    project = users_project(rows=2000, batch_size=10, max_concurrency=4, retry_backoff_seconds=0.2)
    outcome = project.cli("run", "users", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    assert len(receiver.data) == 2000, "every record arrives"
    accepted = sorted(r["at"] for r in receiver.requests if r["status"] == 200)
    late = [t for t in accepted if t >= accepted[len(accepted) // 2]]  # once it has learned
    rate = (len(late) - 1) / (late[-1] - late[0])
    assert 0.6 * 25 <= rate <= 25, f"{rate:.1f} requests/s accepted against a limit of 25"
    assert limit.throttled < 100, f"{limit.throttled} 429s for 200 batches"


def test_two_syncs_share_one_destination_budget(project, receiver):
    """Two syncs of one destination at 20 per second (4 in flight each) make 20 per second
    together, not 40: no 429 from a server allowing 20 + 8 in flight in any second, and the
    arrivals are paced at 20 (see test_a_configured_limit_is_kept_as_the_server_counts)."""
    per_second, in_flight = 20, 2 * 4
    limit = RollingLimit(per_second + in_flight, retry_after="1")
    receiver.intercept = limit
    project.warehouse("create table a as select range as id from range(400)")
    project.webhook(
        "hook", receiver.url, batch_size=10, requests_per_second=per_second, max_concurrency=4
    )
    for name in ("one", "two"):
        project.sync(
            name, {"destination": "hook", "primary_key": "id", "object": name}, "select id from a"
        )
    assert project.cli("run", "--all").exit_code == 0
    assert limit.throttled == 0, "two syncs split the budget, they do not double it"
    assert len(receiver.requests) == 80
    assert_paced(receiver.arrivals, per_second, in_flight)


def test_rate_headers_from_a_real_answer_pause_the_next_request(users_project, receiver):
    answered: list[float] = []

    def few_left(body, headers):
        answered.append(time.monotonic())
        if len(answered) == 1:
            return 200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1"}, b""
        return None

    receiver.intercept = few_left
    project = users_project(rows=20, batch_size=10, max_concurrency=1)
    assert project.cli("run", "users").exit_code == 0
    assert len(answered) == 2 and answered[1] - answered[0] >= 0.9, "waited for the reset"


# -- limits across processes -----------------------------------------------------------------


def one_row_syncs(project, receiver_url: str, count: int, **destination) -> list[str]:
    """`count` syncs of one row each to the destination `hook`: each run of one sends one
    request."""
    project.warehouse(f"create or replace table a as select range as id from range({count})")
    project.webhook("hook", receiver_url, **destination)
    names = [f"s{n}" for n in range(count)]
    for n, name in enumerate(names):
        project.sync(
            name, {"destination": "hook", "primary_key": "id"}, f"select id from a where id = {n}"
        )
    return names


def test_a_daily_limit_holds_across_parallel_cli_runs(project, receiver):
    """15 `reverse-etl run` processes at once against requests_per_day = 10 (each process kept
    its own count, and 15 requests went): 9 go (the 5% margin), the 6 others fail their
    record for this run, saying why, and it stays owed."""
    names = one_row_syncs(project, receiver.url, 15, requests_per_day=10, max_retry_after_seconds=5)
    procs = [project.popen("run", name) for name in names]
    outputs = [proc.communicate(timeout=180) for proc in procs]
    codes = sorted(proc.returncode for proc in procs)
    assert len(receiver.requests) == 9
    assert codes == [0] * 9 + [1] * 6, outputs
    refused = [name for name in names if project.cli("rejected", name, "--json").json_lines()]
    assert len(refused) == 6
    [record] = project.cli("rejected", refused[0], "--json").json_lines()
    assert "more than max_retry_after_seconds = 5" in record["error"], record


def test_a_minute_limit_holds_across_cli_runs_in_a_row(project, receiver):
    """8 runs in a row against 4 per minute: the receiver's arrival times never hold more than
    4 in any 60 s (before: 15 runs made 15 requests in 9.8 s). Paced evenly, a request goes
    every 16 s, so a run that would wait more than max_retry_after_seconds = 3 sends nothing
    (only runs each slower than 12 s would all have sent)."""
    names = one_row_syncs(
        project, receiver.url, 8, requests_per_minute=4, max_retry_after_seconds=3
    )
    for name in names:
        assert project.command("run", name).exit_code in (0, 1)
    arrivals = sorted(receiver.arrivals)
    assert arrivals and most_in_any_window(arrivals, 60.0) <= 4
    assert len(arrivals) < len(names), "some runs waited beyond max_retry_after_seconds"


# -- limits the server states ----------------------------------------------------------------


def test_hubspots_stated_window_is_obeyed_from_the_first_answer(project):
    """The destination keeps HubSpot's default (100 per 10 s) but the app is limited to 20 per
    4 s (the issue's 20 per 10 s, faster): X-HubSpot-RateLimit-Max and -Interval-Milliseconds
    of the first answer set the pace (before: 4 429s in 29 requests). One request in flight:
    a 4 s window then holds the 19 the engine starts in it (5% under 20) and at most the one
    already in flight, so no 429 however late a loaded machine stamps a request."""
    from fakes.base import running
    from fakes.hubspot import Fake
    from fakes.project import people, write_destination

    for fake in running(Fake(window_limit=20, window_ms=4000)):
        people(project, 30)
        write_destination(project, "crm", fake.destination(), batch_size=1, max_concurrency=1)
        project.sync(
            "people",
            {"destination": "crm", "primary_key": "warehouse_id", "object": "contacts"},
            "select id as warehouse_id, email, name as firstname from people",
        )
        outcome = project.cli("run", "people", "--json")
        assert outcome.exit_code == 0, outcome.stderr
        assert len(fake.stored()) == 30
        assert fake.throttled() == 0, f"{fake.throttled()} 429s"


def test_an_ietf_ratelimit_policy_is_obeyed_from_the_first_answer(users_project, receiver):
    """No limit configured; the server allows 5 per second and says so in every answer
    (`RateLimit-Policy: "default";q=5;w=1`, draft-ietf-httpapi-ratelimit-headers): no 429
    (before: the engine learned the limit from a stream of them). One request in flight: a
    second then holds the 4 the engine starts in it (5% under 5) and at most the one already
    in flight, however late a loaded machine stamps a request."""
    limit = RollingLimit(5)

    def stated(body, headers):
        if (refused := limit(body, headers)) is not None:
            return refused
        return 200, {"RateLimit-Policy": '"default";q=5;w=1'}, b""

    receiver.intercept = stated
    project = users_project(rows=30, batch_size=1, max_concurrency=1)
    assert project.cli("run", "users").exit_code == 0
    assert len(receiver.requests) == 30
    assert limit.throttled == 0, f"{limit.throttled} 429s"


# -- waits too long to wait ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "told"),
    [("86400", "86400 s"), ("inf", "inf s"), ("Fri, 01 Jan 2100 00:00:00 GMT", "wait 2")],
)
def test_a_retry_after_beyond_the_maximum_fails_the_records_for_this_run(
    users_project, receiver, retry_after, told
):
    """A 429 asking to wait a day (or forever) does not freeze the run: its records, and those
    not sent yet, fail for this run with the reason, and the next run sends them."""
    answered = 0

    def far(body, headers):
        nonlocal answered
        answered += 1
        return (429, {"Retry-After": retry_after}, b"come back tomorrow") if answered == 1 else None

    receiver.intercept = far
    project = users_project(rows=50, batch_size=10, max_concurrency=1)
    outcome = project.cli("run", "users", "--json")
    [result] = outcome.json_lines()
    assert outcome.exit_code == 1 and result["failed"] == 50 and result["delivered"] == 0, result
    assert len(receiver.requests) == 1, "nothing more is sent in a run told to wait so long"
    errors = {r["error"] for r in project.cli("rejected", "users", "--json").json_lines()}
    [error] = errors
    assert told in error and "more than max_retry_after_seconds = 300" in error, error
    outcome = project.cli("run", "users", "--json")
    assert outcome.exit_code == 0 and len(receiver.data) == 50, outcome.stdout


@pytest.mark.parametrize("retry_after", ["-5", "soon"])  # (every odd value: the test below)
def test_a_retry_after_that_is_no_number_of_seconds_is_a_plain_retry(
    users_project, receiver, retry_after
):
    answered = 0

    def odd(body, headers):
        nonlocal answered
        answered += 1
        return (429, {"Retry-After": retry_after}, b"slow down") if answered <= 2 else None

    receiver.intercept = odd
    project = users_project(rows=20, batch_size=10, max_concurrency=1, retry_backoff_seconds=0.05)
    outcome = project.cli("run", "users", "--json")
    assert outcome.exit_code == 0, outcome.stdout
    assert len(receiver.data) == 20


def test_retry_after_values_are_read_safely():
    from reverse_etl.destinations.base import retry_after_seconds

    assert retry_after_seconds("120") == 120
    assert retry_after_seconds("-5") == 0
    assert retry_after_seconds("inf") == math.inf
    assert retry_after_seconds("nan") is None
    assert retry_after_seconds("garbage") is None
    assert retry_after_seconds("Fri, 01 Jan 2100 00:00:00 GMT", now=0) == 4102444800
    assert retry_after_seconds("Sat, 01 Jan 2000 00:00:00 GMT") == 0


def test_a_spent_daily_limit_fails_the_rest_of_the_run_at_once(users_project, receiver):
    """requests_per_day = 3 (2 with the 5% margin) and 5 batches: the third would wait most of
    a day; it fails, with the rest, for this run, instead of freezing it."""
    project = users_project(rows=50, batch_size=10, requests_per_day=3)
    outcome = project.cli("run", "users", "--json")
    [result] = outcome.json_lines()
    assert result["delivered"] == 20 and result["failed"] == 30, result
    errors = {r["error"] for r in project.cli("rejected", "users", "--json").json_lines()}
    [error] = errors
    assert "allows the next request in" in error and "max_retry_after_seconds = 300" in error


# -- one slot per request on the wire --------------------------------------------------------


def _slots(project) -> list[float]:
    """When each slot of the destination `crm` was taken (the limiter's clock: time.time), as
    the project's shared record of them holds."""
    import sqlite3

    path = project.root / ".reverse_etl" / "ratelimits" / "crm.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as con:
        return [t for (t,) in con.execute("select t from sent order by t")]


def test_each_request_on_the_wire_takes_one_slot_before_it_goes(project):
    """A check, upserts, a mirror's deletes (a batch read, then the archive) and a create whose
    answer is lost (looked up before anything is sent again): exactly one slot per request
    the server saw, the n-th slot taken before the n-th request arrived."""
    from fakes.base import running
    from fakes.hubspot import Fake
    from fakes.project import people, write_destination
    from tamper import Lose, TamperingProxy, once

    class Noted(Fake):
        """HubSpot's fake, noting when each request arrives (on the limiter's clock)."""

        def __init__(self) -> None:
            self.arrivals: list[float] = []
            super().__init__()

        def handle(self, method, target, headers, raw):  # type: ignore[no-untyped-def]
            self.arrivals.append(time.time())
            return super().handle(method, target, headers, raw)

    model = "select id as warehouse_id, email, name as firstname from people"
    joiners = "select id + 100 as warehouse_id, 'new-' || email as email, name as firstname "
    for fake in running(Noted()):
        lost_create = once(lambda seen: seen.path.endswith("/batch/create"), Lose(delay=0))
        with TamperingProxy(fake.url, [lost_create]) as proxy:
            people(project, 6)
            settings = {**fake.destination(), "base_url": proxy.url}
            write_destination(project, "crm", settings, batch_size=2, max_retries=2)
            header = {"destination": "crm", "primary_key": "warehouse_id", "object": "contacts"}
            project.sync("people", {**header, "mode": "mirror", "max_delete_fraction": 1}, model)
            project.sync("joiners", {**header, "mode": "insert"}, joiners + "from people")
            assert project.cli("check", "crm").exit_code == 0
            for args in (["people"], ["joiners"]):
                outcome = project.cli("run", *args, "--json")
                assert outcome.exit_code == 0, outcome.stderr
            project.warehouse("delete from people where id > 2")
            outcome = project.cli("run", "people", "--json")
            assert outcome.exit_code == 0 and outcome.json_lines()[0]["removed"] == 4, outcome
        paths = [r["path"].rsplit("/", 1)[1] for r in fake.requests]
        assert {"details", "upsert", "create", "read", "archive"} <= set(paths), paths
        assert paths.count("read") == 3  # two deletes' lookups, the lost create's
        slots, arrivals = _slots(project), sorted(fake.arrivals)
        assert len(slots) == len(arrivals) == len(paths), (slots, arrivals, paths)
        assert all(s <= a for s, a in zip(slots, arrivals, strict=True)), (slots, arrivals)


def test_an_adapter_without_http_takes_one_slot_per_statement(project):
    """PostgreSQL: one slot before each call (a batch is one statement, one transaction)."""
    from fakes.base import running
    from fakes.postgres import Fake
    from fakes.project import people, write_destination

    for fake in running(Fake()):
        people(project, 7)
        limit = {"requests_per_second": 1000}  # (slots are recorded only under a limit)
        write_destination(project, "crm", fake.destination(), batch_size=2, **limit)
        project.sync("people", {"destination": "crm", "primary_key": "id"}, fake.model_sql())
        outcome = project.cli("run", "people", "--json")
        assert outcome.exit_code == 0 and outcome.json_lines()[0]["delivered"] == 7, outcome
        assert sorted(fake.batch_sizes()) == [1, 2, 2, 2]  # (concurrent: any order)
        assert len(_slots(project)) == 4


CHATTY = '''
import asyncio

from reverse_etl.destinations import Batch
from reverse_etl.destinations.webhook.adapter import WebhookDestination, encode_batch


class Chatty(WebhookDestination):
    """A webhook that also talks while it opens (a task started in __init__) and closes."""

    contract_version = 1
    type = "chatty"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._warming = asyncio.get_running_loop().create_task(self._hello())

    async def _hello(self):
        await self._post(encode_batch(Batch("hello", None, "upsert", [])))

    async def aclose(self):
        await self._warming
        await self._hello()
'''


def test_requests_made_while_an_adapter_opens_and_closes_take_slots_too(
    project, receiver, tmp_path
):
    """Every request on the wire takes a slot, not only those of send: one from a task the
    adapter starts when it is made, one from aclose (after the delivery ended)."""
    from test_plugin_example import install, run

    source = tmp_path / "chatty"
    source.mkdir()
    (source / "chatty.py").write_text(CHATTY)
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
        '[project]\nname = "chatty"\nversion = "0.1"\n'
        '[project.entry-points."reverse_etl.destinations"]\nchatty = "chatty:Chatty"\n'
        '[tool.hatch.build.targets.wheel]\nonly-include = ["chatty.py"]\n'
    )
    plugin = install(source, tmp_path / "site-packages")
    project.warehouse("create table people as select range as id from range(1, 7)")
    project.destination(
        "crm",
        f'type = "chatty"\nurl = "{receiver.url}"\nbatch_size = 2\nrequests_per_second = 1000',
    )
    project.sync("people", {"destination": "crm", "primary_key": "id"}, "select id from people")
    outcome = run(plugin, "-m", "reverse_etl", "run", "people", "--project", str(project.root))
    assert outcome.returncode == 0, outcome.stderr
    sizes = sorted(request["records"] for request in receiver.requests)
    assert sizes == [0, 0, 2, 2, 2], receiver.requests  # hello twice, three batches
    assert len(_slots(project)) == len(receiver.requests) == 5
