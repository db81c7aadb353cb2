"""Rate limits: the limiter on a simulated clock, then the engine against a receiver that
enforces its own limit (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import random
import time
from collections import deque

import pytest

from reverse_etl.delivery.ratelimit import RateLimiter, Window, requests_left
from reverse_etl.receiver import RollingLimit


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
    limiter.throttled(retry_after=2.0)
    assert limiter.try_acquire() == pytest.approx(2.0)
    clock.now += 2.0
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


# -- against a receiver that enforces its own limit ------------------------------------------


def test_configured_limit_equal_to_the_servers_is_never_exceeded(users_project, receiver):
    limit = RollingLimit(20, retry_after="1")
    receiver.intercept = limit
    project = users_project(rows=1200, batch_size=20, requests_per_second=20, max_concurrency=4)
    assert project.cli("run", "users").exit_code == 0
    assert limit.throttled == 0
    assert len(receiver.data) == 1200
    arrivals = sorted(receiver.arrivals)
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert rate >= 0.9 * 20, f"{rate:.1f} requests/s of 20 allowed"


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
    limit = RollingLimit(20, retry_after="1")
    receiver.intercept = limit
    project.warehouse("create table a as select range as id from range(400)")
    project.webhook("hook", receiver.url, batch_size=10, requests_per_second=20)
    for name in ("one", "two"):
        project.sync(
            name, {"destination": "hook", "primary_key": "id", "object": name}, "select id from a"
        )
    assert project.cli("run", "--all").exit_code == 0
    assert limit.throttled == 0, "two syncs split the budget, they do not double it"
    assert len(receiver.requests) == 80


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
