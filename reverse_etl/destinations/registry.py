"""Find destination adapters by `type`: the built-in ones and those installed as plugins
through the entry-point group `reverse_etl.destinations`; each checked, when loaded, to be an
adapter this release can run: its own contract_version, and what it declares (capabilities are
data: each is checked as data, once, here).

What goes wrong is one of the RegistryError types below, whose message names the type, the
class, the package it comes from and what to do:

    UnknownDestinationType   no adapter is registered under the type (a KeyError, as in 0.3)
    AdapterFailed            the adapter's own code raised: importing it (any exception, even
                             SystemExit), or a hook validation calls (address, key_identity_for,
                             sync_problems, its settings model)
    IncompatibleAdapter      it loaded, but is not an adapter this release can run: another
                             contract version or none of its own, 0.3's interface, a declaration
                             or a hook's answer outside the contract
"""

from __future__ import annotations

import importlib
import inspect
import os
import traceback
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from functools import cache, partial
from importlib.metadata import entry_points
from typing import Any, NamedTuple, TypeVar

from pydantic import ValidationError
from pydantic_core import PydanticUndefined

from .base import (
    CONTRACT_VERSION,
    OPERATIONS,
    Destination,
    DestinationSettings,
    KeyIdentity,
    SyncTarget,
)

ENTRY_POINT_GROUP = "reverse_etl.destinations"
BUILTIN_PACKAGE = "reverse-etl"
BUILTIN = {
    "webhook": "reverse_etl.destinations.webhook.adapter:WebhookDestination",
    "hubspot": "reverse_etl.destinations.hubspot.adapter:HubSpotDestination",
    "salesforce": "reverse_etl.destinations.salesforce.adapter:SalesforceDestination",
    "braze": "reverse_etl.destinations.braze.adapter:BrazeDestination",
    "postgres": "reverse_etl.destinations.postgres.adapter:PostgresDestination",
}
KEY_IDENTITIES = ("exact", "case_insensitive")

# The pages of the docs that say what an adapter declares, and what changed for 0.3's adapters.
DECLARES = 'docs: Writing a destination, "What an adapter declares"'
MOVED = 'docs: Changelog, "What moved in 0.4"'

T = TypeVar("T")
_MISSING = object()


class RegistryError(Exception):
    """A destination type that cannot be used; the message names the type, the class, the
    package it comes from and what to do."""


class UnknownDestinationType(RegistryError, KeyError):
    """No adapter is registered under the type (neither built in nor installed)."""

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.type_name = type_name

    def __str__(self) -> str:  # not KeyError's repr of its argument
        return f"unknown destination type {self.type_name!r}"


class AdapterFailed(RegistryError):
    """The adapter's own code raised (at import, or in a hook validation calls): a bug, or a
    broken installation, of the package it comes from."""


class IncompatibleAdapter(RegistryError):
    """The class registered for a type is not an adapter this release can run: not a
    Destination, another contract_version or none of its own, 0.3's interface, `send` not
    implemented, a declaration outside the contract, or a hook answering outside it."""


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


# Each adapter class loaded, with where it came from, for the messages of its hooks.
_origins: dict[type, _Target] = {}


def known_types() -> list[str]:
    return sorted(_targets())


def adapter_class(type_name: str) -> type[Destination]:
    """The adapter registered for `type_name`, loaded and checked. Raises
    UnknownDestinationType when none is, AdapterFailed when its code raises while it loads
    (SystemExit included: only KeyboardInterrupt, which may be the user's Ctrl-C, goes through),
    IncompatibleAdapter when it is not an adapter this release can run."""
    # Built-in types skip the scan of installed packages' entry points (slow at start-up).
    if type_name in BUILTIN:
        target = _Target(BUILTIN[type_name], BUILTIN_PACKAGE)
    else:
        try:
            target = _targets()[type_name]
        except KeyError:
            raise UnknownDestinationType(type_name) from None
    where = _where(type_name, target)
    found = _load(where, target)
    _guarded(lambda: _check(type_name, target, found), f"{where}: checking it", target.package)
    adapter: type[Destination] = found  # type: ignore[assignment]  # checked above
    _origins[adapter] = target
    return adapter


