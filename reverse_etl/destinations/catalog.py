"""`reverse-etl destinations`: every destination type, what it can do, and its settings."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from . import registry
from .base import Destination, DestinationSettings


def describe(adapter: type[Destination]) -> dict[str, Any]:
    return {
        "type": adapter.type,
        "description": adapter.description,
        "operations": sorted(adapter.operations),
        "max_batch_size": adapter.max_batch_size,
        "default_rate_limits": [str(w) for w in adapter.default_rate_limits()],
        "settings": [_setting(name, field) for name, field in _own_first(adapter)],
    }


def _own_first(adapter: type[Destination]) -> list[tuple[str, FieldInfo]]:
    """The type's own settings, then those every destination has."""
    fields = adapter.settings_model.model_fields
    common = DestinationSettings.model_fields
    own = [(n, f) for n, f in fields.items() if n not in common]
    return own + [(n, f) for n, f in fields.items() if n in common and n != "type"]


def _setting(name: str, field: FieldInfo) -> dict[str, Any]:
    default = field.default
    if default is PydanticUndefined:
        default = field.default_factory() if field.default_factory else None  # type: ignore[call-arg]
    kind = _type_name(field.annotation)
    return {
        "name": name,
        "type": kind,
        "required": field.is_required(),
        "default": default,
        "secret": "SecretStr" in kind,
        "description": field.description or "",
    }


def catalog() -> tuple[list[dict[str, Any]], list[str]]:
    """Every type that loads, described; and a line for each that does not (a broken plugin:
    one that fails to import, even by sys.exit(), or breaks the contract)."""
    described, broken = [], []
    for name in registry.known_types():
        try:
            described.append(describe(registry.adapter_class(name)))
        except registry.RegistryError as exc:  # its message names the type and the package
            broken.append(str(exc))
    return described, broken


def _type_name(annotation: Any) -> str:
    if annotation is SecretStr:
        return "SecretStr"
    origin = typing.get_origin(annotation)
    if annotation is type(None):
        return "None"
    if origin is None:
        return getattr(annotation, "__name__", str(annotation))
    arguments = " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return arguments
    return f"{getattr(origin, '__name__', str(origin))}[{arguments.replace(' | ', ', ')}]"
