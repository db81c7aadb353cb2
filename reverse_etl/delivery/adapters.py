"""The boundary between the engine and an adapter: the shared httpx client the engine builds
for it (timeouts, connection limits, TLS unless its address is plain http://, a rate-limit
slot before each request, answers read up to a limit), closed with the adapter; the mapping of
httpx's transport failures to the SDK's signals, so that the engine tells failures apart by
signal alone. Imported only when a run or a check talks to a destination (httpx is slow to
import)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from ..destinations.base import (
    ANSWER_LIMIT_BYTES,
    AnswerTooLarge,
    Destination,
    NotSent,
    Retryable,
    Unreachable,
    pacing,
)
from ..errors import CredentialsError, DestinationError

if TYPE_CHECKING:
    from ..project.loader import DestinationSpec
    from .ratelimit import RateLimiter

T = TypeVar("T")

def limiter_pace(spec: DestinationSpec, limiter: RateLimiter) -> Callable[[], Awaitable[None]]:
    """A slot of the destination's rate limit for one request, waited for up to
    max_retry_after_seconds (else DestinationError): the pacing of an adapter outside a
    delivery (its check; while it is opened and closed)."""

    async def take() -> None:
        longest = spec.settings.max_retry_after_seconds
        while (wait := limiter.try_acquire()) > 0:
            if wait > longest:
                raise DestinationError(
                    f"destination {spec.name!r}: the rate limit ({limiter.describe()}) allows "
                    f"the next request in {wait:.0f} s, more than max_retry_after_seconds = "
                    f"{longest:g}"
                )
            await asyncio.sleep(wait)

    return take


async def signalled(call: Awaitable[T]) -> T:
    """Await an adapter's call (send, reconcile) with httpx's transport failures raised as
    the SDK's signals (transport_signal)."""
    try:
        return await call
    except httpx.TransportError as exc:
        raise transport_signal(exc) from exc


def transport_signal(exc: httpx.TransportError) -> Retryable | DestinationError:
    """What a transport failure means to the engine. A connection never made: NotSent for a
    connect or pool timeout, Unreachable for a connect error (refused, no route, no such
    host), which stops the run when retries run out; a create is simply sent again. A request
    that cannot be written at all (an illegal header value: a token from an empty ${VAR}) is
    a DestinationError: sending it again cannot help. Any other (a timeout after the request
    was sent, a dropped connection) may have been applied: a Retryable, after which a create
    is looked up, not sent again blindly."""
    if isinstance(exc, httpx.LocalProtocolError):
        return DestinationError(
            f"the request cannot be sent ({exc}): check the destination file's values (a header "
            "or token made from an empty ${VAR}, a space at either end)"
        )
    if isinstance(exc, httpx.TimeoutException):
        detail = f": {exc}" if str(exc) else ""
        message = f"timed out ({type(exc).__name__}{detail})"
        never_sent = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
        return NotSent(message) if never_sent else Retryable(message)
    message = f"connection failed: {str(exc) or type(exc).__name__}"
    return Unreachable(message) if isinstance(exc, httpx.ConnectError) else Retryable(message)


async def _take_slot(request: httpx.Request) -> None:
    """The client's request hook: the slot of the rate limit this request takes."""
    pace = pacing.get()
    if pace is not None:
        await pace()


def _address_scheme(spec: DestinationSpec) -> str | None:
    """"http" or "https" when every URL of the adapter's address has that scheme, else None
    (no URL, or both)."""
    places = spec.adapter.address(spec.settings).split()
    schemes = {place.partition("://")[0].lower() for place in places}
    return schemes.pop() if len(schemes) == 1 and schemes <= {"http", "https"} else None


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(coroutine), also from a thread whose event loop is running (a Prefect async
    flow, a Jupyter cell), where asyncio.run refuses: there it runs on its own loop in a worker
    thread while the calling thread waits (docs/python-api.md)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(1, thread_name_prefix="reverse-etl-delivery") as worker:
        return worker.submit(asyncio.run, coroutine).result()


