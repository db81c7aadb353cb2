"""reverse-etl: sync warehouse models to the tools your teams use.

The Python API (for orchestrators): run_sync() and plan_sync() (see reverse_etl.api), their
results typed as RunSummary and PlanSummary (with RunStatus); the errors they raise are
importable from here as well."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:  # at run time imported on first use, below: --help must not pay for DuckDB
    from .api import PlanSummary, RunStatus, RunSummary, plan_sync, run_sync

_keep_moved_paths()

__version__ = "0.4.0"
__all__ = [
    "CredentialsError",
    "DestinationError",
    "Interrupted",
    "PlanSummary",
    "ProjectError",
    "ReverseEtlError",
    "RunStatus",
    "RunSummary",
    "StateError",
    "SyncRunningError",
    "WarehouseError",
    "plan_sync",
    "run_sync",
]
_FROM_API = frozenset({"run_sync", "plan_sync", "RunSummary", "PlanSummary", "RunStatus"})

if not TYPE_CHECKING:  # type checkers see the imports above, and no attribute beyond them

    def __getattr__(name: str) -> Any:
        if name in _FROM_API:
            from . import api

            return getattr(api, name)
        raise AttributeError(f"module 'reverse_etl' has no attribute {name!r}")
