"""Client-side rate limiting, shared by every sync that sends to one destination in a process.

Limits are stated as APIs state them: N requests per window (a second, ten seconds, a minute, a
day). The limiter keeps the send times of the largest window and lets a request go only when no
window would then hold more than its limit (times a 5% margin for the jitter between our clock
and the server's). Windows of a minute or less are also paced evenly, so that a limit of 10 per
second is never spent in one burst at the start of each second.

It adapts: a 429 halves the rate (and everyone waits out Retry-After); each success wins back a
twentieth. With no limit configured it learns one: a 429 sets the rate a tenth under what the
server was accepting, which then creeps up until the next 429, so it settles near the server's
limit. Headers saying how many requests are left before a reset (`X-RateLimit-Remaining`,
`RateLimit-Remaining`, with `...-Reset`) slow it down before the server has to say 429.

Thread-safe: each sync runs its own event loop (in `run --all` and the daemon). A slot is taken
under a lock at the moment the request may go, never reserved ahead, so a caller that wakes late
cannot squeeze the gap to the next one.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

MARGIN = 0.95  # aim a little under the limit: arrival jitter must not make 21 out of 20
PACED_UP_TO = 60.0  # windows this long or shorter are paced; longer ones (a day) are totals
MIN_RATE = 0.1  # requests per second, however often the server says 429
LEARN_WINDOW = 1.0  # seconds over which the rate the server accepts is measured


@dataclass(frozen=True)
class Window:
    limit: int
    seconds: float

    def __str__(self) -> str:
        return f"{self.limit} per {self.seconds:g}s"


class RateLimiter:
    def __init__(
        self, windows: list[Window] | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.windows = sorted(windows or [], key=lambda w: w.seconds)
        self.clock = clock
        self.scale = 1.0  # the share of the configured limits in use (adaptive)
        self.learned: float | None = None  # requests per second, when no limit is configured
        self._sent: list[float] = []  # send times, ascending, within the longest window
        self._ok: list[float] = []  # times of accepted requests (to learn an unstated limit)
        self._next = 0.0  # the earliest moment the next request may go (pacing)
        self._paused_until = 0.0
        self._last_cut = -math.inf
        self._lock = threading.Lock()
        self.waited_seconds = 0.0  # time requests spent waiting for a slot (for /metrics)
        self.throttled_total = 0  # 429 answers
        longest = max((w.seconds for w in self.windows), default=0.0)
        self._keep = max(longest, LEARN_WINDOW)

    @property
    def configured(self) -> bool:
        return bool(self.windows)

    def try_acquire(self) -> float:
        """Take a slot if one is free now (0.0); otherwise the seconds until one may be."""
        with self._lock:
            now = self.clock()
            wait = max(self._paused_until - now, self._next - now, self._window_wait(now))
            if wait > 0:
                return wait
            self._sent.append(now)
            self._forget(now)
            self._next = now + self._interval()
            return 0.0

    def _window_wait(self, now: float) -> float:
        wait = 0.0
        for window in self.windows:
            limit = max(1, math.floor(window.limit * self.scale * MARGIN))
            start = bisect.bisect_right(self._sent, now - window.seconds)
            inside = len(self._sent) - start
            if inside >= limit:  # wait until the oldest that counts leaves the window
                oldest = self._sent[len(self._sent) - limit]
                wait = max(wait, oldest + window.seconds - now)
        return wait

    def _interval(self) -> float:
        rates = [
            w.limit * self.scale * MARGIN / w.seconds
            for w in self.windows
            if w.seconds <= PACED_UP_TO
        ]
        if self.learned is not None:
            rates.append(self.learned)
        return 1.0 / min(rates) if rates else 0.0

    def _forget(self, now: float) -> None:
        cut = bisect.bisect_right(self._sent, now - self._keep)
        if cut > 1024 or cut > len(self._sent) // 2:
            del self._sent[:cut]

    def _accepted_rate(self, now: float) -> float | None:
        """Requests accepted in the last LEARN_WINDOW, per second: a server that limits per
        second has just told us its limit is about this."""
        start = bisect.bisect_right(self._ok, now - LEARN_WINDOW)
        accepted = len(self._ok) - start
        return accepted / LEARN_WINDOW if accepted else None

    def throttled(self, retry_after: float | None) -> None:
        """The destination said 429: slow down, and pause everyone for Retry-After."""
        with self._lock:
            now = self.clock()
            self.throttled_total += 1
            if retry_after:
                self._paused_until = max(self._paused_until, now + retry_after)
            # Requests in flight together meet the same limit: one cut per second is enough.
            if now - self._last_cut >= 1.0:
                self._last_cut = now
                if self.configured:
                    self.scale = max(0.05, self.scale / 2)
                else:  # the server just told us its limit: about what it has been accepting
                    accepted = self._accepted_rate(now)
                    guess = accepted * 0.9 if accepted else (self.learned or 2.0) / 2
                    self.learned = max(MIN_RATE, guess)
            self._next = max(self._next, now + self._interval())

    def waited(self, seconds: float) -> None:
        with self._lock:
            self.waited_seconds += seconds

    def succeeded(self) -> None:
        with self._lock:
            if not self.configured:
                now = self.clock()
                self._ok.append(now)
                if len(self._ok) > 4096:
                    del self._ok[: bisect.bisect_right(self._ok, now - LEARN_WINDOW)]
            if self.scale < 1.0:
                self.scale = min(1.0, self.scale + 0.05)
            if self.learned is not None:
                # Creep back up by 5% of the rate per second of successes (one success adds
                # 0.05 requests/s), till the next 429: a sawtooth just under the real limit.
                self.learned += 0.05

    def observe(self, left: tuple[float, float] | None) -> None:
        """What an answer said of the limit: (requests left, seconds until they are renewed).
        When few are left, spread them over the time that remains (none: wait for it)."""
        if left is None:
            return
        remaining, reset = left
        with self._lock:
            now = self.clock()
            if remaining <= 0:
                self._paused_until = max(self._paused_until, now + reset)
            elif remaining < 10:
                self._next = max(self._next, now + reset / remaining)

    def describe(self) -> str:
        if self.windows:
            return ", ".join(str(w) for w in self.windows)
        return f"learned {self.learned:.1f}/s" if self.learned else "unlimited"


def requests_left(headers: Mapping[str, str]) -> tuple[float, float] | None:
    """The common rate-limit headers of an answer (`X-RateLimit-Remaining` or
    `RateLimit-Remaining`, with `...-Reset` in seconds or as a Unix time), as
    (requests left, seconds until renewed); None without them."""
    remaining = header_number(headers, "x-ratelimit-remaining", "ratelimit-remaining")
    reset = header_number(headers, "x-ratelimit-reset", "ratelimit-reset")
    if remaining is None or reset is None:
        return None
    if reset > 1e9:  # some APIs give the reset as a Unix time
        reset = max(0.0, reset - time.time())
    return remaining, reset


def header_number(headers: Mapping[str, str], *names: str) -> float | None:
    for name in names:
        value = headers.get(name)
        if value is not None:
            try:
                return float(value.split(",")[0].split(";")[0])
            except ValueError:
                return None
    return None


_limiters: dict[tuple[str, str], RateLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(scope: str, destination: str, windows: list[Window]) -> RateLimiter:
    """The process-wide limiter of one destination file (scope: the project folder), shared by
    every sync and every run that sends to it."""
    with _registry_lock:
        limiter = _limiters.get((scope, destination))
        if limiter is None or limiter.windows != sorted(windows, key=lambda w: w.seconds):
            previous = _limiters.get((scope, destination))
            limiter = _limiters[(scope, destination)] = RateLimiter(windows)
            if previous is not None:  # the totals are counters: they never go down
                limiter.waited_seconds = previous.waited_seconds
                limiter.throttled_total = previous.throttled_total
        return limiter


def limiters(scope: str) -> dict[str, RateLimiter]:
    """The limiters of one project folder in this process, by destination."""
    with _registry_lock:
        return {dest: limiter for (s, dest), limiter in _limiters.items() if s == scope}
