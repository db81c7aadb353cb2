"""Client-side rate limiting, shared by every sync that sends to one destination in a process.

Requests are spaced at least 1/rate apart (with a small margin for the jitter between our clock
and the server's), so no one-second window ever holds more than `rate` requests, the first second
included. The limiter is thread-safe (each sync runs its own event loop in `run --all` and the
daemon): a slot is taken under a lock at the moment the request may go, never reserved ahead, so
a caller that wakes late cannot squeeze the gap to the next one. On a 429 the rate halves (from
the configured rate, or from the rate actually reached when none is configured) and every caller
waits out Retry-After; each success wins back a twentieth of the configured rate.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

_MIN_RATE = 0.1
_MARGIN = 0.95  # aim a little under the limit: arrival jitter must not make 21 out of 20
_WINDOW = 5.0  # seconds over which the reached rate is measured


class RateLimiter:
    def __init__(self, rate: float | None) -> None:
        self.configured = rate
        self.rate = rate
        self._next = 0.0
        self._paused_until = 0.0
        self._recent: deque[float] = deque()
        self._lock = threading.Lock()
        self.throttled_count = 0

    def try_acquire(self) -> float:
        """Take the slot if it is free now (0.0); otherwise the seconds until it may be."""
        with self._lock:
            now = time.monotonic()
            free_at = max(self._next, self._paused_until)
            if free_at > now:
                return free_at - now
            if self.rate:
                self._next = now + 1.0 / (self.rate * _MARGIN)
            self._recent.append(now)
            while self._recent and self._recent[0] < now - _WINDOW:
                self._recent.popleft()
            return 0.0

    async def acquire(self) -> None:
        while (delay := self.try_acquire()) > 0:
            await asyncio.sleep(delay)

    def throttled(self, retry_after: float | None) -> None:
        """The destination said 429: slow down, and pause everyone for Retry-After."""
        with self._lock:
            now = time.monotonic()
            self.throttled_count += 1
            if retry_after:
                self._paused_until = max(self._paused_until, now + retry_after)
            reached = len(self._recent) / _WINDOW if self._recent else None
            current = self.rate or reached or 1.0
            self.rate = max(_MIN_RATE, current / 2)

    def succeeded(self) -> None:
        with self._lock:
            if self.rate is None:
                return
            ceiling = self.configured
            if ceiling is None:
                self.rate *= 1.05  # unconfigured: probe upwards again
            elif self.rate < ceiling:
                self.rate = min(ceiling, self.rate + ceiling / 20)


_limiters: dict[tuple[str, str], RateLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(scope: str, destination: str, rate: float | None) -> RateLimiter:
    """The process-wide limiter of one destination (scope: the project folder)."""
    with _registry_lock:
        limiter = _limiters.get((scope, destination))
        if limiter is None or limiter.configured != rate:
            limiter = _limiters[(scope, destination)] = RateLimiter(rate)
        return limiter