def _load(where: str, target: _Target) -> object:
    """What the entry point names, its module imported; the adapter's failures AdapterFailed."""
    package = target.package
    module_name, colon, attribute = target.value.partition(":")
    module_name, attribute = module_name.strip(), attribute.partition("[")[0].strip()
    if not (colon and module_name and attribute):
        raise AdapterFailed(
            f"{where} cannot be loaded: its entry point names no class ({target.value!r}; it "
            f"must read 'module:Class', in [project.entry-points.\"{ENTRY_POINT_GROUP}\"] of "
            f"{_name(package)}'s pyproject.toml): install a release of it that names its "
            "class there, or uninstall it"
        )
    found = _guarded(
        partial(importlib.import_module, module_name),
        f"{where} cannot be loaded: importing {module_name}",
        package,
    )
    for part in attribute.split("."):
        found = _guarded(partial(getattr, found, part, _MISSING), f"{where}: reading it", package)
        if found is _MISSING:
            raise AdapterFailed(
                f"{where} cannot be loaded: {module_name} defines no {attribute}, the class its "
                f"entry point names: {_broken(package)}"
            )
    return found


def _guarded(call: Callable[[], T], doing: str, package: str) -> T:
    """call(), any exception of the adapter's own code (a KeyError, a sys.exit()) raised as
    AdapterFailed, so that it is never taken for one of the registry's own answers."""
    try:
        return call()
    except (RegistryError, KeyboardInterrupt):
        raise
    except BaseException as exc:
        raise AdapterFailed(f"{doing} raised {_raised(exc)}: {_broken(package)}") from exc


# -- the checks of a class, when it is loaded -------------------------------------------------


def _check(type_name: str, target: _Target, found: object) -> None:
    where = _where(type_name, target)
    package = _name(target.package)
    if not (isinstance(found, type) and issubclass(found, Destination)):
        raise IncompatibleAdapter(
            f"{where} is not a subclass of reverse_etl.destinations.Destination, as what an "
            f"entry point names must be: install a release of {package} whose entry point "
            "names its adapter class, or uninstall it"
        )
    ported = _written_for_0_3(found)
    unversioned = _version_problem(found, package)
    if unversioned:
        raise IncompatibleAdapter(f"{where} {unversioned}" + _still_0_3(ported))
    problems = ported + _declaration_problems(type_name, found)
    if inspect.isabstract(found):
        missing = ", ".join(sorted(found.__abstractmethods__))
        problems.append(f"does not implement {missing}")
    if problems:
        raise IncompatibleAdapter(
            f"{where} breaks the adapter contract: {'; '.join(problems)}. Install a release of "
            f"{package} that keeps contract version {CONTRACT_VERSION}, or, as its author, fix "
            f"the class ({MOVED if ported else DECLARES})"
        )


def _version_problem(found: type[Destination], package: str) -> str | None:
    """What is wrong with the contract_version the class itself declares, and what to do."""
    port = (
        f"Install a release of {package} made for contract version {CONTRACT_VERSION}, or, as "
        f"its author, check it against the contract (reverse_etl.destinations.base; {MOVED}) "
        f"and set contract_version = {CONTRACT_VERSION} on the class"
    )
    owner = next((c for c in found.__mro__ if "contract_version" in vars(c)), None)
    if owner is None:
        return (
            "declares no contract_version: it was written before the adapter contract was "
            f"versioned. {port}"
        )
    if _top(owner) != _top(found):  # a 0.3 subclass of a built-in adapter inherits its 1
        return (
            f"declares no contract_version of its own: it inherits {found.contract_version!r} "
            f"from {owner.__module__}.{owner.__qualname__}, which vouches for that class's "
            f"code, not for this one's. {port}"
        )
    version = found.contract_version
    if type(version) is not int:  # not True, 1.0 or "1": the number itself
        return (
            f"declares contract_version = {version!r}, which is not a version: it must be the "
            f"number itself, an int. {port}"
        )
    if version == CONTRACT_VERSION:
        return None
    advice = (
        f"upgrade reverse-etl to a release that speaks contract version {version}, or install "
        f"a release of {package} made for version {CONTRACT_VERSION}"
        if version > CONTRACT_VERSION
        else f"install a release of {package} made for contract version {CONTRACT_VERSION}"
    )
    return (
        f"is written for contract version {version!r}; this reverse-etl speaks version "
        f"{CONTRACT_VERSION}: {advice}"
    )


def _written_for_0_3(found: type[Destination]) -> list[str]:
    """What of 0.3's adapter interface the class (or a base class of its own) still has, each
    with what 0.4 calls it."""
    own = [c for c in found.__mro__ if c is not object and not _ours(c)]
    problems = []
    if any("uses_tls" in vars(c) for c in own):
        problems.append(
            "defines uses_tls, which 0.4 no longer reads: the engine derives TLS from "
            "address(settings) (TLS unless every URL there is plain http://); remove it, and "
            "override address(settings) where the usual settings do not say where records go"
        )
    if callable(getattr(found, "key_identity", None)):
        problems.append(
            "defines key_identity as a method (0.3's key_identity(settings, sync)), which 0.4 "
            'does not call: declare the class attribute key_identity = "exact" or '
            '"case_insensitive", and name the method key_identity_for(settings, sync) where '
            "the settings decide it"
        )
    # (A call of 0.3's self.pace() is not looked for in the code: a scan misses `me.pace()`
    # and refuses a plugin's own `self.pace` value. It fails at run time, named as a bug in
    # the adapter, its records owed.)
    return problems


