"""Stage 1, the project's files: config.toml (settings), syncs/*.sql (each a model and its header),
destinations/*.toml, loaded and validated with every problem's file and line."""

from typing import TYPE_CHECKING

from .loader import DestinationSpec, Project, Sync, SyncHeader, split_header

__all__ = ["DestinationSpec", "Project", "Sync", "SyncHeader", "split_header"]

if not TYPE_CHECKING:  # 0.3's module of this name, for one release (docs: changelog)
    from .._moved import forward

    __getattr__ = forward(__name__, f"{__name__}.loader")
    del forward
