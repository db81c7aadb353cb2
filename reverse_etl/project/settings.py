"""Engine settings: config.toml, overridden by REVERSE_ETL_<SECTION>__<KEY> environment
variables."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from ..errors import Problem, ProjectError
from ..secrets import blank_problems
from .tomlfile import (
    did_you_mean,
    interpolate,
    line_of,
    parse_toml,
    read_text,
    section_line,
)

ENV_PREFIX = "REVERSE_ETL_"
CONFIG_FILE = "config.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WarehouseSettings(_Section):
    type: Literal["duckdb", "postgres"] = "duckdb"
    path: str = "warehouse.duckdb"  # duckdb
    # duckdb: the folders (relative to the project) whose files models may read; none by default
    allowed_directories: list[str] = []
    dsn: SecretStr | None = None  # postgres: postgresql://user@host:5432/db (password: ${VAR})
    statement_timeout_seconds: float | None = Field(default=None, gt=0)  # postgres: per model
    diff: Literal["local", "warehouse"] = "local"  # where syncs diff (a sync may say otherwise)
    state_schema: str = Field(default="reverse_etl", min_length=1)  # diff = "warehouse": its home

    @model_validator(mode="after")
    def _postgres_needs_dsn(self) -> WarehouseSettings:
        if self.type == "postgres" and self.dsn is None:
            raise ValueError(
                'type "postgres" needs a dsn, e.g. dsn = "postgresql://user@host:5432/analytics" '
                '(the password from the environment: "postgresql://user:${PGPASSWORD}@...", or '
                "libpq's PGPASSWORD)"
            )
        if self.type != "duckdb" and self.allowed_directories:
            raise ValueError(
                "allowed_directories is for the embedded DuckDB warehouse, whose models could "
                "read files: a PostgreSQL warehouse's models run on the server"
            )
        if self.type == "duckdb" and self.diff == "warehouse":
            raise ValueError(
                'diff = "warehouse" keeps the snapshot in the warehouse, which the embedded '
                "DuckDB warehouse (opened read-only) cannot hold: its syncs diff locally"
            )
        return self


# DuckDB's memory sizes: a number and a unit ("500MB", "1.5GB", "2GiB") or a share of the RAM.
_MEMORY = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B|%)\s*", re.IGNORECASE)
_UNITS = {"B": 1} | {
    f"{p}{i}B": (1024 if i else 1000) ** (n + 1) for n, p in enumerate("KMGT") for i in ("", "I")
}
MIN_MEMORY = 16 * 10**6  # DuckDB's MB; below, it cannot even open a file (256 KiB blocks)
MAX_THREADS = 256  # DuckDB starts them all at once: 100,000 hung the machine


class StateSettings(_Section):
    path: str = Field(default=".reverse_etl", min_length=1)
    memory_limit: str = "1GB"
    threads: int | None = Field(default=None, ge=1, le=MAX_THREADS)

    @field_validator("memory_limit")
    @classmethod
    def _memory_size(cls, value: str) -> str:
        found = _MEMORY.fullmatch(value)
        if not found:
            raise ValueError(
                f'{value!r} is not an amount of memory: write e.g. "512MB", "2GB" or "50%"'
            )
        number, unit = float(found.group(1)), found.group(2).upper()
        if unit != "%" and number * _UNITS[unit] < MIN_MEMORY:
            raise ValueError(
                f"{value!r} is too little for DuckDB to open the state and the warehouse: "
                f"give it at least {MIN_MEMORY // 10**6}MB (larger models spill to disk)"
            )
        return value


class SchedulerSettings(_Section):
    timezone: str = "UTC"  # of cron schedules
    max_concurrent_syncs: int = Field(default=4, ge=1)  # the daemon and `run --all`

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f'unknown time zone {value!r}: write an IANA name such as "UTC" or "Europe/Paris"'
            ) from None
        return value


class DaemonSettings(_Section):
    host: str = "127.0.0.1"  # the status server's address
    port: int = Field(default=8731, ge=0, le=65535)  # 0: any free port (logged at start)
    shutdown_timeout_seconds: float = Field(default=30, gt=0)
    watch_interval_seconds: float = Field(default=2, gt=0)  # how often syncs/ is looked at


class Settings(BaseSettings):
    """Every key has a default; config.example.toml documents them all."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore"
    )

    warehouse: WarehouseSettings = WarehouseSettings()
    state: StateSettings = StateSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    daemon: DaemonSettings = DaemonSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over config.toml (passed in as init values).
        return (env_settings, init_settings)


