"""`reverse-etl reset SYNC`: forget what was delivered, so the next run sends every row."""

from __future__ import annotations

from ..diff.in_warehouse import snapshot_table, warehouse_state_path
from ..diff.local import snapshot_path
from ..errors import ProjectError, WarehouseError
from ..outbox import Outbox
from ..project.loader import Project
from .history import History
from .ledger import Ledger
from .locks import SyncLock


def reset_sync(project: Project, name: str) -> str | None:
    """Forget `name`'s snapshot, its `diff = "warehouse"` table included; the table dropped
    (schema.table), if any. The table goes first: if it cannot be dropped, WarehouseError says
    so and nothing is forgotten, so that no snapshot is left behind unseen."""
    with SyncLock(project.state_dir, name):
        dropped = _drop_warehouse_snapshot(project, name)
        for path in (
            snapshot_path(project.state_dir, name),
            warehouse_state_path(project.state_dir, name),
        ):
            # A killed run's outbox goes too: folded into a new snapshot, its acknowledgements
            # would count records as delivered that the reset means to send again.
            Outbox(path).remove()
            for leftover in (path, path.with_name(path.name + ".wal")):
                leftover.unlink(missing_ok=True)
        history = History(project.state_dir)
        try:
            history.forget(name)
            Ledger(history, name).forget()
        finally:
            history.close()
        return dropped


def _in_warehouse(project: Project, name: str) -> bool:
    """Whether the warehouse may hold the sync's snapshot. A sync file that cannot be read
    (a syntax error) says nothing: then its local state file, or a warehouse that can hold
    snapshots, says yes (the table's name derives from the sync's name alone)."""
    try:
        return project.sync(name).in_warehouse
    except ProjectError:
        pass
    if warehouse_state_path(project.state_dir, name).exists():
        return True
    try:
        return project.settings.warehouse.type != "duckdb"  # the embedded one holds none
    except ProjectError:
        return False  # no settings, and no sign of a snapshot in the warehouse


def _drop_warehouse_snapshot(project: Project, name: str) -> str | None:
    """A `diff = "warehouse"` sync's snapshot lives in the warehouse: drop it there."""
    if not _in_warehouse(project, name):
        return None
    from ..diff.encoding import quote_identifier
    from ..warehouses import open_snapshot_warehouse

    settings = project.settings.warehouse  # ProjectError (exit 2) if config.toml is broken
    table = snapshot_table(name)
    shown = f"{settings.state_schema}.{table}"
    try:
        connection = open_snapshot_warehouse(settings).writer()
        try:
            connection.cursor().execute(
                f"DROP TABLE IF EXISTS {quote_identifier(settings.state_schema)}."
                f"{quote_identifier(table)}"
            )
            connection.commit()
        finally:
            connection.close()
    except Exception as exc:  # the driver's errors: unreachable, refused, no permission
        raise WarehouseError(
            f"sync {name!r}: could not drop its snapshot table {shown} in the warehouse "
            f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}); "
            "nothing was reset: fix the warehouse connection and run `reverse-etl reset` again"
        ) from None
    return shown
