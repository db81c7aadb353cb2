"""Run history and the ledger of records not delivered (its rules: ledger.py), in SQLite.

SQLite in WAL mode lets any number of processes (the daemon, a CLI in another terminal) read
while one writes, which the per-sync DuckDB files cannot: a running sync holds its own file.
Writes here are small: one row per run, one per record that was not delivered.
"""

from __future__ import annotations

import functools
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from ..errors import StateError, state_advice
from .locks import is_held

COUNTS = (
    "rows",
    "added",
    "changed",
    "removed",
    "unchanged",
    "invalid",
    "delivered",
    "rejected",
    "failed",
)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    sync TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in COUNTS)},
    error TEXT,
    reason TEXT,
    full_resync INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    host TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_sync ON runs (sync, started_at);
CREATE TABLE IF NOT EXISTS ledger (  -- written and read by ledger.py only
    sync TEXT NOT NULL,
    key TEXT,
    reason TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    rejections INTEGER NOT NULL DEFAULT 0,  -- consecutive runs that had it rejected
    quarantined INTEGER NOT NULL DEFAULT 0,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    run_id TEXT NOT NULL,
    UNIQUE (sync, key)
);
CREATE TABLE IF NOT EXISTS deliveries (  -- which syncs sent records to which target
    target TEXT NOT NULL,
    sync TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (target, sync)
);
-- a trigger_query's answer when its sync last ran whole (the table keeps the name earlier
-- versions gave it, so that their state folders keep working)
CREATE TABLE IF NOT EXISTS probes (
    sync TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    run_id TEXT NOT NULL,
    checked_at REAL NOT NULL
);
"""


F = TypeVar("F", bound=Callable[..., Any])


def guarded(method: F) -> F:
    """A method of an object whose `path` is the run history file (History, Ledger): sqlite3's
    errors, as a StateError saying which file and what to do (a damaged page can surface in
    any query, long after the file was opened)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise StateError(history_problem(self.path, exc)) from None

    return wrapper  # type: ignore[return-value]


def history_problem(path: Path, exc: Exception) -> str:
    """What went wrong with the run history file, and what to do about it."""
    text = str(exc)
    lowered = text.lower()
    if "malformed" in lowered or "not a database" in lowered or "corrupt" in lowered:
        todo = (
            "it is damaged: move it away and run again (run history and the list of records "
            "not delivered start over; what was delivered stays in each sync's snapshot)"
        )
    elif "unable to open" in lowered:
        todo = "the state folder must be writable by this user ([state] path)"
    else:
        todo = state_advice(text) or "run again; if it persists, move the file away"
    return f"cannot use the run history {path} ({text}): {todo}"


