"""Client-side rate limiting, shared by every sync, run and process that sends to one
destination of a project (docs/destinations.md, "Rate limits").

Limits are stated as APIs state them: N requests per window (a second, ten seconds, a minute, a
day). The limiter lets a request go only when no window would then hold more than its limit
(times a 5% margin for the jitter between our clock and the server's). Windows of a minute or
less are also paced evenly, so that a limit of 10 per second is never spent in one burst at the
start of each second.

Across processes: the send times live in a small SQLite file per destination under the
project's state folder (`ratelimits/<destination>.sqlite`, WAL), so CLI runs, the daemon and
Python API callers of one project share one budget. Taking a slot is one short write
transaction; without that file (a read-only state folder) the limits hold within the process.

Limits the server states are obeyed from its first answer: HubSpot's
X-HubSpot-RateLimit-Max / -Interval-Milliseconds
(https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines), the IETF
RateLimit-Policy field (draft-ietf-httpapi-ratelimit-headers: `"default";q=100;w=10` since
draft 08, `100;w=10` before), and the requests left with their reset (`RateLimit:
"default";r=5;t=3`, `RateLimit-Remaining` / `-Reset`, `X-RateLimit-Remaining` / `-Reset`).

It adapts: a 429 (at most one cut per second) halves the share of the limits in use and pauses
everyone for Retry-After; each success wins back a twentieth. With no limit configured or
stated it learns one: a 429 sets the rate a tenth under what the server was accepting, which
then creeps up until the next 429, so it settles near the server's limit. A 429 is not always a
limit (a server may answer some at random): no cut goes below half the best rate the server
accepted, so random 429s cannot collapse the rate. Only a stream of 429s (half the recent
answers) lowers that floor: a server whose limit really fell is still obeyed.

Thread-safe: each sync runs its own event loop (in `run --all` and the daemon). A slot is taken
under a lock at the moment the request may go, never reserved ahead, so a caller that wakes late
cannot squeeze the gap to the next one.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("reverse_etl.ratelimit")

MARGIN = 0.95  # aim a little under the limit: arrival jitter must not make 21 out of 20
PACED_UP_TO = 60.0  # windows this long or shorter are paced; longer ones (a day) are totals
MIN_RATE = 0.1  # requests per second, however often the server says 429
LEARN_WINDOW = 1.0  # seconds over which the rate the server accepts is measured
FLOOR_SHARE = 0.5  # a cut never goes below this share of the best rate the server accepted
RECENT = 20  # answers that tell an isolated 429 from a stream of them
SUSTAINED = 8  # 429s among the RECENT answers that make a stream (the server means it)


@dataclass(frozen=True)
class Window:
    """A rate limit as APIs state it: at most `limit` requests in any rolling window of
    `seconds` seconds (e.g. Window(100, 10.0): 100 per 10 s)."""

    limit: int
    seconds: float

    def __str__(self) -> str:
        return f"{self.limit} per {self.seconds:g}s"


@dataclass(frozen=True)
class RateHeaders:
    """What an answer's headers say of the rate limit: the windows the server enforces (none
    when not stated), and the requests left with the seconds until they are renewed."""

    windows: tuple[Window, ...] = ()
    remaining: float | None = None
    reset: float | None = None


class SharedWindows:
    """The send times of one destination in a SQLite file that every process of the project
    shares. One write transaction per slot: read the windows' counts, then record the send."""

    PRUNE_EVERY = 256

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.con = sqlite3.connect(
            str(path), timeout=30, isolation_level=None, check_same_thread=False
        )
        self.con.execute("pragma journal_mode = wal")
        self.con.execute("pragma synchronous = normal")
        self.con.execute("create table if not exists sent (t real not null)")
        self.con.execute("create index if not exists sent_t on sent (t)")
        self._claims = 0

    def claim(
        self, now: float, limits: list[tuple[int, float]], interval: float, keep: float
    ) -> float:
        """Record a send at `now` if every (limit, seconds) window has room and the last send of
        any process is `interval` old: 0.0; otherwise the seconds to wait (nothing recorded)."""
        con = self.con
        con.execute("begin immediate")
        try:
            (last,) = con.execute("select max(t) from sent").fetchone()
            if last is not None and last > now + 1.0:  # the wall clock was set back: forget
                con.execute("delete from sent where t > ?", (now,))  # what it had put ahead
                (last,) = con.execute("select max(t) from sent").fetchone()
            wait = (last + interval - now) if last is not None and interval else 0.0
            for limit, seconds in limits:
                (inside,) = con.execute(
                    "select count(*) from sent where t > ?", (now - seconds,)
                ).fetchone()
                if inside >= limit:  # wait until the oldest that counts leaves the window
                    (oldest,) = con.execute(
                        "select t from sent where t > ? order by t limit 1 offset ?",
                        (now - seconds, inside - limit),
                    ).fetchone()
                    wait = max(wait, oldest + seconds - now)
            if wait <= 0:
                con.execute("insert into sent values (?)", (now,))
                self._claims += 1
                if self._claims % self.PRUNE_EVERY == 0:
                    con.execute("delete from sent where t < ?", (now - keep,))
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        return max(0.0, wait)

    def close(self) -> None:
        self.con.close()


