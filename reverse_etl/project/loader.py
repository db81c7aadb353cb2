"""A project folder: config.toml, syncs/*.sql and destinations/*.toml, loaded and validated.

Loading is lazy per file so that one broken sync does not stop `run` of the others; every error
is a Problem naming the file and, where there is one, the line.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from ..destinations import registry
from ..destinations.base import Destination, DestinationSettings, SyncTarget
from ..errors import Problem, ProjectError
from ..secrets import blank_problems, secret_values
from .graph import after_problems
from .model import Model, check_dialect, parse_model, transpile
from .names import check_name, name_problem
from .schedules import check_schedule
from .settings import Settings, WarehouseSettings, load_settings
from .tomlfile import did_you_mean, interpolate, line_of, parse_toml, read_text

SYNCS_DIR = "syncs"
DESTINATIONS_DIR = "destinations"
PROJECT_ENV = "REVERSE_ETL_PROJECT"
PROJECT_FILES = ("config.toml", f"{SYNCS_DIR}/*.sql", f"{DESTINATIONS_DIR}/*.toml")  # globs

# What to do about a name that breaks the rule of names.py.
RENAME = "; rename the file, or name another"

Mode = Literal["upsert", "update", "insert", "mirror"]


class SyncHeader(BaseModel):
    """The TOML header of a syncs/<name>.sql file."""

    model_config = ConfigDict(extra="forbid")

    destination: str
    primary_key: str | list[str]
    mode: Mode = "upsert"
    object: str | None = None
    schedule: str | None = None
    batch_size: int | None = Field(default=None, ge=1)
    max_delete_fraction: float | None = Field(default=None, ge=0, le=1)
    after: list[str] = Field(default_factory=list)
    trigger_query: str | None = None
    dialect: str | None = None  # the model's SQL dialect, when not the warehouse's
    diff: Literal["local", "warehouse"] | None = None  # else [warehouse] diff

    @field_validator("destination")
    @classmethod
    def _destination_name(cls, value: str) -> str:
        problem = name_problem("destination", value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("dialect")
    @classmethod
    def _known_dialect(cls, value: str | None) -> str | None:
        return None if value is None else check_dialect(value)

    @field_validator("primary_key")
    @classmethod
    def _key_columns(cls, value: str | list[str]) -> str | list[str]:
        columns = [value] if isinstance(value, str) else value
        if not columns or not all(isinstance(c, str) and c for c in columns):
            raise ValueError("must name one column or a non-empty list of columns")
        if len(set(columns)) != len(columns):
            raise ValueError("names a column twice")
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is not None:
            check_schedule(value)
        return value

    @field_validator("after", mode="before")
    @classmethod
    def _after_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("after")
    @classmethod
    def _after(cls, value: list[str]) -> list[str]:
        if not all(value):
            raise ValueError("must list sync names")
        for name in value:
            if problem := name_problem("sync", name):
                raise ValueError(problem)
        if len(set(value)) != len(value):
            raise ValueError("names a sync twice")
        return value


@dataclass(frozen=True)
class DestinationSpec:
    name: str
    file: str
    settings: DestinationSettings
    adapter: type[Destination]


@dataclass(frozen=True)
class Sync:
    name: str
    file: str
    header: SyncHeader
    model: Model
    sql_line: int  # the file line where the SQL starts
    text: str  # the whole file, to find header lines for later errors
    destination: DestinationSpec
    trigger_query: Model | None = None  # the parsed trigger_query
    in_warehouse: bool = False  # diff = "warehouse": the snapshot and the diff live there

    @property
    def primary_key(self) -> tuple[str, ...]:
        key = self.header.primary_key
        return (key,) if isinstance(key, str) else tuple(key)

    @property
    def batch_size(self) -> int:
        size = self.header.batch_size or self.destination.settings.batch_size
        cap = self.destination.adapter.max_batch_size
        return min(size, cap) if cap else size

    def header_line(self, key: str) -> int | None:
        return line_of(split_header(self.text)[0], key)

    @property
    def key_identity(self) -> str:
        """How the destination tells this sync's records apart by key (see Destination)."""
        spec = self.destination
        target = SyncTarget(self.header.object, self.header.mode, self.primary_key)
        return spec.adapter.key_identity_for(spec.settings, target)

    @property
    def target(self) -> str:
        """What the snapshot of delivered records belongs to: the destination (its name, type
        and address), its object and the primary key. Pointed elsewhere, the sync starts over
        for the new target."""
        spec = self.destination
        address = spec.adapter.address(spec.settings)  # may hold secrets: kept as a digest
        return json.dumps(
            {
                "destination": spec.name,
                "type": spec.adapter.type,
                "address": hashlib.sha256(address.encode()).hexdigest()[:16],
                "object": self.header.object,
                # the warehouse's column names ignore case: "EMAIL" is the key "email"
                "primary_key": [column.lower() for column in self.primary_key],
            },
            separators=(",", ":"),
        )


