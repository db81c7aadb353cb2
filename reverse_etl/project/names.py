"""What a sync or destination name may be: one rule, checked wherever a name comes in (project
loading, every CLI argument naming a sync or destination, the daemon, the Python API) and again
wherever a path is made from one.

A name is the stem of its file (syncs/<name>.sql, destinations/<name>.toml) and becomes part of
state file names, lock files and, with `diff = "warehouse"`, a table name. So it is plain: ASCII
letters, digits, `_`, `-` and `.`, starting with a letter, a digit or `_`, at most 100
characters. Nothing in it can act as a glob pattern (`*`, `?`, `[`), a path (`/`, `..`), a LIKE
pattern or an SQL quote, and every file name made from it stays under the 255 bytes of a file
system's name (docs/project.md, "Names").
"""

from __future__ import annotations

import re

from ..errors import Problem, ProjectError

MAX_LENGTH = 100
_NAME = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{MAX_LENGTH - 1}}}")
_FOLDERS = {"sync": ("syncs", ".sql"), "destination": ("destinations", ".toml")}


def name_problem(kind: str, name: str) -> str | None:
    """Why `name` cannot name a sync or destination (`kind`), or None when it can."""
    if not isinstance(name, str) or not name:
        return f"a {kind} name cannot be empty"
    if _NAME.fullmatch(name):
        return None
    shown = name if len(name) <= 60 else name[:57] + "..."
    if len(name) > MAX_LENGTH and _NAME.fullmatch(name[:MAX_LENGTH]):
        why = f"it has {len(name)} characters, more than {MAX_LENGTH}"
    else:
        why = (
            "use only ASCII letters, digits, '_', '-' and '.' (not first): no '/', spaces, "
            "quotes or pattern characters such as '*', '?' and '['"
        )
    return f"{shown!r} is not a valid {kind} name: {why}"


def check_name(kind: str, name: str, hint: str = "") -> str:
    """`name`, if it may name a `kind` ("sync" or "destination"); else ProjectError naming the
    file the name stands for (`hint`: what to do, appended to the message)."""
    problem = name_problem(kind, name)
    if problem is None:
        return name
    folder, suffix = _FOLDERS[kind]
    shown = name if isinstance(name, str) and len(name) <= 60 else str(name)[:57] + "..."
    raise ProjectError([Problem(f"{folder}/{shown}{suffix}", None, problem + hint)])
