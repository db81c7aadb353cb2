"""HubSpot CRM objects."""

from typing import TYPE_CHECKING

from .adapter import HubSpotDestination, HubSpotSettings

__all__ = ["HubSpotDestination", "HubSpotSettings"]

if not TYPE_CHECKING:  # 0.3's module of this name, for one release (docs: changelog)
    from ..._moved import forward

    __getattr__ = forward(__name__, f"{__name__}.adapter")
    del forward
