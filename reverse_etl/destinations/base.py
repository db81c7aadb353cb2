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
treats them as Retryable. A 2xx whose body is not the vendor's answer (a proxy's HTML page,
truncated JSON, another shape) or that names a record the batch does not hold is raised as
`untrusted(...)`, a Retryable: it is never taken for "all delivered". A DestinationError
(errors.DestinationError) stops the run's sending as CredentialsError does, with its message
(e.g. a daily API quota that is spent).

An adapter whose batch takes several requests (a lookup, then the write) awaits `self.pace()`
before each after the first: the engine's rate limiter takes a slot for each, so limits hold.

Operations that are not safe to repeat (docs/guarantees.md):
an adapter lists in `idempotent_operations` those that may be sent twice with no other effect
than once (upsert, update, delete usually are; a create is not). When a request of another
operation has an unknown outcome (a timeout after sending, a dropped connection, a 5xx, an
unreadable answer), the engine never sends it again blindly: if the operation is in
`reconcilable_operations` it first calls `reconcile(batch)`, which looks the records up at the
vendor (Delivered: the lost request wrote it; None: not there, send it again); otherwise the
records fail for this run, the reason saying the outcome is unknown. A record refused because
a record with its key already exists is answered `Rejected(error, exists=True)`: when this
run's lost request may have created it, the engine counts it delivered.

Besides `send`, an adapter may override:
    check()          test the connection and credentials without sending data (`reverse-etl check`)
    aclose()         release what it holds (database connections) when the run's sending ends
    sync_problems()  what a sync's settings ask that this destination cannot do (validation)
Its default rate limits are its settings model's defaults (e.g. requests_per_10_seconds = 100).
"""

from __future__ import annotations

import builtins
import email.utils
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from ..delivery.ratelimit import RateHeaders, Window, requests_left
from ..errors import CredentialsError, DestinationError

if TYPE_CHECKING:  # adapters get httpx objects from the engine; importing it here costs start-up
    import httpx

log = logging.getLogger("reverse_etl.destinations")

OPERATIONS = ("upsert", "update", "insert", "delete")
ERROR_TEXT_LIMIT = 500
# What is read of any answer (bytes, decoded): a bigger one fails its batch unread (a 200 MB
# answer held in memory took 736 MB).
ANSWER_LIMIT_BYTES = 8 * 1024 * 1024


class DestinationSettings(BaseModel):
    """Settings every destination has; adapters subclass this with their own."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # no inf rate or timeout

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
    run_id: str = ""  # the run sending it: the same on every retry within the run


@dataclass(frozen=True, slots=True)
class Delivered:
    pass


@dataclass(frozen=True, slots=True)
class Rejected:
    error: str
    exists: bool = False  # refused because a record with this key exists (409, DUPLICATE_VALUE)


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


class AnswerTooLarge(Retryable):
    """An answer longer than ANSWER_LIMIT_BYTES: not read further, its batch not trusted."""


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


KeyIdentity = Literal["exact", "case_insensitive"]

MODE_OPERATION = {"upsert": "upsert", "update": "update", "insert": "insert", "mirror": "upsert"}


class Destination:
    """Base class of every adapter."""

    type: ClassVar[str]  # noqa: A003 (the adapter's `type` name, as in destination files)
    description: ClassVar[str] = ""  # one line, for `reverse-etl destinations`
    settings_model: ClassVar[builtins.type[DestinationSettings]] = DestinationSettings
    operations: ClassVar[frozenset[str]] = frozenset(OPERATIONS)
    # Safe to send twice (see the module's docstring); insert is not, unless the adapter says.
    idempotent_operations: ClassVar[frozenset[str]] = frozenset({"upsert", "update", "delete"})
    # Non-idempotent operations whose records `reconcile` can look up after an unknown outcome.
    reconcilable_operations: ClassVar[frozenset[str]] = frozenset()
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

    async def reconcile(self, batch: Batch) -> list[Result | None]:
        """After an unknown outcome of `batch` (an operation of `reconcilable_operations`): one
        entry per record, in order: DELIVERED when the vendor holds a record with its key (the
        lost request wrote it), None when it holds none (the record is sent again), or
        Rejected. Raises as `send` does when it cannot tell (Retryable: asked again later)."""
        raise NotImplementedError(f"{self.type} cannot look records up")

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
    def key_identity(cls, settings: DestinationSettings, sync: SyncTarget) -> KeyIdentity:
        """How the destination tells records apart by the sync's primary key: "exact" (as
        text, the default) or "case_insensitive" (`A@x.com` and `a@x.com` are one record, as
        HubSpot's emails). The engine diffs on that identity: two rows of one identity are
        invalid, a key whose letter case changes is one update, and no delete is sent for an
        identity the model still has. Declare it from the vendor's documentation."""
        return "exact"

    @classmethod
    def address(cls, settings: DestinationSettings) -> str:
        """Where the destination keeps its records, as far as its settings tell: its URL
        (without credentials or query), its database and table. Part of a sync's target: a
        sync whose destination file points elsewhere starts over, sending the new place every
        row. The default reads the usual settings (url, base_url, instance_url, rest_endpoint,
        dsn, table); an adapter whose records live elsewhere overrides it."""
        parts = []
        for name in ("url", "base_url", "instance_url", "rest_endpoint", "dsn", "table"):
            value: Any = getattr(settings, name, None)
            if hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            if value:
                parts.append(_without_credentials(str(value)))
        return " ".join(parts)

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


