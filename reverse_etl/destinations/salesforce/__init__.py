"""Salesforce sObjects, looked up with SOQL (soql.py)."""

from typing import TYPE_CHECKING

from .adapter import SalesforceDestination, SalesforceSettings

__all__ = ["SalesforceDestination", "SalesforceSettings"]

if not TYPE_CHECKING:  # 0.3's module of this name, for one release (docs: changelog)
    from ..._moved import forward

    __getattr__ = forward(__name__, f"{__name__}.adapter")
    del forward
