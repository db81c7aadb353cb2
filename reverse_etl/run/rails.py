"""Safety rails: runs that look like a broken model are held, not sent.

A mirror run that would delete more than `max_delete_fraction` of what was delivered, and any
run whose model suddenly returns no rows at all, sends nothing and is recorded as `held` with
the reason, until `reverse-etl approve SYNC` (or `run --force`) lets it through. So is a run
that cannot be undone at the destination: a mirror sync pointed at another target, a primary
key changed after deliveries, a mirror sync starting over while its records are out there."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..diff.base import DiffState
from ..diff.in_warehouse import warehouse_state_path
from ..diff.local import DiffCounts, snapshot_path
from ..project.loader import Project, Sync
from ..state.history import History

DEFAULT_MAX_DELETE_FRACTION = 0.5  # mirror mode


def hold_reason(
    sync: str, mode: str, max_delete_fraction: float | None, counts: DiffCounts
) -> str | None:
    """Why a run of `sync` that diffed to `counts` looks like a broken model and is held, with
    the command that approves it; None when it does not."""
    delivered = counts.changed + counts.unchanged + counts.removed
    if not delivered:
        return None
    if counts.rows == 0:
        return (
            f"the model returned no rows, where {delivered:,} records were delivered before; "
            f"if that is right, run `reverse-etl approve {sync}` (or `run --force`)"
        )
    if mode != "mirror":
        return None
    limit = DEFAULT_MAX_DELETE_FRACTION if max_delete_fraction is None else max_delete_fraction
    fraction = counts.removed / delivered
    if fraction > limit:
        return (
            f"mirror would delete {counts.removed:,} of {delivered:,} delivered records "
            f"({fraction:.0%}), more than max_delete_fraction {limit:g}; if that is right, "
            f"run `reverse-etl approve {sync}` (or `run --force`)"
        )
    return None


# -- what a sync delivered belongs to one target (docs/syncs.md) ---------------------------


def moved_target_reason(sync: Sync, stored: str | None, state: DiffState) -> str | None:
    """Why a mirror sync pointed at another target is held: the records it delivered to the
    old one would stay there for good when they leave the model (its deletes now go to the
    new one). None when it is not a mirror, was not moved, or had delivered nothing."""
    if stored is None or stored == sync.target or not state.has_delivered():
        return None
    rekeyed = json.loads(stored).get("primary_key") != json.loads(sync.target)["primary_key"]
    if rekeyed:  # any mode: the destination would hold each record twice
        why = (
            "its records would be sent again under keys the destination has never seen, "
            "beside the ones it holds (each record twice)"
        )
    elif sync.header.mode == "mirror":
        why = (
            "as a mirror, it would never delete at the old target the records that leave the model"
        )
    else:
        return None
    return (
        f"{new_target_note(stored, sync.target)}; {why}. Set it back, or run "
        f"`reverse-etl approve {sync.name}` to start over at the new target"
    )


def would_hold(project: Project, sync: Sync, counts: DiffCounts, state: DiffState) -> str | None:
    """What a plan says of the safety rails: why a run now would be held, if it would."""
    if moved := moved_target_reason(sync, state.previous_target, state):
        return moved
    orphan = None
    if (project.state_dir / "history.sqlite").exists():  # a plan creates nothing
        history = History(project.state_dir)
        try:
            orphan = orphaned_deletes(project, sync, history)
        finally:
            history.close()
    header = sync.header
    return orphan or hold_reason(sync.name, header.mode, header.max_delete_fraction, counts)


def new_target_note(previous: str, current: str) -> str:
    """What a plan says when the sync now points at another target than it delivered to."""
    was, now = json.loads(previous), json.loads(current)
    changed = ", ".join(
        "its destination's address" if what == "address" else
        f"{what} {_shown(was.get(what))} → {_shown(now.get(what))}"
        for what in ("destination", "type", "address", "object", "primary_key")
        if was.get(what) != now.get(what)
    )  # fmt: skip
    return (
        f"the sync now points at another target ({changed}): what was delivered before "
        "belongs to the old one, so the run sends every row to the new one"
    )


def state_path(project: Project, sync: Sync) -> Path:
    if sync.in_warehouse:
        return warehouse_state_path(project.state_dir, sync.name)
    return snapshot_path(project.state_dir, sync.name)


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    return ", ".join(value) if isinstance(value, list) else repr(value)


def _earlier_senders(project: Project, sync: Sync, history: History) -> list[tuple[str, str]]:
    """(target, sync) of the deliveries a mirror sync starting from nothing would answer for:
    its own (to any target: its state file is gone, or is the other diff's), and those of syncs
    no longer in syncs/ to the same destination (a rename, perhaps with another object)."""
    current = set(project.sync_names())
    return [
        (target, sender)
        for target, sender in history.deliveries()
        if sender == sync.name or (sender not in current and _same_destination(target, sync.target))
    ]


def _same_destination(one: str, other: str) -> bool:
    first, second = json.loads(one), json.loads(other)
    if first.get("destination") == second.get("destination"):
        return True
    return first.get("address") == second.get("address") != _NO_ADDRESS


_NO_ADDRESS = hashlib.sha256(b"").hexdigest()[:16]  # a destination type whose settings say none


def orphaned_deletes(project: Project, sync: Sync, history: History) -> str | None:
    """Why a mirror sync starting from nothing would leave records at its destination that it
    could never delete (see _earlier_senders), until `reset` or `approve` says to start over.
    None when it would not."""
    path = state_path(project, sync)
    if sync.header.mode != "mirror" or path.exists():
        return None
    senders = [sender for _, sender in _earlier_senders(project, sync, history)]
    if not senders:
        return None
    where = path.relative_to(project.root) if path.is_relative_to(project.root) else path
    sender = sync.name if sync.name in senders else senders[-1]
    who = "this sync" if sender == sync.name else f"sync {sender!r} (no longer in syncs/)"
    hint = ""
    for kept in (
        snapshot_path(project.state_dir, sender),
        warehouse_state_path(project.state_dir, sender),
    ):
        if kept.exists() and kept != path:
            switched = sender == sync.name
            hint = (
                f"its record is {kept.name}, made with the other `diff` setting: set it back, "
                if switched
                else f"to keep its deletes owed, move {kept.name} to {path.name} in {kept.parent}; "
            )
    return (
        f"{where} does not exist, so this sync has no record of what it delivered, but {who} "
        "delivered records to the same destination before: those that leave the model could "
        f"never be deleted. {hint or 'Restore the file, or '}run `reverse-etl approve "
        f"{sync.name}` to start over without them (they then stay at the destination)"
    )


def take_over(project: Project, sync: Sync, history: History) -> None:
    """A mirror sync that runs (not held, or approved) answers from now on for what the syncs
    no longer in syncs/ sent to its destination: they hold no later run."""
    if sync.header.mode != "mirror":
        return
    for target, sender in _earlier_senders(project, sync, history):
        if sender != sync.name:
            history.forget_delivery(target, sender)
