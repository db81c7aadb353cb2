"""One run of a sync at a time, across processes: an exclusive flock per sync.

The lock is held by an open file, so the kernel releases it when the process dies, however it
dies: a killed run never leaves a sync locked."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from ..errors import StateError, SyncRunningError, state_advice
from ..project.names import check_name


class SyncLock:
    def __init__(self, state_dir: Path, sync: str, holder: str = "reverse-etl") -> None:
        self.path = state_dir / "locks" / f"{check_name('sync', sync)}.lock"
        self.sync = sync
        self.holder = holder  # what the refused are told is running it
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateError(
                f"cannot create the lock file {self.path}: {exc.strerror}; "
                f"{state_advice(str(exc)) or 'the state folder must be writable'}"
            ) from None
        try:
            _flock(fd)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise SyncRunningError(
                f"sync {self.sync!r} is already running ({holder}); wait for that run to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.holder}, pid {os.getpid()}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __enter__(self) -> SyncLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _flock(fd: int) -> None:
    """The exclusive lock, or BlockingIOError. Tried a few times, 10 ms apart: is_held() takes
    a shared lock for an instant, which must not refuse a run."""
    for _ in range(4):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(0.01)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def is_held(state_dir: Path, sync: str) -> bool:
    """Whether a process holds `sync`'s lock now: a run (or plan) of it is alive. Probed with
    a shared lock, released at once."""
    try:
        fd = os.open(state_dir / "locks" / f"{sync}.lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the shared lock
    return False
