"""The destination adapter contract (version 1; docs/writing-a-destination.md).

An adapter is a subclass of `Destination`: it declares what it can do as data on the class
(its `type`, settings model, operations, maximum batch size, key identity, which operations are
safe to repeat or can be looked up, and `contract_version = 1`) and implements `send`, which
turns one batch into one request (or a few) and answers one result per record, in order:
DELIVERED, Rejected(error) or Retry(error). It raises only for conditions of the whole batch,
typed by what the engine does next (reverse_etl.destinations.signals): Throttled, Retryable,
NotSent, Unreachable, SplitBatch, BatchFailed, CredentialsError, DestinationError.

What the engine does for every adapter, so that none has to: it builds the httpx client an
HTTP adapter is given (`self.client`: timeouts, connection limits, TLS unless its `address`
names only plain http:// URLs, answers read up to ANSWER_LIMIT_BYTES) and takes a rate-limit
slot before each request sent through it; an adapter that speaks another protocol
(`speaks_http = False`) gets one slot before each call of send, reconcile and check. It maps
transport failures (timeouts, refused or dropped connections) to the signals; and it reads
rate-limit headers from every answer (`requests_left`). A 2xx whose body is not the vendor's
answer (a proxy's HTML page, truncated JSON, another shape) or that names a record the batch
does not hold is raised as `untrusted(...)`, a Retryable: it is never taken for "all
delivered".

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
    check()            test the connection and credentials, sending no data (`reverse-etl check`)
    reconcile(batch)   look records up after an unknown outcome (see above)
    aclose()           release what it holds (database connections) when the run's sending ends
    sync_problems()    what a sync's settings ask that this destination cannot do (validation)
    key_identity_for() the key identity, where it depends on the settings
    requests_left()    what a vendor's own rate-limit headers say
    address()          where the records live, when the usual URL settings do not say it
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
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)

from ..delivery.ratelimit import RateHeaders, Window, requests_left
from .signals import (
    AnswerTooLarge,
    BatchFailed,
    CredentialsError,
    DestinationError,
    DestinationSignal,
    NotSent,
    Retryable,
    SplitBatch,
    Throttled,
    Unreachable,
)

if TYPE_CHECKING:  # adapters get httpx objects from the engine; importing it here costs start-up
    import httpx

__all__ = [
    "ANSWER_LIMIT_BYTES",
    "CONTRACT_VERSION",
    "DELIVERED",
    "ERROR_TEXT_LIMIT",
    "OPERATIONS",
    "AnswerTooLarge",
    "Batch",
    "BatchFailed",
    "CredentialsError",
    "Delivered",
    "Destination",
    "DestinationError",
    "DestinationSettings",
    "DestinationSignal",
    "HeaderSecret",
    "KeyIdentity",
    "KeyMatch",
    "NotSent",
    "RateHeaders",
    "Record",
    "Rejected",
    "Result",
    "Retry",
    "Retryable",
    "SplitBatch",
    "SyncTarget",
    "Throttled",
    "Unreachable",
    "Window",
    "excerpt",
    "http_url",
    "json_object",
    "key_value",
    "raise_for_batch_status",
    "requests_left",
    "response_text",
    "retry_after_seconds",
    "untrusted",
]

log = logging.getLogger("reverse_etl.destinations")

# The version of this contract. An adapter declares the one it was written for as the number
# itself (`contract_version = 1`); the registry refuses one declaring another, or none.
CONTRACT_VERSION = 1

OPERATIONS = ("upsert", "update", "insert", "delete")
ERROR_TEXT_LIMIT = 500
# What is read of any answer (bytes, decoded): a bigger one fails its batch unread (a 200 MB
# answer held in memory took 736 MB).
ANSWER_LIMIT_BYTES = 8 * 1024 * 1024


# What takes the rate-limit slot of one request: set by what drives an adapter (a run's
# delivery, a check) for the adapter's whole life, and awaited by the request hook of the client
# the engine builds, and by request_slot(). Being a context variable, it reaches every request
# the adapter makes, in the task that drives it or in tasks it starts, with nothing passed along.
pacing: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar("pacing", default=None)


def http_url(url: str) -> str:
    """The rule every destination's URL setting keeps: http:// or https:// (in any letter
    case), a host, a port from 1 to 65535, and printable ASCII without spaces (what an HTTP
    client can send: anything else is percent-encoded). The URL as given, or ValueError saying
    what is wrong without repeating it (it may hold a token)."""
    from urllib.parse import urlsplit  # (not httpx: plan and validate never import it)

    if not url.lower().startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    if not all("!" <= char <= "~" for char in url):
        raise ValueError(
            "holds a space, a control character or a non-ASCII letter: percent-encode it"
        )
    try:
        parsed = urlsplit(url)
        if parsed.port == 0:  # urlsplit refuses a port beyond 65535 itself
            raise ValueError
    except ValueError:
        raise ValueError(
            "is not a valid URL (a port from 1 to 65535; percent-encode what a password "
            "holds of / : @ ? #)"
        ) from None
    if not parsed.hostname:
        raise ValueError("has no host")
    return url


def _header_safe(value: SecretStr) -> SecretStr:
    text = value.get_secret_value()
    if not text.strip():
        raise ValueError("is empty (is the ${VAR} it names set?)")
    if text != text.strip():
        raise ValueError("starts or ends with a space or a line break")
    if not all(" " <= char <= "~" for char in text):
        raise ValueError(
            "holds a character an HTTP header cannot carry (only printable ASCII: a line "
            "break, a zero-width space or a non-ASCII letter was pasted in?)"
        )
    return value


HeaderSecret = Annotated[SecretStr, AfterValidator(_header_safe)]
"""A secret sent in an HTTP header (a token, an API key): set, without spaces at either end,
printable ASCII only (RFC 9110, section 5.5), or a validation error on its line; a value no
request could carry is never found out at the first request."""


class DestinationSettings(BaseModel):
    """The keys of a destination file every type has (times in seconds, as floats); an
    adapter's `settings_model` subclasses it with its own, secrets as SecretStr. Invalid
    values are validation errors naming the key and its line."""

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

    @field_validator("*")
    @classmethod
    def _secret_given(cls, value: Any, info: ValidationInfo) -> Any:
        """A required secret (a token, a key, a DSN) that is empty or padded with spaces is a
        `${VAR}` that was not set: said here, on its line, not as an HTTP client's error at
        the first request (HTTP forbids a header value with a space at either end, RFC 9110
        section 5.5)."""
        field = cls.model_fields.get(info.field_name or "")
        if not isinstance(value, SecretStr) or field is None or not field.is_required():
            return value
        text = value.get_secret_value()
        if not text.strip():
            raise ValueError("is empty (is the ${VAR} it names set?)")
        if text != text.strip():
            raise ValueError("starts or ends with a space or a line break")
        return value

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


# One record to send: (key, fields). The key is text: the key's value, or for a composite key
# the JSON array of its values (`[7,"eu"]`). The fields are the record's JSON object as text,
# already encoded per the wire format (docs/wire-format.md): every column of the model, the
# key columns included; for a delete, the values last delivered. A plain tuple, as DuckDB
# returns it: no object is built per record.
Record = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Batch:
    """One request's worth of records of one sync, all of one operation.

    sync: the sync's name. object: the sync's `object` (e.g. "contacts", a table), or None.
    operation: "upsert", "update", "insert" or "delete" (one of the adapter's `operations`).
    records: the records, in the order results are answered (see Record); at most the
    adapter's `max_batch_size` and the sync's batch_size; never empty when the engine sends.
    primary_key: the sync's key columns (e.g. HubSpot's idProperty). run_id: the run sending
    it, the same on every retry within the run."""

    sync: str
    object: str | None
    operation: str
    records: list[Record]
    primary_key: tuple[str, ...] = ()
    run_id: str = ""


@dataclass(frozen=True, slots=True)
class Delivered:
    """The record was written (use the DELIVERED instance): it is acknowledged, and the next
    run sends it only if it changes."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """The destination refused the record for what it holds (an invalid email, a missing
    record to update). `error`: the vendor's words, shown in `reverse-etl rejected`. The
    record is sent again next run, and quarantined after max_attempts runs in a row.
    `exists`: refused because a record with its key already exists (a 409, DUPLICATE_VALUE),
    which counts as delivered when this run's own create of it may have landed."""

    error: str
    exists: bool = False