def load_settings(project_dir: Path) -> Settings:
    """Read config.toml (optional) and the environment; raise ProjectError naming file and line."""
    path = project_dir / CONFIG_FILE
    text = ""
    if path.exists():
        read, problems = read_text(path, CONFIG_FILE)
        if read is None:
            raise ProjectError(problems)
        text = read
    data, problems = parse_toml(text, CONFIG_FILE)
    secrets: dict[str, str] = {}
    data, missing = interpolate(data, text, CONFIG_FILE, secrets=secrets)
    problems += missing + _unknown_sections(data, text) + _unknown_env_keys()
    sections = _sections()
    settings = None
    try:  # validated even when something else is wrong already, to report everything at once
        settings = Settings(**{k: v for k, v in data.items() if k in sections})
    except ValidationError as exc:
        problems += [_problem(e, text) for e in exc.errors()]
    except SettingsError as exc:  # an environment value pydantic-settings cannot parse
        problems.append(_env_problem(str(exc)))
    if settings is not None:
        problems += _state_path_problems(project_dir, settings.state.path)
        problems += _allowed_directory_problems(project_dir, settings)
    if problems or settings is None:
        # an unknown REVERSE_ETL_* key is found both by _unknown_env_keys and by pydantic
        raise ProjectError(blank_problems(list(dict.fromkeys(problems)), secrets))
    return settings


_GLOB = re.compile(r"[*?\[\]{}]")


# The machine's own files, a process's environment among them (/proc/self/environ)
_SYSTEM_FOLDERS = tuple(Path(p) for p in ("/proc", "/sys", "/dev", "/etc", "/run"))


def _allowed_directory_problems(project_dir: Path, settings: Settings) -> list[Problem]:
    """[warehouse] allowed_directories opens folders to models: each must exist, and none may
    hold the state folder or be a system's root of files (/, /proc, /etc), from which a model
    could read the destinations' tokens (docs/warehouses.md, "DuckDB")."""
    state_dir = (project_dir / settings.state.path).resolve()
    problems = []
    for listed in settings.warehouse.allowed_directories:
        folder = (project_dir / listed).resolve()
        why = None
        if not folder.is_dir():
            why = f"{folder} is not a folder (a listed folder is relative to the project folder)"
        elif folder == Path(folder.anchor) or any(
            folder == system or system in folder.parents for system in _SYSTEM_FOLDERS
        ):
            why = f"{folder} would let models read the machine's files, tokens included"
        elif state_dir == folder or folder in state_dir.parents:
            why = f"{folder} holds the state folder {state_dir}, which models may not read"
        if why:
            file, line = where_set(project_dir, "warehouse", "allowed_directories")
            problems.append(Problem(file, line, f"warehouse.allowed_directories: {why}"))
    return problems


def _state_path_problems(project_dir: Path, path: str) -> list[Problem]:
    """[state] path must be a folder (or nothing yet), and literal: DuckDB reads the outbox
    with read_parquet, which would take *, ?, [ ] in its path as a pattern and read other
    files (docs/state.md)."""
    state_dir = project_dir / path
    why = None
    if _GLOB.search(str(state_dir)):
        why = (
            f"the state folder {state_dir} has a pattern character (*, ?, [, ], {{ or }}) in "
            "its path, which DuckDB would read as a pattern: choose a path without them"
        )
    elif state_dir.exists() and not state_dir.is_dir():
        why = f"{state_dir} is a file, not a folder: name a folder (it is created if missing)"
    if why is None:
        return []
    file, line = where_set(project_dir, "state", "path")
    return [Problem(file, line, f"state.path: {why}")]


def where_set(project_dir: Path, section: str, key: str) -> tuple[str, int | None]:
    """Where a setting's value comes from: its environment variable, else config.toml (and
    its line, when the key is written there)."""
    env_name = _env_name(section, key)
    if env_name is not None:
        return f"${env_name}", None
    path = project_dir / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
    except (OSError, UnicodeDecodeError):
        text = ""
    return CONFIG_FILE, line_of(text, key, section=section) or section_line(text, section)


