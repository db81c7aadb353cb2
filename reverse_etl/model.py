"""A sync's model: exactly one read-only query, parsed with sqlglot."""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from .errors import Problem

# Nodes that write or change something, wherever they appear (a CTE included).
_WRITES: tuple[type[exp.Expression], ...] = tuple(
    getattr(exp, name)
    for name in ("Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "Command",
                 "Into", "Copy", "Pragma", "Set", "Use", "TruncateTable", "Attach", "Detach")
    if hasattr(exp, name)
)


@dataclass(frozen=True)
class Model:
    tree: exp.Query
    sql: str

    @property
    def named_columns(self) -> list[str] | None:
        """Output column names when sqlglot can tell them alone (no `*`, every column named)."""
        if any(isinstance(s, exp.Star) or s.is_star for s in self.tree.selects):
            return None
        names = self.tree.named_selects
        return names if len(names) == len(self.tree.selects) and all(names) else None


def parse_model(
    sql: str, dialect: str, file: str, first_line: int
) -> tuple[Model | None, list[Problem]]:
    """Parse and check a model; problems carry the file's line numbers."""

    def problem(line: int | None, message: str) -> tuple[None, list[Problem]]:
        return None, [Problem(file, line, message)]

    if not sql.strip():
        return problem(first_line, "the model has no SQL after its header")
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        line = first.get("line")
        description = first.get("description") or str(exc)
        return problem(first_line + line - 1 if line else first_line, f"SQL syntax error: {description}")
    if len(statements) != 1:
        return problem(first_line, f"a model must be exactly one query; found {len(statements)} statements")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        kind = tree.key.upper()
        return problem(first_line, f"a model must be a read-only query (SELECT); found {kind}")
    for node in tree.walk():
        if isinstance(node, _WRITES):
            kind = "SELECT ... INTO" if isinstance(node, exp.Into) else node.key.upper()
            return problem(first_line, f"a model must be read-only; it contains {kind}")
    return Model(tree, sql), []
