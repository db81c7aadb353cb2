"""Stage 1, the project's files: config.toml (settings), syncs/*.sql (each a model and its header),
destinations/*.toml, loaded and validated with every problem's file and line."""

from .loader import DestinationSpec, Project, Sync, SyncHeader, split_header

__all__ = ["DestinationSpec", "Project", "Sync", "SyncHeader", "split_header"]
