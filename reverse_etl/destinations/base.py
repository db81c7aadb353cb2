"""The destination adapter contract.

An adapter declares what it can do in class attributes and turns one batch into one HTTP
exchange (or a few). It returns exactly one result per record, in the batch's order, and raises
only for conditions of the whole batch, typed by what the engine should do next:

    Throttled        wait (Retry-After when given), slow down, send the batch again
    Retryable        back off exponentially and send again (5xx, outage, timeout)
    Unreachable      a Retryable that stops the run when retries run out (no connection at all)
    SplitBatch       the batch was refused as a whole for some record in it: split and retry
    BatchFailed      the batch's records fail for this run; they are sent again next run
    CredentialsError stop sending to this destination (errors.CredentialsError)

httpx transport errors (timeouts, refused or dropped connections) may propagate: the engine
treats them as Retryable. A DestinationError (errors.DestinationError) stops the run's sending
as CredentialsError does, with its message (e.g. a daily API quota that is spent).

An adapter whose batch takes several requests (a lookup, then the write) awaits `self.pace()`
before each after the first: the engine's rate limiter takes a slot for each, so limits hold.

Besides `send`, an adapter may override:
    check()          test the connection and credentials without sending data (`reverse-etl check`)
    aclose()         release what it holds (database connections) when the run's sending ends
    sync_problems()  what a sync's settings ask that this destination cannot do (validation)
Its default rate limits are its settings model's defaults (e.g. requests_per_10_seconds = 100).
"""

from __future__ import annotations

import builtins
import email.utils
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ..delivery.ratelimit import RateHeaders, Window, requests_left
from ..errors import CredentialsError, DestinationError

if TYPE_CHECKING:  # adapters get httpx objects from the engine; importing it here costs start-up
    import httpx

OPERATIONS = ("upsert", "update", "insert", "delete")
ERROR_TEXT_LIMIT = 500


class DestinationSettings(BaseModel):
    """Settings every destination has; adapters subclass this with their own."""

    model_config = ConfigDict(extra="forbid")

    type: str
    batch_size: int = Field(
        default=100, ge=1, description="records per request (capped by the type's maximum)"
    )
    requests_per_second: float | None = Field(
        default=None, gt=0, description="rate limit, shared by every sync of this destination"
    )
    requests_per_10_seconds: int | None = Field(default=None, ge=1, description="rate limit")
    requests_per_minute: int | None = Field(default=None, ge=1, description="rate limit")
    requests_per_day: int | None = Field(default=None, ge=1, description="rate limit")
    max_concurrency: int = Field(default=4, ge=1, description="requests in flight at once")
    timeout_seconds: float = Field(
        default=30,
        gt=0,
        description="the most one request may take, whole: connecting, sending, the answer",
    )
    max_retry_after_seconds: float = Field(
        default=300,
        gt=0,
        description="the longest wait a destination may ask (Retry-After, a spent window); "
        "asked longer, the records fail for this run and stay owed",
    )
    max_retries: int = Field(
        default=5, ge=0, description="retries of a batch within one run (429 waits not counted)"
    )
    retry_backoff_seconds: float = Field(
        default=1.0, ge=0, description="first backoff; doubles with each retry, with jitter"
    )
    max_attempts: int = Field(
        default=3, ge=1, description="runs in a row a record may be rejected before quarantine"
    )

    def rate_windows(self) -> list[Window]:
        """The limits set, as windows: at most N requests in any rolling window of W seconds."""
        windows = []
        if (per_second := self.requests_per_second) is not None:
            whole = per_second >= 1 and per_second == int(per_second)
            windows.append(Window(int(per_second), 1.0) if whole else Window(1, 1 / per_second))
        for limit, seconds in (
            (self.requests_per_10_seconds, 10.0),
            (self.requests_per_minute, 60.0),
            (self.requests_per_day, 86_400.0),
        ):
            if limit is not None:
                windows.append(Window(limit, seconds))
        return windows


# One record to send: (key, fields), the fields being the record's JSON object, already encoded
# per the wire format. A plain tuple, as DuckDB returns it: no object is built per record.
Record = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Batch:
    sync: str
    object: str | None
    operation: str
    records: list[Record]
    primary_key: tuple[str, ...] = ()  # the sync's key columns (e.g. HubSpot's idProperty)


@dataclass(frozen=True, slots=True)
class Delivered:
    pass


@dataclass(frozen=True, slots=True)
class Rejected:
    error: str


@dataclass(frozen=True, slots=True)
class Retry:
    error: str
    after: float | None = None


Result = Delivered | Rejected | Retry
DELIVERED = Delivered()