def _declaration_problems(type_name: str, found: type[Destination]) -> list[str]:
    """What the class declares outside the contract, each with what to declare instead."""
    problems = []
    declared = getattr(found, "type", None)
    if declared is None:
        problems.append(
            f"declares no type: set type = {type_name!r}, the name its entry point registers "
            "(destination files give it as `type`)"
        )
    elif declared != type_name:
        problems.append(
            f"declares type = {declared!r}, but its entry point registers it as {type_name!r}, "
            f"the name destination files use: make them one (type = {type_name!r} on the "
            "class, or the entry point renamed)"
        )
    if not isinstance(found.description, str):
        problems.append(f"description = {_shown(found.description)} is not a str")
    problems += _settings_model_problems(found.settings_model)
    operations = found.operations
    problems += _operations_problems("operations", operations, OPERATIONS)
    if isinstance(operations, AbstractSet) and not operations:
        problems.append("lists no operations: list those send takes")
    for name in ("idempotent_operations", "reconcilable_operations"):
        listed = getattr(found, name)
        # The SDK's default names every operation safe to repeat: only the adapter's own
        # declaration must stay within what it supports.
        within = operations if _declared_by(found, name) is not Destination else OPERATIONS
        if isinstance(within, AbstractSet):
            problems += _operations_problems(name, listed, within, "its operations")
    if found.reconcilable_operations and found.reconcile is Destination.reconcile:
        problems.append(
            "lists reconcilable_operations but does not implement reconcile(batch), which "
            "looks records up after an unknown outcome: implement it, or list none"
        )
    size = found.max_batch_size
    if size is not None and (type(size) is not int or size < 1):
        problems.append(
            f"max_batch_size = {_shown(size)}: declare the most records a request takes, a "
            "whole number of at least 1 (an int), or None for no limit"
        )
    identity = found.key_identity
    if not callable(identity) and identity not in KEY_IDENTITIES:
        problems.append(
            f"key_identity = {_shown(identity)}: declare \"exact\" or \"case_insensitive\", as "
            "the vendor tells records apart by key"
        )
    if type(found.speaks_http) is not bool:
        problems.append(f"speaks_http = {_shown(found.speaks_http)}: declare True or False")
    return problems


def _settings_model_problems(model: object) -> list[str]:
    if not (isinstance(model, type) and issubclass(model, DestinationSettings)):
        name = getattr(model, "__qualname__", None) or _shown(model)
        return [
            f"settings_model = {name} is not a subclass of "
            "reverse_etl.destinations.DestinationSettings: subclass it (it brings the settings "
            "every destination has: batch_size, the rate limits, the timeouts, the retries)"
        ]
    # Its defaults of the common settings are what a run uses when a file does not set them:
    # held to the same rules as a value in a file (batch_size >= 1, rate limits above 0).
    common = DestinationSettings.model_fields
    defaults = {
        name: field.default
        for name, field in model.model_fields.items()
        if name in common and name != "type" and field.default is not PydanticUndefined
    }
    try:
        DestinationSettings(type="-", **defaults)
    except ValidationError as exc:
        return [
            f"the default of {e['loc'][0]} in settings_model {model.__qualname__} is "
            f"{_shown(e['input'])}, which a destination file could not set "
            f"({e['msg'].removeprefix('Value error, ')})"
            for e in exc.errors()
        ]
    return []


def _operations_problems(
    name: str, listed: object, within: Iterable[str], what: str = "the SDK's"
) -> list[str]:
    known = sorted(within)
    if not (isinstance(listed, AbstractSet) and all(isinstance(o, str) for o in listed)):
        return [f"{name} = {_shown(listed)}: declare a frozenset of operation names"]
    unknown = sorted(set(listed) - set(known))
    if unknown:
        return [
            f"{name} lists {', '.join(map(repr, unknown))}, not among {what} "
            f"({', '.join(known) or 'none'})"
        ]
    return []


# -- the answers of its hooks, checked where validation calls them ----------------------------


