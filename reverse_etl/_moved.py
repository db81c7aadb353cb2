"""Import paths of 0.3 that moved in 0.4 (docs: changelog, "What moved in 0.4"): for one release
each still imports, as the module at its new path, with a DeprecationWarning naming that path."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

MOVED = {
    "reverse_etl.casefold": "reverse_etl.diff.casefold",
    "reverse_etl.connect": "reverse_etl.delivery.adapters",
    "reverse_etl.demo": "reverse_etl.cli.demo",
    "reverse_etl.destinations.pg_errors": "reverse_etl.destinations.postgres.errors",
    "reverse_etl.destinations.pg_pool": "reverse_etl.destinations.postgres.pool",
    "reverse_etl.destinations.pg_statements": "reverse_etl.destinations.postgres.statements",
    "reverse_etl.destinations.pg_table": "reverse_etl.destinations.postgres.table",
    "reverse_etl.destinations.soql": "reverse_etl.destinations.salesforce.soql",
    "reverse_etl.diffsql": "reverse_etl.diff.sql",
    "reverse_etl.encoding": "reverse_etl.diff.encoding",
    "reverse_etl.graph": "reverse_etl.project.graph",
    "reverse_etl.history": "reverse_etl.state.history",
    "reverse_etl.locks": "reverse_etl.state.locks",
    "reverse_etl.metrics": "reverse_etl.daemon.metrics",
    "reverse_etl.model": "reverse_etl.project.model",
    "reverse_etl.names": "reverse_etl.project.names",
    "reverse_etl.output": "reverse_etl.cli.output",
    "reverse_etl.probe": "reverse_etl.warehouses.trigger",
    "reverse_etl.rails": "reverse_etl.run.rails",
    "reverse_etl.receiver": "reverse_etl.destinations.webhook.receiver",
    "reverse_etl.reset": "reverse_etl.state.reset",
    "reverse_etl.runner": "reverse_etl.run.pipeline",
    "reverse_etl.scaffold": "reverse_etl.project.scaffold",
    "reverse_etl.scheduler": "reverse_etl.daemon.scheduler",
    "reverse_etl.schedules": "reverse_etl.project.schedules",
    "reverse_etl.settings": "reverse_etl.project.settings",
    "reverse_etl.snapshot": "reverse_etl.diff.local",
    "reverse_etl.status": "reverse_etl.daemon.status",
    "reverse_etl.tomlfile": "reverse_etl.project.tomlfile",
    "reverse_etl.validate": "reverse_etl.project.validate",
    "reverse_etl.warehouse_state": "reverse_etl.diff.in_warehouse",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as the module at its new one (the same module object, so
    its names and any patching of them are shared)."""

    def __init__(self) -> None:
        self._own: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new} in reverse-etl 0.4; the old path goes in 0.5",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        self._own[new] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system stamped the old path's spec on the module: give it back its own
        module.__spec__ = self._own[module.__name__]


def install() -> None:
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.append(_Alias())
