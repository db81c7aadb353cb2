"""Braze users."""

from typing import TYPE_CHECKING

from .adapter import BrazeDestination, BrazeSettings

__all__ = ["BrazeDestination", "BrazeSettings"]

if not TYPE_CHECKING:  # 0.3's module of this name, for one release (docs: changelog)
    from ..._moved import forward

    __getattr__ = forward(__name__, f"{__name__}.adapter")
    del forward
