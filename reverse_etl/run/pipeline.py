"""run_sync() and plan_sync(): the flow of one sync, end to end.

    model → warehouse → stage in DuckDB → diff against the snapshot → deliver pending batches
          → acknowledge per batch → fold acknowledgements into the snapshot → run history

A run is a straight line of stages (_stages), each handing the next its value:

    the holds before anything (rails.py)
    open the diff state (diff/base.py), and fold what a run that died had delivered
    claim the target: pointed elsewhere, the ledger forgets the old target's (state/ledger.py)
    _diff      the counts (DiffCounts), the outbox written; held when the model looks broken
    _pending   the invalid rows to the ledger; what to send, in batches (_Pending)
    _send      the delivery, acknowledged batch by batch: its outcome (Outcome)
    _fold_delivered   the acknowledged records into the snapshot; then the quarantine
    _tally     the run's numbers and status (RunResult), recorded in the run history

The CLI and the daemon are thin callers of these two functions."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb

from ..diff.base import DiffState
from ..diff.in_warehouse import WarehouseState, warehouse_state_path
from ..diff.local import DiffCounts, PendingBatch, SyncState, snapshot_path
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
from ..state.ledger import Ledger, Undelivered
from ..state.locks import SyncLock
from ..warehouses import open_snapshot_warehouse, open_warehouse
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
    from ..delivery.engine import Delivery, Outcome

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


S = TypeVar("S", bound=SyncState)


def _open_state(project: Project, sync: Sync, read_only: bool) -> DiffState:
    """The sync's diff state: the local diff's, or the diff inside the warehouse's (attached
    to the warehouse holding its snapshot)."""
    settings = project.settings

    def opened(kind: type[S]) -> S:
        return kind(
            state_path(project, sync),
            read_only=read_only,
            memory_limit=settings.state.memory_limit,
            threads=settings.state.threads,
            temp_dir=project.state_dir / "tmp" / sync.name,  # DuckDB clears it on close
            key_identity=sync.key_identity,
        )

    if not sync.in_warehouse:
        return opened(SyncState)
    warehouse = open_snapshot_warehouse(settings.warehouse)
    state = opened(WarehouseState)
    state.attach(warehouse, settings.warehouse.state_schema, sync.name)
    return state


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


def _bind(project: Project, sync: Sync, state: DiffState) -> None:
    """The model, read from the warehouse into the state's connection, ready to diff."""
    warehouse = open_warehouse(project.settings.warehouse, project.root)
    warehouse.connect(state.con, engine_files=state.outbox.files)  # then sandboxed
    with _model_errors(sync, project):
        named = column_problem(sync, warehouse.columns(state.con, sync.model.sql))
        if named is not None:
            raise ProjectError([named])
        key_line = sync.header_line("primary_key")
        state.read_model(
            warehouse, sync.model, sync.primary_key, sync.file, key_line, sync.target
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
            run = _Run(
                project,
                sync,
                history,
                Ledger(history, name),
                run_id,
                full_resync=full_resync,
                force=force,
                retry_quarantined=retry_quarantined,
                on_progress=on_progress,
            )
            return _run(run)
        finally:
            history.close()


@dataclass(frozen=True)
class _Run:
    """What the stages of one run read: the sync, where its run is recorded, and what was
    asked of it."""

    project: Project
    sync: Sync
    history: History
    ledger: Ledger
    run_id: str
    full_resync: bool
    force: bool  # past the safety rails
    retry_quarantined: bool
    on_progress: ProgressCallback | None

    @property
    def keep_fields(self) -> bool:
        """Whether the fold keeps the fields sent: a mirror's deletes carry the last ones."""
        return self.sync.header.mode == "mirror"


@dataclass(frozen=True)
class _Pending:
    """The diff's value, handed to the delivery: the counts, and what the run sends."""

    counts: DiffCounts
    batches: list[PendingBatch]  # the outbox, in sending order
    held_back: int  # quarantined records whose rows are as they were: not sent

    @property
    def total(self) -> int:
        return sum(batch.size for batch in self.batches)


def _run(run: _Run) -> RunResult:
    """The run, recorded in the run history whatever happens (an error included)."""
    started = time.monotonic()
    result = RunResult(run.sync.name, run.run_id, "error", None)
    try:
        held = _stages(run, result)
        if held is not None:
            result.status, result.reason = "held", held
    except ReverseEtlError as exc:
        result.error = str(exc)
        result.exception = exc
    except BaseException as exc:
        result.error = f"internal error: {exc!r}"
        _finish(run.history, result, started, run.project.secrets())
        raise
    _finish(run.history, result, started, run.project.secrets())
    return result


def _stages(run: _Run, result: RunResult) -> str | None:
    """The stages of a run, top to bottom; why the run is held, if a safety rail holds it.
    What a stage learns is kept in `result` as soon as it is known: an error after the
    delivery still reports the counts and what was delivered."""
    if held := _orphaned_deletes(run):  # before the state is opened, which would create it
        return held
    take_over(run.project, run.sync, run.history)
    _forget_other_diff(run.project, run.sync)
    with _open_state(run.project, run.sync, read_only=False) as state:
        _fold(state, run.keep_fields)  # what a run that died had delivered
        if held := _moved_target(run, state):  # before the claim forgets the old target
            return held
        _claim_target(run, state)
        if run.retry_quarantined:
            run.ledger.retry(state)
        result.counts = _diff(run, state)
        if held := _broken_model(run, result.counts):
            state.outbox.remove()  # send nothing, change nothing: the snapshot stays as it was
            return held
        pending = _pending(run, state, result.counts)
        outcome = _send(run, state, pending)
        if outcome is not None:
            result.delivered = outcome.delivered  # said even if the fold then fails
        _fold_delivered(run, state)
    run.ledger.drop_resolved(run.run_id)
    _tally(result, pending, outcome)
    return None


def _orphaned_deletes(run: _Run) -> str | None:
    """The safety rail before anything: a mirror starting from nothing (rails.py)."""
    return None if run.force else orphaned_deletes(run.project, run.sync, run.history)


def _moved_target(run: _Run, state: DiffState) -> str | None:
    """The safety rail on the target: a sync pointed elsewhere that cannot start over there
    without leaving records behind (rails.py)."""
    return None if run.force else moved_target_reason(run.sync, state.stored_target(), state)


def _claim_target(run: _Run, state: DiffState) -> None:
    """The state belongs to the sync's target from now on. Pointed at another one, the sync
    starts over there: nothing is owed to it, or quarantined for it, of the old one's."""
    sync = run.sync
    stored = state.stored_target()
    if stored is not None and stored != sync.target:
        run.ledger.forget_target(state)
    previous = state.claim_target(sync.target)
    if previous is not None:
        log.warning("%s: %s", sync.name, new_target_note(previous, sync.target))


def _diff(run: _Run, state: DiffState) -> DiffCounts:
    """The model against what the target holds: the counts; what to send, in the outbox."""
    sync = run.sync
    _bind(run.project, sync, state)
    with _model_errors(sync, run.project):
        counts = state.diff(sync.header.mode, run.full_resync, build_pending=True)
    log.info("%s: run %s: %s", sync.name, run.run_id, counts)
    return counts


def _broken_model(run: _Run, counts: DiffCounts) -> str | None:
    """The safety rail on the diff: a model that lost its rows, or a mirror that would delete
    too much (rails.py)."""
    if run.force:
        return None
    header = run.sync.header
    return hold_reason(run.sync.name, header.mode, header.max_delete_fraction, counts)


def _pending(run: _Run, state: DiffState, counts: DiffCounts) -> _Pending:
    """After a diff that is not held: its invalid rows in the ledger, the snapshot settled,
    and what the run sends, in batches."""
    invalid = state.invalid_rows() if counts.invalid else []
    run.ledger.record_invalid(run.run_id, invalid)
    state.settle()
    held_back = run.ledger.held_back(state)
    if run.sync.header.mode != "mirror" and counts.removed:
        state.forget_removed()
    return _Pending(counts, state.pending_batches(run.sync.batch_size), held_back)


def _send(run: _Run, state: DiffState, pending: _Pending) -> Outcome | None:
    """Deliver the pending batches; the delivery's outcome (None: nothing to send)."""
    sync = run.sync
    if pending.batches:  # before the first request: a kill after it delivered counts too
        run.history.record_delivering(sync.name, sync.target)
    if run.on_progress:
        run.on_progress(sync.name, 0, pending.total)
    if not pending.batches:
        return None
    from ..delivery.adapters import run_coroutine  # with the rest of delivery: not for `plan`

    delivering = _deliver(
        run.project,
        sync,
        state,
        run.ledger,
        run.run_id,
        pending.batches,
        pending.total,
        run.on_progress,
    )
    return run_coroutine(delivering)


def _fold_delivered(run: _Run, state: DiffState) -> None:
    """What the run delivered, into the snapshot; then the quarantine, from what the
    destination refused again and the rows as they are now."""
    _fold(state, run.keep_fields)
    max_attempts = run.sync.destination.settings.max_attempts
    run.ledger.quarantine(state, run.run_id, max_attempts)


def _tally(result: RunResult, pending: _Pending, outcome: Outcome | None) -> None:
    """The run's numbers and status, from the diff's value and the delivery's outcome."""
    if outcome is not None:
        result.delivered = outcome.delivered
        result.rejected = len(outcome.rejected)
        result.failed = len(outcome.failed)
        result.error = outcome.error
        if outcome.error:
            result.exception = outcome.exception or Interrupted(outcome.error)
    result.rejected += pending.held_back  # quarantined: still not delivered
    undelivered = result.rejected + result.failed + pending.counts.invalid
    result.status = "error" if result.error else "partial" if undelivered else "success"


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


def _fold(state: DiffState, keep_fields: bool) -> None:
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
    state: DiffState,
    ledger: Ledger,
    run_id: str,
    batches: list[PendingBatch],
    total: int,
    on_progress: ProgressCallback | None,
) -> Outcome:
    """The delivery stage: the pending batches sent through the destination's adapter, within
    the rate limit its runs share across processes; the records not delivered go to the
    ledger as each batch ends (their errors blanked); the outcome."""
    import httpx

    from ..delivery.adapters import limiter_pace, open_adapter
    from ..delivery.engine import Delivery
    from ..delivery.ratelimit import limiter_for
    from ..destinations.base import pacing

    spec = sync.destination
    settings = spec.settings
    limiter = limiter_for(  # shared with the project's other processes (its state folder)
        str(project.root),
        spec.name,
        settings.rate_windows(),
        project.state_dir,
        settings.max_retry_after_seconds,
    )

    async def observe(response: httpx.Response) -> None:  # rate-limit headers, any adapter
        limiter.observe(spec.adapter.requests_left(response.headers))

    # Requests made while the adapter opens and closes, or by tasks it starts, are paced too
    # (the delivery paces its own while it runs).
    opened = pacing.set(limiter_pace(spec, limiter))
    try:
        async with open_adapter(spec, observe) as adapter:
            delivery = Delivery(
                sync=sync.name,
                object_name=sync.header.object,
                primary_key=sync.primary_key,
                adapter=adapter,
                limiter=limiter,
                state=state,
                on_batch=_to_ledger(ledger, run_id, blanker(project.secrets())),
                on_progress=_progress(sync.name, total, on_progress),
                run_id=run_id,
            )
            with _stoppable(delivery):
                return await delivery.run(batches)
    finally:
        pacing.reset(opened)