@dataclass
class Project:
    """A project folder. Broken settings (config.toml, REVERSE_ETL_* variables) do not stop
    the project from opening, so that `validate` reports them with everything else; anything
    that needs the settings raises ProjectError listing their problems."""

    root: Path
    _settings: Settings | None = None
    settings_problems: list[Problem] = field(default_factory=list)
    _destinations: dict[str, DestinationSpec | list[Problem]] = field(default_factory=dict)
    # Each value a loaded file took from the environment, and its ${NAME}: logs blank them.
    interpolated: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, root: str | Path | None = None) -> Project:
        """The project at `root`, else $REVERSE_ETL_PROJECT, else the current directory."""
        path = Path(root or os.environ.get(PROJECT_ENV) or ".").resolve()
        if not path.is_dir():
            raise ProjectError([Problem(str(path), None, "project folder does not exist")])
        try:
            return cls(path, load_settings(path))
        except ProjectError as exc:
            return cls(path, None, exc.problems)

    def secrets(self) -> dict[str, str]:
        """Values never to show (in errors, logs, run history), each with what to show
        instead: what the files loaded so far took from the environment (as ${NAME}), and
        every secret setting's value."""
        models: list[BaseModel] = [
            s.settings for s in self._destinations.values() if not isinstance(s, list)
        ]
        if self._settings is not None:
            models.append(self._settings)
        return secret_values(models) | self.interpolated

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            raise ProjectError(self.settings_problems)
        return self._settings

    @property
    def state_dir(self) -> Path:
        return self.root / self.settings.state.path

    def sync_names(self) -> list[str]:
        return sorted(p.stem for p in (self.root / SYNCS_DIR).glob("*.sql"))

    def destination_names(self) -> list[str]:
        return sorted(p.stem for p in (self.root / DESTINATIONS_DIR).glob("*.toml"))

    def sync(self, name: str) -> Sync:
        """Load one sync and its destination; ProjectError lists what is wrong with either (and
        with the settings, without which no sync runs)."""
        sync, problems = self._load_sync(name)
        if problems or sync is None or self.settings_problems:
            raise ProjectError(self.settings_problems + problems)
        return sync

    def destination(self, name: str) -> DestinationSpec:
        loaded = self._destination(name)
        if isinstance(loaded, list):
            raise ProjectError(loaded)
        return loaded

    def problems(self) -> list[Problem]:
        """Every problem in every file (without the warehouse checks: see validate.py)."""
        return self.load_all()[1]

    def load_all(self) -> tuple[list[Sync], list[Problem]]:
        """Every sync that loads, and every problem in every file: the settings', each
        destination's once, each sync's (without the warehouse checks: see validate.py)."""
        problems: list[Problem] = list(self.settings_problems)
        for name in self.destination_names():
            loaded = self._destination(name)
            if isinstance(loaded, list):
                problems += loaded
        syncs = []
        for name in self.sync_names():
            sync, sync_problems = self._load_sync(name, report_destination=False)
            problems += sync_problems
            if sync is not None:
                syncs.append(sync)
        chain_problems = after_problems(syncs, self.sync_names())
        broken = {p.file for p in chain_problems}
        syncs = [s for s in syncs if s.file not in broken]
        return syncs, problems + chain_problems

    # -- loading -------------------------------------------------------------------------

    def _load_sync(
        self, name: str, report_destination: bool = True
    ) -> tuple[Sync | None, list[Problem]]:
        """The sync, or None and its problems; a sync whose destination file is broken is
        None, with the destination's problems only when `report_destination`."""
        file = f"{SYNCS_DIR}/{name}.sql"
        text, problems = self._sync_text(name, file)
        if text is None:
            return None, problems
        header_text, sql, sql_line = split_header(text)
        secrets: dict[str, str] = {}  # what the header took from the environment
        header, problems = self._sync_header(header_text, file, secrets)
        model, model_problems = self._model(header, header_text, sql, sql_line, file)
        trigger_query, trigger_problems = self._trigger_query(header, header_text, file)
        problems += model_problems + trigger_problems
        if header is None or model is None:
            return None, _in_order(blank_problems(problems, secrets))
        problems += _missing_key_columns(header, header_text, model, file)
        destination = self._destination(header.destination)
        if isinstance(destination, list):
            problems += self._destination_problems(
                header, header_text, file, destination if report_destination else []
            )
            return None, _in_order(blank_problems(problems, secrets))
        in_warehouse = (header.diff or self.warehouse.diff) == "warehouse"
        problems += self._target_problems(header, header_text, file, destination, in_warehouse)
        if problems:
            return None, _in_order(blank_problems(problems, secrets))
        sync = Sync(
            name, file, header, model, sql_line, text, destination, trigger_query, in_warehouse
        )
        return sync, []

    def _sync_text(self, name: str, file: str) -> tuple[str | None, list[Problem]]:
        """The sync file's text; None and why, for a name that cannot be a sync's or a file
        that cannot be read."""
        try:
            check_name("sync", name, RENAME)
        except ProjectError as exc:
            return None, exc.problems
        if alike := _alike(name, self.sync_names()):
            return None, [Problem(file, None, alike)]
        path = self.root / file
        if not path.is_file():
            names = self.sync_names()
            known = ", ".join(names) or "none"
            return None, [
                Problem(
                    file,
                    None,
                    f"no sync named {name!r}{did_you_mean(name, names)} (syncs: {known})",
                )
            ]
        return read_text(path, file)

    def _sync_header(
        self, header_text: str, file: str, secrets: dict[str, str]
    ) -> tuple[SyncHeader | None, list[Problem]]:
        """The sync file's TOML header, its ${VAR}s replaced (collected into `secrets`)."""
        data, problems = parse_toml(header_text, file)
        data, missing = interpolate(data, header_text, file, secrets=secrets)
        self.interpolated.update(secrets)
        problems += missing
        if problems:
            return None, problems
        try:
            return SyncHeader(**data), []
        except ValidationError as exc:
            fields = SyncHeader.model_fields
            return None, [_field_problem(file, header_text, e, fields) for e in exc.errors()]

    def _model(
        self, header: SyncHeader | None, header_text: str, sql: str, sql_line: int, file: str
    ) -> tuple[Model | None, list[Problem]]:
        """The model, parsed in the dialect it is written in and written in the warehouse's."""
        written_in = header.dialect if header and header.dialect else self.dialect
        model, problems = parse_model(sql, written_in, file, sql_line)
        if model is not None and header is not None:
            at = line_of(header_text, "dialect") or sql_line
            model, problems = transpile(model, written_in, self.dialect, file, at)
        return model, problems

    def _destination_problems(
        self, header: SyncHeader, header_text: str, file: str, problems: list[Problem]
    ) -> list[Problem]:
        """Why the sync's destination cannot be used: there is no such file, or the
        destination file's own `problems`."""
        if (self.root / DESTINATIONS_DIR / f"{header.destination}.toml").is_file():
            return problems
        names = self.destination_names()
        known = ", ".join(names) or "none"
        return [
            Problem(
                file,
                line_of(header_text, "destination"),
                f"unknown destination {header.destination!r}"
                f"{did_you_mean(header.destination, names)}: there is no "
                f"{DESTINATIONS_DIR}/{header.destination}.toml (destinations: {known})",
            )
        ]

    def _target_problems(
        self,
        header: SyncHeader,
        header_text: str,
        file: str,
        destination: DestinationSpec,
        in_warehouse: bool,
    ) -> list[Problem]:
        """What the warehouse (where the sync diffs) and the destination's adapter (its object,
        mode and key) say of the sync."""
        problems = []
        if in_warehouse and self.dialect == "duckdb":
            problems.append(
                Problem(
                    file,
                    line_of(header_text, "diff"),
                    'diff = "warehouse" keeps the snapshot in the warehouse, which the embedded '
                    "DuckDB warehouse (opened read-only) cannot hold: remove it, DuckDB models "
                    "are diffed where they are already",
                )
            )
        target = SyncTarget(header.object, header.mode, tuple(_key_list(header.primary_key)))
        adapter, settings = destination.adapter, destination.settings
        try:
            asked = registry.sync_problems_of(adapter, settings, target)
            registry.key_identity_of(adapter, settings, target)  # the diff's, at each run
        except registry.RegistryError as exc:  # the adapter's fault, said for this sync
            line = line_of(header_text, "destination")
            return problems + [Problem(file, line, f"{exc} ({destination.file})")]
        for key, message in asked:
            problems.append(
                Problem(file, line_of(header_text, key), f"{message} ({destination.file})")
            )
        return problems

    def _trigger_query(
        self, header: SyncHeader | None, header_text: str, file: str
    ) -> tuple[Model | None, list[Problem]]:
        """The trigger_query, parsed: one read-only query, checked on a schedule."""
        if header is None or header.trigger_query is None:
            return None, []
        line = line_of(header_text, "trigger_query")
        if header.schedule is None:
            return None, [
                Problem(
                    file,
                    line,
                    "trigger_query is checked on the sync's schedule: add a schedule "
                    '(e.g. schedule = "every 5m")',
                )
            ]
        written_in = header.dialect or self.dialect
        query, problems = parse_model(header.trigger_query, written_in, file, line or 1)
        if query is not None:
            query, problems = transpile(query, written_in, self.dialect, file, line or 1)
        return query, [
            Problem(p.file, line, "trigger_query: " + p.message.replace("a model", "a probe"))
            for p in problems
        ]

    def _destination(self, name: str) -> DestinationSpec | list[Problem]:
        if name not in self._destinations:
            self._destinations[name] = self._load_destination(name)
        return self._destinations[name]

    def _load_destination(self, name: str) -> DestinationSpec | list[Problem]:
        try:
            check_name("destination", name, RENAME)
        except ProjectError as exc:
            return exc.problems
        file = f"{DESTINATIONS_DIR}/{name}.toml"
        if alike := _alike(name, self.destination_names()):
            return [Problem(file, None, alike)]
        path = self.root / file
        if not path.is_file():
            return [Problem(file, None, f"no destination named {name!r}")]
        text, problems = read_text(path, file)
        if text is None:
            return problems
        secrets: dict[str, str] = {}
        loaded = self._destination_spec(name, file, text, secrets)
        return blank_problems(loaded, secrets) if isinstance(loaded, list) else loaded

    def _destination_spec(
        self, name: str, file: str, text: str, secrets: dict[str, str]
    ) -> DestinationSpec | list[Problem]:
        data, problems = parse_toml(text, file)
        data, missing = interpolate(data, text, file, secrets=secrets)
        self.interpolated.update(secrets)
        problems += missing
        if problems:
            return problems
        known = ", ".join(registry.known_types())
        type_name = data.get("type")
        if type_name is None:
            return [Problem(file, None, f"missing key 'type' (the adapter: {known})")]
        if not isinstance(type_name, str):
            return [
                Problem(
                    file,
                    line_of(text, "type"),
                    f"'type' must be a string naming the adapter ({known})",
                )
            ]
        type_line = line_of(text, "type")
        try:
            adapter = registry.adapter_class(type_name)
        except registry.UnknownDestinationType:
            return [
                Problem(
                    file,
                    type_line,
                    f"unknown destination type {type_name!r}"
                    f"{did_you_mean(type_name, registry.known_types())} "
                    f"(known types: {known}; a plugin's type is known once its package is "
                    "installed in this Python environment)",
                )
            ]
        except registry.RegistryError as exc:  # its message names the package, what to do
            return [Problem(file, type_line, str(exc))]
        try:
            settings = registry.settings_of(adapter, data)
            # part of each sync's target: an answer that is not one is said here, not by a run
            registry.address_of(adapter, settings)
        except ValidationError as exc:
            fields = adapter.settings_model.model_fields
            return [_field_problem(file, text, e, fields) for e in exc.errors()]
        except registry.RegistryError as exc:
            return [Problem(file, type_line, str(exc))]
        return DestinationSpec(name, file, settings, adapter)

    @property
    def warehouse(self) -> WarehouseSettings:
        """The warehouse settings (the defaults when the settings are broken, so that validate
        still checks every model)."""
        return self._settings.warehouse if self._settings else WarehouseSettings()

    @property
    def dialect(self) -> str:
        """The SQL dialect of the models."""
        return self.warehouse.type


