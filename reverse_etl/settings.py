"""Engine settings: config.toml, overridden by REVERSE_ETL_<SECTION>__<KEY> environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import Problem, ProjectError
from .tomlfile import interpolate, line_of, parse_toml

ENV_PREFIX = "REVERSE_ETL_"
CONFIG_FILE = "config.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WarehouseSettings(_Section):
    type: Literal["duckdb"] = "duckdb"
    path: str = "warehouse.duckdb"
    dsn: SecretStr | None = None


class StateSettings(_Section):
    path: str = ".reverse_etl"
    memory_limit: str = "1GB"
    threads: int | None = Field(default=None, ge=1)


class RunSettings(_Section):
    max_concurrent_syncs: int = Field(default=4, ge=1)


class Settings(BaseSettings):
    """Every key has a default; config.example.toml documents them all."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore"
    )

    warehouse: WarehouseSettings = WarehouseSettings()
    state: StateSettings = StateSettings()
    run: RunSettings = RunSettings()

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
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    data, problems = parse_toml(text, CONFIG_FILE)
    data, missing = interpolate(data, text, CONFIG_FILE)
    problems += missing + _unknown_env_keys()
    if problems:
        raise ProjectError(problems)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ProjectError([_problem(error, text) for error in exc.errors()]) from None


def _problem(error: Any, text: str) -> Problem:
    location = [str(part) for part in error["loc"]]
    section, key = (location + [""])[:2]
    dotted = ".".join(location)
    if len(location) == 1 and error["type"] == "extra_forbidden":
        message = f"unknown section [{section}]"
    elif error["type"] == "extra_forbidden":
        message = f"unknown key {key!r} in [{section}]"
    else:
        message = f"{dotted}: {error['msg']}"
    env_name = f"{ENV_PREFIX}{section}__{key}".upper()
    if key and env_name in os.environ:
        return Problem(f"${env_name}", None, message)
    line = line_of(text, key, section=section) if key else line_of(text, section)
    return Problem(CONFIG_FILE, line, message)


def _unknown_env_keys() -> list[Problem]:
    """REVERSE_ETL_<SECTION>__<KEY> naming a section or key that does not exist."""
    problems = []
    for name in os.environ:
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        model = Settings.model_fields.get(section)
        if model is None:
            problems.append(Problem(f"${name}", None, f"unknown settings section [{section}]"))
        elif key.split("__")[0] not in model.annotation.model_fields:  # type: ignore[union-attr]
            problems.append(Problem(f"${name}", None, f"unknown key {key!r} in [{section}]"))
    return problems