# Parameters that authenticate rather than locate: a rotated token is the same place.
_CREDENTIAL = re.compile(r"pass|token|secret|key|sig|auth|credential", re.IGNORECASE)


def _without_credentials(value: str) -> str:
    """Where a URL or DSN points, without what authenticates: a URL without its userinfo and
    without query parameters that carry credentials (those that locate, as a PostgreSQL
    URI's host, port, dbname or options, stay); a key=value DSN without its password."""
    parts = urlsplit(value)
    if not parts.scheme or not parts.netloc and not parts.query:
        return re.sub(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", "", value)
    host = parts.netloc.rpartition("@")[2]
    kept = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not _CREDENTIAL.search(k)
    ]
    return urlunsplit((parts.scheme, host, parts.path, urlencode(kept), ""))


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


def untrusted(destination: str, reason: str) -> Retryable:
    """A 2xx answer that cannot be trusted (not the vendor's answer, or naming a record the
    batch does not hold): logged, and raised by the adapter so that its batch is not taken for
    delivered (sent again; the engine looks first when the operation is not idempotent)."""
    message = f"the answer cannot be trusted: {reason}"
    log.warning("%s: %s; the batch is not counted as delivered", destination, message)
    return Retryable(message)


def excerpt(content: bytes) -> str:
    """The start of an answer's body, for messages."""
    text = content[:200].decode("utf-8", "replace").strip()
    return repr(text + ("..." if len(content) > 200 else "")) if text else "an empty body"


def json_object(content: bytes, **options: Any) -> dict[str, Any] | None:
    """The body as a JSON object, None when it is not one (HTML, truncated, an array...)."""
    try:
        value = json.loads(content, **options)
    except ValueError:  # UnicodeDecodeError included
        return None
    return value if isinstance(value, dict) else None


def key_value(value: Any) -> Any:
    """A key as a value, to match a key a vendor echoes back to a record's key however it is
    written: `42` and `"42"` are one key, and a composite key's JSON array is one key whatever
    its spacing (`["pro", "eu"]`, `"[\"pro\",\"eu\"]"`). Numbers compare by value (1.50 is 1.5)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text, parse_float=Decimal)
            except ValueError:
                return value
            if isinstance(parsed, list):
                return key_value(parsed)
        return value
    if isinstance(value, list):
        return tuple(_element(item) for item in value)
    return _element(value)


class KeyMatch:
    """Finds the record a key echoed back by a destination names: by its exact text first,
    else by value (key_value). Two keys of a batch alike by value (the text keys `[1]` and
    `[1.0]`) are found only by their exact text: never one for the other."""

    def __init__(self, keys: list[str]) -> None:
        self.exact = {key: i for i, key in enumerate(keys)}
        positions: dict[Any, list[int]] = {}
        for i, key in enumerate(keys):
            positions.setdefault(key_value(key), []).append(i)
        self.by_value = {value: found[0] for value, found in positions.items() if len(found) == 1}

    def find(self, echoed: Any) -> int | None:
        if isinstance(echoed, str) and echoed in self.exact:
            return self.exact[echoed]
        try:
            return self.by_value.get(key_value(echoed))
        except TypeError:  # an unhashable echo (a JSON object): names no key
            return None


def _element(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float | Decimal):
        number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
        return format(number.normalize(), "f") if number.is_finite() else str(number)
    if isinstance(value, list):
        return tuple(_element(item) for item in value)
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def raise_for_batch_status(response: httpx.Response) -> None:
    """Map a non-2xx answer to what the engine should do with the whole batch (docs/wire-format.md,
    "What the receiver's answer does")."""
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
