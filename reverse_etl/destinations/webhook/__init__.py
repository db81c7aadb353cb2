"""The generic webhook, and the receiver that speaks its wire format (receiver.py)."""

from .adapter import WebhookDestination, WebhookSettings

__all__ = ["WebhookDestination", "WebhookSettings"]
