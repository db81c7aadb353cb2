"""run_sync() and plan_sync(): the flow of one sync, end to end.

    model → warehouse → stage in DuckDB → diff against the snapshot → deliver pending batches
          → acknowledge per batch → fold acknowledgements into the snapshot → run history

The CLI and the daemon are thin callers of these two functions."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb

from ..diff.in_warehouse import WarehouseState, warehouse_state_path
from ..diff.local import (
    DiffCounts,
    SyncState,
    snapshot_path,
)
from ..errors import (
    Interrupted,
    ModelFailed,
    ProjectError,
    ReverseEtlError,
    StateError,
    WarehouseError,
    state_advice,
)
from ..outbox import Outbox
from ..project.loader import Project, Sync
from ..project.settings import where_set
from ..project.validate import column_problem, model_problem
from ..secrets import blank, blanker
from ..state.history import History
from ..state.locks import SyncLock
from ..warehouses import open_warehouse
from .rails import (
    hold_reason,
    moved_target_reason,
    new_target_note,
    orphaned_deletes,
    state_path,
    take_over,
    would_hold,
)

if TYPE_CHECKING:
    from ..delivery.engine import Delivery

log = logging.getLogger("reverse_etl.runner")

# Deliveries running in this process, so that a signal can stop them all (see shutdown()).
_active: set[Delivery] = set()
_active_lock = threading.RLock()  # re-entrant: a signal handler may run while this thread holds it
_runs = 0  # runs in progress in this process
_shutdown: str | None = None  # why the runs in progress are stopping; None once they all ended


def shutdown(reason: str) -> None:
    """Stop the runs in progress in this process gracefully: they take no new batch, what was
    delivered is acknowledged, and no run starts until they have all ended; a run started after
    that works (a host process lives on after a SIGTERM it handled). Safe to call from a signal
    handler, from any thread."""
    global _shutdown
    with _active_lock:
        if _runs:
            _shutdown = reason
        deliveries = list(_active)
    for delivery in deliveries:
        delivery.stop(reason)


@contextmanager
def _counted() -> Iterator[None]:
    """One run in progress; the last one to end ends the shutdown that stopped it."""
    global _runs, _shutdown
    with _active_lock:
        if _shutdown is not None:
            raise Interrupted(f"not started: {_shutdown}")
        _runs += 1
    try:
        yield
    finally:
        with _active_lock:
            _runs -= 1
            if not _runs:
                _shutdown = None


ProgressCallback = Callable[[str, int, int], None]  # sync, records done, records to deliver


@dataclass
class RunResult:
    sync: str
    run_id: str
    status: str  # success | partial | held | error
    counts: DiffCounts | None
    delivered: int = 0
    rejected: int = 0
    failed: int = 0
    duration_seconds: float = 0.0
    error: str | None = None
    reason: str | None = None  # why a held run was held
    exception: ReverseEtlError | None = field(default=None, repr=False)  # the error, typed

    def as_dict(self) -> dict[str, Any]:
        counts = (
            self.counts.as_dict()
            if self.counts
            else dict.fromkeys(("rows", "added", "changed", "removed", "unchanged", "invalid"), 0)
        )
        result: dict[str, Any] = {"sync": self.sync, "run_id": self.run_id, "status": self.status}
        result.update(counts)
        result.update(
            delivered=self.delivered,
            rejected=self.rejected,
            failed=self.failed,
            duration_seconds=round(self.duration_seconds, 3),
        )
        if self.error:
            result["error"] = self.error
        if self.reason:
            result["reason"] = self.reason
        return result

    @property
    def exit_code(self) -> int:
        return {"success": 0, "partial": 1, "held": 1}.get(self.status, 2)


def _open_state(project: Project, sync: Sync, read_only: bool) -> SyncState:
    state = project.settings.state
    name = sync.name
    kind = WarehouseState if sync.in_warehouse else SyncState
    opened = kind(
        state_path(project, sync),
        read_only=read_only,
        memory_limit=state.memory_limit,
        threads=state.threads,
        temp_dir=project.state_dir / "tmp" / name,  # DuckDB clears its temp folder on close
        key_identity=sync.key_identity,
    )
    if isinstance(opened, WarehouseState):
        settings = project.settings.warehouse
        warehouse = open_warehouse(settings, project.root)
        opened.attach(warehouse, settings.state_schema, name)
    return opened


@contextmanager
def _model_errors(sync: Sync, project: Project | None = None) -> Iterator[None]:
    """DuckDB's complaints about the model (binding or running it) name the sync file's line;
    running out of [state] memory_limit is the engine's, not the model's."""
    try:
        yield
    except duckdb.OutOfMemoryException as exc:
        raise StateError(_out_of_memory(project, exc)) from None
    except (duckdb.Error, ModelFailed) as exc:
        raise WarehouseError(str(model_problem(sync, exc))) from None


def _out_of_memory(project: Project | None, exc: Exception) -> str:
    limit, where = "", ""
    if project is not None:
        file, line = where_set(project.root, "state", "memory_limit")
        limit = f" = {project.settings.state.memory_limit!r}"
        where = f" ({file}:{line})" if line else f" ({file})"
    return (
        f"the diff ran out of memory within [state] memory_limit{limit}{where}: raise it "
        f"({str(exc).splitlines()[0]})"
    )


def _bind(project: Project, sync: Sync, state: SyncState) -> None:
    settings = project.settings.warehouse
    warehouse = open_warehouse(settings, project.root)
    warehouse.connect(state.con, engine_files=state.outbox.files)  # then sandboxed
    key_line = sync.header_line("primary_key")
    with _model_errors(sync, project):
        named = column_problem(sync, warehouse.columns(state.con, sync.model.sql))
        if named is not None:
            raise ProjectError([named])
        if isinstance(state, WarehouseState):  # the model runs inside the diff's queries
            state.use(sync.model, sync.primary_key, sync.file, key_line)
            return
        relation = warehouse.relation(state.con, sync.model.sql)
        state.bind(
            relation, sync.primary_key, sync.file, key_line, source=warehouse, target=sync.target
        )


def plan_sync(project: Project, name: str) -> dict[str, Any]:
    """What a run would do now; sends nothing and changes no state."""
    sync = project.sync(name)
    lock = SyncLock(project.state_dir, name, "reverse-etl plan")
    with lock, _open_state(project, sync, read_only=True) as state:
        _bind(project, sync, state)
        with _model_errors(sync, project):
            counts = state.diff(sync.header.mode, full_resync=False, build_pending=False)
        plan: dict[str, Any] = {"sync": name, **counts.as_dict()}
        if state.previous_target is not None:
            plan["note"] = new_target_note(state.previous_target, sync.target)
        if reason := would_hold(project, sync, counts, state):
            plan["reason"] = f"the run would be held: {reason}"
        return plan


def run_sync(
    project: Project,
    name: str,
    *,
    full_resync: bool = False,
    force: bool = False,
    retry_quarantined: bool = False,
    on_progress: ProgressCallback | None = None,
    holder: str = "reverse-etl run",
) -> RunResult:
    """Run one sync now (`force`: past the safety rails; `retry_quarantined`: records
    quarantined after repeated rejections are sent again; `holder`: who runs it, named to a
    process refused meanwhile). Raises ProjectError, SyncRunningError or Interrupted when it
    cannot start; once started, every outcome (errors included) is recorded in the run
    history and returned."""
    sync = project.sync(name)
    with _counted(), SyncLock(project.state_dir, name, holder):
        history = History(project.state_dir)
        try:
            history.close_abandoned(name)
            run_id = history.start_run(name, full_resync)
            return _run(
                project,
                sync,
                history,
                run_id,
                full_resync,
                force,
                retry_quarantined,
                on_progress,
            )
        finally:
            history.close()


def _run(
    project: Project,
    sync: Sync,
    history: History,
    run_id: str,
    full_resync: bool,
    force: bool,
    retry_quarantined: bool,
    on_progress: ProgressCallback | None,
) -> RunResult:
    started = time.monotonic()
    result = RunResult(sync.name, run_id, "error", None)
    try:
        keep_fields = sync.header.mode == "mirror"  # deletes carry the last delivered fields
        orphan = None if force else orphaned_deletes(project, sync, history)
        if orphan:  # before the state is opened, which would create it: the next run holds too
            result.status, result.reason = "held", orphan
            _finish(history, result, started, project.secrets())
            return result
        take_over(project, sync, history)
        _forget_other_diff(project, sync)
        with _open_state(project, sync, read_only=False) as state:
            _fold(state, keep_fields)  # what a run that died had delivered
            moved = None if force else moved_target_reason(sync, state.stored_target(), state)
            if moved:  # before the claim, which would forget the old target's records
                result.status, result.reason = "held", moved
                _finish(history, result, started, project.secrets())
                return result
            previous = state.claim_target(sync.target)
            if previous is not None:
                log.warning("%s: %s", sync.name, new_target_note(previous, sync.target))
                history.forget_undelivered(sync.name)  # owed to the old target, not this one
            if retry_quarantined:
                state.clear_quarantine()
                history.reset_rejections(sync.name)
            _bind(project, sync, state)
            with _model_errors(sync, project):
                result.counts = state.diff(sync.header.mode, full_resync, build_pending=True)
            log.info("%s: run %s: %s", sync.name, run_id, result.counts)
            reason = (
                None
                if force
                else hold_reason(sync.header.mode, sync.header.max_delete_fraction, result.counts)
            )
            if reason:  # send nothing, change nothing: the snapshot stays as it was
                state.outbox.remove()
                result.status, result.reason = "held", reason
                _finish(history, result, started, project.secrets())
                return result
            history.replace_invalid(
                sync.name, run_id, state.invalid_rows() if result.counts.invalid else []
            )
            state.settle()
            held_back = state.quarantined_unchanged()
            if sync.header.mode != "mirror" and result.counts.removed:
                state.forget_removed()
            batches = state.pending_batches(sync.batch_size)
            if batches:  # before the first request: a kill after it delivered counts too
                history.record_delivering(sync.name, sync.target)
            total = sum(batch.size for batch in batches)
            if on_progress:
                on_progress(sync.name, 0, total)
            outcome = None
            if batches:
                from ..delivery.adapters import (
                    run_coroutine,  # with the rest of delivery: not for `plan`
                )

                outcome = run_coroutine(
                    _deliver(project, sync, state, history, run_id, batches, total, on_progress)
                )
                result.delivered = outcome.delivered  # said even if the fold then fails
            _fold(state, keep_fields)
            newly = history.rejected_repeatedly(
                sync.name, run_id, sync.destination.settings.max_attempts
            )
            history.mark_quarantined(sync.name, state.update_quarantine(newly))
        history.drop_resolved(sync.name, run_id)
        if outcome is not None:
            result.delivered = outcome.delivered
            result.rejected = len(outcome.rejected)
            result.failed = len(outcome.failed)
            result.error = outcome.error
            if outcome.error:
                result.exception = outcome.exception or Interrupted(outcome.error)
        result.rejected += held_back  # quarantined: still not delivered
        undelivered = result.rejected + result.failed + result.counts.invalid
        result.status = "error" if result.error else "partial" if undelivered else "success"
    except ReverseEtlError as exc:
        result.error = str(exc)
        result.exception = exc
    except BaseException as exc:
        result.error = f"internal error: {exc!r}"
        _finish(history, result, started, project.secrets())
        raise
    _finish(history, result, started, project.secrets())
    return result


def _forget_other_diff(project: Project, sync: Sync) -> None:
    """A sync switched between `diff = "warehouse"` and the local diff starts over (docs/state.md,
    "The diff inside the warehouse"): the other diff's state is removed, so that switching
    back later cannot read a record of deliveries that went stale meanwhile."""
    other = (
        snapshot_path(project.state_dir, sync.name)
        if sync.in_warehouse
        else warehouse_state_path(project.state_dir, sync.name)
    )
    if other.exists():
        log.warning("%s: the diff moved: %s is left behind, the sync starts over", sync.name, other)
        Outbox(other).remove()
        for leftover in (other, other.with_name(other.name + ".wal")):
            leftover.unlink(missing_ok=True)


def _fold(state: SyncState, keep_fields: bool) -> None:
    """Fold what was delivered into the snapshot. A fold the disk refuses (full, read-only)
    changes nothing: the outbox and its acknowledgements stay, and the next run folds them."""
    try:
        state.fold_acknowledged(keep_fields)
    except duckdb.Error as exc:
        text = str(exc).splitlines()[0]
        advice = state_advice(str(exc)) or "run again; if it persists, check the state folder"
        raise StateError(
            f"cannot record what was delivered in {state.path} ({text}); it stays in "
            f"{state.outbox.log_path.name} until then: {advice}"
        ) from None


def _finish(history: History, result: RunResult, started: float, secrets: dict[str, str]) -> None:
    """Record the run's end; a secret echoed by a destination's answer is blanked out."""
    result.duration_seconds = time.monotonic() - started
    if result.error:
        result.error = blank(result.error, secrets)
        if result.exception is not None:  # the same text, for the Python API's callers
            result.exception.args = (blank(str(result.exception), secrets),)
    counts = result.as_dict()
    history.finish_run(
        result.run_id, result.status, counts, error=result.error, reason=result.reason
    )
    log.info("%s: run %s finished: %s", result.sync, result.run_id, counts)


async def _deliver(
    project: Project,
    sync: Sync,
    state: SyncState,
    history: History,
    run_id: str,
    batches: list[Any],
    total: int,
    on_progress: ProgressCallback | None,
) -> Any:
    import httpx

    from ..delivery.adapters import open_adapter
    from ..delivery.engine import Delivery
    from ..delivery.ratelimit import limiter_for

    spec = sync.destination
    settings = spec.settings
    limiter = limiter_for(  # shared with the project's other processes (its state folder)
        str(project.root),
        spec.name,
        settings.rate_windows(),
        project.state_dir,
        settings.max_retry_after_seconds,
    )
    done = 0

    def progress(records: int) -> None:
        nonlocal done
        done += records
        if on_progress:
            on_progress(sync.name, done, total)

    hide = blanker(project.secrets())  # a destination may echo a token back in its errors

    def bookkeeping(rejected: list[Any], failed: list[Any]) -> None:
        rejected = [(key, hide(error), n) for key, error, n in rejected]
        failed = [(key, hide(error), n) for key, error, n in failed]
        if rejected:
            history.record_undelivered(sync.name, run_id, "rejected", rejected)
        if failed:
            history.record_undelivered(sync.name, run_id, "failed", failed)

    async def observe(response: httpx.Response) -> None:  # rate-limit headers, any adapter
        limiter.observe(spec.adapter.requests_left(response.headers))

    async with open_adapter(spec, observe) as adapter:
        delivery = Delivery(
            sync=sync.name,
            object_name=sync.header.object,
            primary_key=sync.primary_key,
            adapter=adapter,
            limiter=limiter,
            state=state,
            on_batch=bookkeeping,
            on_progress=progress,
            run_id=run_id,
        )
        with _active_lock:
            _active.add(delivery)
            stopping = _shutdown
        if stopping is not None:
            delivery.stop(stopping)
        try:
            return await delivery.run(batches)
        finally:
            with _active_lock:
                _active.discard(delivery)
