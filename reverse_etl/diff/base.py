"""The interface of a sync's diff state, whichever diff runs it: what a run (run/pipeline.py),
the safety rails (run/rails.py), the ledger (state/ledger.py) and the delivery call on it.

Two implementations: the local diff (local.py, `SyncState`: the snapshot in a DuckDB file of
the state folder) and the diff inside the warehouse (in_warehouse.py, `WarehouseState`: the
snapshot in the warehouse, the rest local). A run uses one of them, top to bottom:

    fold_acknowledged   what a run that died had delivered
    stored_target, has_delivered, claim_target
    read_model, diff    the counts, and (in a run) the outbox of what to send
    invalid_rows, settle, forget_removed, pending_batches
    read, acknowledge   the delivery, batch by batch
    fold_acknowledged   what this run delivered
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

    from ..outbox import Outbox
    from ..project.model import Model
    from ..warehouses.base import Warehouse
    from .local import DiffCounts, PendingBatch


class DiffState(Protocol):
    """One sync's record of what its target holds, and the diff of its model against it.
    Opened for one run (or one plan), read-only for a plan; closed with it (a context
    manager). Errors: StateError when the state folder cannot be read or written,
    WarehouseError from the warehouse."""

    @property
    def path(self) -> Path:
        """The state's DuckDB file in the state folder; the outbox lives beside it."""

    @property
    def con(self) -> DuckDBPyConnection:
        """The engine's DuckDB connection: the state file is attached to it as `state` (its
        `quarantine` table, key and hash, among its tables), and after diff() in a run the
        temporary table local.DIFF holds `key`, `hash` and `present` (true) for each row of
        the model the run may send (at least), with the row's wire key and hash."""

    @property
    def outbox(self) -> Outbox:
        """What this run sends, and what the destination accepted of it."""

    @property
    def previous_target(self) -> str | None:
        """After read_model() in a plan: the target the state belongs to when the sync now
        points at another one (the run would start over there), else None."""

    def close(self) -> None: ...

    def __enter__(self) -> DiffState: ...

    def __exit__(self, *exc: object) -> None: ...

    # -- the target ------------------------------------------------------------------------

    def has_delivered(self) -> bool:
        """Whether the state records anything delivered (or owed) to its target."""

    def stored_target(self) -> str | None:
        """The target (JSON: destination, type, address digest, object, primary key) the
        state belongs to; None for a state never claimed."""

    def claim_target(self, target: str) -> str | None:
        """Make `target` the one the state describes: the record of another target is
        emptied, so the new one is sent everything. The previous target, when it was another."""

    # -- the fold --------------------------------------------------------------------------

    def fold_acknowledged(self, keep_fields: bool) -> None:
        """Fold what the destination accepted of the outbox into the snapshot (with the
        fields sent when `keep_fields`: a mirror's deletes carry them), record what it did not
        acknowledge as owed, then remove the outbox. Nothing to do without an outbox."""

    # -- the model and the diff ------------------------------------------------------------

    def read_model(
        self,
        warehouse: Warehouse,
        model: Model,
        primary_key: Sequence[str],
        file: str,
        key_line: int | None,
        target: str,
    ) -> None:
        """Learn the model's columns from `warehouse` (connected to `con`), ready to diff.
        ProjectError (naming `file` and `key_line`) when a primary key column is not among
        them; the warehouse's errors about the model otherwise (duckdb.Error, ModelFailed).
        `target`: the sync's, for a plan to tell a target it would start over."""

    def diff(self, mode: str, full_resync: bool, build_pending: bool) -> DiffCounts:
        """The model against what was delivered, counted; with `build_pending` (a run), what
        to send written to the outbox (quarantined records whose rows are unchanged left out)."""

    def invalid_rows(self, chunk: int = 10_000) -> Iterator[list[tuple[str | None, str]]]:
        """(key, error) of each row that cannot be sent (a NULL or repeated key), in lists of
        up to `chunk`."""

    def settle(self) -> None:
        """Bring the snapshot up to date without sending anything (hashes of another hash
        function, fields a mirror lacks); a run calls it once it is not held."""

    def forget_removed(self) -> None:
        """Forget the delivered records whose keys left the model (outside mirror mode, which
        deletes them instead)."""

    # -- the delivery ----------------------------------------------------------------------

    def pending_batches(self, batch_size: int) -> list[PendingBatch]:
        """The outbox in batches of at most `batch_size` records, in sending order."""

    def read(self, first: int, last: int) -> list[tuple[str, str]]:
        """(key, fields JSON text) of the outbox's records first..last, in order."""

    def acknowledge(self, batch: PendingBatch, keys: list[str] | None) -> None:
        """Durably record that the destination accepted `keys` of `batch` (None: all)."""
