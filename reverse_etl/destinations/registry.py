"""Find destination adapters by `type`: the built-in ones and those installed as plugins
through the entry-point group `reverse_etl.destinations`; each checked, when loaded, to be an
adapter this release can run (its contract_version)."""

from __future__ import annotations

import importlib
import inspect
from functools import cache
from importlib.metadata import entry_points
from typing import NamedTuple

from .base import CONTRACT_VERSION, Destination

ENTRY_POINT_GROUP = "reverse_etl.destinations"
BUILTIN_PACKAGE = "reverse-etl"
BUILTIN = {
    "webhook": "reverse_etl.destinations.webhook.adapter:WebhookDestination",
    "hubspot": "reverse_etl.destinations.hubspot.adapter:HubSpotDestination",
    "salesforce": "reverse_etl.destinations.salesforce.adapter:SalesforceDestination",
    "braze": "reverse_etl.destinations.braze.adapter:BrazeDestination",
    "postgres": "reverse_etl.destinations.postgres.adapter:PostgresDestination",
}


class IncompatibleAdapter(Exception):
    """The class registered for a type is not an adapter this release can run (another
    contract_version, none, not a Destination, `send` not implemented); its message names
    the type, the package it comes from and what to do."""


class _Target(NamedTuple):
    value: str  # module:attribute
    package: str  # the distribution that registered it, with its version


@cache
def _targets() -> dict[str, _Target]:
    targets = {name: _Target(value, BUILTIN_PACKAGE) for name, value in BUILTIN.items()}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        dist = entry.dist
        package = f"{dist.name} {dist.version}" if dist is not None else entry.module
        targets.setdefault(entry.name, _Target(entry.value, package))
    return targets


def known_types() -> list[str]:
    return sorted(_targets())


def adapter_class(type_name: str) -> type[Destination]:
    """The adapter for `type_name`. KeyError when there is none; IncompatibleAdapter when the
    class found cannot be run by this release; a plugin's own import errors propagate."""
    # Built-in types skip the scan of installed packages' entry points (slow at start-up).
    if type_name in BUILTIN:
        target = _Target(BUILTIN[type_name], BUILTIN_PACKAGE)
    else:
        target = _targets()[type_name]
    module, _, attribute = target.value.partition(":")
    found = getattr(importlib.import_module(module), attribute)
    _check(type_name, target, found)
    return found  # type: ignore[no-any-return]


def _check(type_name: str, target: _Target, found: object) -> None:
    where = f"destination type {type_name!r} ({target.value}, from {target.package})"
    if not (isinstance(found, type) and issubclass(found, Destination)):
        raise IncompatibleAdapter(
            f"{where} is not a subclass of reverse_etl.destinations.Destination: "
            f"fix or uninstall {_name(target.package)}"
        )
    version = getattr(found, "contract_version", None)
    if version is None:
        raise IncompatibleAdapter(
            f"{where} declares no contract_version: it was written before the adapter "
            f"contract was versioned. Install a release of {_name(target.package)} made for "
            f"contract version {CONTRACT_VERSION}, or, as its author, check it against the "
            f"contract (reverse_etl.destinations.base) and set contract_version = "
            f"{CONTRACT_VERSION} on the class"
        )
    if version != CONTRACT_VERSION:
        advice = (
            f"upgrade reverse-etl to a release that speaks contract version {version}, or "
            f"install a release of {_name(target.package)} made for version {CONTRACT_VERSION}"
            if isinstance(version, int) and version > CONTRACT_VERSION
            else f"install a release of {_name(target.package)} made for contract version "
            f"{CONTRACT_VERSION}"
        )
        raise IncompatibleAdapter(
            f"{where} is written for contract version {version!r}; this reverse-etl speaks "
            f"version {CONTRACT_VERSION}: {advice}"
        )
    if inspect.isabstract(found):
        missing = ", ".join(sorted(found.__abstractmethods__))
        raise IncompatibleAdapter(f"{where} does not implement {missing}")


def _name(package: str) -> str:
    """The distribution's name, without its version."""
    return package.split(" ")[0]
