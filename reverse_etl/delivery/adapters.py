"""An adapter ready to talk to its destination: the shared httpx client the engine builds for
it (timeouts, connection limits, TLS only where spoken, answers read up to a limit), closed
with the adapter. Imported only when a run or a check talks to a destination (httpx is slow
to import)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from ..destinations.base import (
    ANSWER_LIMIT_BYTES,
    AnswerTooLarge,
    BatchFailed,
    Destination,
    Retryable,
    SplitBatch,
    Throttled,
)
from ..errors import CredentialsError, DestinationError

if TYPE_CHECKING:
    from ..project.loader import DestinationSpec

T = TypeVar("T")


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(coroutine), also from a thread whose event loop is running (a Prefect async
    flow, a Jupyter cell), where asyncio.run refuses: there it runs on its own loop in a worker
    thread while the calling thread waits (README, "From Airflow, Dagster or Prefect")."""
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
    settings = spec.settings
    limits = httpx.Limits(
        max_connections=settings.max_concurrency, max_keepalive_connections=settings.max_concurrency
    )
    from .deadline import DeadlineTransport

    transport = httpx.AsyncHTTPTransport(
        limits=limits,
        verify=spec.adapter.uses_tls(settings),  # False only where no TLS is spoken at all
    )
    async with BoundedClient(
        timeout=settings.timeout_seconds,
        transport=DeadlineTransport(transport, settings.timeout_seconds),  # a whole request
        event_hooks={"response": [on_response]} if on_response else {},
    ) as client:
        adapter = spec.adapter(spec.name, settings, client)
        try:
            yield adapter
        finally:
            await adapter.aclose()


def try_connection(spec: DestinationSpec) -> str:
    """`reverse-etl check DEST`: the connection and credentials, without sending data.

    Only an answer of the API passes: any status the adapter does not take as its API's
    answer (a 404, a 5xx, a redirect, a 429) and any 2xx whose body is not JSON (a proxy's or
    a login page's HTML) is a DestinationError saying which answer came from where."""

    answers: list[httpx.Response] = []

    async def keep(response: httpx.Response) -> None:
        await response.aread()
        answers.append(response)

    def failed(detail: str) -> DestinationError:
        last = answers[-1] if answers else None
        if last is None:
            return DestinationError(f"destination {spec.name!r} failed the check: {detail}")
        url = last.request.url.copy_with(userinfo=b"", query=None)  # no secret in the line
        if last.is_redirect:
            detail = f"a redirect to {last.headers.get('Location')}: set the URL it points to"
        elif last.is_success and not _json_or_empty(last.content):
            kind = last.headers.get("Content-Type", "no content type")
            detail = f"the answer is not JSON ({kind}): is this the API's URL?"
        detail = detail.removeprefix(f"HTTP {last.status_code}: ").replace("\n", " ")
        return DestinationError(
            f"destination {spec.name!r} failed the check: HTTP {last.status_code} from {url}: "
            f"{detail}"
        )

    async def check() -> str:
        async with open_adapter(spec, keep) as adapter:
            try:
                detail = await adapter.check()
            except CredentialsError as exc:
                raise CredentialsError(
                    f"destination {spec.name!r} refused the credentials: {exc}"
                ) from None
            except httpx.InvalidURL as exc:  # (its text is blanked by the caller)
                raise DestinationError(
                    f"destination {spec.name!r}: its url is not a valid URL ({exc}); "
                    "percent-encode what a password holds of / : @ ? # (/ is %2F)"
                ) from None
            except httpx.TransportError as exc:
                raise DestinationError(
                    f"destination {spec.name!r} is unreachable: {exc!r}"
                ) from None
            except (Throttled, Retryable, SplitBatch, BatchFailed, ValueError) as exc:
                # an answer that is not the API's (too large, untrusted, an error status):
                # the URL is wrong, or the service is down
                raise failed(str(exc) or type(exc).__name__) from None
            if any(a.is_success and not _json_or_empty(a.content) for a in answers):
                raise failed("")
            return detail

    # An answer the adapter cannot trust is logged for runs; here the error says it once.
    adapters_log = logging.getLogger("reverse_etl.destinations")
    level = adapters_log.level
    adapters_log.setLevel(max(level, logging.ERROR))
    try:
        return run_coroutine(check())
    finally:
        adapters_log.setLevel(level)


def _json_or_empty(content: bytes) -> bool:
    if not content.strip():
        return True
    try:
        json.loads(content)
    except ValueError:
        return False
    return True
