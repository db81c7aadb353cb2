"""Send a sync's pending batches: concurrency, rate limit, retries, splitting, and the durable
acknowledgement of each batch as soon as its answer is in.

The adapter is called through the boundary of delivery.adapters: failures arrive as the SDK's
signals (reverse_etl.destinations.signals), and each request takes a slot of the rate limiter
(`Delivery.pace`, through the client's request hook; before each call, for an adapter that
speaks no HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..destinations.base import (
    DELIVERED,
    Batch,
    BatchFailed,
    Delivered,
    Destination,
    NotSent,
    Record,
    Rejected,
    Result,
    Retry,
    Retryable,
    SplitBatch,
    Throttled,
    Unreachable,
)
from ..diff.base import DiffState
from ..diff.local import PendingBatch
from ..errors import CredentialsError, DestinationError, ReverseEtlError
from .adapter_bugs import AdapterBug, check_lookup, check_results, guarded
from .adapters import pacing
from .ratelimit import RateLimiter

log = logging.getLogger("reverse_etl.delivery")

T = TypeVar("T")

READ_WINDOW = 20_000  # records read from the outbox per query (at least one batch)
MAX_THROTTLED = 20  # 429s answered to one request in a row before its records fail for this run
MAX_BACKOFF = 60.0


@dataclass
class Outcome:
    """What happened to the records of one run."""

    delivered: int = 0
    rejected: list[tuple[str, str, int]] = field(default_factory=list)  # key, error, attempts
    failed: list[tuple[str, str, int]] = field(default_factory=list)
    error: str | None = None  # why the run stopped sending, if it did
    exception: ReverseEtlError | None = None  # the same, typed (for the Python API)


class Halted(BatchFailed):
    """Raised by `Delivery.pace` instead of a slot: the run has stopped, or may send nothing
    more (a wait beyond max_retry_after_seconds). The request is not sent; to an adapter that
    catches it, a BatchFailed."""


@dataclass
class _Sent:
    """Per-record results of one logical batch, filled in by attempts and splits."""

    delivered: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str, int]] = field(default_factory=list)
    failed: list[tuple[str, str, int]] = field(default_factory=list)
    # Keys of records whose create may have landed in this run (a request with an unknown
    # outcome): the vendor's "already exists" for one of them is this run's own record.
    maybe_created: set[str] = field(default_factory=set)


@dataclass
class _Tries:
    """How often some records were tried: failures worth retrying (`attempts`, bounded by
    max_retries) and 429s (`throttled`, which do not count against it)."""

    attempts: int = 0
    throttled: int = 0

    @property
    def total(self) -> int:
        return self.attempts + self.throttled


class Delivery:
    def __init__(
        self,
        *,
        sync: str,
        object_name: str | None,
        primary_key: tuple[str, ...] = (),
        adapter: Destination,
        limiter: RateLimiter,
        state: DiffState,
        on_batch: Callable[[list[tuple[str, str, int]], list[tuple[str, str, int]]], None],
        on_progress: Callable[[int], None] | None = None,
        run_id: str = "",
    ) -> None:
        self.sync = sync
        self.run_id = run_id
        self.object_name = object_name
        self.primary_key = primary_key
        self.adapter = adapter
        self.settings = adapter.settings
        self.limiter = limiter
        self.state = state
        self.on_batch = on_batch  # (run bookkeeping) rejected and failed records of a batch
        self.on_progress = on_progress
        self.outcome = Outcome()
        self._stop: str | None = None
        # Why nothing more is sent to the destination in this run: it asked for a wait longer
        # than max_retry_after_seconds (the records fail for this run and stay owed).
        self._refused: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None

    def stop(self, reason: str) -> None:
        """Take no new batches and retry nothing more; requests in flight finish (within the
        destination's timeout) and what they delivered is acknowledged. Any thread may call it."""
        if self._stop is not None:
            return
        log.warning("%s: stopping: %s", self.sync, reason)
        self._stop = reason
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopped.set)

    async def run(self, batches: list[PendingBatch]) -> Outcome:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        if self._stop is not None:
            self._stopped.set()
        # The state's DuckDB work (reading the outbox, recording acknowledgements) runs on one
        # thread of its own: DuckDB releases the GIL, so requests keep flowing meanwhile.
        paced = pacing.set(self.pace)  # the adapter's requests, in this task and its batches'
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="reverse-etl-state") as state_thread:
                self._state_thread = state_thread
                await self._send_all(batches)
        finally:
            pacing.reset(paced)
        return self.outcome

    async def _slot(self) -> str | None:
        """Wait for the rate limiter's next slot (or for the run to stop). None once the slot
        is taken; else why nothing may be sent in this run (a wait beyond
        max_retry_after_seconds, e.g. a spent requests_per_day)."""
        if self._refused is not None:
            return self._refused
        longest = self.settings.max_retry_after_seconds
        if (wait := self.limiter.try_acquire()) > 0:
            began = time.monotonic()
            while wait > 0:
                if wait > longest:
                    return self._refuse(
                        f"the rate limit ({self.limiter.describe()}) allows the next request "
                        f"in {wait:.0f} s, more than max_retry_after_seconds = {longest:g}"
                    )
                if await self._pause(wait):
                    break
                wait = self.limiter.try_acquire()
            self.limiter.waited(time.monotonic() - began)
        return None

    def _refuse(self, reason: str) -> str:
        """Send nothing more in this run: what is left fails with the reason, and stays owed."""
        if self._refused is None:
            self._refused = reason
            log.warning("%s: %s: the records not sent stay owed to the next run", self.sync, reason)
        return self._refused

    def _too_long(self, seconds: float | None) -> str | None:
        """The reason to give up a wait the destination asked for, if it is too long."""
        longest = self.settings.max_retry_after_seconds
        if seconds is None or seconds <= longest:
            return None
        told = f"{seconds:.0f}" if math.isfinite(seconds) else "inf"
        return self._refuse(
            f"the destination asked to wait {told} s, more than "
            f"max_retry_after_seconds = {longest:g}"
        )

    async def pace(self) -> None:
        """Take a slot of the rate limiter for one request, waiting for it: awaited before
        each request of the adapter (and before each call of one that speaks no HTTP).
        Raises Halted when the run stops meanwhile or may send nothing more."""
        refused = await self._slot()
        if self._stop is not None:
            raise Halted(f"not sent: {self._stop}")
        if refused is not None:
            raise Halted(refused)

    def _halted(self, operation: str, unknown: str | None) -> str | None:
        """Why records are not sent in this run (it stopped, or the rate limit asks a wait
        beyond max_retry_after_seconds), as their error; None while sending goes on."""
        if self._stop is not None:
            why = f"not sent: {self._stop}"
            return why if unknown is None else f"{_unknown_outcome(operation, unknown)}; {why}"
        return self._refused

    async def _pause(self, seconds: float) -> bool:
        """Wait, unless the run is stopped meanwhile; True when it was."""
        assert self._stopped is not None
        if seconds <= 0:
            await asyncio.sleep(0)  # still let the other batches have their turn
        elif not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), seconds)
        return self._stopped.is_set()

    async def _in_state_thread(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._state_thread, func, *args)

    async def _send_all(self, batches: list[PendingBatch]) -> None:
        slots = asyncio.Semaphore(self.settings.max_concurrency)
        tasks: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            slots.release()
            tasks.discard(task)

        dispatched = 0
        for window in _windows(batches, READ_WINDOW):
            if self._stop is not None:
                break
            rows = await self._in_state_thread(self.state.read, window[0].first, window[-1].last)
            for batch in window:
                offset = batch.first - window[0].first
                records = rows[offset : offset + batch.size]
                await slots.acquire()
                if self._stop is not None:
                    slots.release()
                    break
                task = asyncio.create_task(self._process(batch, records))
                tasks.add(task)
                task.add_done_callback(done)
                dispatched += 1
        unsent = batches[dispatched:]
        failures: list[BaseException] = []
        while tasks:
            results = await asyncio.gather(*list(tasks), return_exceptions=True)
            failures += [r for r in results if isinstance(r, BaseException)]
        if failures:  # bookkeeping failed (the state could not be written): the run must not pass
            raise failures[0]
        if unsent:  # one read and one ledger write for all of them: stopping must be quick
            rows = await self._in_state_thread(self.state.read, unsent[0].first, unsent[-1].last)
            failed = [(key, f"not sent: {self._stop}", 0) for key, _ in rows]
            self.outcome.failed += failed
            self.on_batch([], failed)
            if self.on_progress:
                self.on_progress(len(failed))
        self.outcome.error = self._stop

    async def _process(self, pending: PendingBatch, records: list[Record]) -> None:
        sent = _Sent()
        try:
            earlier = None
            if pending.owed and self._reconcile_first(pending.operation):
                earlier = "an earlier run did not learn whether it was applied"
                sent.maybe_created.update(key for key, _ in records)
            await self._send(pending.operation, records, sent, earlier)
        except CredentialsError as exc:
            message = f"destination {self.adapter.name!r} refused the credentials: {exc}"
            self._give_up(CredentialsError(message), records, sent)
        except DestinationError as exc:
            self._give_up(exc, records, sent)
        except AdapterBug as exc:  # its records stay owed; the run stops, naming the bug
            log.debug("%s: %s", self.sync, exc, exc_info=exc)  # (the traceback, with -vv)
            message = f"destination {self.adapter.name!r}: {exc}"
            self._give_up(DestinationError(message), records, sent)
        except Exception as exc:  # nor may the engine's own: the batch's bookkeeping is kept
            message = f"unexpected error sending to {self.adapter.name!r}: {exc!r}"
            self._give_up(DestinationError(message), records, sent)
        try:
            await self._finish(pending, sent)
        except BaseException:
            self.stop("the acknowledgement of a batch could not be recorded")
            raise

    async def _finish(self, pending: PendingBatch, sent: _Sent) -> None:
        if sent.delivered:
            everything = len(sent.delivered) == pending.size
            keys = None if everything else sent.delivered
            await self._in_state_thread(self.state.acknowledge, pending, keys)
        self.outcome.delivered += len(sent.delivered)
        self.outcome.rejected += sent.rejected
        self.outcome.failed += sent.failed
        self.on_batch(sent.rejected, sent.failed)
        if self.on_progress:
            self.on_progress(len(sent.delivered) + len(sent.rejected) + len(sent.failed))

    def _give_up(self, error: ReverseEtlError, records: list[Record], sent: _Sent) -> None:
        """Stop sending (the first such error is the run's) and fail what is left."""
        if self.outcome.exception is None:
            self.outcome.exception = error
        self.stop(str(error))
        self._fail_rest(records, sent, str(error))

    @staticmethod
    def _fail_rest(records: list[Record], sent: _Sent, message: str) -> None:
        done = (
            set(sent.delivered) | {k for k, _, _ in sent.rejected} | {k for k, _, _ in sent.failed}
        )
        sent.failed += [(key, message, 1) for key, _ in records if key not in done]

    def _reconcile_first(self, operation: str) -> bool:
        """Whether records owed from an earlier run are looked up before they are sent: those
        of an operation not safe to repeat, where the adapter can look them up."""
        adapter = self.adapter
        return (
            operation not in adapter.idempotent_operations
            and operation in adapter.reconcilable_operations
        )

    async def _send(
        self, operation: str, records: list[Record], sent: _Sent, unknown: str | None = None
    ) -> None:
        """Send records until each has a final result; split batches refused as a whole.
        `unknown`: why the outcome of an earlier request of these records is unknown (they
        are then looked up first, when the operation is not safe to repeat)."""
        tries = _Tries()
        while records:
            if (halted := self._halted(operation, unknown)) is not None:
                sent.failed += _all(records, halted, tries.total)
                return
            batch = Batch(
                self.sync, self.object_name, operation, records, self.primary_key, self.run_id
            )
            try:
                if not self.adapter.speaks_http:  # its requests are not seen: one per call
                    await self.pace()
                if unknown is not None:  # look the records up before anything is sent again
                    records = self._reconciled(
                        records, await self._reconcile(batch), sent, tries.total
                    )
                    unknown = None
                    continue
                results = await guarded(self.adapter, "send", self.adapter.send, batch)
                check_results(self.adapter, results, len(records))  # before any is acted on
            except Halted as exc:  # stopped while waiting for a slot: nothing more goes out
                why = self._halted(operation, unknown) or str(exc)
                sent.failed += _all(records, why, tries.total)
                return
            except Throttled as exc:
                if await self._throttled(exc, records, sent, tries):
                    continue
                return
            except Retryable as exc:
                go_on, unknown = await self._failed(exc, operation, records, sent, tries, unknown)
                if go_on:
                    continue
                return
            except SplitBatch as exc:
                await self._split(exc, operation, records, sent, tries)
                return
            except BatchFailed as exc:
                sent.failed += _all(records, str(exc), tries.total + 1)
                return
            self.limiter.succeeded()
            records, retry_after = self._sort(records, results, sent, tries)
            if records and (too_long := self._too_long(retry_after)) is not None:
                sent.failed += _all(records, too_long, tries.total + 1)
                return
            if records:
                tries.attempts += 1
                await self._pause(max(retry_after or 0.0, self._backoff(tries.attempts)))

    async def _throttled(
        self, exc: Throttled, records: list[Record], sent: _Sent, tries: _Tries
    ) -> bool:
        """A 429 for these records: the limiter slows down, and they wait for their turn;
        whether they are sent again (else they failed for this run: waited too long, or too
        often)."""
        tries.throttled += 1
        if (too_long := self._too_long(exc.retry_after)) is not None:
            sent.failed += _all(records, too_long, tries.total)
            return False
        self.limiter.throttled(exc.retry_after)
        log.info(
            "%s: throttled (%s); retry after %ss; limit now %s at %.0f%%",
            self.sync,
            exc,
            exc.retry_after,
            self.limiter.describe(),
            self.limiter.scale * 100,
        )
        if tries.throttled > MAX_THROTTLED:
            sent.failed += _all(records, f"throttled {tries.throttled} times: {exc}", tries.total)
            return False
        if exc.retry_after is None:
            await self._pause(self._backoff(tries.throttled))
        return True

    async def _failed(
        self,
        exc: Retryable,
        operation: str,
        records: list[Record],
        sent: _Sent,
        tries: _Tries,
        unknown: str | None,
    ) -> tuple[bool, str | None]:
        """A failure worth retrying: whether the records are tried again (after a backoff),
        and why their outcome is unknown now (a request that may have landed, for an
        operation not safe to repeat: looked up before it is sent again)."""
        tries.attempts += 1
        error = str(exc)
        if unknown is None and _may_have_landed(exc, operation, self.adapter):
            # Not safe to repeat: never sent again before the vendor is asked.
            sent.maybe_created.update(key for key, _ in records)
            if operation not in self.adapter.reconcilable_operations:
                why = _unknown_outcome(operation, error)
                log.warning("%s: %d records: %s", self.sync, len(records), why)
                sent.failed += _all(records, why, tries.total)
                return False, unknown
            unknown = error
        if tries.attempts > self.settings.max_retries:
            if isinstance(exc, Unreachable):
                raise DestinationError(
                    f"destination {self.adapter.name!r} is unreachable: {error}"
                ) from None
            why = f"{error} (after {tries.attempts} attempts)"
            if unknown is not None:
                why = f"{_unknown_outcome(operation, unknown)}; looking them up: {why}"
            sent.failed += _all(records, why, tries.total)
            return False, unknown
        delay = self._backoff(tries.attempts)
        if exc.retry_after:
            if (too_long := self._too_long(exc.retry_after)) is not None:
                sent.failed += _all(records, too_long, tries.total)
                return False, unknown
            delay = max(delay, exc.retry_after)
        log.info(
            "%s: %d records: %s; attempt %d, retrying in %.2fs",
            self.sync,
            len(records),
            error,
            tries.attempts,
            delay,
        )
        await self._pause(delay)
        return True, unknown

    async def _split(
        self, exc: SplitBatch, operation: str, records: list[Record], sent: _Sent, tries: _Tries
    ) -> None:
        """A batch refused as a whole: its halves are sent on their own, until the record at
        fault is alone (and rejected)."""
        if len(records) == 1:
            sent.rejected.append((records[0][0], str(exc), tries.total + 1))
            return
        log.info("%s: batch of %d refused (%s); splitting", self.sync, len(records), exc)
        middle = len(records) // 2
        await self._send(operation, records[:middle], sent)
        await self._send(operation, records[middle:], sent)

    def _sort(
        self, records: list[Record], results: list[Result], sent: _Sent, tries: _Tries
    ) -> tuple[list[Record], float | None]:
        """An answer (checked: one result per record), record by record: delivered,
        rejected, or to retry (those, with the longest wait asked)."""
        if results.count(DELIVERED) == len(results):  # the usual answer: all accepted
            sent.delivered += [key for key, _ in records]
            return [], None
        again: list[Record] = []
        retry_after = None
        for record, result in zip(records, results, strict=True):
            if isinstance(result, Delivered):
                sent.delivered.append(record[0])
            elif isinstance(result, Rejected) and result.exists and record[0] in sent.maybe_created:
                sent.delivered.append(record[0])  # this run's own create, its answer lost
            elif isinstance(result, Rejected):
                sent.rejected.append((record[0], result.error, tries.total + 1))
            elif isinstance(result, Retry):
                if tries.attempts + 1 > self.settings.max_retries:
                    sent.failed.append((record[0], result.error, tries.total + 1))
                    continue
                again.append(record)
                retry_after = max(retry_after or 0.0, result.after or 0.0)
        return again, retry_after

    async def _reconcile(self, batch: Batch) -> list[Result | None]:
        """The adapter's lookup of records whose create has an unknown outcome: one entry per
        record (checked); a Retry is raised to be asked again."""
        try:
            found = await guarded(self.adapter, "reconcile", self.adapter.reconcile, batch)
        except SplitBatch as exc:  # a lookup is not split: the records fail for this run
            raise BatchFailed(str(exc)) from None
        check_lookup(self.adapter, found, len(batch.records))
        for result in found:
            if isinstance(result, Retry):
                raise Retryable(result.error, result.after)
        return list(found)

    def _reconciled(
        self, records: list[Record], found: list[Result | None], sent: _Sent, attempts: int
    ) -> list[Record]:
        """What the vendor holds counts as delivered (the lost request wrote it); the records
        it does not hold are returned, to be sent again."""
        again = []
        for record, result in zip(records, found, strict=True):
            if result is None:
                again.append(record)
            elif isinstance(result, Rejected):
                sent.rejected.append((record[0], result.error, attempts + 1))
            else:
                sent.delivered.append(record[0])
        log.info(
            "%s: looked up %d records after an unknown outcome: %d found, %d sent again",
            self.sync,
            len(records),
            len(records) - len(again),
            len(again),
        )
        return again

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: half fixed, half random."""
        ceiling = min(MAX_BACKOFF, self.settings.retry_backoff_seconds * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def _may_have_landed(exc: Retryable, operation: str, adapter: Destination) -> bool:
    """Whether a failed request of a non-idempotent operation may have been applied: anything
    but a connection never made (NotSent), such as a timeout after sending, a dropped
    connection, a 5xx, an answer that cannot be trusted."""
    return operation not in adapter.idempotent_operations and not isinstance(exc, NotSent)


def _unknown_outcome(operation: str, error: str) -> str:
    return (
        f"outcome unknown: the {operation} may have been applied ({error}); it is not sent "
        "again blindly (docs/guarantees.md)"
    )


def _all(records: list[Record], error: str, attempts: int) -> list[tuple[str, str, int]]:
    return [(key, error, attempts) for key, _ in records]


def _windows(batches: list[PendingBatch], records: int) -> Iterator[list[PendingBatch]]:
    """Consecutive batches grouped so that each group holds about `records` records."""
    window: list[PendingBatch] = []
    size = 0
    for batch in batches:
        if window and (size + batch.size > records or batch.first != window[-1].last + 1):
            yield window
            window, size = [], 0
        window.append(batch)
        size += batch.size
    if window:
        yield window
