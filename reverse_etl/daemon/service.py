"""`reverse-etl daemon`: run every sync on its schedule until SIGTERM or SIGINT.

The process: load the project, schedule its syncs (scheduler.py), serve /healthz, /syncs and
/metrics (status.py), reload syncs/ and destinations/ when they change or on SIGHUP, and stop
within [daemon] shutdown_timeout_seconds.

It holds no DuckDB file between runs (each sync's state file is opened by its run only) and
writes run history to SQLite in WAL mode, so `runs`, `plan`, `rejected` and `run` of a sync it
is not running work from another terminal meanwhile."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import Problem, StateError
from ..project.loader import PROJECT_FILES, Project
from ..state.history import History
from .metrics import CONTENT_TYPE, Metrics
from .scheduler import Scheduler
from .status import StatusServer, json_page

log = logging.getLogger("reverse_etl.daemon")


class Daemon:
    def __init__(self, project: Project, hide: Any = None) -> None:
        self.project = project
        self.settings = project.settings  # config.toml is read once: a change needs a restart
        self.hide = hide  # the log formatter's hide(): secrets of each reload are blanked
        self.metrics = Metrics(str(project.root))
        self.scheduler = Scheduler(
            project,
            on_result=lambda fields: self.metrics.observe_run(fields, time.time()),
            on_skip=lambda sync, reason: self.metrics.skipped.labels(sync, reason).inc(),
            on_state=lambda sync, running: self.metrics.running.labels(sync).set(int(running)),
        )
        self.problems: list[Problem] = []
        self.started_at = time.time()
        self._followed_since = self.started_at  # runs elsewhere, followed from here on
        self._wake = threading.Event()
        self._stop_reason: str | None = None
        self._reload_reason: str | None = None
        self._files = self._fingerprint()

    # -- the main loop -------------------------------------------------------------------

    def serve(self) -> int:
        """Run until a signal; the exit code (0 when every run stopped in time)."""
        History(self.project.state_dir).close()  # a state folder it cannot use: say so first
        self.reload("start")
        options = self.settings.daemon
        status = StatusServer(
            options.host,
            options.port,
            {"/healthz": self._healthz, "/syncs": self._syncs, "/metrics": self._metrics},
        )
        previous = self._install_signals()
        status.start()
        self.scheduler.start()
        log.info(
            "daemon started: %d syncs scheduled; status at %s",
            len(self._scheduled()),
            status.url,
            extra={"event": "daemon_started", "pid": os.getpid(), "status_url": status.url},
        )
        history = History(self.project.state_dir)  # the main loop's, read every interval
        said: str | None = None  # the run history's problem, logged once
        try:
            while self._stop_reason is None:
                self._wake.wait(options.watch_interval_seconds)
                self._wake.clear()
                if self._stop_reason is not None:
                    break
                changed = self._fingerprint()
                if changed != self._files:
                    self._files = changed
                    self._reload_reason = self._reload_reason or "files changed"
                if self._reload_reason is not None:
                    reason, self._reload_reason = self._reload_reason, None
                    self.reload(reason)
                try:
                    self._follow_other_processes(history)
                    said = None
                except StateError as exc:  # e.g. a damaged page: the runs say it too; go on
                    if str(exc) != said:  # once, not every interval
                        log.error("%s", exc, extra={"event": "problem"})
                    said = str(exc)
            return self._shut_down(status)
        finally:
            history.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _follow_other_processes(self, history: History) -> None:
        """Runs that finished elsewhere (a CLI, an orchestrator) start their followers too."""
        finished = history.finished_elsewhere(self._followed_since, os.getpid())
        for sync, finished_at, pid in finished:
            self._followed_since = max(self._followed_since, finished_at)
            self.scheduler.finished_elsewhere(sync, pid)

    def _shut_down(self, status: StatusServer) -> int:
        timeout = self.settings.daemon.shutdown_timeout_seconds
        reason = self._stop_reason or "stopping"
        log.info(
            "stopping (%s): no new runs; running syncs finish their requests in flight",
            reason,
            extra={"event": "daemon_stopping", "reason": reason, "timeout_seconds": timeout},
        )
        self.scheduler.stop(reason)
        still = self.scheduler.wait(timeout)
        status.stop()
        if still:
            log.error(
                "%s still running after %gs: exiting anyway; what was acknowledged is kept "
                "and the rest is sent by the next run",
                ", ".join(still),
                timeout,
                extra={"event": "daemon_stopped", "abandoned": still},
            )
            logging.shutdown()
            os._exit(2)  # their threads cannot be stopped; the state survives a kill
        log.info("stopped", extra={"event": "daemon_stopped", "abandoned": []})
        return 0

    def _wake_from_handler(self) -> None:
        """Wake the main loop from a signal handler. The handler runs on the main thread,
        which may be inside self._wake.wait() holding the event's lock: setting the event
        there would wait for that lock forever. Another thread sets it once the lock is free."""
        threading.Thread(target=self._wake.set, name="reverse-etl-signal", daemon=True).start()

    def _install_signals(self) -> dict[int, Any]:
        def stop(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            if self._stop_reason is not None:  # a second signal: the user insists
                log.error("%s again: exiting now", name, extra={"event": "daemon_killed"})
                logging.shutdown()
                os._exit(2)
            self._stop_reason = f"received {name}"
            self._wake_from_handler()

        def reload(signum: int, frame: Any) -> None:
            self._reload_reason = "SIGHUP"
            self._wake_from_handler()

        handlers = {signal.SIGTERM: stop, signal.SIGINT: stop, signal.SIGHUP: reload}
        return {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}

    # -- loading and reloading -----------------------------------------------------------

    def reload(self, why: str) -> None:
        """Read syncs/ and destinations/ again: broken files are reported (and their syncs not
        scheduled), the rest is scheduled as the files now say."""
        project = Project(self.project.root, self.settings)
        syncs, problems = project.load_all()
        if self.hide is not None:
            self.hide(project.secrets())
        for problem in problems:
            log.error(
                "%s",
                problem,
                extra={
                    "event": "problem",
                    "file": problem.file,
                    "line": problem.line,
                    "problem": problem.message,
                },
            )
        self.problems = problems
        self.metrics.problems.set(len(problems))
        self.scheduler.apply(project, syncs)
        self.project = project
        if self._config_changed(project):
            log.warning(
                "config.toml changed: restart the daemon to apply it",
                extra={"event": "config_changed"},
            )
        log.info(
            "loaded the project (%s): %d syncs, %d scheduled, %d problems",
            why,
            len(syncs),
            len(self._scheduled()),
            len(problems),
            extra={"event": "reloaded", "why": why, "problems": len(problems)},
        )

    def _config_changed(self, project: Project) -> bool:
        fresh = Project.open(project.root)
        for problem in fresh.settings_problems:
            log.error(
                "%s (the daemon keeps the settings it started with)",
                problem,
                extra={"event": "problem", "file": problem.file, "line": problem.line},
            )
        return fresh._settings is not None and fresh._settings != self.settings

    def _scheduled(self) -> list[str]:
        return [
            name
            for name, sync in self.scheduler.syncs().items()
            if sync.header.schedule or sync.header.after
        ]

    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        """What the files look like now (name, mtime, size): a change means a reload."""
        root = self.project.root
        found = []
        for pattern in PROJECT_FILES:
            for path in sorted(root.glob(pattern)):
                try:
                    stat = path.stat()
                except OSError:  # removed while looking
                    continue
                found.append((str(path.relative_to(root)), stat.st_mtime_ns, stat.st_size))
        return tuple(found)

    # -- the status pages ----------------------------------------------------------------

    def _healthz(self) -> tuple[int, str, bytes]:
        body = {
            "status": "stopping" if self._stop_reason else "ok",
            "pid": os.getpid(),
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "syncs_scheduled": len(self._scheduled()),
            "problems": len(self.problems),
        }
        return json_page(body, 503 if self._stop_reason else 200)

    def _syncs(self) -> tuple[int, str, bytes]:
        history = History(self.project.state_dir)
        try:
            syncs = [self._sync_status(history, sync) for sync in self.scheduler.syncs().values()]
        finally:
            history.close()
        problems = [p.as_dict() for p in self.problems]
        broken = sorted({p.file for p in self.problems if p.file.startswith("syncs/")})
        return json_page({"syncs": syncs, "broken": broken, "problems": problems})

    def _sync_status(self, history: History, sync: Any) -> dict[str, Any]:
        last = history.runs(sync.name, 1)
        header = sync.header
        return {
            "sync": sync.name,
            "file": sync.file,
            "destination": header.destination,
            "mode": header.mode,
            "schedule": header.schedule,
            "after": header.after,
            "trigger_query": header.trigger_query is not None,
            "next_run": self.scheduler.next_run(sync.name),
            **self.scheduler.status(sync.name),
            "last_run": last[0] if last else None,
        }

    def _metrics(self) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE, self.metrics.render()


def run_daemon(project_dir: str | Path | None, hide: Any = None) -> int:
    project = Project.open(project_dir)
    project.settings  # noqa: B018 (raises ProjectError when config.toml is broken)
    return Daemon(project, hide).serve()