def _env_name(section: str, key: str) -> str | None:
    """The environment variable setting [section] key, if one is set (any case, as
    pydantic-settings reads them)."""
    wanted = f"{ENV_PREFIX}{section}__{key}".upper()
    return next((name for name in os.environ if name.upper() == wanted), None)


def _sections() -> dict[str, type[BaseModel]]:
    return {name: field.annotation for name, field in Settings.model_fields.items()}  # type: ignore[misc]


def _unknown_sections(data: dict[str, Any], text: str) -> list[Problem]:
    """config.toml's top level holds only known sections (Settings itself ignores extras, for
    the environment's sake)."""
    sections = _sections()
    known = ", ".join(f"[{name}]" for name in sections)
    problems = []
    for name, value in data.items():
        if name in sections:
            continue
        if isinstance(value, dict):
            # Keys another section has (a setting that moved, e.g. [run] → [scheduler]) say where.
            moved = {
                key: home
                for key in value
                for home, model in sections.items()
                if key in model.model_fields
            }
            hint = "".join(f"; {key} belongs under [{home}]" for key, home in moved.items())
            problems.append(
                Problem(
                    CONFIG_FILE,
                    section_line(text, name),
                    f"unknown section [{name}]{did_you_mean(name, sections)} "
                    f"(sections: {known}){hint}",
                )
            )
        else:
            home = next((s for s, model in sections.items() if name in model.model_fields), None)
            hint = f"; it belongs under [{home}]" if home else f" (sections: {known})"
            problems.append(
                Problem(
                    CONFIG_FILE,
                    line_of(text, name),
                    f"unknown key {name!r} outside any section{hint}",
                )
            )
    return problems


def _problem(error: Any, text: str) -> Problem:
    location = [str(part) for part in error["loc"]]
    section, key = (location + [""])[:2]
    dotted = ".".join(location)
    model = _sections().get(section)
    if len(location) == 1 and error["type"] == "extra_forbidden":
        message = f"unknown section [{section}]"
    elif error["type"] == "extra_forbidden":
        message = _unknown_key(section, key, model)
    else:
        message = f"{dotted}: {error['msg'].removeprefix('Value error, ')}"
    env_name = _env_name(section, key) if key else None
    if env_name is not None:
        return Problem(f"${env_name}", None, message)
    line = line_of(text, key, section=section) if key else section_line(text, section)
    return Problem(CONFIG_FILE, line, message)


def _unknown_key(section: str, key: str, model: type[BaseModel] | None) -> str:
    choices = list(model.model_fields) if model else []
    return (
        f"unknown key {key!r} in [{section}]{did_you_mean(key, choices)} "
        f"(keys: {', '.join(choices)})"
    )


def _env_problem(message: str) -> Problem:
    """A SettingsError about a whole section set from the environment (REVERSE_ETL_<SECTION>)."""
    found = re.search(r'field "([^"]+)"', message)
    section = found.group(1) if found else ""
    wanted = f"{ENV_PREFIX}{section}".upper()
    env_name = next((n for n in os.environ if n.upper() == wanted), wanted)
    return Problem(
        f"${env_name}",
        None,
        f"cannot read [{section}] from the environment ({message}); set single keys "
        f"with {ENV_PREFIX}{section.upper()}__<KEY> instead",
    )


def _unknown_env_keys() -> list[Problem]:
    """REVERSE_ETL_<SECTION>__<KEY> naming a section or key that does not exist, and the
    one-underscore slip REVERSE_ETL_<SECTION>_<KEY>."""
    sections = _sections()
    problems = []
    for name in os.environ:
        if not name.upper().startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if "__" not in rest:
            for section, model in sections.items():
                key = rest[len(section) + 1 :]
                if rest.startswith(section + "_") and key in model.model_fields:
                    problems.append(
                        Problem(
                            f"${name}",
                            None,
                            f"not a setting: did you mean {ENV_PREFIX}{section.upper()}__"
                            f"{key.upper()}? (two underscores between section and key)",
                        )
                    )
            continue
        section, _, key = rest.partition("__")
        found = sections.get(section)
        if found is None:
            problems.append(
                Problem(
                    f"${name}",
                    None,
                    f"unknown settings section [{section}]{did_you_mean(section, sections)} "
                    f"(sections: {', '.join(sections)})",
                )
            )
        elif key.split("__")[0] not in found.model_fields:
            problems.append(
                Problem(f"${name}", None, _unknown_key(section, key.split("__")[0], found))
            )
    return problems
