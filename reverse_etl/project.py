"""A project folder: config.toml, syncs/*.sql and destinations/*.toml, loaded and validated.

Loading is lazy per file so that one broken sync does not stop `run` of the others; every error
is a Problem naming the file and, where there is one, the line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .destinations import registry
from .destinations.base import Destination, DestinationSettings
from .errors import Problem, ProjectError
from .model import Model, parse_model
from .settings import Settings, load_settings
from .tomlfile import interpolate, line_of, parse_toml

SYNCS_DIR = "syncs"
DESTINATIONS_DIR = "destinations"
PROJECT_ENV = "REVERSE_ETL_PROJECT"

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

    @field_validator("primary_key")
    @classmethod
    def _key_columns(cls, value: str | list[str]) -> str | list[str]:
        columns = [value] if isinstance(value, str) else value
        if not columns or not all(isinstance(c, str) and c for c in columns):
            raise ValueError("must name one column or a non-empty list of columns")
        if len(set(columns)) != len(columns):
            raise ValueError("names a column twice")
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
        return line_of(self.text, key)


@dataclass
class Project:
    root: Path
    settings: Settings
    _destinations: dict[str, DestinationSpec | list[Problem]] = field(default_factory=dict)

    @classmethod
    def open(cls, root: str | Path | None = None) -> Project:
        """The project at `root`, else $REVERSE_ETL_PROJECT, else the current directory."""
        path = Path(root or os.environ.get(PROJECT_ENV) or ".").resolve()
        if not path.is_dir():
            raise ProjectError([Problem(str(path), None, "project folder does not exist")])
        return cls(path, load_settings(path))

    @property
    def state_dir(self) -> Path:
        return self.root / self.settings.state.path

    def sync_names(self) -> list[str]:
        return sorted(p.stem for p in (self.root / SYNCS_DIR).glob("*.sql"))

    def destination_names(self) -> list[str]:
        return sorted(p.stem for p in (self.root / DESTINATIONS_DIR).glob("*.toml"))

    def sync(self, name: str) -> Sync:
        """Load one sync and its destination; ProjectError lists what is wrong with either."""
        sync, problems = self._load_sync(name)
        if problems or sync is None:
            raise ProjectError(problems)
        return sync

    def destination(self, name: str) -> DestinationSpec:
        loaded = self._destination(name)
        if isinstance(loaded, list):
            raise ProjectError(loaded)
        return loaded

    def problems(self) -> list[Problem]:
        """Every problem in every file (without the warehouse checks: see validate.py)."""
        problems: list[Problem] = []
        for name in self.destination_names():
            loaded = self._destination(name)
            if isinstance(loaded, list):
                problems += loaded
        for name in self.sync_names():
            _, sync_problems = self._load_sync(name, report_destination=False)
            problems += sync_problems
        return problems

    # -- loading -------------------------------------------------------------------------

    def _load_sync(self, name: str, report_destination: bool = True) -> tuple[Sync | None, list[Problem]]:
        file = f"{SYNCS_DIR}/{name}.sql"
        path = self.root / file
        if not path.is_file():
            known = ", ".join(self.sync_names()) or "none"
            return None, [Problem(file, None, f"no sync named {name!r} (syncs: {known})")]
        text = path.read_text(encoding="utf-8")
        header_text, sql, sql_line = split_header(text)
        data, problems = parse_toml(header_text, file)
        data, missing = interpolate(data, text, file)
        problems += missing
        header = None
        if not problems:
            try:
                header = SyncHeader(**data)
            except ValidationError as exc:
                problems += [_field_problem(file, text, e) for e in exc.errors()]
        model, model_problems = parse_model(sql, self.dialect, file, sql_line)
        problems += model_problems
        if header is None or model is None:
            return None, problems
        columns = model.named_columns
        for column in _key_list(header.primary_key):
            if columns is not None and column not in columns:
                problems.append(Problem(file, line_of(text, "primary_key"),
                                        f"primary key column {column!r} is not among the model's "
                                        f"columns ({', '.join(columns)})"))
        destination = self._destination(header.destination)
        if isinstance(destination, list):
            if not (self.root / DESTINATIONS_DIR / f"{header.destination}.toml").is_file():
                known = ", ".join(self.destination_names()) or "none"
                problems.append(Problem(file, line_of(text, "destination"),
                                        f"unknown destination {header.destination!r}: there is no "
                                        f"{DESTINATIONS_DIR}/{header.destination}.toml "
                                        f"(destinations: {known})"))
            elif report_destination:
                problems += destination
            return None, problems
        if header.mode == "mirror" and "delete" not in destination.adapter.operations:
            problems.append(Problem(file, line_of(text, "mode"),
                                    f"mode 'mirror' needs deletes, which destination type "
                                    f"{destination.adapter.type!r} does not support"))
        if problems:
            return None, problems
        return Sync(name, file, header, model, sql_line, text, destination), []

    def _destination(self, name: str) -> DestinationSpec | list[Problem]:
        if name not in self._destinations:
            self._destinations[name] = self._load_destination(name)
        return self._destinations[name]

    def _load_destination(self, name: str) -> DestinationSpec | list[Problem]:
        file = f"{DESTINATIONS_DIR}/{name}.toml"
        path = self.root / file
        if not path.is_file():
            return [Problem(file, None, f"no destination named {name!r}")]
        text = path.read_text(encoding="utf-8")
        data, problems = parse_toml(text, file)
        data, missing = interpolate(data, text, file)
        problems += missing
        if problems:
            return problems
        type_name = data.get("type")
        if not isinstance(type_name, str):
            return [Problem(file, 1, "missing key 'type' (the adapter: "
                                     f"{', '.join(registry.known_types())})")]
        try:
            adapter = registry.adapter_class(type_name)
        except KeyError:
            return [Problem(file, line_of(text, "type"),
                            f"unknown destination type {type_name!r} "
                            f"(known types: {', '.join(registry.known_types())})")]
        try:
            settings = adapter.settings_model(**data)
        except ValidationError as exc:
            return [_field_problem(file, text, e) for e in exc.errors()]
        return DestinationSpec(name, file, settings, adapter)

    @property
    def dialect(self) -> str:
        return self.settings.warehouse.type


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
    sql = "".join(lines[len(header):])
    return "".join(header), sql, len(header) + 1


def _key_list(key: str | list[str]) -> list[str]:
    return [key] if isinstance(key, str) else key


def _field_problem(file: str, text: str, error: dict) -> Problem:  # type: ignore[type-arg]
    location = [str(part) for part in error["loc"]]
    key = location[0] if location else ""
    if error["type"] == "extra_forbidden":
        message = f"unknown key {key!r}"
    elif error["type"] == "missing":
        message = f"missing required key {key!r}"
    else:
        message = f"{'.'.join(location)}: {error['msg']}"
    line = line_of(text, key) if key and error["type"] != "missing" else None
    return Problem(file, line, message)
