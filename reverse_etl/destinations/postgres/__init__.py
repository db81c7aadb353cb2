"""A PostgreSQL table: the adapter, and beside it its connection pool, the table's catalog
description, its statements and its errors."""

from typing import TYPE_CHECKING

from .adapter import PostgresDestination, PostgresSettings

__all__ = ["PostgresDestination", "PostgresSettings"]

if not TYPE_CHECKING:  # 0.3's module of this name, for one release (docs: changelog)
    from ..._moved import forward

    __getattr__ = forward(__name__, f"{__name__}.adapter")
    del forward
