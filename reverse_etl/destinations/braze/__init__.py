"""Braze users."""

from .adapter import BrazeDestination, BrazeSettings

__all__ = ["BrazeDestination", "BrazeSettings"]
