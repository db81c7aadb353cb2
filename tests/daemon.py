"""`reverse-etl daemon` as a real subprocess, its JSON log lines collected as they come."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

Event = dict[str, Any]

# How long to wait for an event before giving up: a guard against waiting forever, not a bound
# on speed (a loaded machine may be slow; what a test proves is in its order of events).
DEADLINE = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DaemonProcess:
    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        settings = {
            "REVERSE_ETL_DAEMON__PORT": str(self.port),
            "REVERSE_ETL_DAEMON__WATCH_INTERVAL_SECONDS": "0.2",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reverse_etl", "daemon", "--json", "--project", str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **settings, **(env or {})},
        )
        self.events: list[Event] = []
        self.lines: list[str] = []  # every line of stdout and stderr, for failure messages
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self.wait_for(lambda e: e.get("event") == "daemon_started")

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)  # --json: nothing but JSON lines on stdout
            with self._changed:
                self.lines.append(line.rstrip())
                self.events.append(event)
                self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append("stderr: " + line.rstrip())
                self.stderr.append(line)

    def wait_for(
        self, predicate: Callable[[Event], bool], count: int = 1, timeout: float = DEADLINE
    ) -> list[Event]:
        """The first `count` events matching, waiting up to `timeout` seconds for them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [e for e in self.events if predicate(e)]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    log = "\n".join(self.lines[-60:])
                    raise AssertionError(f"{len(found)} of {count} events; the log:\n{log}")
                self._changed.wait(min(left, 0.2))

    def finished(
        self, sync: str | None = None, count: int = 1, timeout: float = DEADLINE
    ) -> list[Event]:
        return self.wait_for(
            lambda e: e.get("event") == "run_finished" and sync in (None, e["sync"]),
            count,
            timeout,
        )

    def named(self, event: str, sync: str | None = None) -> list[Event]:
        with self._changed:
            return [
                e for e in self.events if e.get("event") == event and sync in (None, e.get("sync"))
            ]

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=10)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = DEADLINE) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        assert not any("Traceback" in line for line in self.stderr), "".join(self.stderr)
