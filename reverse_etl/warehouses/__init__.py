"""Warehouses: where models run. base.py holds the protocol; one module per warehouse type."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import WarehouseError
from ..project.settings import WarehouseSettings
from .base import SnapshotWarehouse, Warehouse

if TYPE_CHECKING:
    from .postgres import PostgresWarehouse


def open_warehouse(settings: WarehouseSettings, project_root: Path) -> Warehouse:
    """The warehouse the settings name (nothing is opened until it is used)."""
    if settings.type == "duckdb":
        from .duckdb import DuckDBWarehouse

        return DuckDBWarehouse(
            project_root / settings.path,
            settings.path,
            [project_root / d for d in settings.allowed_directories],
        )
    if settings.type == "postgres":
        return _postgres(settings)
    raise NotImplementedError(settings.type)  # unreachable: settings validate the type


def open_snapshot_warehouse(settings: WarehouseSettings) -> SnapshotWarehouse:
    """The warehouse the settings name, as one that holds snapshots (`diff = "warehouse"`);
    WarehouseError for one that cannot (the embedded DuckDB warehouse, opened read-only)."""
    if settings.type == "postgres":
        return _postgres(settings)
    raise WarehouseError(
        f'the {settings.type} warehouse cannot hold snapshots (diff = "warehouse"): it is '
        "opened read-only"
    )


def _postgres(settings: WarehouseSettings) -> PostgresWarehouse:
    from .postgres import PostgresWarehouse

    assert settings.dsn is not None  # the settings require it
    return PostgresWarehouse(settings.dsn.get_secret_value(), settings.statement_timeout_seconds)
