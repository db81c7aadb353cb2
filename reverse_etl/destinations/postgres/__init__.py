"""A PostgreSQL table: the adapter, and beside it its connection pool, the table's catalog
description, its statements and its errors."""

from .adapter import PostgresDestination, PostgresSettings

__all__ = ["PostgresDestination", "PostgresSettings"]
