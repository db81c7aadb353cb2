"""Safety rails: runs that look like a broken model are held, not sent.

A mirror run that would delete more than `max_delete_fraction` of what was delivered, and any
run whose model suddenly returns no rows at all, sends nothing and is recorded as `held` with
the reason, until `reverse-etl approve SYNC` (or `run --force`) lets it through."""

from __future__ import annotations

from .snapshot import DiffCounts

DEFAULT_MAX_DELETE_FRACTION = 0.5  # mirror mode


def hold_reason(mode: str, max_delete_fraction: float | None, counts: DiffCounts) -> str | None:
    delivered = counts.changed + counts.unchanged + counts.removed
    if not delivered:
        return None
    if counts.rows == 0:
        return (
            f"the model returned no rows, where {delivered:,} records were delivered before; "
            "if that is right, run `reverse-etl approve` (or `run --force`)"
        )
    if mode != "mirror":
        return None
    limit = DEFAULT_MAX_DELETE_FRACTION if max_delete_fraction is None else max_delete_fraction
    fraction = counts.removed / delivered
    if fraction > limit:
        return (
            f"mirror would delete {counts.removed:,} of {delivered:,} delivered records "
            f"({fraction:.0%}), more than max_delete_fraction {limit:g}; if that is right, "
            "run `reverse-etl approve` (or `run --force`)"
        )
    return None