class RateLimiter:
    def __init__(
        self,
        windows: list[Window] | None = None,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedWindows | None = None,
    ) -> None:
        self.windows = sorted(windows or [], key=lambda w: w.seconds)
        self.stated: tuple[Window, ...] = ()  # the windows the server says it enforces
        self.clock = clock
        self.shared = shared  # the project's send times, across processes (wall clock)
        self.scale = 1.0  # the share of the limits in use (adaptive)
        self.learned: float | None = None  # requests per second, when no limit is known
        self.max_pause = math.inf  # the longest pause a header may impose (seconds)
        self._sent: list[float] = []  # send times, ascending, within the longest window
        self._ok: list[float] = []  # times of accepted requests (to learn an unstated limit)
        self._best = 0.0  # the most requests per second the server accepted (for the floor)
        self._recent: deque[bool] = deque(maxlen=RECENT)  # the latest answers: 429 or not
        self._next = 0.0  # the earliest moment the next request may go (pacing)
        self._paused_until = 0.0
        self._last_cut = -math.inf
        self._lock = threading.Lock()
        self.waited_seconds = 0.0  # time requests spent waiting for a slot (for /metrics)
        self.throttled_total = 0  # 429 answers

    @property
    def configured(self) -> bool:
        """Whether a limit is known (configured, or stated by the server)."""
        return bool(self.windows or self.stated)

    def _all_windows(self) -> list[Window]:
        return self.windows + list(self.stated)

    def _keep(self) -> float:
        return max([w.seconds for w in self._all_windows()] + [LEARN_WINDOW, 600.0])

    def try_acquire(self) -> float:
        """Take a slot if one is free now (0.0); otherwise the seconds until one may be."""
        with self._lock:
            now = self.clock()
            interval = self._interval()
            if self._next > now + interval + 1.0:  # the (wall) clock was set back
                self._next = now
            if self._paused_until > now + self.max_pause + 1.0:
                self._paused_until = now
            wait = max(self._paused_until - now, self._next - now)
            if wait > 0:
                return wait
            limits = [(self._limit(w), w.seconds) for w in self._all_windows()]
            if self.shared is not None and limits:
                try:
                    wait = self.shared.claim(now, limits, interval, self._keep())
                except sqlite3.Error as exc:  # a full disk: the limits hold in this process
                    log.warning("rate limits shared through %s fail: %s", self.shared.path, exc)
                    self.shared = None
                    wait = self._window_wait(now, limits)
            else:
                wait = self._window_wait(now, limits)
            if wait > 0:
                return wait
            self._sent.append(now)
            self._forget(now)
            self._next = now + interval
            return 0.0

    def _limit(self, window: Window) -> int:
        return max(1, math.floor(window.limit * self.scale * MARGIN))

    def _window_wait(self, now: float, limits: list[tuple[int, float]]) -> float:
        wait = 0.0
        for limit, seconds in limits:
            start = bisect.bisect_right(self._sent, now - seconds)
            inside = len(self._sent) - start
            if inside >= limit:  # wait until the oldest that counts leaves the window
                oldest = self._sent[len(self._sent) - limit]
                wait = max(wait, oldest + seconds - now)
        return wait

    def _interval(self) -> float:
        rates = [
            w.limit * self.scale * MARGIN / w.seconds
            for w in self._all_windows()
            if w.seconds <= PACED_UP_TO
        ]
        if self.learned is not None and not self.configured:
            rates.append(self.learned)
        return 1.0 / min(rates) if rates else 0.0

    def _forget(self, now: float) -> None:
        cut = bisect.bisect_right(self._sent, now - self._keep())
        if cut > 1024 or cut > len(self._sent) // 2:
            del self._sent[:cut]

    def _accepted_rate(self, now: float) -> float | None:
        """Requests accepted in the last LEARN_WINDOW, per second: a server that limits per
        second has just told us its limit is about this."""
        start = bisect.bisect_right(self._ok, now - LEARN_WINDOW)
        accepted = len(self._ok) - start
        return accepted / LEARN_WINDOW if accepted else None

    def floor(self) -> float:
        """Requests per second no cut goes below: FLOOR_SHARE of the most the server accepted
        in one LEARN_WINDOW. Random 429s leave successes around them and do not lower it; a
        stream of 429s halves it at each cut, so that a limit really lower is found."""
        return max(MIN_RATE, FLOOR_SHARE * self._best)

    def throttled(self, retry_after: float | None) -> None:
        """The destination said 429: slow down, and pause everyone for Retry-After (at most
        max_pause: the engine fails a batch asked to wait longer)."""
        with self._lock:
            now = self.clock()
            self.throttled_total += 1
            if retry_after and retry_after > 0:
                self._paused_until = max(self._paused_until, now + min(retry_after, self.max_pause))
            # Requests in flight together meet the same limit: one cut per second is enough.
            self._recent.append(True)
            stream = sum(self._recent) >= SUSTAINED  # not an isolated 429: the server means it
            # A 429 that says when to retry has been obeyed by the pause; only a stream of them
            # says the rate is too high. Without Retry-After, each is the only hint there is.
            if (stream or not retry_after) and now - self._last_cut >= 1.0:
                self._last_cut = now
                if stream:  # halve the floor, then judge on a fresh sample
                    self._best /= 2
                    self._recent.clear()
                floor = self.floor()
                if self.configured:
                    paced = self._interval()
                    full = 1.0 / paced / self.scale if paced else None  # requests/s at scale 1
                    least = min(1.0, floor / full) if full else 0.05
                    self.scale = max(0.05, least, self.scale / 2)
                else:  # the server just told us its limit: about what it has been accepting
                    accepted = self._accepted_rate(now)
                    guess = accepted * 0.9 if accepted else (self.learned or 2.0) / 2
                    self.learned = max(floor, guess)
            self._next = max(self._next, now + self._interval())

    def waited(self, seconds: float) -> None:
        with self._lock:
            self.waited_seconds += seconds

    def succeeded(self) -> None:
        with self._lock:
            now = self.clock()
            self._ok.append(now)
            self._recent.append(False)
            if len(self._ok) > 4096:
                del self._ok[: bisect.bisect_right(self._ok, now - LEARN_WINDOW)]
            accepted = len(self._ok) - bisect.bisect_right(self._ok, now - LEARN_WINDOW)
            self._best = max(self._best, accepted / LEARN_WINDOW)
            if self.scale < 1.0:
                self.scale = min(1.0, self.scale + 0.05)
            if self.learned is not None:
                # Creep back up by 5% of the rate per second of successes (one success adds
                # 0.05 requests/s), till the next 429: a sawtooth just under the real limit.
                self.learned += 0.05

    def observe(self, stated: RateHeaders | None) -> None:
        """What an answer said of the limit. A stated window is obeyed from now on; when few
        requests are left, they are spread over the time that remains (none: wait for it, at
        most max_pause)."""
        if stated is None:
            return
        with self._lock:
            now = self.clock()
            if stated.windows and stated.windows != self.stated:
                log.info("the destination states its rate limit: %s", _told(stated.windows))
                self.stated = stated.windows
            remaining, reset = stated.remaining, stated.reset
            if remaining is None or reset is None or not math.isfinite(reset) or reset < 0:
                return
            reset = min(reset, self.max_pause)
            if remaining <= 0:
                self._paused_until = max(self._paused_until, now + reset)
            elif remaining < 10:
                self._next = max(self._next, now + reset / remaining)

    def describe(self) -> str:
        windows = self._all_windows()
        if windows:
            return ", ".join(str(w) for w in windows)
        return f"learned {self.learned:.1f}/s" if self.learned else "unlimited"


