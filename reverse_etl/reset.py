"""`reverse-etl reset SYNC`: forget what was delivered, so the next run sends every row."""

from __future__ import annotations

from .history import History
from .locks import SyncLock
from .project import Project
from .snapshot import snapshot_path


def reset_sync(project: Project, name: str) -> None:
    with SyncLock(project.state_dir, name):
        path = snapshot_path(project.state_dir, name)
        for leftover in (path, path.with_name(path.name + ".wal")):
            leftover.unlink(missing_ok=True)
        history = History(project.state_dir)
        try:
            history.forget(name)
        finally:
            history.close()
