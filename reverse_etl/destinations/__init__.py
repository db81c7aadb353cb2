"""Destination adapters, and the SDK to write one: everything an adapter needs is importable
from here (`from reverse_etl.destinations import Destination, DELIVERED, Rejected, Retryable`).

base.py holds the contract, signals.py what an adapter raises for a whole batch, registry.py
finds adapters by `type` (built in, or installed through the entry-point group
`reverse_etl.destinations`); one package per destination type beside them. Importing this
package costs no httpx: the engine imports it when a run sends."""

from .base import *  # noqa: F403 (the SDK is what base.py lists)
from .base import __all__ as __all__
