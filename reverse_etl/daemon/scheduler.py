"""The daemon's scheduling: when each sync runs, and that it never runs twice at once.

APScheduler (3.x) only keeps time: each tick of a sync's schedule (missed ticks coalesced into
one) asks for a run. What runs is decided here:

- one run of a sync at a time: a request while it runs queues exactly one more run after it
  (later requests join that one), and the log says so;
- at most `max_concurrent_syncs` different syncs at once: the others wait their turn in order;
- `after`: a sync runs once every sync it names has finished a run (success or partial) since
  its own last run started;
- `trigger_query`: on a tick, the trigger query runs first; the sync runs only when its answer
  differs from the one saved at the sync's last complete run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from ..errors import ProjectError, ReverseEtlError, SyncRunningError
from ..project.graph import downstream
from ..project.loader import Project, Sync
from ..project.schedules import interval_seconds, trigger
from ..run import pipeline as runner
from ..state.history import History
from ..warehouses.trigger import trigger_answer

log = logging.getLogger("reverse_etl.scheduler")

SCHEDULE = "schedule"  # why a run was asked for; otherwise "after <sync>"
HOLDER = "the reverse-etl daemon"  # named to a CLI refused while the daemon runs a sync


@dataclass
class _Slot:
    """What the scheduler knows of one sync."""

    state: str = "idle"  # idle | queued | running
    again: str | None = None  # a run asked for while this one runs: why
    finished_upstream: set[str] = field(default_factory=set)  # since this sync's last start
    started_at: float | None = None
    last_skip: str | None = None


class Scheduler:
    def __init__(
        self,
        project: Project,
        *,
        on_result: Callable[[dict[str, Any]], None] | None = None,
        on_skip: Callable[[str, str], None] | None = None,
        on_state: Callable[[str, bool], None] | None = None,
    ) -> None:
        settings = project.settings.scheduler
        self.project = project
        self.timezone = settings.timezone
        self._on_result = on_result  # each finished run's fields (as `run --json`)
        self._on_skip = on_skip  # (sync, reason) for a tick that started no run
        self._on_state = on_state  # (sync, running)
        self._pool = ThreadPoolExecutor(
            settings.max_concurrent_syncs, thread_name_prefix="reverse-etl-sync"
        )
        self._clock = BackgroundScheduler(
            timezone=self.timezone,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._syncs: dict[str, Sync] = {}  # every sync that loads, scheduled or not
        self._followers: dict[str, list[str]] = {}
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running = 0
        self._stopping = False

    # -- what is scheduled ---------------------------------------------------------------

    def start(self) -> None:
        self._clock.start()

    def apply(self, project: Project, syncs: list[Sync]) -> None:
        """Schedule these syncs (at start and at each reload): new schedules are added,
        changed ones replaced, those of syncs gone or broken removed. Runs in progress go on."""
        with self._lock:
            old = self._syncs
            self.project = project
            self._syncs = {sync.name: sync for sync in syncs}
            self._followers = downstream(syncs)
            for name in self._syncs:
                self._slots.setdefault(name, _Slot())
        for name in sorted(set(old) | set(self._syncs)):
            before = old[name].header.schedule if name in old else None
            after = self._syncs[name].header.schedule if name in self._syncs else None
            if before == after and name in old and name in self._syncs:
                continue
            if before is not None:
                with contextlib.suppress(JobLookupError):
                    self._clock.remove_job(name)
            if after is not None:
                self._add_job(name, after)
            elif before is not None:
                log.info(
                    "%s: no longer scheduled", name, extra={"event": "unscheduled", "sync": name}
                )

    def _add_job(self, name: str, schedule: str) -> None:
        # An interval runs once at start (a deploy must not wait a whole interval); a cron
        # expression waits for its next time.
        first = datetime.now().astimezone() if interval_seconds(schedule) else None
        options = {"next_run_time": first} if first else {}
        job = self._clock.add_job(
            self.request,
            trigger(schedule, self.timezone),
            args=[name, SCHEDULE],
            id=name,
            name=name,
            replace_existing=True,
            **options,
        )
        log.info(
            "%s: scheduled %s",
            name,
            schedule,
            extra={
                "event": "scheduled",
                "sync": name,
                "schedule": schedule,
                "next_run": _iso(getattr(job, "next_run_time", None)),
            },
        )

    def syncs(self) -> dict[str, Sync]:
        """Every sync that loaded at the last (re)load, scheduled or not."""
        with self._lock:
            return dict(self._syncs)

    def next_run(self, name: str) -> str | None:
        job = self._clock.get_job(name)
        return _iso(job.next_run_time) if job is not None else None

    def status(self, name: str) -> dict[str, Any]:
        with self._lock:
            slot = self._slots.get(name, _Slot())
            sync = self._syncs.get(name)
            waiting = (
                [u for u in sync.header.after if u not in slot.finished_upstream] if sync else []
            )
            return {
                "state": slot.state,
                "running_since": _iso_ts(slot.started_at) if slot.state == "running" else None,
                "again_after_this_run": slot.again is not None,
                "waiting_for": waiting,
                "last_skip": slot.last_skip,
            }

    # -- running -------------------------------------------------------------------------

    def request(self, name: str, why: str) -> None:
        """Ask for a run of `name` (a tick, or an upstream sync finishing)."""
        with self._lock:
            slot = self._slots.get(name)
            if self._stopping or slot is None or name not in self._syncs:
                return
            if slot.state == "queued":
                log.info(
                    "%s: a run is already waiting for a free slot; this %s joins it",
                    name,
                    why,
                    extra={"event": "coalesced", "sync": name, "why": why},
                )
                return
            if slot.state == "running":
                if slot.again is None:
                    log.info(
                        "%s: still running; it runs again when this run finishes (%s)",
                        name,
                        why,
                        extra={"event": "deferred", "sync": name, "why": why},
                    )
                    slot.again = why
                return
            slot.state = "queued"
            try:
                self._pool.submit(self._execute, name, why)
            except RuntimeError:  # the pool shut down: the daemon is stopping
                slot.state = "idle"

    def _execute(self, name: str, why: str) -> None:
        with self._lock:
            slot = self._slots[name]
            sync = self._syncs.get(name)
            if self._stopping or sync is None:
                slot.state = "idle"
                return
            slot.state, slot.started_at, slot.again = "running", time.time(), None
            slot.finished_upstream.clear()
            project = self.project
            self._running += 1
        if self._on_state:
            self._on_state(name, True)
        result = None
        try:
            result = self._run(project, sync, why)
        except Exception:  # a bug must not stop the scheduler: say so, the next tick runs
            log.exception(
                "%s: internal error", name, extra={"event": "internal_error", "sync": name}
            )
        finally:
            if self._on_state:
                self._on_state(name, False)
            with self._lock:
                slot.state = "idle"
                again, slot.again = slot.again, None
                self._running -= 1
                self._idle.notify_all()
        if result is not None and result["status"] in ("success", "partial"):
            for follower in self._followers.get(name, []):
                self._upstream_finished(follower, name)
        if again is not None:
            self.request(name, again)

    def _run(self, project: Project, sync: Sync, why: str) -> dict[str, Any] | None:
        name = sync.name
        answer = None
        if why == SCHEDULE and sync.trigger_query is not None:
            try:
                answer = trigger_answer(project, sync)
            except ReverseEtlError as exc:
                self._skip(name, f"trigger_query failed: {exc}", "probe_failed", logging.ERROR)
                return None
            if answer == self._saved_trigger_answer(project, name):
                self._skip(name, "trigger_query answer unchanged", "unchanged")
                return None
        log.info(
            "%s: run starts (%s)",
            name,
            why,
            extra={"event": "run_started", "sync": name, "why": why},
        )
        try:
            result = runner.run_sync(project, name, holder=HOLDER)
        except SyncRunningError as exc:
            self._skip(name, str(exc), "running_elsewhere", logging.WARNING)
            return None
        except ProjectError as exc:  # its file broke since it was scheduled: the watcher reloads
            self._skip(name, str(exc), "broken", logging.ERROR)
            return None
        except ReverseEtlError as exc:  # e.g. shutting down
            self._skip(name, str(exc), "not_started")
            return None
        fields = result.as_dict()
        level = logging.INFO if result.status == "success" else logging.WARNING
        if result.status == "error":
            level = logging.ERROR
        detail = result.error or result.reason or ""
        log.log(
            level,
            "%s: run %s: %s%s",
            name,
            result.run_id,
            result.status,
            f": {detail}" if detail else "",
            extra={"event": "run_finished", "why": why, **fields},
        )
        if answer is not None and (
            result.status == "success" or (result.status == "partial" and not result.failed)
        ):
            # Complete: nothing is left that only another run would deliver. (Rejected and
            # invalid records wait for their data to change, which the query would see.)
            self._save_trigger_answer(project, name, answer, result.run_id)
        if self._on_result:
            self._on_result(fields)
        return fields

    def _skip(self, name: str, message: str, reason: str, level: int = logging.INFO) -> None:
        with self._lock:
            self._slots[name].last_skip = message
        log.log(
            level,
            "%s: not run: %s",
            name,
            message,
            extra={"event": "skipped", "sync": name, "reason": reason},
        )
        if self._on_skip:
            self._on_skip(name, reason)

    def finished_elsewhere(self, upstream: str, pid: int) -> None:
        """A run of `upstream` finished in another process (a CLI, an orchestrator): the syncs
        that run after it count it as they count the daemon's own."""
        followers = self._followers.get(upstream, [])
        if followers:
            log.info(
                "%s: finished in another process (pid %d): %s may run",
                upstream,
                pid,
                ", ".join(followers),
                extra={"event": "finished_elsewhere", "sync": upstream, "pid": pid},
            )
        for follower in followers:
            self._upstream_finished(follower, upstream)

    def _upstream_finished(self, name: str, upstream: str) -> None:
        with self._lock:
            sync = self._syncs.get(name)
            if sync is None:
                return
            slot = self._slots[name]
            slot.finished_upstream.add(upstream)
            ready = set(sync.header.after) <= slot.finished_upstream
        if ready:
            self.request(name, f"after {upstream}")

    @staticmethod
    def _saved_trigger_answer(project: Project, name: str) -> str | None:
        history = History(project.state_dir)
        try:
            return history.trigger_answer(name)
        finally:
            history.close()

    @staticmethod
    def _save_trigger_answer(project: Project, name: str, value: str, run_id: str) -> None:
        history = History(project.state_dir)
        try:
            history.save_trigger_answer(name, value, run_id)
        finally:
            history.close()

    # -- stopping ------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """No new run starts; running syncs stop taking batches (their acknowledged records
        are kept). Returns at once: see wait()."""
        with self._lock:
            self._stopping = True
        if self._clock.running:
            self._clock.shutdown(wait=False)
        runner.shutdown(reason)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def wait(self, timeout: float) -> list[str]:
        """Wait up to `timeout` seconds for running syncs to end; the names still running."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._running and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            return sorted(n for n, slot in self._slots.items() if slot.state == "running")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _iso_ts(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).isoformat() if timestamp else None
