"""Sync schedules: a 5-field cron expression or "every 30s" / "every 15m" / "every 2h"."""

from __future__ import annotations

import re
from datetime import tzinfo
from typing import Any

_EVERY = re.compile(r"every\s+(\d+)\s*([smh])", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600}
MAX_INTERVAL = 366 * 24 * 3600  # a year: longer is not a schedule (and overflows the clock)


def interval_seconds(value: str) -> int | None:
    """The interval of an "every ..." schedule, in seconds; None for a cron expression.
    ValueError for an "every" that is not well formed."""
    text = value.strip()
    if not text.lower().startswith("every"):
        return None
    found = _EVERY.fullmatch(text)
    if not found or int(found.group(1)) < 1:
        raise ValueError(
            f'{value!r} is not a schedule: write e.g. "every 30s", "every 15m" or "every 2h"'
        )
    seconds = int(found.group(1)) * _SECONDS[found.group(2).lower()]
    if seconds > MAX_INTERVAL:
        raise ValueError(
            f"{value!r} is longer than a year: write at most every {MAX_INTERVAL // 3600}h, "
            "or a cron expression for yearly runs"
        )
    return seconds


def check_schedule(value: str) -> None:
    """ValueError saying what is wrong with a schedule, if anything is."""
    trigger(value, "UTC")


def trigger(value: str, timezone: str | tzinfo) -> Any:
    """The APScheduler trigger of a schedule (cron in `timezone`)."""
    seconds = interval_seconds(value)
    if seconds is not None:
        from apscheduler.triggers.interval import IntervalTrigger

        return IntervalTrigger(seconds=seconds, timezone=timezone)
    text = value.strip()
    if len(text.split()) != 5:
        raise ValueError(
            f"{value!r} is not a schedule: write a cron expression of 5 fields "
            f'(minute hour day month weekday) or e.g. "every 15m"'
        )
    from apscheduler.triggers.cron import CronTrigger

    try:
        return CronTrigger.from_crontab(text, timezone=timezone)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid cron expression: {exc}") from None
