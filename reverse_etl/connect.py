"""An adapter ready to talk to its destination: the shared httpx client the engine builds for
it (timeouts, connection limits, TLS only where spoken), closed with the adapter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from .destinations.base import Destination
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
    from .delivery.deadline import DeadlineTransport

    transport = httpx.AsyncHTTPTransport(
        limits=limits,
        verify=spec.adapter.uses_tls(settings),  # False only where no TLS is spoken at all
    )
    async with httpx.AsyncClient(
        timeout=settings.timeout_seconds,
        transport=DeadlineTransport(transport, settings.timeout_seconds),  # a whole request
        event_hooks={"response": [on_response]} if on_response else {},
    ) as client:
        adapter = spec.adapter(spec.name, settings, client)
        try:
            yield adapter
        finally:
            await adapter.aclose()


def check_destination(spec: DestinationSpec) -> str:
    """`reverse-etl check DEST`: the connection and credentials, without sending data."""
    import httpx

    async def check() -> str:
        async with open_adapter(spec) as adapter:
            try:
                return await adapter.check()
            except CredentialsError as exc:
                raise CredentialsError(
                    f"destination {spec.name!r} refused the credentials: {exc}"
                ) from None
            except httpx.TransportError as exc:
                raise DestinationError(
                    f"destination {spec.name!r} is unreachable: {exc!r}"
                ) from None

    return asyncio.run(check())
