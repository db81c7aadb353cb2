"""What the CLI shows people: a progress bar on a terminal, and tables."""

from __future__ import annotations

import sys
import threading
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress
from rich.table import Table

# Piped output gets a width that fits the tables instead of the 80 columns Rich assumes.
stdout = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
stderr = Console(stderr=True, highlight=False)


class Progress:
    """Records delivered of those to deliver, and the rate, per sync (stderr, terminals only)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskID] = {}
        self._bar = (
            RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} records/s"),
                TimeElapsedColumn(),
                console=stderr,
                transient=False,
            )
            if enabled
            else None
        )

    def __enter__(self) -> Progress:
        if self._bar:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar:
            self._bar.stop()

    def update(self, sync: str, done: int, total: int) -> None:
        if not self._bar:
            return
        with self._lock:
            if sync not in self._tasks:
                self._tasks[sync] = self._bar.add_task(sync, total=total, rate="-")
            task = self._tasks[sync]
            self._bar.update(task, completed=done, total=total)
            speed = self._bar.tasks[self._tasks[sync]].speed
            self._bar.update(task, rate=f"{speed:,.0f}" if speed else "-")


def _table(title: str, columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if column in ("sync", "status", "key") else "right")
    return table


PLAN_COLUMNS = ["sync", "rows", "added", "changed", "removed", "unchanged", "invalid"]
RUN_COLUMNS = PLAN_COLUMNS + ["delivered", "rejected", "failed", "status", "seconds"]


def plan_table(plans: list[dict[str, Any]]) -> None:
    if not plans:
        return
    table = _table("plan (nothing sent)", PLAN_COLUMNS)
    for plan in plans:
        table.add_row(*(f"{plan[c]:,}" if c != "sync" else plan[c] for c in PLAN_COLUMNS))
    stdout.print(table)


def run_table(results: list[dict[str, Any]]) -> None:
    table = _table("runs", RUN_COLUMNS)
    for result in results:
        cells = [result["sync"]]
        for column in RUN_COLUMNS[1:]:
            value = result.get("duration_seconds") if column == "seconds" else result.get(column)
            cells.append(_cell(column, value))
        table.add_row(*cells)
    stdout.print(table)


def runs_table(runs: list[dict[str, Any]]) -> None:
    columns = [
        "started_at",
        "sync",
        "status",
        "rows",
        "added",
        "changed",
        "removed",
        "delivered",
        "rejected",
        "failed",
        "invalid",
        "seconds",
    ]
    table = _table("run history (newest first)", columns)
    for run in runs:
        table.add_row(
            *(
                _cell(c, run.get("duration_seconds") if c == "seconds" else run.get(c))
                for c in columns
            )
        )
    stdout.print(table)
    for run in runs:
        if run.get("error") or run.get("reason"):
            stdout.print(f"{run['run_id']} ({run['sync']}): {run.get('error') or run['reason']}")


def rejected_table(sync: str, records: list[dict[str, Any]]) -> None:
    if not records:
        # (of the runs that finished: one killed mid-run leaves its records owed, which
        # `plan` counts and the next run sends)
        stdout.print(f"{sync}: no record rejected, failed or invalid in its last finished run")
        return
    columns = ["key", "reason", "attempts", "first seen", "last seen", "error"]
    table = _table(f"{sync}: records not delivered", columns)
    for record in records:
        key = record["key"] if record["key"] is not None else "(NULL)"
        table.add_row(
            key,
            record["reason"],
            str(record["attempts"]),
            record["first_seen"],
            record["last_seen"],
            record["error"],
        )
    stdout.print(table)


def destinations_table(described: list[dict[str, Any]]) -> None:
    for item in described:
        limits = ", ".join(item["default_rate_limits"]) or "none"
        cap = item["max_batch_size"] or "none"
        table = _table(
            f"{item['type']}: {item['description']}\noperations: {', '.join(item['operations'])}"
            f"; max batch: {cap}; default rate limits: {limits}",
            ["setting", "type", "default", "meaning"],
        )
        for column in table.columns:
            column.justify = "left"
        for setting in item["settings"]:
            default = "required" if setting["required"] else setting["default"]
            cells = [setting["name"], setting["type"], "" if default is None else str(default)]
            table.add_row(*(escape(cell) for cell in [*cells, setting["description"]]))
        stdout.print(table)


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column == "status":
        colour = {
            "success": "green",
            "partial": "yellow",
            "held": "magenta",
            "running": "cyan",
        }.get(value, "red")
        return f"[{colour}]{value}[/{colour}]"
    if column == "seconds":
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
