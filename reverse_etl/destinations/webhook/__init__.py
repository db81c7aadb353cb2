"""The generic webhook, and the receiver that speaks its wire format (receiver.py)."""

from typing import TYPE_CHECKING

from .adapter import WebhookDestination, WebhookSettings

__all__ = ["WebhookDestination", "WebhookSettings"]

if not TYPE_CHECKING:  # 0.3's module of this name, for one release (docs: changelog)
    from ..._moved import forward

    __getattr__ = forward(__name__, f"{__name__}.adapter")
    del forward