class BoundedClient(httpx.AsyncClient):
    """An httpx client that reads at most `answer_limit` bytes (decoded) of any answer: a
    longer one raises AnswerTooLarge, its connection closed, instead of filling memory."""

    def __init__(self, *, answer_limit: int = ANSWER_LIMIT_BYTES, **options: Any) -> None:
        super().__init__(**options)
        self.answer_limit = answer_limit

    async def send(
        self, request: httpx.Request, *, stream: bool = False, **options: Any
    ) -> httpx.Response:  # type: ignore[override]
        response = await super().send(request, stream=True, **options)
        if stream:
            return response
        try:
            content = await _read_bounded(response, self.answer_limit)
        finally:
            await response.aclose()
        # The body is read: a response built on it (already decoded, so without the
        # Content-Encoding header that would decode it twice).
        headers = [(k, v) for k, v in response.headers.multi_items() if k != "content-encoding"]
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=content,
            request=request,
            extensions=response.extensions,
        )


async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(response, f"{int(declared):,} bytes announced")
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise _too_large(response, f"more than {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(response: httpx.Response, told: str) -> AnswerTooLarge:
    return AnswerTooLarge(
        f"HTTP {response.status_code}: the answer is too large ({told}; at most "
        f"{ANSWER_LIMIT_BYTES // (1024 * 1024)} MB of an answer is read): it was not read and "
        "the batch is not counted as delivered"
    )


@asynccontextmanager
async def open_adapter(
    spec: DestinationSpec, on_response: Callable[[Any], Awaitable[None]] | None = None
) -> AsyncIterator[Destination]:
    """The destination's adapter with its client: each request takes the slot `pacing` gives
    (none when unset) and each answer is passed to `on_response` (rate-limit headers)."""
    settings = spec.settings
    limits = httpx.Limits(
        max_connections=settings.max_concurrency, max_keepalive_connections=settings.max_concurrency
    )
    from .deadline import DeadlineTransport

    # TLS unless the adapter speaks no HTTP or names only http:// URLs (loading the CA
    # certificates costs about 0.1 s); a request of the other scheme is refused before it
    # takes a slot.
    scheme = _address_scheme(spec)
    tls = spec.adapter.speaks_http and scheme != "http"
    transport = httpx.AsyncHTTPTransport(limits=limits, verify=tls)
    on_request = [] if scheme is None else [_only(spec, scheme)]
    if spec.adapter.speaks_http:
        on_request.append(_take_slot)
    async with BoundedClient(
        timeout=settings.timeout_seconds,
        transport=DeadlineTransport(transport, settings.timeout_seconds),  # a whole request
        event_hooks={"request": on_request, "response": [on_response] if on_response else []},
    ) as client:
        with _bugs_named(spec, "__init__"):
            adapter = spec.adapter(spec.name, settings, client)
        try:
            yield adapter
        finally:
            with _bugs_named(spec, "aclose"):
                await adapter.aclose()


@contextmanager
def _bugs_named(spec: DestinationSpec, call: str) -> Iterator[None]:
    """Opening or closing the adapter: an exception that is not a DestinationError (the
    adapter's own words) is a bug in the adapter, said as one, not a traceback."""
    try:
        yield
    except (DestinationError, CredentialsError, asyncio.CancelledError):
        raise
    except Exception as exc:
        kind = spec.adapter
        raise DestinationError(
            f"destination {spec.name!r}: bug in adapter {kind.type!r} ({kind.__module__}."
            f"{kind.__qualname__}): {call}() raised {exc!r} (docs/writing-a-destination.md)"
        ) from exc


def _only(spec: DestinationSpec, scheme: str) -> Callable[[httpx.Request], Awaitable[None]]:
    """A request hook for an adapter whose address names `scheme` URLs only: an https://
    request from a client built without TLS would go with its certificate unchecked, and a
    plain http:// one would carry its credentials in clear text; either is refused."""
    why = (
        "so its client has no TLS: the adapter's address() must name the https:// URL it calls"
        if scheme == "http"
        else "refused, so that its credentials are not sent unencrypted (in clear text)"
    )

    async def refuse_other(request: httpx.Request) -> None:
        if request.url.scheme != scheme:
            where = request.url.copy_with(userinfo=b"", query=None)
            raise DestinationError(
                f"destination {spec.name!r} (type {spec.adapter.type!r}) sent a request to "
                f"{where}, while its address names only {scheme}:// URLs, {why}"
            )

    return refuse_other
