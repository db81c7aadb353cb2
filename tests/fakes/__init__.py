"""Faithful fakes of the destinations' APIs, each a real server on 127.0.0.1 (or, for the
PostgreSQL table, the real PostgreSQL), for the adapter contract suite. Each module here
defines `Fake`, a subclass of fakes.base.Fake."""

from __future__ import annotations

import importlib
import pkgutil

from .base import Fake


def all_fakes() -> dict[str, type[Fake] | Exception]:
    """Every fake, by the destination type it stands for (by module name, with the error,
    for one that cannot be imported: its tests fail, the others' run)."""
    found: dict[str, type[Fake] | Exception] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name in ("base", "project"):  # what the fakes and their tests share
            continue
        try:
            fake = importlib.import_module(f"{__name__}.{module.name}").Fake
        except Exception as exc:
            found[module.name] = exc
        else:
            found[fake.type] = fake
    return dict(sorted(found.items()))
