"""`timeout_seconds` bounds a whole request (docs/destinations.md, "Time is bounded").

httpx's timeouts bound each operation (connecting, each read of the socket), so a server that
drips one byte a second never trips them and a request can last forever. This transport wraps
httpx's own and gives each request one deadline, from the moment it is handed to the transport
to the last byte of the answer: connecting, sending, waiting, reading. Past it the connection is
closed (httpcore closes a connection whose read is cancelled) and the request fails with
httpx.ReadTimeout, which the engine retries like any timeout. A stop (SIGTERM) therefore waits
at most timeout_seconds for the requests in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx


class DeadlineTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds

    def _expired(self, request: httpx.Request) -> httpx.ReadTimeout:
        return httpx.ReadTimeout(
            f"no complete answer within timeout_seconds = {self.seconds:g} "
            "(the whole request: connecting, sending, the answer)",
            request=request,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        deadline = asyncio.get_running_loop().time() + self.seconds
        try:
            async with asyncio.timeout_at(deadline):
                response = await self.inner.handle_async_request(request)
        except TimeoutError:
            raise self._expired(request) from None
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_DeadlineStream(response.stream, deadline, self._expired(request)),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class _DeadlineStream(httpx.AsyncByteStream):
    """The answer's body, each chunk read within what is left of the request's deadline."""

    def __init__(
        self, inner: httpx.AsyncByteStream, deadline: float, expired: httpx.ReadTimeout
    ) -> None:
        self.inner = inner
        self.deadline = deadline
        self.expired = expired

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self.inner.__aiter__()
        while True:
            try:
                async with asyncio.timeout_at(self.deadline):
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                await self.inner.aclose()
                raise self.expired from None
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()