def _alike(name: str, names: list[str]) -> str | None:
    """Names differing only in letter case name one file on a file system that ignores case
    (macOS, Windows), and so would their state: refused in both files."""
    others = [other for other in names if other != name and other.lower() == name.lower()]
    if not others:
        return None
    return (
        f"{name!r} and {others[0]!r} differ only in letter case: on a file system that ignores "
        "case they are one file, and their state would be one; rename one of them"
    )


def split_header(text: str) -> tuple[str, str, int]:
    """Split a sync file into its TOML header, its SQL, and the line number where the SQL starts.

    Header lines keep their count (blanked, not removed), so TOML errors have the file's line."""
    lines = text.splitlines(keepends=True)
    header: list[str] = []
    for line in lines:
        if not line.startswith("--"):
            break
        body = line[2:]
        header.append(body[1:] if body.startswith(" ") else body)
    sql = "".join(lines[len(header) :])
    return "".join(header), sql, len(header) + 1


def _in_order(problems: list[Problem]) -> list[Problem]:
    """One file's problems, top to bottom (those of no particular line first)."""
    return sorted(problems, key=lambda p: (p.file, p.line or 0))


def _missing_key_columns(
    header: SyncHeader, header_text: str, model: Model, file: str
) -> list[Problem]:
    """Primary key columns the model does not name (when its columns can be told without the
    warehouse: not for `select *`)."""
    columns = model.named_columns
    if columns is None:
        return []
    return [
        Problem(
            file,
            line_of(header_text, "primary_key"),
            f"primary key column {column!r} is not among the model's columns "
            f"({', '.join(columns)})",
        )
        for column in _key_list(header.primary_key)
        if column not in columns
    ]


def _key_list(key: str | list[str]) -> list[str]:
    return [key] if isinstance(key, str) else key


def _field_problem(file: str, text: str, error: Any, fields: Iterable[str] = ()) -> Problem:
    location = [str(part) for part in error["loc"]]
    key = location[0] if location else ""
    fields = list(fields)
    if error["type"] == "extra_forbidden" and len(location) == 1:
        message = f"unknown key {key!r}{did_you_mean(key, fields)}"
        if fields:
            message += f" (keys: {', '.join(fields)})"
    elif error["type"] == "missing" and len(location) == 1:
        message = f"missing required key {key!r}"
    else:
        message = f"{'.'.join(location)}: {error['msg'].removeprefix('Value error, ')}"
    line = line_of(text, key) if key and error["type"] != "missing" else None
    return Problem(file, line, message)
