"""Reading the project's TOML: parse errors and missing variables reported with their line.

`${NAME}` in any string is replaced by the environment variable NAME; `${NAME:-default}` falls
back to the default when NAME is unset; `$${` writes a literal `${`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any

from .errors import Problem

_VARIABLE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")


def parse_toml(text: str, file: str, first_line: int = 1) -> tuple[dict[str, Any], list[Problem]]:
    """Parse TOML; a syntax error becomes a Problem on the right line of `file`."""
    try:
        return tomllib.loads(text), []
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_POSITION.search(message)
        line = first_line + int(found.group(1)) - 1 if found else None
        message = _TOML_POSITION.sub("", message).strip()
        return {}, [Problem(file, line, f"invalid TOML: {message}")]


def interpolate(
    data: Any, text: str, file: str, first_line: int = 1, env: Mapping[str, str] | None = None
) -> tuple[Any, list[Problem]]:
    """Replace ${VAR} in every string of `data` (recursively); report each missing variable."""
    environ = os.environ if env is None else env
    problems: list[Problem] = []

    def substitute(value: str, path: str) -> str:
        def one(match: re.Match[str]) -> str:
            escaped, name, default = match.groups()
            if escaped:
                return match.group(0)[1:]
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            line = line_of(text, "${" + name, first_line)
            problems.append(
                Problem(file, line, f"environment variable {name} is not set (used in {path})")
            )
            return ""

        return _VARIABLE.sub(one, value)

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, str):
            return substitute(value, path)
        if isinstance(value, dict):
            return {k: walk(v, f"{path}.{k}" if path else k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    return walk(data, ""), problems


def line_of(text: str, needle: str, first_line: int = 1, section: str | None = None) -> int | None:
    """The line where `needle` first appears (as a key when it is a bare name), else None."""
    in_section = section is None
    key = re.compile(rf"^\s*(--\s?)?[\"']?{re.escape(needle)}[\"']?\s*=")
    header = re.compile(r"^\s*(--\s?)?\[+\s*([^\]]+?)\s*\]+")
    for number, line in enumerate(text.splitlines()):
        found_header = header.match(line)
        if found_header and section is not None:
            in_section = found_header.group(2) == section
            continue
        if not in_section:
            continue
        if key.match(line) or (not needle.isidentifier() and needle in line):
            return first_line + number
    return None
