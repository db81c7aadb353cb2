"""Find destination adapters by `type`: the built-in ones and those installed as plugins
through the entry-point group `reverse_etl.destinations`."""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points

from .base import Destination

ENTRY_POINT_GROUP = "reverse_etl.destinations"
BUILTIN = {
    "webhook": "reverse_etl.destinations.webhook.adapter:WebhookDestination",
    "hubspot": "reverse_etl.destinations.hubspot.adapter:HubSpotDestination",
    "salesforce": "reverse_etl.destinations.salesforce.adapter:SalesforceDestination",
    "braze": "reverse_etl.destinations.braze.adapter:BrazeDestination",
    "postgres": "reverse_etl.destinations.postgres.adapter:PostgresDestination",
}


@cache
def _targets() -> dict[str, str]:
    targets = dict(BUILTIN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        targets.setdefault(entry.name, entry.value)
    return targets


def known_types() -> list[str]:
    return sorted(_targets())


def adapter_class(type_name: str) -> type[Destination]:
    """The adapter for `type_name`; KeyError when there is none."""
    # Built-in types skip the scan of installed packages' entry points (slow at start-up).
    target = BUILTIN.get(type_name) or _targets()[type_name]
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)  # type: ignore[no-any-return]
