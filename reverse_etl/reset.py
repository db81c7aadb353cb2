"""`reverse-etl reset SYNC`: forget what was delivered, so the next run sends every row."""

from __future__ import annotations

from .errors import ProjectError
from .history import History
from .locks import SyncLock
from .outbox import Outbox
from .project import Project
from .snapshot import snapshot_path
from .warehouse_state import snapshot_table, warehouse_state_path


def reset_sync(project: Project, name: str) -> None:
    with SyncLock(project.state_dir, name):
        for path in (
            snapshot_path(project.state_dir, name),
            warehouse_state_path(project.state_dir, name),
        ):
            # A killed run's outbox goes too: folded into a new snapshot, its acknowledgements
            # would count records as delivered that the reset means to send again.
            Outbox(path).remove()
            for leftover in (path, path.with_name(path.name + ".wal")):
                leftover.unlink(missing_ok=True)
        _drop_warehouse_snapshot(project, name)
        history = History(project.state_dir)
        try:
            history.forget(name)
        finally:
            history.close()


def _drop_warehouse_snapshot(project: Project, name: str) -> None:
    """A `diff = "warehouse"` sync's snapshot lives in the warehouse: drop it there."""
    try:
        sync = project.sync(name)
    except ProjectError:
        return  # a broken file: nothing says where its snapshot would be
    if not sync.in_warehouse:
        return
    from .encoding import quote_identifier
    from .warehouses import open_warehouse

    settings = project.settings.warehouse
    warehouse = open_warehouse(settings, project.root)
    connection = warehouse.writer()  # type: ignore[attr-defined]
    try:
        table = (
            f"{quote_identifier(settings.state_schema)}.{quote_identifier(snapshot_table(name))}"
        )
        connection.cursor().execute(f"DROP TABLE IF EXISTS {table}")
        connection.commit()
    finally:
        connection.close()
