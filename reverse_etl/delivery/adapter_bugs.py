"""An adapter's answers checked before the engine acts on any of them: whatever an adapter
does outside its contract (docs/writing-a-destination.md) is a bug in the adapter, raised as
AdapterBug naming the adapter, the call and what was wrong. Its batch's records are then not
counted delivered (they stay owed) and the run stops, as for any error of the destination.

A real interruption of the run is not the adapter's and passes through untouched: its task
cancelled (a shutdown, Ctrl-C under asyncio.run), or a KeyboardInterrupt or SystemExit raised
by a signal handler while the adapter's code happened to run."""

from __future__ import annotations

import asyncio
import functools
import math
import signal
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..destinations.base import Delivered, Destination, Rejected, Retry
from ..errors import DestinationSignal
from .adapters import signalled

T = TypeVar("T")

SHOWN = 200  # characters of a wrong value shown in a message
SEND_RESULTS = "DELIVERED, Rejected(error) or Retry(error, after)"
LOOKUP_RESULTS = "DELIVERED (found), None (not found), Rejected(error) or Retry(error, after)"


class AdapterBug(Exception):
    """An adapter did something outside its contract: a result of the wrong type or shape,
    an exception that is not one of the signals. The message names the adapter, the call
    and what was wrong."""


def adapter_bug(adapter: Destination, call: str, what: str) -> AdapterBug:
    """The bug: `call` (send, reconcile, check) did `what` ("raised KeyError('id')")."""
    kind = type(adapter)
    return AdapterBug(
        f"bug in adapter {adapter.type!r} ({kind.__module__}.{kind.__qualname__}): {call}() "
        f"{what} (docs/writing-a-destination.md)"
    )


async def guarded(
    adapter: Destination, call: str, method: Callable[..., Awaitable[T]], *args: Any
) -> T:
    """Await `method(*args)`, one of the adapter's calls, with httpx's transport failures
    raised as the SDK's signals (adapters.signalled). Raises AdapterBug for what the contract
    does not allow: an exception that is not a DestinationSignal (a KeyError, httpx's other
    errors), a signal whose retry_after is not a number, or a BaseException (SystemExit,
    KeyboardInterrupt, CancelledError) that is not a real interruption of the run."""
    try:
        return await signalled(method(*args))
    except DestinationSignal as exc:
        after = getattr(exc, "retry_after", None)
        if after is not None and _seconds(after) is None:  # (inf: refused as too long)
            what = f"raised {shown(exc)} with retry_after = {shown(after)}, not seconds"
            raise adapter_bug(adapter, call, what) from exc
        raise
    except Exception as exc:
        raise adapter_bug(adapter, call, f"raised {shown(exc)}") from exc
    except BaseException as exc:
        if interrupts_run(exc):
            raise
        raise adapter_bug(adapter, call, f"raised {shown(exc)}") from exc


def interrupts_run(exc: BaseException) -> bool:
    """Whether a BaseException that is not an Exception is a real interruption of the run,
    not the adapter's own: a CancelledError while the task is being cancelled; a
    KeyboardInterrupt or SystemExit raised by a signal handler (asyncio.run's second Ctrl-C,
    a host process's handler calling sys.exit)."""
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0
    if not isinstance(exc, KeyboardInterrupt | SystemExit):
        return False
    handlers = {_code(signal.getsignal(number)) for number in signal.valid_signals()}
    handlers.discard(None)
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code in handlers:
            return True
        frame = frame.tb_next
    return False


def check_results(adapter: Destination, results: object, records: int) -> None:
    """`send`'s answer: a list of exactly one result per record, each DELIVERED, Rejected
    with a text error or Retry with a text error and a wait of None or seconds >= 0.
    Raises AdapterBug for the first thing wrong."""
    if (what := _problem(results, records, lookup=False)) is not None:
        raise adapter_bug(adapter, "send", what)


def check_lookup(adapter: Destination, found: object, records: int) -> None:
    """`reconcile`'s answer: as `send`'s, where None (not found) is an answer too."""
    if (what := _problem(found, records, lookup=True)) is not None:
        raise adapter_bug(adapter, "reconcile", what)


def _problem(results: object, records: int, lookup: bool) -> str | None:
    if not isinstance(results, list | tuple):
        allowed = LOOKUP_RESULTS if lookup else SEND_RESULTS
        return f"returned {shown(results)}, not a list of results ({allowed})"
    if len(results) != records:
        return f"returned {len(results)} results for {records} records"
    for number, result in enumerate(results, 1):
        if problem := _result_problem(result, lookup):
            return f"returned {shown(result)} as result {number} of {records}; {problem}"
    return None


def _result_problem(result: object, lookup: bool) -> str | None:
    if isinstance(result, Delivered) or (lookup and result is None):
        return None
    if isinstance(result, Rejected | Retry):
        if not isinstance(result.error, str):
            return f"its error must be text, not {type(result.error).__name__}"
        after = result.after if isinstance(result, Retry) else None
        seconds = 0.0 if after is None else _seconds(after)
        if seconds is None or not math.isfinite(seconds) or seconds < 0:
            return "its after must be None or a finite number of seconds >= 0"
        return None
    return f"a result is {LOOKUP_RESULTS if lookup else SEND_RESULTS}"


def _seconds(value: object) -> float | None:
    """A wait as seconds: an int or a float (not a bool) that is a number (not NaN)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond any float
        return None
    return None if math.isnan(seconds) else seconds


def shown(value: object) -> str:
    """A value for a message: a class by its name, anything else by its repr, bounded."""
    if isinstance(value, type):
        return f"the class {value.__name__} itself"
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ is the adapter's too
        text = f"a {type(value).__name__}"
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."


def _code(handler: object) -> object:
    """The code a signal handler runs (through functools.partial and bound methods), or None."""
    while isinstance(handler, functools.partial):
        handler = handler.func
    return getattr(handler, "__code__", None)
