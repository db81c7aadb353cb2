"""An adapter ready to talk to its destination: the shared httpx client the engine builds for
it (timeouts, connection limits, TLS only where spoken), closed with the adapter."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from .destinations.base import BatchFailed, Destination, Retryable, SplitBatch, Throttled
from .errors import CredentialsError, DestinationError

if TYPE_CHECKING:
    from .project import DestinationSpec


@asynccontextmanager
async def open_adapter(
    spec: DestinationSpec, on_response: Callable[[Any], Awaitable[None]] | None = None
) -> AsyncIterator[Destination]:
    import httpx

    settings = spec.settings
    limits = httpx.Limits(
        max_connections=settings.max_concurrency, max_keepalive_connections=settings.max_concurrency
    )
    async with httpx.AsyncClient(
        timeout=settings.timeout_seconds,
        limits=limits,
        verify=spec.adapter.uses_tls(settings),  # False only where no TLS is spoken at all
        event_hooks={"response": [on_response]} if on_response else {},
    ) as client:
        adapter = spec.adapter(spec.name, settings, client)
        try:
            yield adapter
        finally:
            await adapter.aclose()


def check_destination(spec: DestinationSpec) -> str:
    """`reverse-etl check DEST`: the connection and credentials, without sending data.

    Only an answer of the API passes: any status the adapter does not take as its API's
    answer (a 404, a 5xx, a redirect, a 429) and any 2xx whose body is not JSON (a proxy's or
    a login page's HTML) is a DestinationError saying which answer came from where."""
    import httpx

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
            except httpx.TransportError as exc:
                raise DestinationError(
                    f"destination {spec.name!r} is unreachable: {exc!r}"
                ) from None
            except (Throttled, Retryable, SplitBatch, BatchFailed, ValueError) as exc:
                # an answer that is not the API's: the URL is wrong, or the service is down
                raise failed(str(exc) or type(exc).__name__) from None
            if any(a.is_success and not _json_or_empty(a.content) for a in answers):
                raise failed("")
            return detail

    return asyncio.run(check())


def _json_or_empty(content: bytes) -> bool:
    if not content.strip():
        return True
    try:
        json.loads(content)
    except ValueError:
        return False
    return True
