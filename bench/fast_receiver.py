"""A webhook receiver that answers 200 at once: the benchmarks' destination.

reverse_etl.destinations.webhook.receiver.WebhookReceiver parses every body as JSON and keeps
every record, in a
thread per connection; at millions of records that receiver, not the engine, would be what is
measured. This one is an asyncio HTTP/1.1 server (keep-alive, Content-Length bodies) that reads
each request whole, counts it and its records (occurrences of `{"key":`, the wire format's
record opening, without parsing the JSON), and answers `200` with an empty body, which the
contract reads as "every record delivered".

    GET /stats   -> {"requests": N, "records": N, "bytes": N}   (not counted as a request)

Run it as its own process so that it never shares the GIL with what it measures:

    python bench/fast_receiver.py [--port 0]      # prints "PORT <n>" on stdout once listening
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

RECORD = b'{"key":'
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class Stats:
    requests = 0
    records = 0
    bytes = 0


class HttpProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = bytearray()
        self.need: int | None = None  # total bytes of the request being read (head + body)
        self.head_len = 0
        self.is_stats = False

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.need is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[:end]).lower()
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip() == b"content-length":
                        length = int(value)
                self.is_stats = head.startswith(b"get /stats")
                self.head_len = end + 4
                self.need = self.head_len + length
            if len(self.buffer) < self.need:
                return
            body = memoryview(self.buffer)[self.head_len : self.need]
            if self.is_stats:
                answer = json.dumps(
                    {"requests": Stats.requests, "records": Stats.records, "bytes": Stats.bytes}
                ).encode()
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(answer)).encode()
                    + b"\r\n\r\n"
                    + answer
                )
            else:
                Stats.requests += 1
                Stats.records += bytes(body).count(RECORD)
                Stats.bytes += len(body)
                self.transport.write(OK)
            body.release()
            del self.buffer[: self.need]
            self.need = None


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HttpProtocol, "127.0.0.1", port, backlog=256)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
