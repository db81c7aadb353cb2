"""Reading the project's TOML: parse errors and missing variables reported with their line.

`${NAME}` in any string is replaced by the environment variable NAME; `${NAME:-default}` falls
back to the default when NAME is unset; `$${` writes a literal `${`.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import Problem

_VARIABLE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")


def read_text(path: Path, file: str) -> tuple[str | None, list[Problem]]:
    """A project file's text; a file that cannot be read, or is not UTF-8, is a Problem."""
    try:
        return path.read_text(encoding="utf-8"), []
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        return None, [
            Problem(
                file,
                line,
                f"the file is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8",
            )
        ]
    except OSError as exc:
        return None, [Problem(file, None, f"cannot read the file: {exc.strerror or exc}")]


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a choice is close to `name`, else ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
    data: Any,
    text: str,
    file: str,
    first_line: int = 1,
    env: Mapping[str, str] | None = None,
    secrets: dict[str, str] | None = None,
) -> tuple[Any, list[Problem]]:
    """Replace ${VAR} in every string of `data` (recursively); report each missing variable.

    `secrets`, when given, collects each value taken from the environment and the reference it
    replaced, so that messages can be blanked of them (secrets.blank_problems)."""
    environ = os.environ if env is None else env
    problems: list[Problem] = []

    def substitute(value: str, path: str) -> str:
        def one(match: re.Match[str]) -> str:
            escaped, name, default = match.groups()
            if escaped:
                return match.group(0)[1:]
            if name in environ:
                if secrets is not None and environ[name]:
                    secrets[environ[name]] = "${" + name + "}"
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


def section_line(text: str, section: str, first_line: int = 1) -> int | None:
    """The line of a `[section]` (or `[section.sub]`, `[[section]]`) header, else of a dotted
    key `section.x = ...`."""
    quoted = rf"[\"']?{re.escape(section)}[\"']?"
    header = re.compile(rf"^\s*(--\s?)?\[+\s*{quoted}\s*[\].]")
    dotted = re.compile(rf"^\s*(--\s?)?{quoted}\s*\.")
    for number, line in enumerate(text.splitlines()):
        if header.match(line) or dotted.match(line):
            return first_line + number
    return None
