"""What an adapter raises for a whole batch, typed by what the engine does next.

DestinationSignal
├── Retryable               back off exponentially and send the batch again
│   ├── NotSent             the request never left: sent again, even a create
│   │   └── Unreachable     no connection at all: when retries run out, the run stops
│   └── AnswerTooLarge      an answer too long to read: the batch is not trusted
├── Throttled               wait (Retry-After when given), slow down, send the batch again
├── SplitBatch              refused for some record in it: split, and a record alone is rejected
├── BatchFailed             its records fail for this run; the next run sends them again
└── DestinationError        send nothing more to this destination in this run
    └── CredentialsError    the same, the credentials being refused

A record's own outcome is not raised: `send` answers it (Delivered, Rejected, Retry). The
engine maps transport failures (httpx's timeouts, refused or dropped connections) to these at
the adapter boundary; an adapter of another protocol raises them itself (NotSent or
Unreachable when no connection was made, Retryable when the outcome is unknown).

Retries of a batch within a run are bounded by the destination's max_retries (429s waited out
are not counted); an asked wait beyond max_retry_after_seconds fails the records for this run.
"""

from __future__ import annotations

from ..errors import CredentialsError, DestinationError, DestinationSignal

__all__ = [
    "AnswerTooLarge",
    "BatchFailed",
    "CredentialsError",
    "DestinationError",
    "DestinationSignal",
    "NotSent",
    "Retryable",
    "SplitBatch",
    "Throttled",
    "Unreachable",
]


class Retryable(DestinationSignal):
    """A failure that may pass: a 5xx, an outage, a timeout after the request was sent, a
    dropped connection, an answer that cannot be trusted (see `untrusted`).

    The engine backs off exponentially (retry_backoff_seconds, doubling, with jitter; at least
    `retry_after` seconds when given) and sends the batch again, up to max_retries; then its
    records fail for this run and stay owed. The request may have been applied: for an
    operation not in the adapter's `idempotent_operations` the batch is never sent again
    blindly: it is looked up first (`reconcile`) when the operation is reconcilable, else its
    records fail for this run, the outcome unknown.

    retry_after: seconds the destination asked to wait (Retry-After), or None."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotSent(Retryable):
    """The request never reached the destination (no connection made in time, no free
    connection), so nothing was applied: retried as a Retryable, and a batch of an operation
    that is not safe to repeat is simply sent again."""


class Unreachable(NotSent):
    """The destination cannot be connected to (refused, no route, a database that accepts no
    connection). Retried as a NotSent; when retries run out the run stops, "unreachable", and
    nothing more is sent to the destination in it."""


class AnswerTooLarge(Retryable):
    """An answer longer than ANSWER_LIMIT_BYTES (reverse_etl.destinations.base): not read
    further, so its batch is not taken for delivered; retried as a Retryable."""


class Throttled(DestinationSignal):
    """The destination said "too many requests" (HTTP 429) for the whole batch.

    The engine pauses every request to this destination for `retry_after` seconds (without
    one: it lowers the rate it sends at and backs off), then sends the batch again. Not
    counted as a retry; after more than 20 in a row for one batch its records fail for this
    run. A `retry_after` beyond max_retry_after_seconds fails the records for this run and
    sends nothing more in it.

    retry_after: seconds to wait (Retry-After, or what the vendor's headers say), or None."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SplitBatch(DestinationSignal):
    """The batch was refused as a whole because of some record in it (a 400 or 422 that names
    no record, a 413). The engine splits it in two and sends each half; a batch of one record
    refused so is that record's rejection, with this message (docs/state.md, "Quarantine")."""


class BatchFailed(DestinationSignal):
    """The batch cannot be sent in this run for a reason a retry would not change (an
    unexpected 4xx). Its records fail with this message and stay owed: the next run sends
    them again. The run goes on with the other batches."""
