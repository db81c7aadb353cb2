"""An adapter ready to talk to its destination: the shared httpx client the engine builds for
it (timeouts, connection limits, TLS only where spoken), closed with the adapter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from .destinations.base import Destination
from .errors import CredentialsError, DestinationError

if TYPE_CHECKING:
    from .project import DestinationSpec

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
            except httpx.InvalidURL as exc:  # (its text is blanked by the caller)
                raise DestinationError(
                    f"destination {spec.name!r}: its url is not a valid URL ({exc}); "
                    "percent-encode what a password holds of / : @ ? # (/ is %2F)"
                ) from None
            except httpx.TransportError as exc:
                raise DestinationError(
                    f"destination {spec.name!r} is unreachable: {exc!r}"
                ) from None

    return run_coroutine(check())
