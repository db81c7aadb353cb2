"""Warehouses: where models run. base.py holds the protocol; one module per warehouse type."""

from __future__ import annotations

from pathlib import Path

from ..project.settings import WarehouseSettings
from .base import Warehouse


def open_warehouse(settings: WarehouseSettings, project_root: Path) -> Warehouse:
    if settings.type == "duckdb":
        from .duckdb import DuckDBWarehouse

        return DuckDBWarehouse(
            project_root / settings.path,
            settings.path,
            [project_root / d for d in settings.allowed_directories],
        )
    if settings.type == "postgres":
        from .postgres import PostgresWarehouse

        assert settings.dsn is not None  # the settings require it
        return PostgresWarehouse(
            settings.dsn.get_secret_value(), settings.statement_timeout_seconds
        )
    raise NotImplementedError(settings.type)  # unreachable: settings validate the type
