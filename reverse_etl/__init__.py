"""reverse-etl: sync warehouse models to the tools your teams use.

The Python API (for orchestrators): run_sync() and plan_sync() (see reverse_etl.api); the errors
they raise are importable from here as well."""

from __future__ import annotations

from typing import Any

from ._moved import install as _keep_moved_paths
from .errors import (
    CredentialsError,
    DestinationError,
    Interrupted,
    ProjectError,
    ReverseEtlError,
    StateError,
    SyncRunningError,
    WarehouseError,
)

_keep_moved_paths()

__version__ = "0.3.0"
__all__ = [
    "CredentialsError",
    "DestinationError",
    "Interrupted",
    "ProjectError",
    "ReverseEtlError",
    "StateError",
    "SyncRunningError",
    "WarehouseError",
    "plan_sync",
    "run_sync",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: the CLI imports this package, and --help must not pay for DuckDB.
    if name in ("run_sync", "plan_sync"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'reverse_etl' has no attribute {name!r}")