def settings_of(adapter: type[Destination], data: Mapping[str, Any]) -> DestinationSettings:
    """A destination file's settings, as the adapter's settings model reads them. Raises its
    ValidationError (the file's mistakes); AdapterFailed when the model's own code raises
    anything else."""
    return _answer(
        adapter,
        "its settings model",
        lambda: adapter.settings_model(**data),
        lambda answer: isinstance(answer, DestinationSettings),
        "an instance of settings_model",
        passing=ValidationError,
    )


def address_of(adapter: type[Destination], settings: DestinationSettings) -> str:
    """adapter.address(settings), which must be a str; AdapterFailed or IncompatibleAdapter
    when it raises or answers anything else (a sync's target is computed from it)."""
    return _answer(
        adapter,
        "address(settings)",
        lambda: adapter.address(settings),
        lambda answer: isinstance(answer, str),
        "a str: where the records live ('' when the settings do not say)",
    )


def key_identity_of(
    adapter: type[Destination], settings: DestinationSettings, sync: SyncTarget
) -> KeyIdentity:
    """adapter.key_identity_for(settings, sync), which must be "exact" or "case_insensitive"."""
    return _answer(
        adapter,
        "key_identity_for(settings, sync)",
        lambda: adapter.key_identity_for(settings, sync),
        lambda answer: answer in KEY_IDENTITIES,
        '"exact" or "case_insensitive"',
    )


def sync_problems_of(
    adapter: type[Destination], settings: DestinationSettings, sync: SyncTarget
) -> list[tuple[str, str]]:
    """adapter.sync_problems(settings, sync), which must be a list of (header key, message)
    pairs of str."""
    return _answer(
        adapter,
        "sync_problems(settings, sync)",
        lambda: list(adapter.sync_problems(settings, sync)),
        lambda answer: all(
            isinstance(p, tuple | list) and len(p) == 2 and all(isinstance(s, str) for s in p)
            for p in answer
        ),
        "a list of (header key, message) pairs of str",
    )


def _answer(
    adapter: type[Destination],
    call: str,
    ask: Callable[[], T],
    valid: Callable[[Any], bool],
    expected: str,
    passing: type[Exception] | None = None,
) -> T:
    """ask(), the answer of one of the adapter's hooks: any exception of its code raised as
    AdapterFailed (but `passing`, which the caller handles), an answer that is not `valid` as
    IncompatibleAdapter."""
    target = _origin(adapter)
    where = _where(adapter.type, target)
    try:
        answer = ask()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        if passing is not None and isinstance(exc, passing):
            raise
        raise AdapterFailed(
            f"{where}: {call} raised {_raised(exc)}: {_broken(target.package)}"
        ) from exc
    if not valid(answer):
        raise IncompatibleAdapter(
            f"{where} breaks the adapter contract: {call} answered {_shown(answer)}, where the "
            f"contract asks for {expected}. Install a release of {_name(target.package)} that "
            f"keeps it, or, as its author, fix {call.partition('(')[0]} "
            "(reverse_etl.destinations.base)"
        )
    return answer


# -- helpers ----------------------------------------------------------------------------------


def _where(type_name: str, target: _Target) -> str:
    return f"destination type {type_name!r} ({target.value}, from {target.package})"


def _origin(adapter: type[Destination]) -> _Target:
    """Where a class loaded by adapter_class came from (another: its module and package)."""
    found = _origins.get(adapter)
    if found is not None:
        return found
    value = f"{adapter.__module__}:{adapter.__qualname__}"
    return _Target(value, BUILTIN_PACKAGE if _ours(adapter) else _top(adapter))


def _name(package: str) -> str:
    """The distribution's name, without its version."""
    return package.split(" ")[0]


def _broken(package: str) -> str:
    return (
        f"{_name(package)} is broken (its code, or a package it needs): reinstall it with its "
        "dependencies, install a release of it that works, or uninstall it"
    )


def _raised(exc: BaseException) -> str:
    """The exception and where the adapter's code raised it (the innermost frame outside
    the import machinery and this module)."""
    machinery = (os.path.dirname(importlib.__file__), __file__)
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith("<frozen") and not f.filename.startswith(machinery)
    ]
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{exc!r}{where}"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _still_0_3(ported: list[str]) -> str:
    return f". It still has 0.3's interface: it {'; it '.join(ported)}" if ported else ""


def _top(cls: type) -> str:
    """The top-level package a class is defined in."""
    return cls.__module__.partition(".")[0]


def _ours(cls: type) -> bool:
    return _top(cls) == "reverse_etl"


def _declared_by(cls: type, name: str) -> type | None:
    return next((c for c in cls.__mro__ if name in vars(c)), None)