def _to_ledger(
    ledger: Ledger, run_id: str, hide: Callable[[str], str]
) -> Callable[[list[Undelivered], list[Undelivered]], None]:
    """Where a batch's records rejected and failed go: the ledger, their errors blanked (a
    destination may echo a token back in its errors)."""

    def record(rejected: list[Undelivered], failed: list[Undelivered]) -> None:
        for reason, records in (("rejected", rejected), ("failed", failed)):
            if records:
                blanked = [(key, hide(error), n) for key, error, n in records]
                ledger.record_undelivered(run_id, reason, blanked)

    return record


def _progress(
    sync: str, total: int, on_progress: ProgressCallback | None
) -> Callable[[int], None]:
    """The delivery's count of records done, told to `on_progress` as a running total."""
    done = 0

    def progress(records: int) -> None:
        nonlocal done
        done += records
        if on_progress:
            on_progress(sync, done, total)

    return progress


@contextmanager
def _stoppable(delivery: Delivery) -> Iterator[None]:
    """The delivery, while it runs, among those shutdown() stops (stopped at once when a
    shutdown is under way)."""
    with _active_lock:
        _active.add(delivery)
        stopping = _shutdown
    if stopping is not None:
        delivery.stop(stopping)
    try:
        yield
    finally:
        with _active_lock:
            _active.discard(delivery)