@dataclass(frozen=True, slots=True)
class Retry:
    """The record could not be written now (a locked row): the engine sends it again in this
    run, alone with the others so answered, after `after` seconds (or its backoff), up to
    max_retries; then it fails for this run with `error` and stays owed."""

    error: str
    after: float | None = None


Result = Delivered | Rejected | Retry
DELIVERED = Delivered()


@dataclass(frozen=True)
class SyncTarget:
    """What a sync asks of its destination, for the destination to validate: its `object`
    (or None), its mode ("upsert", "update", "insert" or "mirror") and its key columns."""

    object: str | None
    mode: str
    primary_key: tuple[str, ...]


KeyIdentity = Literal["exact", "case_insensitive"]

MODE_OPERATION = {"upsert": "upsert", "update": "update", "insert": "insert", "mirror": "upsert"}


class Destination(ABC):
    """Base class of every adapter: subclass it, declare the class attributes below, implement
    `send` (see the module's docstring for the whole contract)."""

    # The version of the contract the adapter was written for: 1 (the number itself, not
    # CONTRACT_VERSION). Every adapter declares it; the registry refuses any other, or none.
    contract_version: ClassVar[int]
    type: ClassVar[str]  # noqa: A003 (the name destination files give as `type`)
    description: ClassVar[str] = ""  # one line, for `reverse-etl destinations`
    # The settings of a destination file of this type (secrets as SecretStr). Its defaults are
    # the type's defaults, its default rate limits included.
    settings_model: ClassVar[builtins.type[DestinationSettings]] = DestinationSettings
    operations: ClassVar[frozenset[str]] = frozenset(OPERATIONS)  # those `send` takes
    # Records per request the vendor accepts at most: caps batch_size (None: no cap).
    max_batch_size: ClassVar[int | None] = None
    # Safe to send twice (see the module's docstring); insert is not, unless the adapter says.
    idempotent_operations: ClassVar[frozenset[str]] = frozenset({"upsert", "update", "delete"})
    # Non-idempotent operations whose records `reconcile` can look up after an unknown outcome.
    reconcilable_operations: ClassVar[frozenset[str]] = frozenset()
    # How the vendor tells records apart by key: "exact" (as text) or "case_insensitive"
    # (`A@x.com` and `a@x.com` are one record, as HubSpot's emails). The engine diffs on that
    # identity: two rows of one identity are invalid, a key whose letter case changes is one
    # update, and no delete is sent for an identity the model still has. Declare it from the
    # vendor's documentation; where the settings decide it, override key_identity_for.
    key_identity: ClassVar[KeyIdentity] = "exact"
    # Whether requests go through `self.client`, each paced by the engine. An adapter of
    # another protocol (a database driver, a vendor's SDK) sets False: the engine then takes
    # one rate-limit slot before each call of send, reconcile and check, and the adapter
    # awaits request_slot() before each further request of that call.
    speaks_http: ClassVar[bool] = True

    def __init__(self, name: str, settings: DestinationSettings, client: httpx.AsyncClient) -> None:
        """name: the destination file's stem. settings: an instance of `settings_model`.
        client: the engine's httpx client, shared by the run's requests (timeouts, connection
        limits up to max_concurrency, rate-limit pacing, answers read up to
        ANSWER_LIMIT_BYTES); unused by an adapter that does not speak HTTP."""
        self.name = name
        self.settings = settings
        self.client = client

    @abstractmethod
    async def send(self, batch: Batch) -> list[Result]:
        """Send one batch; return exactly one result per record of `batch.records`, in their
        order: DELIVERED, Rejected(error) or Retry(error, after=seconds). A result missing or
        one too many fails the batch and stops the run.

        Shapes: each record is `(key, fields)`, both text: the key's value, or for a composite
        key the JSON array of its values (`[7,"eu"]`); the fields, the record's JSON object in
        the wire format (docs/wire-format.md), every column of the model.

        Raises, for the whole batch only, one of reverse_etl.destinations.signals (Throttled,
        Retryable, NotSent, Unreachable, SplitBatch, BatchFailed, CredentialsError,
        DestinationError); let the client's own exceptions propagate: the engine maps
        transport failures to signals, and its pacing may stop a request. Any other exception
        is a bug: the batch's records fail and the run stops.

        Time: seconds, as floats, everywhere (timeout_seconds, retry_after, Retry.after). Each
        request through `self.client` is bounded whole by timeout_seconds; an adapter of
        another protocol bounds its own calls by it.

        Concurrency: the engine calls send (and reconcile) for up to max_concurrency batches
        at once, on one event loop: keep no state of one batch on `self`.

        Repeats: a batch may be sent again: after a timeout, a dropped connection, a 5xx or an
        untrusted answer (the first request may have been applied), after Throttled, and by
        the next run for the records this run did not acknowledge. So an operation in
        `idempotent_operations` must leave the destination as one request would when sent
        twice (an upsert by key, not an append); for another, the engine looks the records up
        (`reconcile`) or fails them rather than send them again blindly."""

    async def reconcile(self, batch: Batch) -> list[Result | None]:
        """After an unknown outcome of `batch` (an operation of `reconcilable_operations`): one
        entry per record, in order: DELIVERED when the vendor holds a record with its key (the
        lost request wrote it), None when it holds none (the record is sent again), or
        Rejected. Raises as `send` does when it cannot tell (Retryable: asked again later;
        SplitBatch is taken as BatchFailed: a lookup is not split)."""
        raise NotImplementedError(f"{self.type} cannot look records up")

    async def check(self) -> str:
        """Test the connection and the credentials without sending any data: one line saying
        what was checked (`reverse-etl check`). Raises CredentialsError or DestinationError;
        a transport failure is reported as "unreachable", any other signal as a failed
        check naming the answer."""
        raise DestinationError(f"destination type {self.type!r} has no connection check")

    async def request_slot(self) -> None:
        """For a request that does not go through `self.client` (a vendor's SDK, a second
        statement): wait for its slot of the destination's rate limit. Requests through
        `self.client` take theirs by themselves, and must not call this. Raises what the
        engine raises to stop sending (the run stopped; the wait would exceed
        max_retry_after_seconds): let it propagate."""
        take = pacing.get()
        if take is not None:
            await take()

    async def aclose(self) -> None:  # noqa: B027 (optional: most adapters hold nothing)
        """Release what the adapter holds (a connection pool); called once, when its run has
        stopped sending (or its check is done). The client is closed by the engine."""

    @classmethod
    def requests_left(cls, headers: Mapping[str, str]) -> RateHeaders | None:
        """What an answer's headers say of the rate limit: the window the server enforces and
        the requests left with the seconds until they are renewed, read by the rate limiter to
        obey the server's limit before a 429 (None: they say nothing). The IETF
        RateLimit-Policy / RateLimit fields and the common X-RateLimit-* headers by default; a
        vendor with headers of its own overrides it."""
        return requests_left(headers)

    @classmethod
    def sync_problems(
        cls, settings: DestinationSettings, sync: SyncTarget
    ) -> list[tuple[str, str]]:
        """What a sync asks that this destination cannot do: (header key, message) pairs,
        reported at validation on that key's line (exit 2). The base checks the mode's
        operations; an adapter adds its own (an object it needs, one key column)."""
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
    def key_identity_for(cls, settings: DestinationSettings, sync: SyncTarget) -> KeyIdentity:
        """The key identity of one sync (see `key_identity`): the class's, unless an adapter
        whose settings decide it (a receiver's rule, a field marked case-sensitive) overrides
        this."""
        return cls.key_identity

    @classmethod
    def address(cls, settings: DestinationSettings) -> str:
        """Where the destination keeps its records, as far as its settings tell: its URL
        (without credentials or query), its database and table; several, space-separated.
        Part of a sync's target: a sync whose destination file points elsewhere starts over,
        sending the new place every row. The engine also reads its scheme: an HTTP adapter
        whose every place is a plain http:// URL gets a client without TLS. The default reads
        the usual settings (url, base_url, instance_url, rest_endpoint, dsn, table); an
        adapter whose records live elsewhere overrides it."""
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
        """The rate limits that apply when the destination file sets none: the settings
        model's defaults (declared there, e.g. `requests_per_10_seconds: int | None = 100`)."""
        fields = cls.settings_model.model_fields
        defaults = {name: field.default for name, field in fields.items()}
        return DestinationSettings.model_construct(**defaults).rate_windows()


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


def response_text(response: httpx.Response) -> str:
    """An answer as one line for messages: `HTTP <status>: <its body>` (its reason phrase
    when the body is empty), cut after ERROR_TEXT_LIMIT characters."""
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
        """The position in the batch of the record whose key `echoed` is (text, a number or
        a list as the vendor gives it back), or None when it names none."""
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