def requests_left(headers: Mapping[str, str]) -> RateHeaders | None:
    """The standard and common rate-limit headers of an answer; None without any.

    - IETF draft-ietf-httpapi-ratelimit-headers
      (https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/):
      `RateLimit-Policy: "default";q=100;w=10` (draft 08 on; `100;w=10` before, `l=` in 07) is
      the window; `RateLimit: "default";r=50;t=30` (07: `limit=100, remaining=50, reset=30`)
      the requests left and the seconds until renewed (with several, the fewest left).
    - Drafts up to 06 and most APIs: `RateLimit-Limit` / `X-RateLimit-Limit` (a window only
      with `...-Policy`), `RateLimit-Remaining` / `X-RateLimit-Remaining` with `...-Reset` in
      seconds or as a Unix time.
    Values that are not finite numbers (inf, nan, garbage) are ignored."""
    windows = _policy_windows(headers.get("ratelimit-policy") or headers.get("x-ratelimit-policy"))
    remaining, reset = _ratelimit_field(headers.get("ratelimit"))
    if remaining is None:
        remaining = header_number(headers, "ratelimit-remaining", "x-ratelimit-remaining")
        reset = header_number(headers, "ratelimit-reset", "x-ratelimit-reset")
    if reset is not None and reset > 1e9:  # some APIs give the reset as a Unix time
        reset = max(0.0, reset - time.time())
    if not windows and (remaining is None or reset is None):
        return None
    return RateHeaders(windows, remaining, reset)


