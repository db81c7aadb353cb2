"""HubSpot CRM objects."""

from .adapter import HubSpotDestination, HubSpotSettings

__all__ = ["HubSpotDestination", "HubSpotSettings"]
