"""Import paths of 0.3 that moved in 0.4 (docs: changelog, "What moved in 0.4"): for one release
each still imports, as the module at its new path, with a DeprecationWarning naming that path;
and each 0.3 module that is now a package of the same name (reverse_etl.project, cli, daemon,
destinations.<type>) still gives every name the module had, from the module beside it that
holds it now, with a DeprecationWarning naming that module (`forward`)."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Callable, Sequence
from types import FunctionType, ModuleType
from typing import Any

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


def forward(package: str, implementation: str) -> Callable[[str], Any]:
    """The module-level `__getattr__` of `package`, a 0.3 module that is a package in 0.4: a
    name it does not import itself (its __all__ is the public API) is looked up in
    `implementation`, the module that holds 0.3's code now, with a DeprecationWarning naming
    where the name lives. Its submodules, dunder names and what neither has are not found."""

    def __getattr__(name: str) -> Any:
        if not (name.startswith("__") and name.endswith("__")):
            found = vars(importlib.import_module(implementation)).get(name, _NOTHING)
            if found is not _NOTHING and not isinstance(found, ModuleType):
                home = implementation
                if isinstance(found, type | FunctionType) and found.__module__.startswith(
                    "reverse_etl."
                ):
                    home = found.__module__  # a name the implementation imports: its own home
                # `from package import name` asks twice: the import system's probe first
                if sys._getframe(1).f_globals.get("__name__") != "importlib._bootstrap":
                    warnings.warn(
                        f"{package}.{name} is {home}.{name} since reverse-etl 0.4; the old "
                        "path goes in 0.5",
                        DeprecationWarning,
                        stacklevel=2,
                    )
                return found
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


_NOTHING = object()