_PARAM = re.compile(r"([A-Za-z][\w-]*)\s*=\s*\"?([^;,\"]*)\"?")


def _items(value: str) -> list[tuple[str, dict[str, str]]]:
    """A structured-field list, leniently: each item's bare value and its key=value params."""
    items = []
    for raw in value.split(","):
        parts = [p.strip() for p in raw.split(";")]
        params = {}
        for part in parts[1:]:
            if match := _PARAM.fullmatch(part):
                params[match.group(1).lower()] = match.group(2).strip()
        items.append((parts[0].strip().strip('"'), params))
    return items


def _policy_windows(value: str | None) -> tuple[Window, ...]:
    if not value:
        return ()
    windows = []
    for bare, params in _items(value):
        quota = _finite(params.get("q") or params.get("l") or bare)
        seconds = _finite(params.get("w"))
        if quota is not None and seconds and quota >= 1 and seconds > 0:
            windows.append(Window(int(quota), seconds))
    return tuple(windows)


def _told(windows: tuple[Window, ...]) -> str:
    return ", ".join(str(w) for w in windows)


def _ratelimit_field(value: str | None) -> tuple[float | None, float | None]:
    """The RateLimit field: `"p";r=50;t=30` (draft 08 on) or `limit=.., remaining=.., reset=..`
    (draft 07). The item with the fewest requests left counts."""
    if not value:
        return None, None
    if "remaining=" in value:  # draft 07: one dictionary
        params = {m.group(1).lower(): m.group(2) for m in _PARAM.finditer(value)}
        return _finite(params.get("remaining")), _finite(params.get("reset"))
    best: tuple[float | None, float | None] = (None, None)
    for _, params in _items(value):
        r, t = _finite(params.get("r")), _finite(params.get("t"))
        if r is not None and t is not None and (best[0] is None or r < best[0]):
            best = (r, t)
    return best


def _finite(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def header_number(headers: Mapping[str, str], *names: str) -> float | None:
    for name in names:
        value = headers.get(name)
        if value is not None:
            return _finite(value.split(",")[0].split(";")[0].strip())
    return None


_limiters: dict[tuple[str, str], RateLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(
    scope: str,
    destination: str,
    windows: list[Window],
    state_dir: Path | None = None,
    max_pause: float = math.inf,
) -> RateLimiter:
    """The process-wide limiter of one destination file (scope: the project folder), shared by
    every sync and every run that sends to it. With `state_dir`, its send times are shared with
    the project's other processes through `state_dir/ratelimits/<destination>.sqlite`."""
    with _registry_lock:
        limiter = _limiters.get((scope, destination))
        if limiter is None or limiter.windows != sorted(windows, key=lambda w: w.seconds):
            previous = _limiters.get((scope, destination))
            shared = previous.shared if previous is not None else None
            if shared is None and state_dir is not None:
                shared = _open_shared(state_dir / "ratelimits" / f"{destination}.sqlite")
            clock = time.time if shared is not None else time.monotonic  # one clock for all
            limiter = RateLimiter(windows, clock=clock, shared=shared)
            _limiters[(scope, destination)] = limiter
            if previous is not None:  # the totals are counters: they never go down
                limiter.waited_seconds = previous.waited_seconds
                limiter.throttled_total = previous.throttled_total
        limiter.max_pause = max_pause
        return limiter


def _open_shared(path: Path) -> SharedWindows | None:
    try:
        return SharedWindows(path)
    except (OSError, sqlite3.Error) as exc:  # a read-only state folder: limits per process
        log.warning(
            "the rate limits of %s hold within this process only: %s cannot be used (%s)",
            path.stem,
            path,
            exc,
        )
        return None


def limiters(scope: str) -> dict[str, RateLimiter]:
    """The limiters of one project folder in this process, by destination."""
    with _registry_lock:
        return {dest: limiter for (s, dest), limiter in _limiters.items() if s == scope}