class Throttled(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unreachable(Retryable):
    """The destination cannot be connected to (not HTTP: a database refusing connections).
    Retried as a Retryable; when retries run out the run stops, "unreachable", as it does for
    an HTTP destination that refuses connections."""


class SplitBatch(Exception):
    pass


class BatchFailed(Exception):
    pass


@dataclass(frozen=True)
class SyncTarget:
    """What a sync asks of its destination, for the destination to validate."""

    object: str | None
    mode: str
    primary_key: tuple[str, ...]


MODE_OPERATION = {"upsert": "upsert", "update": "update", "insert": "insert", "mirror": "upsert"}


class Destination:
    """Base class of every adapter."""

    type: ClassVar[str]  # noqa: A003 (the adapter's `type` name, as in destination files)
    description: ClassVar[str] = ""  # one line, for `reverse-etl destinations`
    settings_model: ClassVar[builtins.type[DestinationSettings]] = DestinationSettings
    operations: ClassVar[frozenset[str]] = frozenset(OPERATIONS)
    max_batch_size: ClassVar[int | None] = None

    def __init__(self, name: str, settings: DestinationSettings, client: httpx.AsyncClient) -> None:
        self.name = name
        self.settings = settings
        self.client = client
        # Awaited before each request of a batch after its first (a lookup, then the write):
        # the engine sets one that takes a slot of the rate limiter, so limits hold for all.
        self.pace: Callable[[], Awaitable[None]] = _unpaced

    async def send(self, batch: Batch) -> list[Result]:
        raise NotImplementedError

    async def check(self) -> str:
        """Test the connection and the credentials without sending any data: one line saying
        what was checked. Raises CredentialsError or DestinationError (httpx errors may
        propagate: the caller reports them as unreachable)."""
        raise DestinationError(f"destination type {self.type!r} has no connection check")

    async def aclose(self) -> None:
        """Release what the adapter holds; called once its run has stopped sending."""

    @classmethod
    def requests_left(cls, headers: Mapping[str, str]) -> RateHeaders | None:
        """What an answer's headers say of the rate limit: the window the server enforces and
        the requests left with the seconds until they are renewed, read by the rate limiter to
        obey the server's limit before a 429. The IETF RateLimit-Policy / RateLimit fields and
        the common X-RateLimit-* headers by default; a vendor with headers of its own overrides
        it."""
        return requests_left(headers)

    @classmethod
    def sync_problems(
        cls, settings: DestinationSettings, sync: SyncTarget
    ) -> list[tuple[str, str]]:
        """What a sync asks that this destination cannot do: (header key, message) pairs,
        reported at validation on that key's line. The base checks the mode's operations."""
        problems = []
        mode = sync.mode
        wanted = [MODE_OPERATION[mode]] + (["delete"] if mode == "mirror" else [])
        for operation in wanted:
            if operation not in cls.operations:
                problems.append(
                    (
                        "mode",
                        f"mode {mode!r} needs {operation}s, which destination type {cls.type!r} "
                        f"does not support (it supports: {', '.join(sorted(cls.operations))})",
                    )
                )
        return problems

    @classmethod
    def default_rate_limits(cls) -> list[Window]:
        """The rate limits that apply when the destination file sets none."""
        fields = cls.settings_model.model_fields
        defaults = {name: field.default for name, field in fields.items()}
        return DestinationSettings.model_construct(**defaults).rate_windows()

    @classmethod
    def uses_tls(cls, settings: DestinationSettings) -> bool:
        """Whether requests go over TLS. Loading the CA certificates for a TLS context costs
        about 0.1 s; a destination on plain http:// is spared it."""
        return True


async def _unpaced() -> None:
    """Outside the engine (a check, a test calling send()), nothing to wait for."""


def response_text(response: httpx.Response) -> str:
    text = response.text.strip() or response.reason_phrase
    if len(text) > ERROR_TEXT_LIMIT:
        text = text[:ERROR_TEXT_LIMIT] + "..."
    return f"HTTP {response.status_code}: {text}"


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: a number of seconds, or an HTTP date (RFC 9110 §10.2.3).
    Negative or past: 0. `inf` (or a date centuries away) is kept as a wait longer than any
    max_retry_after_seconds; `nan` and what cannot be read are None (no wait stated)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return None if math.isnan(seconds) else max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    try:
        stamp = when.timestamp()
    except (OverflowError, ValueError, OSError):
        return None
    return max(0.0, stamp - (time.time() if now is None else now))


def raise_for_batch_status(response: httpx.Response) -> None:
    """Map a non-2xx answer to what the engine should do with the whole batch (CONTRACT §2)."""
    status = response.status_code
    if 200 <= status < 300:
        return
    text = response_text(response)
    if status == 429:
        raise Throttled(text, retry_after_seconds(response.headers.get("Retry-After")))
    if status >= 500:
        raise Retryable(text, retry_after_seconds(response.headers.get("Retry-After")))
    if status in (400, 413, 422):
        raise SplitBatch(text)
    if status in (401, 403):
        raise CredentialsError(text)
    raise BatchFailed(text)