def iso_time(timestamp: float | None) -> str | None:
    """A time.time() value as ISO 8601 in UTC, to the millisecond."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def _alive(state_dir: Path, row: sqlite3.Row) -> bool:
    """Whether the run recorded 'running' in `row` may still be running. The sync's lock is
    the proof (locks.py): the kernel frees it when its process dies, however it dies; a pid
    alone is not, as the pid of a killed run is reused (pid 1 in a container). A held lock is
    a live run unless this host knows its pid to be gone."""
    if not is_held(state_dir, row["sync"]):
        return False
    pid, host = row["pid"], row["host"]
    if pid is None or host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class History:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        path = self.path = state_dir / "history.sqlite"
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self._initialise()
        except OSError as exc:
            raise StateError(f"cannot open run history {path}: {exc}") from None
        except sqlite3.Error as exc:
            raise StateError(history_problem(path, exc)) from None
        self.db.row_factory = sqlite3.Row

    def _initialise(self) -> None:
        # Switching a new database to WAL can answer "locked" at once, without waiting, when
        # another process (or thread) is doing the same: try again for a while.
        for attempt in range(100):
            try:
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute("PRAGMA synchronous = NORMAL")
                self.db.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 99:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self.db.close()

    # -- runs ----------------------------------------------------------------------------

    @guarded
    def start_run(self, sync: str, full_resync: bool) -> str:
        run_id = uuid.uuid4().hex[:16]
        self.db.execute(
            "INSERT INTO runs (run_id, sync, status, started_at, full_resync, pid, host) "
            "VALUES (?, ?, 'running', ?, ?, ?, ?)",
            (run_id, sync, time.time(), int(full_resync), os.getpid(), socket.gethostname()),
        )
        return run_id

    @guarded
    def finish_run(
        self,
        run_id: str,
        status: str,
        counts: dict[str, int],
        error: str | None = None,
        reason: str | None = None,
    ) -> None:
        assignments = ", ".join(f"{c} = ?" for c in COUNTS)
        self.db.execute(
            f"UPDATE runs SET status = ?, finished_at = ?, error = ?, reason = ?, {assignments} "
            "WHERE run_id = ?",
            (status, time.time(), error, reason, *(counts.get(c, 0) for c in COUNTS), run_id),
        )

    @guarded
    def close_abandoned(self, sync: str) -> None:
        """Runs of `sync` left 'running' by a process that died: record them as errors. The
        caller holds the sync's lock, so no other run of it is alive."""
        for row in self.db.execute(
            "SELECT run_id, pid FROM runs WHERE sync = ? AND status = 'running'", (sync,)
        ).fetchall():
            self.db.execute(
                "UPDATE runs SET status = 'error', error = ? WHERE run_id = ?",
                (_killed(row["pid"]), row["run_id"]),
            )

    @guarded
    def runs(self, sync: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        where, params = ("WHERE sync = ?", [sync]) if sync else ("", [])
        rows = self.db.execute(
            f"SELECT * FROM runs {where} ORDER BY started_at DESC LIMIT ?", (*params, limit)
        ).fetchall()
        return [
            _run_dict(row, row["status"] != "running" or _alive(self.state_dir, row))
            for row in rows
        ]

    @guarded
    def finished_elsewhere(self, since: float, pid: int) -> list[tuple[str, float, int]]:
        """(sync, finished_at, pid) of runs that finished with success or partial after
        `since`, in processes other than `pid` (the daemon follows them with `after`)."""
        return [
            (row["sync"], row["finished_at"], row["pid"])
            for row in self.db.execute(
                "SELECT sync, finished_at, pid FROM runs WHERE finished_at > ? AND pid <> ? "
                "AND status IN ('success', 'partial') ORDER BY finished_at",
                (since, pid),
            )
        ]

    @guarded
    def forget(self, sync: str) -> None:
        """`reset`: that the sync delivered is forgotten (a mirror starting over after a reset
        is meant to), and its trigger_query's last answer. (Its ledger: Ledger.forget.)"""
        self.db.execute("DELETE FROM probes WHERE sync = ?", (sync,))
        self.db.execute("DELETE FROM deliveries WHERE sync = ?", (sync,))

    @guarded
    def record_delivering(self, sync: str, target: str) -> None:
        """`sync` is about to send records to `target` (before its first request: a run
        killed after it delivered counts too)."""
        self.db.execute(
            "INSERT OR REPLACE INTO deliveries (target, sync, at) VALUES (?, ?, ?)",
            (target, sync, time.time()),
        )

    @guarded
    def deliveries(self) -> list[tuple[str, str]]:
        """(target, sync) of every sync that sent records to a target (since its last reset),
        oldest first."""
        rows = self.db.execute("SELECT target, sync FROM deliveries ORDER BY at").fetchall()
        return [(row[0], row[1]) for row in rows]

    @guarded
    def forget_delivery(self, target: str, sync: str) -> None:
        """Another sync now answers for what `sync` sent to `target` (a rename approved)."""
        self.db.execute("DELETE FROM deliveries WHERE target = ? AND sync = ?", (target, sync))

    # -- trigger_query answers -----------------------------------------------------------

    @guarded
    def trigger_answer(self, sync: str) -> str | None:
        """The answer of `sync`'s trigger_query saved at its last complete run, if any."""
        row = self.db.execute("SELECT value FROM probes WHERE sync = ?", (sync,)).fetchone()
        return row["value"] if row else None

    @guarded
    def save_trigger_answer(self, sync: str, value: str, run_id: str) -> None:
        self.db.execute(
            "INSERT INTO probes VALUES (?, ?, ?, ?) ON CONFLICT (sync) DO UPDATE SET "
            "value = excluded.value, run_id = excluded.run_id, checked_at = excluded.checked_at",
            (sync, value, run_id, time.time()),
        )


def _killed(pid: int | None) -> str:
    return f"the run's process (pid {pid}) ended before the run finished"


def _run_dict(row: sqlite3.Row, alive: bool) -> dict[str, Any]:
    status, error = row["status"], row["error"]
    if status == "running" and not alive:
        status, error = "error", _killed(row["pid"])
    finished = row["finished_at"]
    result: dict[str, Any] = {"sync": row["sync"], "run_id": row["run_id"], "status": status}
    result.update({c: row[c] for c in COUNTS})
    result["duration_seconds"] = (
        round(finished - row["started_at"], 3) if finished is not None else None
    )
    result["started_at"] = iso_time(row["started_at"])
    result["finished_at"] = iso_time(finished)
    if error:
        result["error"] = error
    if row["reason"]:
        result["reason"] = row["reason"]
    return result
